"""Mixed precision: which autocast dtype a ``mixed_precision`` setting means on a device."""

from __future__ import annotations

import torch

#: The values :class:`~diffst_sc.train.TrainerConfig` accepts for ``mixed_precision``.
PRECISIONS = ("auto", "bf16", "fp16", "no")


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

    Examples
    --------
    >>> import torch
    >>> from diffst_sc.train import resolve_precision
    >>> resolve_precision("auto", torch.device("cpu")) is None
    True
    """
    if mixed_precision not in PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {PRECISIONS}, got {mixed_precision!r}.")
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
