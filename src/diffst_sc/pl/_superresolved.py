"""Panels of H&E | measured spots | super-resolved mean | uncertainty, one row per gene."""

from __future__ import annotations

import numpy as np


def superresolved(sdata, genes: str | list[str], *, key: str = "diffst",
                  table_key: str | None = None, coordinate_system: str | None = None,
                  cmap: str = "magma", show: bool | None = None, save=None):
    """Compare the measurement with the super-resolved maps and their uncertainty.

    Parameters
    ----------
    sdata
        A SpatialData on which :func:`diffst_sc.tl.superresolve` has run.
    genes
        One gene or several (one row each).
    key
        The layer written by ``superresolve`` (``key + "_std"`` holds the uncertainty).
    table_key, coordinate_system
        See :func:`diffst_sc.io.section_view`.
    cmap
        Colour map of the expression panels.
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

    from ..io import section_view
    from ._spots import spots
    from ._utils import finish, he_backdrop, layer_extent, zoom_to

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
    he, he_extent = he_backdrop(view)
    fig, axes = plt.subplots(len(genes), 4, figsize=(16, 4 * len(genes)), squeeze=False)
    for row, g in zip(axes, genes, strict=True):
        m = np.log1p(np.asarray(mean.sel(c=g).values))
        s = np.asarray(std.sel(c=g).values)
        row[0].imshow(he, extent=he_extent)
        row[0].set_title("H&E")
        spots(sdata, g, table_key=table_key, coordinate_system=coordinate_system, ax=row[1],
              cmap=cmap, title=f"measured {g}")
        row[2].imshow(he, extent=he_extent)
        vmin, vmax = _robust_range(m)
        im = row[2].imshow(np.ma.masked_equal(m, 0), extent=extent, cmap=cmap, alpha=0.9,
                           interpolation="nearest", vmin=vmin, vmax=vmax)
        plt.colorbar(im, ax=row[2], fraction=0.046, label="log1p")
        row[2].set_title(f"super-resolved {g}")
        vmin, vmax = _robust_range(s)
        im = row[3].imshow(np.ma.masked_equal(s, 0), extent=extent, cmap="viridis",
                           interpolation="nearest", vmin=vmin, vmax=vmax)
        plt.colorbar(im, ax=row[3], fraction=0.046, label="std")
        row[3].set_title(f"uncertainty {g}")
        for ax in row:
            zoom_to(ax, view)
            ax.set_axis_off()
    fig.tight_layout()
    return finish(fig, show, save)


def _robust_range(values: np.ndarray) -> tuple[float | None, float | None]:
    """1st-99th percentile of the non-zero pixels, so a few edge pixels do not set the scale."""
    v = values[values > 0]
    if v.size == 0:
        return None, None
    return float(np.percentile(v, 1)), float(np.percentile(v, 99))
