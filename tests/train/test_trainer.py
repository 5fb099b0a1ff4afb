import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from diffst_sc.train import (
    EMA,
    TrainerConfig,
    derive_seed,
    fit_model,
    load_state,
    lr_factor,
    resolve_device,
    resolve_precision,
    save_state,
)

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


def test_lr_warms_up_then_decays_by_cosine():
    assert lr_factor(0, 4, 20) == pytest.approx(0.25)
    assert lr_factor(3, 4, 20) == pytest.approx(1.0)
    assert lr_factor(12, 4, 20) == pytest.approx(0.5)
    assert lr_factor(20, 4, 20) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(0, 0, 10) == pytest.approx(1.0)
    result = fit_model(
        make_model(), loss_fn, batch_fn, config(max_steps=20, warmup_steps=4, log_every=1)
    )
    lrs = [record["lr"] for record in result.history]
    assert lrs[:4] == pytest.approx([2.5e-3, 5e-3, 7.5e-3, 1e-2])
    assert lrs[4] == pytest.approx(1e-2)
    assert all(later < earlier for earlier, later in zip(lrs[4:], lrs[5:], strict=False))


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


def test_seeds_are_mixed():
    seeds = {derive_seed(0, step, rank, 1) for step in range(100) for rank in range(4)}
    assert len(seeds) == 400
    assert all(0 <= s < 2**63 for s in seeds)
    assert derive_seed(0, 1, 0) != derive_seed(0, 0, 1)


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
    assert result.ema.num_updates == 200

    def ema_loss(module):
        x = torch.randn(256, 4, generator=torch.Generator().manual_seed(9))
        return ((module(x) - x @ TARGET) ** 2).mean().item()

    assert ema_loss(averaged) < 0.05 * ema_loss(make_model())


def test_ema_update_rule():
    module = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        module.weight.fill_(0.0)
    ema = EMA(module, decay=0.5, start_step=1)
    with torch.no_grad():
        module.weight.fill_(4.0)
    ema.update()  # still copying
    assert ema.shadow["weight"].item() == 4.0
    with torch.no_grad():
        module.weight.fill_(8.0)
    ema.update()  # n = 1: decay min(0.5, 2 / 11)
    assert ema.shadow["weight"].item() == pytest.approx(4.0 + (1 - 2 / 11) * 4.0)
    ema.update()  # n = 2: decay min(0.5, 3 / 12) = 0.25
    previous = 4.0 + (1 - 2 / 11) * 4.0
    assert ema.shadow["weight"].item() == pytest.approx(previous + 0.75 * (8.0 - previous))
    with pytest.raises(ValueError, match="decay"):
        EMA(module, decay=1.0)


def test_ema_copies_integer_buffers():
    module = nn.BatchNorm1d(3)
    ema = EMA(module, decay=0.9)
    module(torch.randn(8, 3))
    ema.update()
    assert ema.shadow["num_batches_tracked"].item() == 1
    assert not torch.equal(ema.shadow["running_mean"], torch.zeros(3))


# -- checkpoints and resume --------------------------------------------------------------------


def test_interrupt_then_resume_equals_uninterrupted_run(tmp_path):
    full = fit_model(make_model(dropout=0.2), loss_fn, batch_fn, config())
    with pytest.raises(KeyboardInterrupt):
        fit_model(
            make_model(dropout=0.2),
            loss_fn,
            batch_fn,
            config(),
            checkpoint_dir=tmp_path,
            callbacks=[StopAt(13, KeyboardInterrupt())],
        )
    assert load_state(tmp_path / "last.pt")["step"] == 13
    resumed = fit_model(
        make_model(seed=7, dropout=0.2), loss_fn, batch_fn, config(), checkpoint_dir=tmp_path
    )
    assert resumed.resumed_from == 13 and resumed.step == 30
    assert_same_weights(full.module, resumed.module)
    for name, value in full.ema.shadow.items():
        assert torch.equal(value, resumed.ema.shadow[name]), name
    assert without_seconds(full.history) == without_seconds(resumed.history)


def test_error_in_callback_resumes_from_last_periodic_checkpoint(tmp_path):
    full = fit_model(make_model(), loss_fn, batch_fn, config())
    with pytest.raises(RuntimeError, match="boom"):
        fit_model(
            make_model(),
            loss_fn,
            batch_fn,
            config(),
            checkpoint_dir=tmp_path,
            callbacks=[StopAt(17, RuntimeError("boom"))],
        )
    resumed = fit_model(make_model(), loss_fn, batch_fn, config(), checkpoint_dir=tmp_path)
    assert resumed.resumed_from == 10
    assert_same_weights(full.module, resumed.module)


