"""The toy regression the trainer's tests train, and what they compare runs with."""

import math

import torch
from torch import nn

from diffst_sc.train import TrainerConfig

TARGET = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])


def make_model(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(dropout), nn.Linear(16, 1))


def batch_fn(step: int, generator: torch.Generator) -> dict:
    x = torch.randn(16, 4, generator=generator)
    return {"x": x, "y": x @ TARGET}


def loss_fn(model, batch, generator):
    # The device generator feeds a (tiny) input noise, as diffusion noise would.
    noise = 0.01 * torch.randn(batch["x"].shape, generator=generator, device=batch["x"].device)
    error = model(batch["x"] + noise) - batch["y"]
    return (error**2).mean(), {"mae": error.abs().mean()}


def config(**overrides) -> TrainerConfig:
    settings = dict(
        lr=1e-2, max_steps=30, warmup_steps=3, log_every=5, checkpoint_every=10, progress=False
    )
    settings.update(overrides)
    return TrainerConfig(**settings)


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def cosine_lrs(peak: float, warmup: int, total: int) -> list[float]:
    """The rate of each step: linear warm-up to ``peak``, then a cosine that reaches 0."""
    return [
        peak * (s + 1) / warmup
        if s < warmup
        else peak * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup)))
        for s in range(total)
    ]


def without_seconds(history):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


class StopAt:
    """Callback raising ``error`` once after step ``step``."""

    def __init__(self, step: int, error: BaseException):
        self.step, self.error, self.fired = step, error, False

    def __call__(self, info):
        if info.step == self.step and not self.fired:
            self.fired = True
            raise self.error


def run_interrupted(model: nn.Module, folder, *, at: int = 13, error: BaseException | None = None,
                    **fit_kw) -> None:
    """Train ``model`` with checkpoints in ``folder`` until ``error`` (Ctrl+C) stops it at ``at``."""
    import pytest

    from diffst_sc.train import fit_model

    error = error if error is not None else KeyboardInterrupt()
    with pytest.raises(type(error)):
        fit_model(model, loss_fn, batch_fn, config(), checkpoint_dir=folder,
                  callbacks=[StopAt(at, error)], **fit_kw)
