"""Shared plotting pieces: the H&E backdrop, scale bars, scanpy-style show/save."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def he_backdrop(view, max_side: int = 1200) -> tuple[np.ndarray, list[float]]:
    """A thumbnail of the H&E as ``(y, x, 3)`` and its extent in H&E pixels for ``imshow``."""
    h, w = view.image.shape[1:]
    um = view.microns_per_pixel * max(1.0, max(h, w) / max_side)
    return np.moveaxis(view.image_at(um), 0, -1), [0, w, h, 0]


def zoom_to(ax, view, pad: float = 0.5) -> None:
    """Limit the axes to the spots plus ``pad`` spacings."""
    lo = view.centres_px.min(0) - pad * view.spacing_px
    hi = view.centres_px.max(0) + pad * view.spacing_px
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(hi[1], lo[1])


#: Unit of the layers and of the spots' counts (see ``ds.tl.superresolve``).
UNIT = "counts per spot footprint"


def unit_label(log1p: bool, spread: bool = False) -> str:
    """Colour-bar label of a mean (``spread=False``) or an uncertainty, in the plots' one unit."""
    unit = f"log1p({UNIT})" if log1p else UNIT
    return f"sd, {unit}" if spread else unit


def nice_length(span: float) -> float:
    """A round length (1, 2 or 5 times a power of ten) close to a fifth of ``span``."""
    if not span > 0:
        raise ValueError(f"The span of a scale bar must be positive, not {span!r}.")
    target = span / 5
    power = 10.0 ** np.floor(np.log10(target))
    return float(min((m * power for m in (1, 2, 5, 10)), key=lambda v: abs(np.log(v / target))))


def add_scale_bar(ax, view) -> None:
    """Draw a bar of a round number of micrometres just below a spatial panel, on the right.

    Below the panel, it hides no tissue. The axes are in full-resolution H&E pixels; call it
    once their limits are set.
    """
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    x0, x1 = ax.get_xlim()
    um = nice_length(abs(x1 - x0) * view.microns_per_pixel)
    label = f"{um:g} µm" if um < 1000 else f"{um / 1000:g} mm"
    bar = AnchoredSizeBar(ax.transData, um / view.microns_per_pixel, label, "upper right",
                          pad=0.2, borderpad=0.2, sep=3, frameon=False, color="black",
                          size_vertical=abs(x1 - x0) / 150, bbox_to_anchor=(1.0, 0.0),
                          bbox_transform=ax.transAxes)
    ax.add_artist(bar)


def frame_panel(ax, view) -> None:
    """Zoom a spatial panel to the spots, add its scale bar and hide its axes."""
    zoom_to(ax, view)
    add_scale_bar(ax, view)
    ax.set_axis_off()


def finish(fig, show: bool | None, save: str | Path | None):
    """Save and/or show like scanpy; return the figure when it is neither shown nor closed."""
    import matplotlib.pyplot as plt

    if save is not None:
        fig.savefig(save, dpi=120, bbox_inches="tight")
    if show is None:
        show = save is None and plt.get_backend().lower() not in ("agg", "pdf", "svg", "ps")
    if show:
        plt.show()
        return None
    return fig
