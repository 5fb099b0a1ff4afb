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
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

from ._checkpoint import load_state, save_state
from ._config import (
    REPORTING_KEYS,
    SCHEDULE_KEYS,
    BatchFn,
    LossFn,
    StepInfo,
    StopTraining,
    TrainerConfig,
    TrainingResult,
    check_loss_output,
)
from ._device import (
    DistributedContext,
    broadcast_from_main,
    device_for_process,
    distributed_context,
    process_group,
)
from ._ema import EMA
from ._interrupt import Interrupt, deferred_interrupt
from ._optim import adamw, lr_schedule, set_hyperparameters
from ._precision import resolve_precision
from ._random import preserved_rng, seed_default_generators, step_seeds

logger = logging.getLogger(__name__)

#: File name of the training checkpoint inside ``checkpoint_dir``.
CHECKPOINT_NAME = "last.pt"
_CHECKPOINT_FORMAT = "diffst_sc.training"
# 2: the EMA is an AveragedModel's state and the schedule a SequentialLR's; 1 is read too.
_CHECKPOINT_VERSION = 2


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
        raises :class:`StopTraining` ends training there (early stopping: the run is complete,
        and resuming it trains no further); one that raises anything else stops training, and
        the state of the last periodic checkpoint is kept.
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
    with process_group(context, device), preserved_rng(device):
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
            broadcast_from_main(self.module)
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("The module has no trainable parameters (requires_grad=True).")
        self.optimizer = adamw(self.params, config.lr, config.betas, config.weight_decay, device)
        self.scheduler = lr_schedule(
            self.optimizer, config.lr, config.warmup_steps, config.max_steps
        )
        self.autocast_dtype = resolve_precision(config.mixed_precision, device)
        self.scaler = torch.amp.GradScaler(
            device.type, enabled=self.autocast_dtype == torch.float16
        )
        self.ema = EMA(self.module, config.ema_decay, config.ema_start)
        self.step = 0
        self.stopped = False
        self.history: list[dict] = []
        self.seconds_before = 0.0
        self.batch_generator = torch.Generator()
        self.noise_generator = torch.Generator(device=device)
        self._committing = False
        self._sums: dict[str, torch.Tensor | float] = {}
        self._count = 0
        self._last_lr = config.lr
        self._clock = time.perf_counter()

    # -- checkpoints ---------------------------------------------------------------------------

    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self._clock

    def checkpoint(self) -> dict:
        return {
            "format": _CHECKPOINT_FORMAT,
            "version": _CHECKPOINT_VERSION,
            "step": self.step,
            "stopped": self.stopped,
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
        version = int(state.get("version", 1))
        try:
            self.module.load_state_dict(state["module"])
            self.ema.load_state_dict(state["ema"] if version > 1 else _ema_state_v1(state["ema"]))
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, KeyError, ValueError) as err:
            raise RuntimeError(
                f"The checkpoint {path} was written for a different model or optimiser ({err}). "
                "Remove it, pass another checkpoint_dir, or resume=False to start afresh."
            ) from err
        if state["scaler"] and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.stopped = bool(state.get("stopped", False))
        self.history = list(state["history"])
        # Partial sums of the record in progress, so the history continues as if never stopped.
        self._sums = {k: _on(v, self.device) for k, v in state["log_sums"].items()}
        self._count = int(state["log_count"])
        self.seconds_before = float(state["seconds"])
        changed = self._changed_settings(state["config"], int(state["world_size"]))
        # The optimiser and schedule follow the current settings.
        cfg = self.config
        set_hyperparameters(self.optimizer, cfg.betas, cfg.weight_decay)
        if version > 1 and not changed & SCHEDULE_KEYS:
            self.scheduler.load_state_dict(state["scheduler"])
        else:
            self.scheduler = lr_schedule(
                self.optimizer, cfg.lr, cfg.warmup_steps, cfg.max_steps, start=self.step
            )

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

    def _changed_settings(self, saved: Mapping, saved_world_size: int) -> set[str]:
        """Settings that differ from the checkpoint's (warned about), reporting ones aside."""
        current = self.config.to_dict()
        changed = {
            key for key, value in current.items()
            if key not in REPORTING_KEYS and saved.get(key) != value
        }
        notes = [f"{key}: {saved.get(key)!r} -> {current[key]!r}" for key in sorted(changed)]
        if saved_world_size != self.context.world_size:
            notes.append(f"processes: {saved_world_size} -> {self.context.world_size}")
        if notes:
            logger.warning(
                "Resuming from a checkpoint written with other settings (%s); continuing with the "
                "new ones, so the result will differ from an uninterrupted run of either.",
                "; ".join(notes),
            )
        return changed

    # -- the loop ------------------------------------------------------------------------------

    def train(self, path: Path | None) -> None:
        cfg = self.config
        if self.step >= cfg.max_steps or self.stopped:
            return
        train_module = self._wrapped()
        was_training = self.module.training
        self.module.train()
        self._clock = time.perf_counter()
        bar = _progress_bar(cfg, self.step, show=cfg.progress and self.context.is_main)
        try:
            with bar, deferred_interrupt() as interrupt:
                self._loop(train_module, path, bar, interrupt)
        except KeyboardInterrupt:
            self._save_on_interrupt(path)
            raise
        finally:
            self.module.train(was_training)

    def _loop(self, train_module: nn.Module, path, bar, interrupt: Interrupt) -> None:
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
                try:
                    for callback in self.callbacks:
                        callback(info)
                except StopTraining:
                    if record is None and self._count:  # the history ends at the last step
                        self._log(bar, False)
                    self.stopped = True
                    self.save(path)
                    return
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
        batch_seed, noise_seed, default_seed = step_seeds(cfg.seed, step, rank)
        self.batch_generator.manual_seed(batch_seed)
        batch = _to_device(self.batch_fn(step, self.batch_generator), self.device)
        self.noise_generator.manual_seed(noise_seed)
        seed_default_generators(default_seed, self.device)
        self.optimizer.zero_grad(set_to_none=True)
        autocast = (
            torch.autocast(self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else nullcontext()
        )
        with autocast:
            loss, scalars = check_loss_output(
                self.loss_fn(train_module, batch, self.noise_generator)
            )
        self.scaler.scale(loss).backward()
        grad_norm = None
        if cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        self._last_lr = self.scheduler.get_last_lr()[0]
        self._committing = True
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.ema.update_parameters(self.module)
        self._accumulate(loss, scalars, grad_norm)
        self.step = step + 1
        self._committing = False

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


def _ema_state_v1(state: Mapping) -> dict:
    """A version-1 checkpoint's EMA (shadow weights, update count) as :class:`EMA`'s state."""
    shadow = {f"module.{name}": tensor for name, tensor in state["shadow"].items()}
    return {"n_averaged": torch.tensor(int(state["num_updates"]) + 1), **shadow}


def _on(value: torch.Tensor | float, device: torch.device) -> torch.Tensor | float:
    return value.to(device) if isinstance(value, torch.Tensor) else value


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
