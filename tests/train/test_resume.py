"""Checkpoints of fit_model: resuming gives what the uninterrupted run gives."""

import os
import signal

import numpy as np
import pytest
import torch
from _toy_training import (
    assert_same_weights,
    batch_fn,
    config,
    cosine_lrs,
    loss_fn,
    make_model,
    run_interrupted,
    without_seconds,
)
from torch import nn

from diffst_sc.train import StopTraining, TrainerConfig, fit_model, load_state, save_state


def test_interrupt_then_resume_equals_uninterrupted_run(tmp_path):
    full = fit_model(make_model(dropout=0.2), loss_fn, batch_fn, config())
    run_interrupted(make_model(dropout=0.2), tmp_path)
    assert load_state(tmp_path / "last.pt")["step"] == 13
    resumed = fit_model(
        make_model(seed=7, dropout=0.2), loss_fn, batch_fn, config(), checkpoint_dir=tmp_path
    )
    assert resumed.resumed_from == 13 and resumed.step == 30
    assert_same_weights(full.module, resumed.module)
    assert_same_weights(full.ema, resumed.ema)
    assert without_seconds(full.history) == without_seconds(resumed.history)


def test_checkpoint_of_the_previous_format_resumes_exactly(tmp_path):
    """Version 1 kept the EMA as shadow weights and an update count, the schedule as a LambdaLR."""
    full = fit_model(make_model(), loss_fn, batch_fn, config())
    run_interrupted(make_model(), tmp_path)
    state = load_state(tmp_path / "last.pt")
    shadow = {k.removeprefix("module."): v for k, v in state["ema"].items() if k != "n_averaged"}
    state.update(
        version=1,
        ema={"decay": 0.999, "start_step": 0, "num_updates": 13, "shadow": shadow},
        scheduler={"base_lrs": [1e-2, 1e-2], "last_epoch": 13, "lr_lambdas": [None, None]},
    )
    save_state(tmp_path / "last.pt", state)
    resumed = fit_model(make_model(), loss_fn, batch_fn, config(), checkpoint_dir=tmp_path)
    assert resumed.resumed_from == 13
    assert_same_weights(full.module, resumed.module)
    assert_same_weights(full.ema, resumed.ema)
    assert without_seconds(full.history) == without_seconds(resumed.history)


def test_error_in_callback_resumes_from_last_periodic_checkpoint(tmp_path):
    full = fit_model(make_model(), loss_fn, batch_fn, config())
    run_interrupted(make_model(), tmp_path, at=17, error=RuntimeError("boom"))
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


def test_a_callback_stops_training_early_and_the_stop_holds_on_resume(tmp_path):
    """StopTraining (early stopping) ends the run at that step, as a finished one: its history
    ends there, and a later call with the same folder trains no further."""

    def stop_at_7(info):
        if info.step == 7:
            raise StopTraining

    first = fit_model(make_model(), loss_fn, batch_fn, config(), checkpoint_dir=tmp_path,
                      callbacks=[stop_at_7])
    assert first.step == 7 and first.history[-1]["step"] == 7
    again = fit_model(make_model(seed=3), loss_fn, batch_fn, config(), checkpoint_dir=tmp_path)
    assert again.resumed_from == 7 and again.step == 7
    assert_same_weights(first.module, again.module)


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
    run_interrupted(Curriculum(), tmp_path, before_step=[set_gain])
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
    # The schedule of the new settings, from the step the run stopped at.
    assert [record["lr"] for record in result.history[-1:]] == pytest.approx(
        cosine_lrs(5e-3, 3, 15)[14:]
    )


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
