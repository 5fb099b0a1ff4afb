"""Shared plotting pieces: the H&E backdrop, layer extents, scanpy-style show/save."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def he_backdrop(view, max_side: int = 1200) -> tuple[np.ndarray, list[float]]:
    """A thumbnail of the H&E as ``(y, x, 3)`` and its extent in H&E pixels for ``imshow``."""
    h, w = view.image.shape[1:]
    um = view.microns_per_pixel * max(1.0, max(h, w) / max_side)
    return np.moveaxis(view.image_at(um), 0, -1), [0, w, h, 0]


def layer_extent(sdata, view, key: str) -> tuple[np.ndarray, list[float]]:
    """A layer's data (scale0, computed) and its extent in H&E pixels (axis-aligned layers)."""
    from spatialdata.transformations import get_transformation

    from ..io._view import _affine, _image_scales

    el = sdata.images[key]
    arr = _image_scales(el)[0]
    a = np.linalg.inv(view.image_to_cs) @ _affine(
        get_transformation(el, to_coordinate_system=view.coordinate_system))
    if abs(a[0, 1]) > 1e-6 or abs(a[1, 0]) > 1e-6:
        raise ValueError(f"Layer {key!r} is rotated relative to the H&E; plot it with "
                         "spatialdata-plot instead.")
    h, w = arr.shape[1:]
    x0, y0 = a[0, 2], a[1, 2]
    return arr, [x0, x0 + a[0, 0] * w, y0 + a[1, 1] * h, y0]


def zoom_to(ax, view, pad: float = 0.5) -> None:
    """Limit the axes to the spots plus ``pad`` spacings."""
    lo = view.centres_px.min(0) - pad * view.spacing_px
    hi = view.centres_px.max(0) + pad * view.spacing_px
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(hi[1], lo[1])


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