@pytest.fixture
def interactive_sigint():
    """SIGINT handled as in an interactive session (CI and background jobs may ignore it)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_finishes_the_step_then_saves(tmp_path, interactive_sigint):
    after_signal = []

    def press_ctrl_c(info):
        if info.step == 8 and not after_signal:
            os.kill(os.getpid(), signal.SIGINT)
            after_signal.append(info.step)  # reached: the signal did not cut the step short

    with pytest.raises(KeyboardInterrupt):
        fit_model(
            make_model(),
            loss_fn,
            batch_fn,
            config(),
            checkpoint_dir=tmp_path,
            callbacks=[press_ctrl_c],
        )
    assert after_signal == [8]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert load_state(tmp_path / "last.pt")["step"] == 8
    resumed = fit_model(make_model(), loss_fn, batch_fn, config(), checkpoint_dir=tmp_path)
    assert_same_weights(fit_model(make_model(), loss_fn, batch_fn, config()).module, resumed.module)


def test_resume_false_starts_afresh_and_finished_run_is_not_retrained(tmp_path):
    first = fit_model(make_model(), loss_fn, batch_fn, config(), checkpoint_dir=tmp_path)
    again = fit_model(make_model(seed=3), loss_fn, batch_fn, config(), checkpoint_dir=tmp_path)
    assert again.resumed_from == 30 and again.step == 30
    assert_same_weights(first.module, again.module)
    fresh = fit_model(
        make_model(), loss_fn, batch_fn, config(), checkpoint_dir=tmp_path, resume=False
    )
    assert fresh.resumed_from is None
    assert_same_weights(first.module, fresh.module)


def test_checkpoint_is_tensor_only(tmp_path):
    fit_model(
        make_model(), loss_fn, batch_fn, config(mixed_precision="no"), checkpoint_dir=tmp_path
    )
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["step"] == 30 and state["world_size"] == 1
    assert set(state) >= {"module", "ema", "optimizer", "scheduler", "scaler", "history", "config"}
    assert TrainerConfig.from_dict(state["config"]) == config(mixed_precision="no")
    assert isinstance(state["history"][0]["loss"], float)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary files left


def test_resume_into_another_model_says_what_to_do(tmp_path):
    fit_model(make_model(), loss_fn, batch_fn, config(max_steps=2), checkpoint_dir=tmp_path)
    other = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    with pytest.raises(RuntimeError, match="resume=False"):
        fit_model(other, loss_fn, batch_fn, config(max_steps=4), checkpoint_dir=tmp_path)


class Curriculum(nn.Module):
    """A model whose forward depends on a setting that is not part of its state dict."""

    def __init__(self):
        super().__init__()
        self.net = make_model()
        self.gain = 1.0

    def forward(self, x):
        return self.net(x * self.gain)


def set_gain(step, module):
    module.gain = 1.0 + step / 10


def test_before_step_hooks_keep_resume_exact(tmp_path):
    seen = []

    def record_gain(step, module):
        seen.append((step, module.gain))

    full = fit_model(Curriculum(), loss_fn, batch_fn, config(), before_step=[set_gain, record_gain])
    assert seen[:2] == [(0, 1.0), (1, 1.1)] and len(seen) == 30
    with pytest.raises(KeyboardInterrupt):
        fit_model(
            Curriculum(),
            loss_fn,
            batch_fn,
            config(),
            checkpoint_dir=tmp_path,
            callbacks=[StopAt(13, KeyboardInterrupt())],
            before_step=[set_gain],
        )
    resumed = fit_model(
        Curriculum(), loss_fn, batch_fn, config(), checkpoint_dir=tmp_path, before_step=[set_gain]
    )
    assert_same_weights(full.module, resumed.module)


def test_resume_with_changed_settings_warns(tmp_path, caplog):
    fit_model(make_model(), loss_fn, batch_fn, config(max_steps=10), checkpoint_dir=tmp_path)
    result = fit_model(
        make_model(), loss_fn, batch_fn, config(max_steps=15, lr=5e-3), checkpoint_dir=tmp_path
    )
    assert "lr: 0.01 -> 0.005" in caplog.text
    assert result.step == 15
    assert result.history[-1]["lr"] < 5e-3


def test_save_and_load_state_round_trip(tmp_path):
    state = {"w": torch.arange(6.0).reshape(2, 3), "meta": {"genes": ["A", "B"], "scale": 2.5}}
    path = save_state(tmp_path / "sub" / "model.pt", state)
    loaded = load_state(path)
    assert torch.equal(loaded["w"], state["w"]) and loaded["meta"] == state["meta"]
    assert torch.load(path, weights_only=True)["meta"]["genes"] == ["A", "B"]
    with pytest.raises(TypeError, match="float"):
        save_state(tmp_path / "bad.pt", {"x": np.float64(1.0)})
    assert not (tmp_path / "bad.pt").exists()
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["model.pt"]


def test_load_state_refuses_pickled_code(tmp_path):
    torch.save(nn.Linear(2, 2), tmp_path / "module.pt")
    with pytest.raises(ValueError, match="tensor-only"):
        load_state(tmp_path / "module.pt")
    with pytest.raises(FileNotFoundError):
        load_state(tmp_path / "missing.pt")


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
