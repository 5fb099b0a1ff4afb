"""The training loss curve of a Diff-ST network."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import os

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..model import DiffST


def training_loss(model: DiffST, *, smooth: int = 25, ax: Axes | None = None,
                  show: bool | None = None,
                  save: str | os.PathLike | None = None) -> Figure | Axes | None:
    """Plot a Diff-ST network's training loss against the step, raw and smoothed.

    Only a :class:`~diffst_sc.model.DiffST` (``ds.tl.fit(..., deep=True)``) is trained by steps.
    The default :class:`~diffst_sc.model.HistologyModel` is fitted in closed form and has no
    loss curve: its :meth:`~diffst_sc.model.HistologyModel.diagnostics` give its held-out error
    per gene instead.

    Parameters
    ----------
    model
        A fitted :class:`~diffst_sc.model.DiffST`.
    smooth
        Window of the running mean.
    ax, show, save
        Matplotlib axes; scanpy-style show/save.

    Returns
    -------
    matplotlib.figure.Figure or None

    Raises
    ------
    TypeError
        For a :class:`~diffst_sc.model.HistologyModel` (no training loss) or another object.
    ValueError
        For a network with no training history.

    Examples
    --------
    >>> model = ds.tl.fit(sdata, deep=True)  # doctest: +SKIP
    >>> ds.pl.training_loss(model)  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    from ._utils import finish

    _check_trained(model)
    step = np.array([h["step"] for h in model.history])
    loss = np.array([h["loss"] for h in model.history])
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(step, loss, lw=0.8, alpha=0.4, label="loss")
    if len(loss) >= smooth > 1:
        k = np.ones(smooth) / smooth
        ax.plot(step[smooth - 1:], np.convolve(loss, k, mode="valid"), lw=2, label="running mean")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    return finish(fig, show, save) if fig is not None else ax


def _check_trained(model) -> None:
    """Raise, in words the user can act on, unless ``model`` is a network with a loss history."""
    from ..model import HistologyModel

    if isinstance(model, HistologyModel):
        raise TypeError(
            f"{model!r} has no training loss: a HistologyModel is a ridge regression fitted in "
            "closed form, not trained by steps. See model.diagnostics() for its held-out error "
            "per gene, or fit the Diff-ST network with ds.tl.fit(..., deep=True) and plot its "
            "loss.")
    if not hasattr(model, "history"):
        raise TypeError(f"training_loss plots the loss of a DiffST (from ds.tl.fit(..., "
                        f"deep=True)), not of a {type(model).__name__}.")
    if not model.history:
        raise ValueError("The network has no training history: it was never trained; fit it "
                         "with ds.tl.fit(..., deep=True).")
