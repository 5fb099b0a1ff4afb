"""The generic training loop: AdamW, warm-up + cosine schedule, EMA, mixed precision, DDP.

The loop knows nothing of the network or the diffusion; it is driven by two functions:

``batch_fn(step, generator) -> dict[str, Tensor]``
    Builds the batch of global step ``step`` on the CPU from ``generator``, a CPU
    :class:`torch.Generator` seeded from ``(seed, step, rank)``.
``loss_fn(module, batch, generator) -> (loss, scalars)``
    Returns the scalar loss and a dict of scalars to log (floats or 0-d tensors); ``generator``
    lives on the training device, seeded from ``(seed, step, rank)``, for diffusion noise and
    timesteps. ``module`` must be *called* (``module(...)``) for the forward pass: under
    ``torchrun`` it is a :class:`~torch.nn.parallel.DistributedDataParallel` wrapper, which only
    synchronises gradients through its ``forward``; :func:`unwrap_module` gives the network.

Because every random draw of a step is seeded from ``(seed, step, rank)``, a run stopped after
step ``k`` and resumed from its checkpoint replays exactly what the uninterrupted run would have
done.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from ._checkpoint import load_state, save_state
from ._device import DistributedContext, device_for_process, distributed_context, process_group

logger = logging.getLogger(__name__)

#: File name of the training checkpoint inside ``checkpoint_dir``.
CHECKPOINT_NAME = "last.pt"
_CHECKPOINT_FORMAT = "diffst_sc.training"
_CHECKPOINT_VERSION = 1
_PRECISIONS = ("auto", "bf16", "fp16", "no")
_RESERVED_KEYS = frozenset({"step", "loss", "lr", "grad_norm", "seconds"})
# Settings that only change how a run is reported, not the weights it produces.
_REPORTING_KEYS = frozenset({"checkpoint_every", "log_every", "progress"})
# Independent random streams of one step.
_STREAM_BATCH, _STREAM_NOISE, _STREAM_TORCH = 1, 2, 3

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
        Decay of the exponential moving average of the weights, see :class:`EMA`.
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
        Seed of every random draw of the loop: same seed, same weights (bit-identical on CPU).
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
        if self.mixed_precision not in _PRECISIONS:
            problems.append(
                f"mixed_precision must be one of {_PRECISIONS}, got {self.mixed_precision!r}"
            )
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


class EMA:
    """Exponential moving average of a module's weights ("shadow" weights).

    After ``ema_start`` updates that copy the weights, each update moves the shadow towards the
    current weights: ``shadow += (1 - d) * (weights - shadow)`` with
    ``d = min(decay, (1 + n) / (10 + n))`` at the ``n``-th averaging update, so early updates
    forget the random initialisation quickly. Floating-point buffers (e.g. batch-norm statistics)
    are averaged too, integer ones are copied.

    The average keeps references to the module's tensors: build it after moving the module to
    its device.

    Parameters
    ----------
    module
        The module whose weights are averaged.
    decay
        Largest decay, in ``[0, 1)``.
    start_step
        Number of initial updates that copy the weights instead of averaging them.

    Examples
    --------
    >>> import torch
    >>> from diffst_sc.train import EMA
    >>> net = torch.nn.Linear(2, 2)
    >>> ema = EMA(net, decay=0.99)
    >>> ema.copy_to(net)
    """

    def __init__(self, module: nn.Module, decay: float = 0.999, start_step: int = 0) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}.")
        if start_step < 0:
            raise ValueError(f"EMA start_step must be >= 0, got {start_step}.")
        self.decay = float(decay)
        self.start_step = int(start_step)
        self.num_updates = 0
        live = module.state_dict(keep_vars=True)
        self.shadow: dict[str, torch.Tensor] = {
            name: tensor.detach().clone() for name, tensor in live.items()
        }
        averaged = [name for name, tensor in live.items() if tensor.is_floating_point()]
        copied = [name for name, tensor in live.items() if not tensor.is_floating_point()]
        self._averaged_shadow = [self.shadow[name] for name in averaged]
        self._averaged_live = [live[name].detach() for name in averaged]
        self._copied = [(self.shadow[name], live[name].detach()) for name in copied]

    def current_decay(self) -> float:
        """Decay the next update will use (``0`` while it still copies)."""
        n = self.num_updates + 1 - self.start_step
        if n <= 0:
            return 0.0
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self) -> None:
        """Move the shadow weights towards the module's current weights."""
        decay = self.current_decay()
        if self._averaged_shadow:
            torch._foreach_lerp_(self._averaged_shadow, self._averaged_live, 1.0 - decay)
        for shadow, live in self._copied:
            shadow.copy_(live)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Load the averaged weights into ``module`` (same architecture, any device)."""
        module.load_state_dict(self.shadow)

    def state_dict(self) -> dict:
        """Shadow weights and counters, tensor-only."""
        return {
            "decay": self.decay,
            "start_step": self.start_step,
            "num_updates": self.num_updates,
            "shadow": dict(self.shadow),
        }

    @torch.no_grad()
    def load_state_dict(self, state: Mapping) -> None:
        """Restore :meth:`state_dict`'s output in place.

        Raises
        ------
        KeyError
            If the saved shadow does not have this module's tensors.
        """
        saved = state["shadow"]
        if set(saved) != set(self.shadow):
            missing = sorted(set(self.shadow) - set(saved))[:5]
            extra = sorted(set(saved) - set(self.shadow))[:5]
            raise KeyError(
                f"EMA state is for another model (missing {missing}, unexpected {extra})."
            )
        for name, tensor in saved.items():
            self.shadow[name].copy_(tensor)
        self.decay = float(state["decay"])
        self.start_step = int(state["start_step"])
        self.num_updates = int(state["num_updates"])


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
        The weight average; ``result.ema.copy_to(result.module)`` installs it.
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


def unwrap_module(module: nn.Module) -> nn.Module:
    """The network inside a :class:`~torch.nn.parallel.DistributedDataParallel` wrapper.

    Examples
    --------
    >>> import torch
    >>> from diffst_sc.train import unwrap_module
    >>> net = torch.nn.Linear(2, 2)
    >>> unwrap_module(net) is net
    True
    """
    from torch.nn.parallel import DistributedDataParallel

    return module.module if isinstance(module, DistributedDataParallel) else module


def derive_seed(*parts: int) -> int:
    """Mix integers (seed, step, rank, ...) into one 63-bit seed with SplitMix64.

    Parameters
    ----------
    *parts
        Integers, any sign.

    Returns
    -------
    int
        A seed in ``[0, 2**63)``; neighbouring inputs give unrelated seeds.
    """
    state = 0
    for part in parts:
        state = _splitmix64(state ^ (int(part) & _MASK64))
    return state >> 1


_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def lr_factor(step: int, warmup_steps: int, max_steps: int) -> float:
    """Multiplier of the peak learning rate at optimiser step ``step`` (:func:`fit_model`'s).

    Linear warm-up over ``warmup_steps`` steps (reaching 1 at the last warm-up step), then a
    cosine decay that reaches 0 at ``max_steps``.

    Parameters
    ----------
    step
        Optimiser step, 0-based.
    warmup_steps
        Steps of the linear warm-up (0: none).
    max_steps
        Step at which the rate reaches 0.

    Returns
    -------
    float
        The factor, in [0, 1].

    Examples
    --------
    >>> lr_factor(0, 4, 20), lr_factor(3, 4, 20), lr_factor(12, 4, 20)
    (0.25, 1.0, 0.5)
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def resolve_precision(mixed_precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``mixed_precision`` on ``device``, ``None`` for full precision.

    Parameters
    ----------
    mixed_precision
        ``"auto"`` (bfloat16 on a CUDA GPU that has it, else float16 on CUDA, full precision off
        CUDA), ``"bf16"``, ``"fp16"`` or ``"no"``; as :class:`TrainerConfig` takes it.
    device
        Where training runs.

    Returns
    -------
    torch.dtype or None
        ``torch.bfloat16`` or ``torch.float16``; ``None`` for full precision.

    Raises
    ------
    ValueError
        For an unknown setting, or mixed precision asked for off CUDA.
    """
    if mixed_precision not in _PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {_PRECISIONS}, got {mixed_precision!r}.")
    if mixed_precision == "no" or (mixed_precision == "auto" and device.type != "cuda"):
        return None
    if device.type != "cuda":
        raise ValueError(
            f"mixed_precision={mixed_precision!r} needs a CUDA device but training runs on "
            f"{device}; use mixed_precision='auto' (full precision off CUDA) or 'no'."
        )
    bf16_ok = torch.cuda.is_bf16_supported()
    if mixed_precision == "bf16" and not bf16_ok:
        raise ValueError(
            "mixed_precision='bf16' but this GPU has no bfloat16 support; use 'fp16' or 'auto'."
        )
    if mixed_precision == "bf16" or (mixed_precision == "auto" and bf16_ok):
        return torch.bfloat16
    return torch.float16


def fit_model(
    module: nn.Module,
    loss_fn: LossFn,
    batch_fn: BatchFn,
    config: TrainerConfig | None = None,
    *,
    device: str | torch.device = "auto",
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    callbacks: Sequence[Callable[[StepInfo], object]] = (),
    before_step: Sequence[Callable[[int, nn.Module], object]] = (),
) -> TrainingResult:
    """Train ``module`` on the loss ``loss_fn`` over the batches of ``batch_fn``.

    Parameters
    ----------
    module
        The network; moved to the training device and trained in place.
    loss_fn
        ``loss_fn(module, batch, generator) -> (loss, scalars)``, see the module docstring.
    batch_fn
        ``batch_fn(step, generator) -> dict[str, Tensor]`` on the CPU; tensors are moved to
        the device by the loop.
    config
        Optimisation settings; :class:`TrainerConfig` defaults when ``None``.
    device
        ``"auto"`` (CUDA, then MPS, then CPU), or a device name; under ``torchrun`` each process
        takes ``cuda:<LOCAL_RANK>``.
    checkpoint_dir
        Folder of ``last.pt``, written (atomically, by the main process only) every
        ``config.checkpoint_every`` steps, at the end and on interruption.
    resume
        Continue from ``checkpoint_dir/last.pt`` if it exists (the result is then exactly what
        an uninterrupted run would have given); ``False`` starts afresh and overwrites it.
    callbacks
        Called with a :class:`StepInfo` after every step, on every process. A callback that
        raises stops training; the state of the last periodic checkpoint is kept.
    before_step
        Called as ``hook(step, module)`` before every step (0-based ``step``, the network not
        its DDP wrapper), on every process. Settings that follow a schedule over steps
        (curricula) belong here rather than in ``callbacks``: a resumed run then applies the
        setting of its first step too, which keeps resumption exact.

    Returns
    -------
    TrainingResult
        The trained module, its weight average and the history.

    Raises
    ------
    KeyboardInterrupt
        When interrupted (Ctrl+C, or a callback raising ``KeyboardInterrupt``). A checkpoint
        of the last completed step is saved first, so ``fit_model(..., resume=True)`` continues
        where it stopped. The first Ctrl+C lets the current step finish; a second one stops at
        once (the checkpoint is then saved only if the weights are not half-updated).
    FloatingPointError
        If the loss becomes NaN or infinite (checked at logged steps).

    Notes
    -----
    Under ``torchrun`` (``WORLD_SIZE > 1``) the processes form a ``torch.distributed`` group
    (NCCL on CUDA, Gloo on the CPU), the module is wrapped in
    :class:`~torch.nn.parallel.DistributedDataParallel`, each process draws its own batches
    (seeded by its rank) and all end with the same weights. An interrupt is then acted on at the
    next logged step, so that all processes stop together.

    Examples
    --------
    >>> from diffst_sc.train import TrainerConfig, fit_model
    >>> result = fit_model(net, loss_fn, batch_fn, TrainerConfig(max_steps=100),
    ...                    checkpoint_dir="ckpt")  # doctest: +SKIP
    """
    config = config if config is not None else TrainerConfig()
    context = distributed_context()
    device = device_for_process(device, context)
    with process_group(context, device), _preserved_rng(device):
        run = _Run(module, loss_fn, batch_fn, config, device, context, callbacks, before_step)
        path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
        resumed_from = None
        if path is not None and resume and path.is_file():
            run.restore(path)
            resumed_from = run.step
            logger.info("Resuming training from step %d (%s).", run.step, path)
        run.check_same_start()
        run.train(path)
        return TrainingResult(
            module=run.module,
            ema=run.ema,
            history=run.history,
            step=run.step,
            device=device,
            checkpoint_path=path,
            resumed_from=resumed_from,
        )


class _Run:
    """State of one training run; ``train`` is the loop."""

    def __init__(
        self,
        module: nn.Module,
        loss_fn: LossFn,
        batch_fn: BatchFn,
        config: TrainerConfig,
        device: torch.device,
        context: DistributedContext,
        callbacks: Sequence[Callable[[StepInfo], object]],
        before_step: Sequence[Callable[[int, nn.Module], object]],
    ) -> None:
        self.config, self.device, self.context = config, device, context
        self.loss_fn, self.batch_fn = loss_fn, batch_fn
        self.callbacks, self.before_step = tuple(callbacks), tuple(before_step)
        self.module = module.to(device)
        if context.is_distributed:
            _broadcast_from_main(self.module)
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("The module has no trainable parameters (requires_grad=True).")
        self.optimizer = torch.optim.AdamW(
            _param_groups(self.params, config.weight_decay),
            lr=config.lr,
            betas=config.betas,
            fused=device.type == "cuda",
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_lambda())
        self.autocast_dtype = resolve_precision(config.mixed_precision, device)
        self.scaler = torch.amp.GradScaler(
            device.type, enabled=self.autocast_dtype == torch.float16
        )
        self.ema = EMA(self.module, config.ema_decay, config.ema_start)
        self.step = 0
        self.history: list[dict] = []
        self.seconds_before = 0.0
        self.batch_generator = torch.Generator()
        self.noise_generator = torch.Generator(device=device)
        self._cuda_index = (
            (device.index if device.index is not None else torch.cuda.current_device())
            if device.type == "cuda"
            else None
        )
        self._committing = False
        self._sums: dict[str, torch.Tensor | float] = {}
        self._count = 0
        self._last_lr = config.lr
        self._clock = time.perf_counter()

    def _lr_lambda(self) -> Callable[[int], float]:
        warmup, total = self.config.warmup_steps, self.config.max_steps

        def factor(step: int) -> float:
            return lr_factor(step, warmup, total)

        return factor

    # -- checkpoints ---------------------------------------------------------------------------

    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self._clock

    def checkpoint(self) -> dict:
        return {
            "format": _CHECKPOINT_FORMAT,
            "version": _CHECKPOINT_VERSION,
            "step": self.step,
            "module": self.module.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "history": self.history,
            "log_sums": dict(self._sums),
            "log_count": self._count,
            "config": self.config.to_dict(),
            "world_size": self.context.world_size,
            "seconds": self.seconds(),
        }

    def save(self, path: Path | None) -> None:
        if path is not None and self.context.is_main:
            save_state(path, self.checkpoint())

    def restore(self, path: Path) -> None:
        state = load_state(path)
        if state.get("format") != _CHECKPOINT_FORMAT:
            raise ValueError(
                f"{path} is not a diffst_sc training checkpoint; remove it or pass another "
                "checkpoint_dir (or resume=False to overwrite it)."
            )
        try:
            self.module.load_state_dict(state["module"])
            self.ema.load_state_dict(state["ema"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, KeyError, ValueError) as err:
            raise RuntimeError(
                f"The checkpoint {path} was written for a different model or optimiser ({err}). "
                "Remove it, pass another checkpoint_dir, or resume=False to start afresh."
            ) from err
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"] and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.history = list(state["history"])
        # Partial sums of the record in progress, so the history continues as if never stopped.
        self._sums = {k: _on(v, self.device) for k, v in state["log_sums"].items()}
        self._count = int(state["log_count"])
        self.seconds_before = float(state["seconds"])
        self._warn_changed_settings(state["config"], int(state["world_size"]))
        self._apply_settings()

    def check_same_start(self) -> None:
        """Fail early if the processes would start from different steps."""
        if not self.context.is_distributed:
            return
        import torch.distributed as dist

        steps = torch.tensor([self.step, -self.step], device=self.device)
        dist.all_reduce(steps, op=dist.ReduceOp.MAX)
        if steps[0].item() != -steps[1].item():
            raise RuntimeError(
                f"Process {self.context.rank} starts at step {self.step} but another process "
                "does not: checkpoint_dir must be a folder that all processes can read (a shared "
                "filesystem), or pass resume=False."
            )

    def _warn_changed_settings(self, saved: Mapping, saved_world_size: int) -> None:
        current = self.config.to_dict()
        changed = [
            f"{key}: {saved.get(key)!r} -> {value!r}"
            for key, value in current.items()
            if key not in _REPORTING_KEYS and saved.get(key) != value
        ]
        if saved_world_size != self.context.world_size:
            changed.append(f"processes: {saved_world_size} -> {self.context.world_size}")
        if changed:
            logger.warning(
                "Resuming from a checkpoint written with other settings (%s); continuing with the "
                "new ones, so the result will differ from an uninterrupted run of either.",
                "; ".join(changed),
            )

    def _apply_settings(self) -> None:
        """Make the optimiser and schedule follow the current config after a restore."""
        cfg = self.config
        factor = self._lr_lambda()(self.scheduler.last_epoch)
        for group in self.optimizer.param_groups:
            group["betas"] = cfg.betas
            group["weight_decay"] = cfg.weight_decay if group["decay"] else 0.0
            group["initial_lr"] = cfg.lr
            group["lr"] = cfg.lr * factor
        self.scheduler.base_lrs = [cfg.lr] * len(self.optimizer.param_groups)
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    # -- the loop ------------------------------------------------------------------------------

    def train(self, path: Path | None) -> None:
        cfg = self.config
        if self.step >= cfg.max_steps:
            return
        train_module = self._wrapped()
        was_training = self.module.training
        self.module.train()
        self._clock = time.perf_counter()
        bar = _progress_bar(cfg, self.step, show=cfg.progress and self.context.is_main)
        try:
            with bar, _deferred_interrupt() as interrupt:
                self._loop(train_module, path, bar, interrupt)
        except KeyboardInterrupt:
            self._save_on_interrupt(path)
            raise
        finally:
            self.module.train(was_training)

    def _loop(self, train_module: nn.Module, path, bar, interrupt: _Interrupt) -> None:
        cfg = self.config
        while self.step < cfg.max_steps:
            self._train_step(train_module)
            logged = self.step % cfg.log_every == 0 or self.step == cfg.max_steps
            record, stop = self._log(bar, interrupt.requested) if logged else (None, False)
            if path is not None and (
                self.step == cfg.max_steps
                or (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0)
            ):
                self.save(path)
            bar.update(1)
            if self.callbacks:
                info = StepInfo(
                    self.step, self.module, self.ema, self.optimizer, self.history, record
                )
                for callback in self.callbacks:
                    callback(info)
            if stop or (interrupt.requested and not self.context.is_distributed):
                raise KeyboardInterrupt

    def _wrapped(self) -> nn.Module:
        if not self.context.is_distributed:
            return self.module
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(
            self.module,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=self.config.find_unused_parameters,
        )

    def _train_step(self, train_module: nn.Module) -> None:
        cfg, rank, step = self.config, self.context.rank, self.step
        for hook in self.before_step:
            hook(step, self.module)
        self.batch_generator.manual_seed(derive_seed(cfg.seed, step, rank, _STREAM_BATCH))
        batch = _to_device(self.batch_fn(step, self.batch_generator), self.device)
        self.noise_generator.manual_seed(derive_seed(cfg.seed, step, rank, _STREAM_NOISE))
        self._seed_default_generators(derive_seed(cfg.seed, step, rank, _STREAM_TORCH))
        self.optimizer.zero_grad(set_to_none=True)
        autocast = (
            torch.autocast(self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else nullcontext()
        )
        with autocast:
            loss, scalars = _check_loss_output(
                self.loss_fn(train_module, batch, self.noise_generator)
            )
        self.scaler.scale(loss).backward()
        grad_norm = None
        if cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        self._last_lr = self.optimizer.param_groups[0]["lr"]
        self._committing = True
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.ema.update()
        self._accumulate(loss, scalars, grad_norm)
        self.step = step + 1
        self._committing = False

    def _seed_default_generators(self, seed: int) -> None:
        # Anything inside the module drawing from the global generators (dropout) is seeded too.
        torch.default_generator.manual_seed(seed)
        if self._cuda_index is not None:
            torch.cuda.default_generators[self._cuda_index].manual_seed(seed)
        elif self.device.type == "mps":
            torch.mps.manual_seed(seed)

    def _accumulate(
        self, loss: torch.Tensor, scalars: Mapping, grad_norm: torch.Tensor | None
    ) -> None:
        # Device tensors are summed without reading them, so the host never waits here.
        values = {"loss": loss, **scalars}
        if grad_norm is not None:
            values["grad_norm"] = grad_norm
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                value = value.detach().float()
            self._sums[key] = self._sums[key] + value if key in self._sums else value
        self._count += 1

    def _log(self, bar, stop_requested: bool) -> tuple[dict, bool]:
        names = sorted(self._sums)
        sums = [
            torch.as_tensor(self._sums[n], dtype=torch.float32, device=self.device) for n in names
        ]
        means = torch.stack([s.reshape(()) for s in sums]) / self._count
        stop = False
        if self.context.is_distributed:
            import torch.distributed as dist

            flag = torch.tensor([float(stop_requested)], device=self.device)
            means = torch.cat([means / self.context.world_size, flag])
            dist.all_reduce(means)
            *values, stop_votes = means.tolist()
            stop = stop_votes > 0
        else:
            values = means.tolist()
        self._sums, self._count = {}, 0
        logged = dict(zip(names, values, strict=True))
        record = {"step": self.step, "loss": logged.pop("loss"), "lr": self._last_lr}
        if "grad_norm" in logged:
            record["grad_norm"] = logged.pop("grad_norm")
        record["seconds"] = self.seconds()
        record.update(logged)
        self.history.append(record)
        if not math.isfinite(record["loss"]):
            raise FloatingPointError(
                f"The training loss became {record['loss']} by step {self.step}. Lower lr, keep "
                "grad_clip on, try mixed_precision='no', or check the batches for NaN/inf."
            )
        bar.set_postfix(loss=f"{record['loss']:.4g}", lr=f"{record['lr']:.2e}", refresh=False)
        return record, stop

    def _save_on_interrupt(self, path: Path | None) -> None:
        if path is None or self._committing:
            if path is not None:
                logger.warning(
                    "Interrupted while updating the weights; kept the checkpoint in %s as it was.",
                    path,
                )
            return
        self.save(path)
        if self.context.is_main:
            logger.warning(
                "Training interrupted after step %d; checkpoint saved to %s. Call again with "
                "resume=True to continue.",
                self.step,
                path,
            )


@torch.no_grad()
def _broadcast_from_main(module: nn.Module) -> None:
    # Every process starts from the main process's weights (before the EMA copies them).
    import torch.distributed as dist

    for tensor in module.state_dict().values():
        dist.broadcast(tensor, src=0)


def _on(value: torch.Tensor | float, device: torch.device) -> torch.Tensor | float:
    return value.to(device) if isinstance(value, torch.Tensor) else value


def _param_groups(params: list[nn.Parameter], weight_decay: float) -> list[dict]:
    decayed = [p for p in params if p.ndim >= 2]
    plain = [p for p in params if p.ndim < 2]
    groups = [
        {"params": decayed, "weight_decay": weight_decay, "decay": True},
        {"params": plain, "weight_decay": 0.0, "decay": False},
    ]
    return [group for group in groups if group["params"]]


def _to_device(batch: Mapping, device: torch.device) -> dict:
    if not isinstance(batch, Mapping):
        raise TypeError(f"batch_fn must return a dict of tensors, got {type(batch).__name__}.")
    pin = device.type == "cuda"
    moved = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            if pin and value.device.type == "cpu":
                value = value.pin_memory()
            value = value.to(device, non_blocking=True)
        moved[key] = value
    return moved


def _check_loss_output(output: object) -> tuple[torch.Tensor, Mapping]:
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


def _progress_bar(config: TrainerConfig, initial: int, show: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=config.max_steps,
        initial=initial,
        disable=not show,
        desc="training",
        unit="step",
        dynamic_ncols=True,
    )


class _Interrupt:
    requested = False


@contextmanager
def _deferred_interrupt() -> Iterator[_Interrupt]:
    """Turn the first Ctrl+C into a request honoured between steps; a second one stops at once."""
    interrupt = _Interrupt()
    if threading.current_thread() is not threading.main_thread():
        yield interrupt
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if interrupt.requested:
            raise KeyboardInterrupt
        interrupt.requested = True
        logger.warning(
            "Interrupt received: stopping after this step and saving a checkpoint "
            "(press Ctrl+C again to stop at once)."
        )

    signal.signal(signal.SIGINT, handler)
    try:
        yield interrupt
    finally:
        signal.signal(
            signal.SIGINT, previous if previous is not None else signal.default_int_handler
        )


@contextmanager
def _preserved_rng(device: torch.device) -> Iterator[None]:
    """Leave the caller's global random state as it was before training reseeded it."""
    cpu_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    try:
        yield
    finally:
        torch.set_rng_state(cpu_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state(cuda_state, device)
