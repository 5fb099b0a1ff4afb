"""Where training runs: device choice and multi-process (``torchrun``) set-up."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn a device request into a :class:`torch.device` that exists on this machine.

    Parameters
    ----------
    device
        ``"auto"`` picks CUDA if PyTorch sees a GPU, then Apple's MPS, then the CPU. Anything
        else is parsed by :class:`torch.device` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``)
        and checked to be available.

    Returns
    -------
    torch.device
        The device to use.

    Raises
    ------
    RuntimeError
        If the requested accelerator is not available, saying what to install or pass instead.
    ValueError
        If ``device`` is not a device name.

    Examples
    --------
    >>> from diffst_sc.train import resolve_device
    >>> resolve_device("cpu").type
    'cpu'
    """
    if isinstance(device, str) and device.strip().lower() == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device={device!r} is not a device name; use 'auto', 'cpu', 'cuda', 'cuda:<index>' "
            "or 'mps'."
        ) from err
    if resolved.type == "cuda":
        _check_cuda(resolved)
    elif resolved.type == "mps" and not _mps_available():
        raise RuntimeError(
            f"device={device!r} was requested but Apple's MPS backend is not available here; "
            "it needs an Apple-silicon Mac with macOS 12.3+. Pass device='cpu' or device='auto'."
        )
    return resolved


def _check_cuda(device: torch.device) -> None:
    if not torch.cuda.is_available():
        build = (
            f"this PyTorch ({torch.__version__}) was built without CUDA"
            if torch.version.cuda is None
            else f"this PyTorch (CUDA {torch.version.cuda}) finds no usable NVIDIA GPU or driver"
        )
        raise RuntimeError(
            f"device={str(device)!r} was requested but {build}. Install a CUDA build of PyTorch "
            "(https://pytorch.org/get-started/locally/) on a machine with an NVIDIA GPU, or pass "
            "device='cpu' (or device='auto' to use whatever is available)."
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise RuntimeError(
            f"device={str(device)!r} was requested but only {count} CUDA device(s) are visible "
            f"(indices 0-{count - 1}); check CUDA_VISIBLE_DEVICES or pick another index."
        )


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


@dataclass(frozen=True)
class DistributedContext:
    """Position of this process in a multi-process run (one process when not distributed).

    Attributes
    ----------
    rank
        Global index of this process, ``0`` for the process that writes and reports.
    local_rank
        Index of this process on its machine; picks its GPU.
    world_size
        Number of processes.
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_distributed(self) -> bool:
        """Whether more than one process trains."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints and shows progress."""
        return self.rank == 0


def distributed_context() -> DistributedContext:
    """Read this process's rank from ``torch.distributed`` or the ``torchrun`` environment.

    Returns
    -------
    DistributedContext
        From the initialised process group if there is one, else from ``WORLD_SIZE``, ``RANK``
        and ``LOCAL_RANK`` (set by ``torchrun``), else a single process.

    Raises
    ------
    RuntimeError
        If the environment variables are inconsistent.
    """
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():
        return DistributedContext(dist.get_rank(), local_rank, dist.get_world_size())
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world_size < 1 or not 0 <= rank < world_size:
        raise RuntimeError(
            f"Inconsistent distributed environment: WORLD_SIZE={world_size}, RANK={rank}. Launch "
            "multi-process training with `torchrun --nproc_per_node=N script.py`, or unset these "
            "variables for a single process."
        )
    return DistributedContext(rank, local_rank, world_size)


def device_for_process(device: str | torch.device, context: DistributedContext) -> torch.device:
    """Resolve ``device`` for this process: each ``torchrun`` process takes its own GPU.

    Parameters
    ----------
    device
        As for :func:`resolve_device`.
    context
        This process's place in the run.

    Returns
    -------
    torch.device
        The resolved device; ``cuda:<local_rank>`` for a distributed run on CUDA without an
        explicit index.
    """
    resolved = resolve_device(device)
    if not context.is_distributed:
        return resolved
    if resolved.type == "mps":
        raise RuntimeError(
            "Multi-process training is not supported on MPS; pass device='cpu' or launch one "
            "process."
        )
    if resolved.type == "cuda":
        if resolved.index is None:
            resolved = torch.device("cuda", context.local_rank)
        _check_cuda(resolved)
        torch.cuda.set_device(resolved)
    return resolved


@contextmanager
def process_group(context: DistributedContext, device: torch.device) -> Iterator[None]:
    """Initialise the ``torch.distributed`` process group for the run, if one is needed.

    NCCL is used on CUDA and Gloo on the CPU. A group that already exists (set up by the caller)
    is used as is and left open; one created here is destroyed on exit.

    Parameters
    ----------
    context
        This process's place in the run; nothing happens for a single process.
    device
        The device this process trains on.
    """
    import torch.distributed as dist

    if not context.is_distributed or dist.is_initialized():
        yield
        return
    if not dist.is_available():
        raise RuntimeError(
            "WORLD_SIZE > 1 asks for multi-process training but this PyTorch build has no "
            "torch.distributed; install a standard PyTorch build or run a single process."
        )
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


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


@torch.no_grad()
def broadcast_from_main(module: nn.Module) -> None:
    """Give every process the main process's weights and buffers (before the EMA copies them)."""
    import torch.distributed as dist

    for tensor in module.state_dict().values():
        dist.broadcast(tensor, src=0)
