"""The optimiser and its learning-rate schedule: AdamW, linear warm-up then cosine decay."""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR


def adamw(
    params: list[nn.Parameter],
    lr: float,
    betas: tuple[float, float],
    weight_decay: float,
    device: torch.device,
) -> torch.optim.AdamW:
    """AdamW whose weight decay skips biases and normalisation scales (tensors of < 2 dims).

    Each parameter group carries ``"decay"``: whether ``weight_decay`` applies to it.
    """
    decayed = [p for p in params if p.ndim >= 2]
    plain = [p for p in params if p.ndim < 2]
    groups = [
        {"params": decayed, "weight_decay": weight_decay, "decay": True},
        {"params": plain, "weight_decay": 0.0, "decay": False},
    ]
    return torch.optim.AdamW(
        [group for group in groups if group["params"]],
        lr=lr,
        betas=betas,
        fused=device.type == "cuda",
    )


def set_hyperparameters(
    optimizer: torch.optim.Optimizer, betas: tuple[float, float], weight_decay: float
) -> None:
    """Give the groups of :func:`adamw`'s optimiser new ``betas`` and ``weight_decay``."""
    for group in optimizer.param_groups:
        group["betas"] = betas
        group["weight_decay"] = weight_decay if group["decay"] else 0.0


def lr_schedule(
    optimizer: torch.optim.Optimizer,
    lr: float,
    warmup_steps: int,
    max_steps: int,
    start: int = 0,
) -> LRScheduler:
    """The learning rate of :func:`~diffst_sc.train.fit_model`, from step ``start`` on.

    The rate of optimiser step ``s`` (0-based) rises linearly over ``warmup_steps`` steps,
    ``lr * (s + 1) / warmup_steps``, reaching ``lr`` at the last warm-up step, then follows a
    cosine, ``lr * (1 + cos(pi * (s - warmup_steps) / (max_steps - warmup_steps))) / 2``, that
    reaches 0 at ``max_steps``: a :class:`~torch.optim.lr_scheduler.SequentialLR` of
    :class:`~torch.optim.lr_scheduler.LinearLR` and
    :class:`~torch.optim.lr_scheduler.CosineAnnealingLR`. Call ``step()`` after each optimiser
    step.

    Parameters
    ----------
    optimizer
        Its groups' rates are set to the rate of step ``start``.
    lr
        Peak rate.
    warmup_steps
        Steps of the linear warm-up (0: none).
    max_steps
        Step at which the rate reaches 0.
    start
        First step the schedule drives (a resumed run's step); the schedule is stepped that
        many times, so its rates are exactly those of an uninterrupted run.

    Returns
    -------
    torch.optim.lr_scheduler.LRScheduler
        The schedule.

    Examples
    --------
    >>> import torch
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    >>> schedule = lr_schedule(opt, 1.0, warmup_steps=4, max_steps=20, start=12)
    >>> round(schedule.get_last_lr()[0], 6)
    0.5
    """
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] = lr
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, max_steps - warmup_steps))
    if warmup_steps:
        warmup = LinearLR(
            optimizer, start_factor=1 / warmup_steps, total_iters=max(1, warmup_steps - 1)
        )
        schedule = SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps])
    else:
        schedule = cosine
    with warnings.catch_warnings():
        # Stepping to `start` without optimiser steps is intended here.
        warnings.filterwarnings("ignore", "Detected call of `lr_scheduler", UserWarning)
        for _ in range(start):
            schedule.step()
    return schedule
