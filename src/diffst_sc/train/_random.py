"""The random streams of a training step, all derived from ``(seed, step, rank)``."""

from __future__ import annotations

from contextlib import AbstractContextManager

import numpy as np
import torch


def step_seeds(seed: int, step: int, rank: int) -> tuple[int, int, int]:
    """Seeds of the batch, the noise and torch's default generators at one step of one process.

    The three are words of :meth:`numpy.random.SeedSequence.generate_state` of the sequence
    with entropy ``seed`` and spawn key ``(step, rank)``: independent of each other and of the
    streams of every other step and process.

    Parameters
    ----------
    seed
        The run's seed, ``>= 0``.
    step
        Optimiser step, 0-based.
    rank
        Process index.

    Returns
    -------
    tuple of int
        Three 64-bit seeds for :meth:`torch.Generator.manual_seed`.

    Examples
    --------
    >>> batch, noise, default = step_seeds(0, step=3, rank=0)
    >>> step_seeds(0, 3, 0) == (batch, noise, default) != step_seeds(0, 3, 1)
    True
    """
    words = np.random.SeedSequence(seed, spawn_key=(step, rank)).generate_state(3, np.uint64)
    return tuple(int(word) for word in words)


def seed_default_generators(seed: int, device: torch.device) -> None:
    """Seed torch's default CPU generator and that of ``device``.

    The network's own random layers (dropout) draw from these and take no generator; seeding
    them each step keeps a resumed run exact. Call inside :func:`preserved_rng`.
    """
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.default_generators[_cuda_index(device)].manual_seed(seed)
    elif device.type == "mps":
        torch.mps.manual_seed(seed)


def preserved_rng(device: torch.device) -> AbstractContextManager[None]:
    """:func:`torch.random.fork_rng` of the CPU and ``device``.

    The caller's random state is the same after training as before.
    """
    devices = [_cuda_index(device)] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices, device_type=device.type)


def _cuda_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()
