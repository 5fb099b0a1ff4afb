"""The exponential moving average of the weights: torch's ``AveragedModel`` with a decay warm-up."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class EMA(AveragedModel):
    """Exponential moving average of a module's weights and buffers.

    A :class:`torch.optim.swa_utils.AveragedModel` (``use_buffers=True``) whose decay warms up:
    the average starts as a copy of the module; the ``u``-th :meth:`update_parameters` with
    ``u <= start_step`` copies the weights, later ones move the average towards them with
    :func:`~torch.optim.swa_utils.get_ema_multi_avg_fn` and decay
    ``d = min(decay, (1 + n) / (10 + n))``, ``n = u - start_step``, so early updates forget the
    random initialisation quickly. Floating-point buffers (e.g. batch-norm statistics) are
    averaged too, integer ones are copied. The averaged network is :attr:`module`; its
    :meth:`state_dict` (weights and the update count) is what checkpoints save.

    Parameters
    ----------
    module
        The module whose weights are averaged (copied; build the average after moving the
        module to its device).
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
    >>> ema.update_parameters(net)
    >>> ema.copy_to(net)
    """

    def __init__(self, module: nn.Module, decay: float = 0.999, start_step: int = 0) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}.")
        if start_step < 0:
            raise ValueError(f"EMA start_step must be >= 0, got {start_step}.")
        super().__init__(module, multi_avg_fn=_warmup_ema(decay, start_step), use_buffers=True)
        self.requires_grad_(False)
        # The initial weights are the first model averaged, so that the u-th update sees
        # n_averaged == u (AveragedModel copies on its first update).
        self.update_parameters(module)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Load the averaged weights into ``module`` (same architecture, any device)."""
        module.load_state_dict(self.module.state_dict())


def _warmup_ema(decay: float, start_step: int) -> Callable[[Sequence, Sequence, object], None]:
    """``multi_avg_fn`` of :class:`EMA`: ``get_ema_multi_avg_fn`` with the decay warm-up.

    Parameters
    ----------
    decay
        Largest decay.
    start_step
        Updates that copy before the averaging starts.

    Returns
    -------
    callable
        ``update(averaged, current, num_averaged)`` as ``AveragedModel`` calls it, for one
        group of tensors of one device and dtype.
    """

    @torch.no_grad()
    def update(averaged: Sequence[torch.Tensor], current: Sequence[torch.Tensor], num_averaged):
        if not (averaged[0].is_floating_point() or averaged[0].is_complex()):
            for mean, now in zip(averaged, current, strict=True):
                mean.copy_(now)
            return
        n = int(num_averaged) - start_step
        step_decay = min(decay, (1 + n) / (10 + n)) if n > 0 else 0.0
        get_ema_multi_avg_fn(step_decay)(averaged, current, num_averaged)

    return update
