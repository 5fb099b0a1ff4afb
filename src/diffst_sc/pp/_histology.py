"""The H&E at a fixed physical pixel size, the scale at which the model sees histology."""

from __future__ import annotations

import numpy as np


def resample_image(levels: list, microns_per_pixel: float, target_um: float,
                   bbox_px: tuple[float, float, float, float] | None = None,
                   fill: float = 1.0) -> np.ndarray:
    """Resample (a window of) an RGB(A) image pyramid to ``target_um`` micrometres per pixel.

    Parameters
    ----------
    levels
        ``(c, y, x)`` arrays (numpy, dask or xarray), finest first, each a downsampling of the
        previous.
    microns_per_pixel
        Pixel size of the finest level.
    target_um
        Wanted pixel size.
    bbox_px
        ``(x0, y0, x1, y1)`` window in finest-level pixels (may extend past the image, which is
        padded with ``fill``); the whole image if omitted.
    fill
        Value of pixels outside the image (1.0: white, like the slide's background).

    Returns
    -------
    numpy.ndarray
        ``(3, y, x)`` float32 in [0, 1].
    """
    from PIL import Image

    if target_um <= 0:
        raise ValueError(f"target pixel size must be positive, got {target_um}.")
    full_h, full_w = levels[0].shape[1:]
    x0, y0, x1, y1 = bbox_px if bbox_px is not None else (0, 0, full_w, full_h)
    out_w = max(1, round((x1 - x0) * microns_per_pixel / target_um))
    out_h = max(1, round((y1 - y0) * microns_per_pixel / target_um))
    # The coarsest level still at least as fine as the target, so resizing only shrinks.
    best, f = 0, 1.0
    base_cost = _graph_layers(levels[0])
    for i, lev in enumerate(levels):
        fi = full_h / lev.shape[1]
        # A level computed lazily from the full image (an in-memory pyramid) costs more to read
        # than the full image itself; stored levels cost no more than it.
        if microns_per_pixel * fi <= target_um * 1.0001 and _graph_layers(lev) <= base_cost:
            best, f = i, fi
    lev = levels[best]
    data = getattr(lev, "data", lev)
    lh, lw = data.shape[1:]
    a0, b0 = int(np.floor(y0 / f)), int(np.floor(x0 / f))
    a1, b1 = int(np.ceil(y1 / f)), int(np.ceil(x1 / f))
    win = np.full((a1 - a0, b1 - b0, 3), round(fill * 255), dtype=np.uint8)
    ca0, cb0, ca1, cb1 = max(a0, 0), max(b0, 0), min(a1, lh), min(b1, lw)
    if ca1 > ca0 and cb1 > cb0:
        part = data[:3, ca0:ca1, cb0:cb1]
        part = np.asarray(part.compute() if hasattr(part, "compute") else part)
        if part.dtype.kind == "f":
            part = np.clip(part * (255.0 if part.max() <= 1.0 else 1.0), 0, 255)
        win[ca0 - a0:ca1 - a0, cb0 - b0:cb1 - b0] = np.moveaxis(part, 0, -1).astype(np.uint8)
    if win.shape[:2] != (out_h, out_w):
        # PIL's filters widen with the reduction factor, so shrinking is anti-aliased, and fast.
        win = np.asarray(Image.fromarray(win).resize((out_w, out_h), Image.BILINEAR))
    return np.ascontiguousarray(np.moveaxis(win, -1, 0), dtype=np.float32) / 255.0


def _graph_layers(level) -> int:
    data = getattr(level, "data", level)
    graph = getattr(data, "dask", None)
    return len(graph.layers) if graph is not None and hasattr(graph, "layers") else 0


def tissue_mask(he: np.ndarray) -> np.ndarray:
    """Foreground (tissue) of an H&E given as ``(3, y, x)`` in [0, 1], by Otsu on saturation/darkness."""
    from skimage.filters import threshold_otsu
    from skimage.morphology import closing, disk, remove_small_holes

    rgb = np.moveaxis(he, 0, -1)
    score = (rgb.max(-1) - rgb.min(-1)) + (1 - rgb.mean(-1))
    if np.ptp(score) < 1e-6:
        return np.ones(score.shape, bool)
    mask = score > threshold_otsu(score)
    mask = closing(mask, disk(2))
    return remove_small_holes(mask, max_size=max(4, mask.size // 200))
