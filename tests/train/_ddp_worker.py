"""Worker of the 2-process Gloo test in test_trainer.py, launched by ``torch.distributed.run``.

Usage: ``python -m torch.distributed.run --nproc_per_node=2 _ddp_worker.py OUT_DIR STEPS``.
Each rank saves what it ended with to ``OUT_DIR/rank<r>.pt``.
"""

import os
import sys

import torch
from torch import nn

from diffst_sc.train import TrainerConfig, fit_model, save_state


def main(out_dir: str, steps: int) -> None:
    rank = int(os.environ["RANK"])
    # A different initialisation on each rank: DDP must broadcast rank 0's weights.
    torch.manual_seed(100 + rank)
    module = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    target = torch.arange(1.0, 5.0).reshape(4, 1)
    first_batches = []

    def batch_fn(step, generator):
        x = torch.randn(16, 4, generator=generator)
        if step == 0:
            first_batches.append(x)
        return {"x": x, "y": x @ target}

    def loss_fn(model, batch, generator):
        return ((model(batch["x"]) - batch["y"]) ** 2).mean(), {}

    config = TrainerConfig(
        lr=5e-2, max_steps=steps, warmup_steps=2, log_every=5, checkpoint_every=5, progress=False
    )
    result = fit_model(
        module,
        loss_fn,
        batch_fn,
        config,
        device="cpu",
        checkpoint_dir=os.path.join(out_dir, "ckpt"),
    )
    save_state(
        os.path.join(out_dir, f"rank{rank}.pt"),
        {
            "module": result.module.state_dict(),
            "ema": result.ema.state_dict(),
            "first_batch": first_batches[0],
            "losses": [record["loss"] for record in result.history],
        },
    )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
