"""The training loss curve of a fitted model."""

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
    """Plot the training loss against the step, raw and smoothed.

    Parameters
    ----------
    model
        A fitted :class:`diffst_sc.DiffST`.
    smooth
        Window of the running mean.
    ax, show, save
        Matplotlib axes; scanpy-style show/save.

    Returns
    -------
    matplotlib.figure.Figure or None

    Examples
    --------
    >>> ds.pl.training_loss(model)  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    from ._utils import finish

    if not model.history:
        how = ("it is the histology path alone (fitted with deep=False): there is no loss "
               "curve; fit with ds.tl.fit(..., deep=True) to train the network"
               if not getattr(model, "deep", True) else "fit it with ds.tl.fit first")
        raise ValueError(f"The model has no training history: {how}.")
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
