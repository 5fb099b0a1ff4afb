"""What :func:`~diffst_sc.train.fit_model` takes and gives: its settings, step info and result."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from ._ema import EMA
from ._precision import PRECISIONS

#: Settings that only change how a run is reported, not the weights it produces.
REPORTING_KEYS = frozenset({"checkpoint_every", "log_every", "progress"})
#: Settings that shape the learning-rate schedule.
SCHEDULE_KEYS = frozenset({"lr", "warmup_steps", "max_steps"})
#: Names of the history records that ``loss_fn``'s scalars may not take.
_RESERVED_KEYS = frozenset({"step", "loss", "lr", "grad_norm", "seconds"})

BatchFn = Callable[[int, torch.Generator], Mapping[str, torch.Tensor]]
LossFn = Callable[
    [nn.Module, Mapping[str, torch.Tensor], torch.Generator],
    tuple[torch.Tensor, Mapping[str, float | torch.Tensor]],
]


@dataclass
class TrainerConfig:
    """Settings of :func:`fit_model`.

    Attributes
    ----------
    lr
        Peak learning rate of AdamW.
    weight_decay
        Decoupled weight decay, applied to weight matrices and kernels only (not to biases and
        normalisation scales, i.e. parameters with fewer than two dimensions).
    betas
        AdamW's moment coefficients.
    max_steps
        Number of optimiser steps of the whole run (a resumed run stops here too).
    batch_size
        Samples per process per step; the loop does not read it, the code building
        ``batch_fn`` does (a run with ``N`` processes sees ``N * batch_size`` samples a step).
    ema_decay
        Largest decay of the exponential moving average of the weights, see :class:`EMA`.
    ema_start
        Steps during which the average just copies the weights before it starts averaging.
    grad_clip
        Maximum global gradient norm; ``None`` or ``0`` turns clipping off.
    warmup_steps
        Steps of linear learning-rate warm-up before the cosine decay to zero at ``max_steps``.
    mixed_precision
        ``"auto"`` (bf16 autocast on CUDA GPUs that support it, else fp16 with a gradient
        scaler; full precision off CUDA), ``"bf16"``, ``"fp16"`` (CUDA only) or ``"no"``.
    checkpoint_every
        Save ``checkpoint_dir/last.pt`` every this many steps (and always at the end);
        ``0`` saves only at the end and on interruption.
    seed
        Seed of every random draw of the loop, ``>= 0``: same seed, same weights (bit-identical
        on CPU).
    log_every
        Steps between history records (each averages the steps since the previous one); the
        only steps at which the loop waits for the device.
    progress
        Show a progress bar (on the main process only).
    find_unused_parameters
        Passed to :class:`~torch.nn.parallel.DistributedDataParallel`; needed when some
        parameters get no gradient in a step (slower, multi-process runs only).

    Examples
    --------
    >>> from diffst_sc.train import TrainerConfig
    >>> TrainerConfig(max_steps=500, lr=1e-3).max_steps
    500
    """

    lr: float = 2e-4
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    max_steps: int = 2000
    batch_size: int = 8
    ema_decay: float = 0.999
    ema_start: int = 0
    grad_clip: float | None = 1.0
    warmup_steps: int = 100
    mixed_precision: str = "auto"
    checkpoint_every: int = 500
    seed: int = 0
    log_every: int = 10
    progress: bool = True
    find_unused_parameters: bool = False

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)
        problems = []
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            problems.append(f"betas must be two numbers in [0, 1), got {self.betas}")
        if self.max_steps < 1:
            problems.append(f"max_steps must be >= 1, got {self.max_steps}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.ema_decay < 1:
            problems.append(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.ema_start < 0 or self.warmup_steps < 0 or self.checkpoint_every < 0:
            problems.append("ema_start, warmup_steps and checkpoint_every must be >= 0")
        if self.grad_clip is not None and self.grad_clip < 0:
            problems.append(
                f"grad_clip must be > 0 (or None for no clipping), got {self.grad_clip}"
            )
        if self.mixed_precision not in PRECISIONS:
            problems.append(
                f"mixed_precision must be one of {PRECISIONS}, got {self.mixed_precision!r}"
            )
        if self.seed < 0:
            problems.append(f"seed must be >= 0, got {self.seed}")
        if self.log_every < 1:
            problems.append(f"log_every must be >= 1, got {self.log_every}")
        if problems:
            raise ValueError("Invalid TrainerConfig: " + "; ".join(problems) + ".")

    def to_dict(self) -> dict:
        """The settings as plain data (JSON- and ``weights_only``-safe)."""
        data = asdict(self)
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> TrainerConfig:
        """Rebuild a config from :meth:`to_dict`'s output.

        Raises
        ------
        TypeError
            If ``data`` holds keys that are not settings.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TypeError(
                f"Unknown TrainerConfig settings {unknown}; known ones are {sorted(known)}."
            )
        return cls(**dict(data))


