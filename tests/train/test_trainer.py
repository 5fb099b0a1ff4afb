"""The training loop of fit_model: what it learns, its schedule, seeds, EMA, devices, processes."""

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _toy_training import (
    TARGET,
    assert_same_weights,
    batch_fn,
    config,
    cosine_lrs,
    loss_fn,
    make_model,
    without_seconds,
)
from torch import nn

from diffst_sc.train import (
    EMA,
    TrainerConfig,
    fit_model,
    load_state,
    resolve_device,
    resolve_precision,
)

# -- training --------------------------------------------------------------------------------


def test_loss_falls_on_regression():
    result = fit_model(make_model(), loss_fn, batch_fn, config(max_steps=200, log_every=20))
    losses = [record["loss"] for record in result.history]
    assert len(losses) == 10
    assert losses[-1] < 0.05 * losses[0]
    assert result.step == 200 and result.resumed_from is None
    assert set(result.history[0]) == {"step", "loss", "lr", "grad_norm", "seconds", "mae"}
    assert [record["step"] for record in result.history] == list(range(20, 201, 20))


def test_same_seed_gives_identical_weights_and_other_seed_differs():
    a = fit_model(make_model(dropout=0.2), loss_fn, batch_fn, config(seed=1))
    b = fit_model(make_model(dropout=0.2), loss_fn, batch_fn, config(seed=1))
    c = fit_model(make_model(dropout=0.2), loss_fn, batch_fn, config(seed=2))
    assert_same_weights(a.module, b.module)
    assert without_seconds(a.history) == without_seconds(b.history)
    assert not torch.equal(a.module[0].weight, c.module[0].weight)


def test_callers_random_state_is_left_alone():
    model = make_model(dropout=0.5)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fit_model(model, loss_fn, batch_fn, config(max_steps=5))
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("warmup", [0, 1, 4])
def test_lr_warms_up_then_decays_by_cosine(warmup):
    result = fit_model(
        make_model(), loss_fn, batch_fn, config(max_steps=20, warmup_steps=warmup, log_every=1)
    )
    lrs = [record["lr"] for record in result.history]
    assert lrs == pytest.approx(cosine_lrs(1e-2, warmup, 20), rel=1e-9, abs=1e-15)
    if warmup == 4:
        assert lrs[:5] == pytest.approx([2.5e-3, 5e-3, 7.5e-3, 1e-2, 1e-2])
        assert lrs[12] == pytest.approx(5e-3)
    assert all(later < earlier for earlier, later in zip(lrs[4:], lrs[5:], strict=False))
    assert 0 < lrs[-1] < 1e-3


def test_grad_clip_off_logs_no_grad_norm():
    result = fit_model(make_model(), loss_fn, batch_fn, config(max_steps=5, grad_clip=None))
    assert "grad_norm" not in result.history[0]


def test_weight_decay_skips_biases():
    groups = []
    fit_model(
        make_model(),
        loss_fn,
        batch_fn,
        config(max_steps=1, weight_decay=0.3),
        callbacks=[lambda info: groups.extend(info.optimizer.param_groups)],
    )
    decays = {tuple(p.ndim for p in group["params"]): group["weight_decay"] for group in groups}
    assert decays == {(2, 2): 0.3, (1, 1): 0.0}


def test_each_step_draws_its_own_random_streams():
    def draws(seed):
        seen = []

        def recording_batch_fn(step, generator):
            seen.append(("batch", step, torch.rand(1, generator=generator).item()))
            return batch_fn(step, generator)

        def recording_loss_fn(model, batch, generator):
            seen.append(("noise", len(seen), torch.rand(1, generator=generator).item()))
            seen.append(("default", len(seen), torch.rand(1).item()))
            return loss_fn(model, batch, generator)

        fit_model(make_model(), recording_loss_fn, recording_batch_fn, config(seed=seed))
        return seen

    first = draws(seed=3)
    assert first == draws(seed=3)
    values = [value for _, _, value in first]
    assert len(set(values)) == len(values) == 90  # no stream repeats another, nor a step
    assert set(values).isdisjoint(value for _, _, value in draws(seed=4))
    with pytest.raises(ValueError, match="seed"):
        TrainerConfig(seed=-1)


# -- EMA -------------------------------------------------------------------------------------


def test_ema_differs_from_and_tracks_the_weights():
    model = make_model()
    initial = [p.detach().clone() for p in model.parameters()]
    result = fit_model(model, loss_fn, batch_fn, config(max_steps=200, ema_decay=0.99))
    averaged = make_model(seed=5)
    result.ema.copy_to(averaged)
    for start, raw, ema in zip(initial, model.parameters(), averaged.parameters(), strict=True):
        assert not torch.equal(raw, ema)
        assert (ema - raw).norm() < 0.5 * (start - raw).norm()
    assert_same_weights(result.ema.module, averaged)

    def ema_loss(module):
        x = torch.randn(256, 4, generator=torch.Generator().manual_seed(9))
        return ((module(x) - x @ TARGET) ** 2).mean().item()

    assert ema_loss(averaged) < 0.05 * ema_loss(make_model())


