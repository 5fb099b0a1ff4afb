"""Spots over the H&E, coloured by a gene or the library size."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._core._docs import shared_parameters

if TYPE_CHECKING:
    import os

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from spatialdata import SpatialData


@shared_parameters
def spots(sdata: SpatialData, gene: str | None = None, *, table_key: str | None = None,
          coordinate_system: str | None = None, image_key: str | None = None,
          cmap: str = "viridis", log1p: bool = True, vmin: float | None = None,
          vmax: float | None = None, ax: Axes | None = None, show: bool | None = None,
          save: str | os.PathLike | None = None,
          title: str | None = None) -> Figure | Axes | None:
    """Draw the spots as discs of their true size over the H&E, with a scale bar.

    Parameters
    ----------
    sdata
        A SpatialData (spots, table, H&E).
    gene
        Colour by this gene's counts; by the total counts (library size) if ``None``.
    {table_key}
    {coordinate_system}
    {image_key}
    cmap
        Matplotlib colour map.
    log1p
        Colour by ``log1p`` of the counts (the default), else by the counts.
    vmin, vmax
        Range of the colour map, in the unit its colour bar states; the data's by default.
    ax
        Axes to draw into; a new figure if ``None``.
    show, save
        Show the figure / save it to this path (scanpy's convention).
    title
        Panel title.

    Returns
    -------
    matplotlib.figure.Figure or None

    Examples
    --------
    >>> ds.pl.spots(sdata, "ERBB2")  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    from .._core import section_view
    from ._utils import finish, he_backdrop, unit_label

    view = section_view(sdata, table_key=table_key, coordinate_system=coordinate_system,
                        image_key=image_key)
    values = view.expression([gene])[:, 0] if gene is not None else view.library_sizes()
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 5))
    label = (unit_label(log1p) if gene is not None
             else ("log1p(total counts per spot)" if log1p else "total counts per spot"))
    draw_spots(ax, view, np.log1p(values) if log1p else values, he_backdrop(view), cmap=cmap,
               clim=(vmin, vmax), label=label,
               title=title or f"{view.name}: {gene or 'total counts'}")
    return finish(fig or ax.figure, show, save) if fig is not None else ax


def draw_spots(ax, view, values: np.ndarray, backdrop, *, cmap, clim, label: str,
               title: str) -> None:
    """Draw the view's spots as discs coloured by ``values`` over the H&E ``backdrop``.

    ``backdrop`` is :func:`~diffst_sc.pl._utils.he_backdrop`'s thumbnail and extent (made once
    per figure); ``clim`` the colour range, ``label`` that of the colour bar.
    """
    import matplotlib.pyplot as plt
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Circle

    from ._utils import frame_panel

    he, extent = backdrop
    ax.imshow(he, extent=extent)
    discs = [Circle(tuple(c), view.diameter_px / 2) for c in view.centres_px]
    coll = PatchCollection(discs, cmap=cmap, alpha=0.85, linewidth=0)
    coll.set_array(values)
    coll.set_clim(*clim)
    ax.add_collection(coll)
    plt.colorbar(coll, ax=ax, fraction=0.046, label=label)
    ax.set_title(title)
    frame_panel(ax, view)