class StopTraining(Exception):  # noqa: N818 (a signal, not an error)
    """Raised by a callback of :func:`fit_model` to end training after the current step.

    The run ends as a finished one does: a checkpoint of the step is saved, and a later call
    with the same ``checkpoint_dir`` does not train further. Under ``torchrun`` every process
    must raise it at the same step (a callback deciding on values all processes share, such as
    the weight average, does).

    Examples
    --------
    >>> def stop_at_100(info):
    ...     if info.step == 100:
    ...         raise StopTraining
    """


@dataclass
class StepInfo:
    """What a callback receives after each optimiser step (on every process).

    Attributes
    ----------
    step
        Number of steps done.
    module
        The network (not the DDP wrapper).
    ema
        The weight average.
    optimizer
        The optimiser.
    history
        Records so far.
    record
        The record written at this step, or ``None`` if this step was not logged.

    Examples
    --------
    >>> def log_every_100(info):
    ...     if info.record is not None and info.step % 100 == 0:
    ...         print(info.step, info.record["loss"])
    """

    step: int
    module: nn.Module
    ema: EMA
    optimizer: torch.optim.Optimizer
    history: list[dict]
    record: dict | None


@dataclass
class TrainingResult:
    """Outcome of :func:`fit_model`.

    Attributes
    ----------
    module
        The trained network with its raw (not averaged) weights, on ``device``.
    ema
        The weight average, a :class:`torch.optim.swa_utils.AveragedModel`: ``result.ema.module``
        is the averaged network, ``result.ema.copy_to(result.module)`` installs its weights.
    history
        One record per logged step: ``step``, ``loss`` (mean since the previous record, over
        all processes), ``lr``, ``grad_norm`` (before clipping, when clipping), ``seconds``
        (training time so far, across resumptions) and the scalars of ``loss_fn``.
    step
        Steps done.
    device
        Where it trained.
    checkpoint_path
        ``checkpoint_dir/last.pt``, or ``None`` without a ``checkpoint_dir``.
    resumed_from
        Step of the checkpoint the run continued from, or ``None`` for a fresh run.

    Examples
    --------
    >>> result = fit_model(net, loss_fn, batch_fn, TrainerConfig())  # doctest: +SKIP
    >>> result.ema.copy_to(result.module)  # doctest: +SKIP
    """

    module: nn.Module
    ema: EMA
    history: list[dict] = field(default_factory=list)
    step: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    checkpoint_path: Path | None = None
    resumed_from: int | None = None

    @property
    def seconds(self) -> float:
        """Training time in seconds at the last record (``nan`` without records)."""
        return self.history[-1]["seconds"] if self.history else math.nan


def check_loss_output(output: object) -> tuple[torch.Tensor, Mapping]:
    """``loss_fn``'s output, checked: a 0-d loss and a dict of scalars with free names."""
    if not (isinstance(output, tuple) and len(output) == 2):
        raise TypeError(
            "loss_fn must return (loss, scalars): a 0-d tensor and a dict of floats/tensors to "
            f"log (use {{}} for none); got {type(output).__name__}."
        )
    loss, scalars = output
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise TypeError(f"loss_fn's loss must be a 0-d tensor, got {shape}; reduce it (.mean()).")
    if not isinstance(scalars, Mapping):
        raise TypeError(f"loss_fn's scalars must be a dict, got {type(scalars).__name__}.")
    clash = _RESERVED_KEYS.intersection(scalars)
    if clash:
        raise ValueError(f"loss_fn's scalars use reserved names {sorted(clash)}; rename them.")
    return loss, scalars