def test_ema_decay_warms_up_after_the_copying_steps():
    module = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        module.weight.fill_(0.0)
    ema = EMA(module, decay=0.5, start_step=1)
    assert ema.module.weight.item() == 0.0  # starts as the module
    with torch.no_grad():
        module.weight.fill_(4.0)
    ema.update_parameters(module)  # still copying
    assert ema.module.weight.item() == 4.0
    with torch.no_grad():
        module.weight.fill_(8.0)
    ema.update_parameters(module)  # n = 1: decay min(0.5, 2 / 11)
    assert ema.module.weight.item() == pytest.approx(4.0 + (1 - 2 / 11) * 4.0)
    ema.update_parameters(module)  # n = 2: decay min(0.5, 3 / 12) = 0.25
    previous = 4.0 + (1 - 2 / 11) * 4.0
    assert ema.module.weight.item() == pytest.approx(previous + 0.75 * (8.0 - previous))
    for _ in range(50):  # the decay is capped at 0.5 from n = 8 on
        ema.update_parameters(module)
    with torch.no_grad():
        module.weight.fill_(0.0)
    ema.update_parameters(module)
    assert ema.module.weight.item() == pytest.approx(0.5 * 8.0)
    with pytest.raises(ValueError, match="decay"):
        EMA(module, decay=1.0)


def test_ema_start_copies_the_weights_for_that_many_steps():
    copied = fit_model(make_model(), loss_fn, batch_fn, config(ema_start=30))
    assert_same_weights(copied.ema.module, copied.module)
    averaged = fit_model(make_model(), loss_fn, batch_fn, config(ema_start=25))
    assert not torch.equal(averaged.ema.module[0].weight, averaged.module[0].weight)


def test_ema_averages_float_buffers_and_copies_integer_ones():
    module = nn.BatchNorm1d(3)
    ema = EMA(module, decay=0.9)
    module(torch.randn(8, 3))
    ema.update_parameters(module)
    assert ema.module.num_batches_tracked.item() == 1
    assert not torch.equal(ema.module.running_mean, torch.zeros(3))
    assert not torch.equal(ema.module.running_mean, module.running_mean)


# -- argument checks ---------------------------------------------------------------------------


def test_bad_loss_fn_output_is_explained():
    with pytest.raises(TypeError, match=r"\(loss, scalars\)"):
        fit_model(
            make_model(), lambda m, b, g: ((m(b["x"]) - b["y"]) ** 2).mean(), batch_fn, config()
        )
    with pytest.raises(TypeError, match="0-d"):
        fit_model(make_model(), lambda m, b, g: ((m(b["x"]) - b["y"]) ** 2, {}), batch_fn, config())
    with pytest.raises(ValueError, match="reserved"):
        fit_model(make_model(), lambda m, b, g: (m(b["x"]).mean(), {"lr": 1.0}), batch_fn, config())


def test_non_finite_loss_stops_training(tmp_path):
    def nan_loss(model, batch, generator):
        return model(batch["x"]).mean() * float("nan"), {}

    with pytest.raises(FloatingPointError, match="lr"):
        fit_model(make_model(), nan_loss, batch_fn, config(), checkpoint_dir=tmp_path)
    assert not (tmp_path / "last.pt").exists()


def test_invalid_config_lists_problems():
    with pytest.raises(ValueError, match="lr must be > 0.*max_steps"):
        TrainerConfig(lr=0, max_steps=0)
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainerConfig(mixed_precision="half")
    with pytest.raises(TypeError, match="Unknown"):
        TrainerConfig.from_dict({"learning_rate": 1.0})


# -- devices -----------------------------------------------------------------------------------


def test_auto_device_is_the_best_available():
    if torch.cuda.is_available():
        expected = "cuda"
    elif torch.backends.mps.is_available():
        expected = "mps"
    else:
        expected = "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="device name"):
        resolve_device("gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_request_without_gpu_is_explained():
    with pytest.raises(RuntimeError, match="device='cpu'"):
        resolve_device("cuda")


def test_mixed_precision_is_off_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) is None
    assert resolve_precision("no", cpu) is None
    with pytest.raises(ValueError, match="CUDA"):
        resolve_precision("fp16", cpu)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["auto", "fp16", "no"])
def test_trains_on_cuda(tmp_path, precision):
    result = fit_model(
        make_model(),
        loss_fn,
        batch_fn,
        config(max_steps=100, mixed_precision=precision),
        device="cuda",
        checkpoint_dir=tmp_path,
    )
    assert result.device.type == "cuda"
    assert next(result.module.parameters()).device.type == "cuda"
    assert result.history[-1]["loss"] < 0.2 * result.history[0]["loss"]
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert bool(state["scaler"]) == (resolve_precision(precision, result.device) == torch.float16)
    resumed = fit_model(
        make_model(),
        loss_fn,
        batch_fn,
        config(max_steps=100),
        device="cpu",
        checkpoint_dir=tmp_path,
    )
    assert resumed.resumed_from == 100


# -- several processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_gloo_run_ends_with_identical_weights(tmp_path):
    worker = Path(__file__).with_name("_ddp_worker.py")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        str(worker),
        str(tmp_path),
        "40",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rank0, rank1 = load_state(tmp_path / "rank0.pt"), load_state(tmp_path / "rank1.pt")
    for name, value in rank0["module"].items():
        assert torch.equal(value, rank1["module"][name]), name
    for name, value in rank0["ema"].items():
        assert torch.equal(value, rank1["ema"][name]), name
    assert not torch.equal(rank0["first_batch"], rank1["first_batch"])
    assert rank0["losses"] == rank1["losses"]  # averaged over both processes
    assert rank0["losses"][-1] < 0.3 * rank0["losses"][0]
    checkpoint = load_state(tmp_path / "ckpt" / "last.pt")
    assert checkpoint["world_size"] == 2 and checkpoint["step"] == 40
    assert math.isfinite(checkpoint["history"][-1]["loss"])
