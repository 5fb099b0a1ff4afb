"""Panels of H&E | measured spots | super-resolved mean | uncertainty, one row per gene."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._core._docs import shared_parameters

if TYPE_CHECKING:
    import os

    from matplotlib.figure import Figure
    from spatialdata import SpatialData


@shared_parameters
def superresolved(sdata: SpatialData, genes: str | list[str], *, key: str = "diffst",
                  table_key: str | None = None, coordinate_system: str | None = None,
                  cmap: str = "magma", log1p: bool = True, show: bool | None = None,
                  save: str | os.PathLike | None = None) -> Figure | None:
    """Compare the measurement with the super-resolved maps and their uncertainty.

    The measured spots, the mean and the uncertainty are drawn in one unit, which each colour
    bar states: counts per spot footprint (the layers' unit: a spot-sized disc centred on a
    pixel would measure that many counts), or their ``log1p``. In ``log1p`` the uncertainty is
    ``std / (1 + mean)``, the standard deviation of ``log1p`` of a value with that mean and
    standard deviation to first order. The measured spots and the mean share one colour range.
    Pixels outside the tissue (0 or NaN in the layers, see ``ds.tl.superresolve``'s
    ``outside_tissue``) are not drawn, so the H&E shows there; every panel has a scale bar.

    Parameters
    ----------
    sdata
        A SpatialData on which :func:`diffst_sc.tl.superresolve` has run.
    genes
        One gene or several (one row each).
    key
        The layer written by ``superresolve`` (``key + "_std"`` holds the uncertainty).
    {table_key}
    {coordinate_system}
    cmap
        Colour map of the expression panels.
    log1p
        Draw ``log1p`` of the counts per spot footprint (the default), else the counts.
    show, save
        Show the figure / save it to this path.

    Returns
    -------
    matplotlib.figure.Figure or None

    Examples
    --------
    >>> ds.pl.superresolved(sdata, ["ERBB2", "IGKC"])  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    from .._core import section_view
    from .._core._raster import layer_extent
    from ._utils import finish, he_backdrop

    genes = [genes] if isinstance(genes, str) else list(genes)
    for k in (key, key + "_std"):
        if k not in sdata.images:
            raise KeyError(f"No layer {k!r}: run ds.tl.superresolve(sdata, key_added={key!r}) "
                           "first.")
    view = section_view(sdata, table_key=table_key, coordinate_system=coordinate_system)
    mean, extent = layer_extent(sdata, view, key)
    std, _ = layer_extent(sdata, view, key + "_std")
    names = list(map(str, mean.coords["c"].values))
    missing = [g for g in genes if g not in names]
    if missing:
        raise KeyError(f"Genes {missing} are not channels of {key!r}; it has {names[:5]}...")
    backdrop = he_backdrop(view)
    fig, axes = plt.subplots(len(genes), 4, figsize=(16, 4 * len(genes)), squeeze=False)
    for row, g in zip(axes, genes, strict=True):
        m, s = shown_values(np.asarray(mean.sel(c=g).values), np.asarray(std.sel(c=g).values),
                            log1p)
        measured = view.expression([g])[:, 0]
        measured = np.log1p(measured) if log1p else measured
        mean_range = _robust_range(np.concatenate([m.ravel(), measured]))
        _row(row, view, g, m, s, measured, extent, backdrop, mean_range, cmap=cmap, log1p=log1p)
    fig.tight_layout()
    return finish(fig, show, save)


def shown_values(mean: np.ndarray, std: np.ndarray, log1p: bool):
    """The mean and uncertainty as drawn: counts per spot footprint, or ``log1p`` of them.

    In ``log1p`` the uncertainty is ``std / (1 + mean)`` (first order: the derivative of
    ``log1p`` at the mean times the standard deviation). Pixels outside the tissue (a mean of 0
    or NaN: on the tissue the mean is positive) are NaN in both.
    """
    outside = ~(np.asarray(mean) > 0)
    mean = np.where(outside, np.nan, mean)
    std = np.where(outside, np.nan, std)
    if not log1p:
        return mean, std
    return np.log1p(mean), std / (1.0 + mean)


def _row(row, view, gene, m, s, measured, extent, backdrop, mean_range, *, cmap, log1p):
    """Draw one gene's four panels into the axes ``row`` (``m``, ``s``, ``measured`` as shown)."""
    import matplotlib.pyplot as plt

    from ._spots import draw_spots
    from ._utils import frame_panel, unit_label

    he, he_extent = backdrop
    row[0].imshow(he, extent=he_extent)
    row[0].set_title("H&E")
    draw_spots(row[1], view, measured, backdrop, cmap=cmap, clim=mean_range,
               label=unit_label(log1p), title=f"measured {gene}")
    row[2].imshow(he, extent=he_extent)
    im = row[2].imshow(np.ma.masked_invalid(m), extent=extent, cmap=cmap, alpha=0.9,
                       interpolation="nearest", vmin=mean_range[0], vmax=mean_range[1])
    plt.colorbar(im, ax=row[2], fraction=0.046, label=unit_label(log1p))
    row[2].set_title(f"super-resolved {gene}")
    row[3].imshow(he, extent=he_extent, alpha=0.35)
    vmin, vmax = _robust_range(s)
    im = row[3].imshow(np.ma.masked_invalid(s), extent=extent, cmap="viridis",
                       interpolation="nearest", vmin=vmin, vmax=vmax)
    plt.colorbar(im, ax=row[3], fraction=0.046, label=unit_label(log1p, spread=True))
    row[3].set_title(f"uncertainty {gene}")
    for ax in (row[0], row[2], row[3]):  # draw_spots frames the spots panel
        frame_panel(ax, view)


def _robust_range(values: np.ndarray) -> tuple[float | None, float | None]:
    """1st-99th percentile of the finite values, so a few edge pixels do not set the scale."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return None, None
    lo, hi = float(np.percentile(v, 1)), float(np.percentile(v, 99))
    return (lo, hi) if hi > lo else (None, None)
