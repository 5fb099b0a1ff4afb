"""The H&E at a fixed physical pixel size, the scale at which the model sees histology."""

from __future__ import annotations

import numpy as np


def resample_image(levels: list, microns_per_pixel: float, target_um: float,
                   bbox_px: tuple[float, float, float, float] | None = None,
                   fill: float = 1.0, dtype=np.float32,
                   strip_bytes: int = 128 * 2**20) -> np.ndarray:
    """Resample (a window of) an RGB(A) image pyramid to ``target_um`` micrometres per pixel.

    The source is read and resized in strips of rows, so that a large window of a lazily loaded
    (dask) image never sits in memory at full resolution.

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
    dtype
        ``numpy.float32`` (values in [0, 1]) or ``numpy.uint8`` (0-255, a quarter of the memory).
    strip_bytes
        About how many bytes of source pixels are read at a time.

    Returns
    -------
    numpy.ndarray
        ``(3, y, x)`` of ``dtype``.
    """
    from PIL import Image

    if target_um <= 0:
        raise ValueError(f"target pixel size must be positive, got {target_um}.")
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.uint8)):
        raise ValueError(f"dtype must be float32 or uint8, got {dtype}.")
    full_h, full_w = levels[0].shape[1:]
    x0, y0, x1, y1 = bbox_px if bbox_px is not None else (0, 0, full_w, full_h)
    out_w = max(1, round((x1 - x0) * microns_per_pixel / target_um))
    out_h = max(1, round((y1 - y0) * microns_per_pixel / target_um))
    data, f = _pick_level(levels, microns_per_pixel, target_um)
    a0, b0 = int(np.floor(y0 / f)), int(np.floor(x0 / f))
    a1, b1 = int(np.ceil(y1 / f)), int(np.ceil(x1 / f))
    src_h, src_w = a1 - a0, b1 - b0
    out = np.empty((3, out_h, out_w), dtype)
    sy = src_h / out_h  # source rows per output row
    # Output rows per strip, and a margin of source rows wider than the resize filter's reach.
    step = max(1, int(strip_bytes // max(3 * src_w * max(sy, 1.0), 1)))
    margin = int(np.ceil(2 * max(sy, 1.0))) + 2
    to_255 = _float_to_255(levels)
    for o0 in range(0, out_h, step):
        o1 = min(out_h, o0 + step)
        r0 = max(0, int(np.floor(o0 * sy)) - margin)
        r1 = min(src_h, int(np.ceil(o1 * sy)) + margin)
        win = _read_window(data, a0 + r0, b0, r1 - r0, src_w, fill, to_255)
        if (src_h, src_w) != (out_h, out_w):
            # PIL's filters widen with the reduction factor, so shrinking is anti-aliased; the
            # box places the strip's output rows exactly where a resize of the whole would.
            box = (0.0, o0 * sy - r0, float(src_w), o1 * sy - r0)
            win = np.asarray(Image.fromarray(win).resize((out_w, o1 - o0), Image.BILINEAR,
                                                         box=box))
        else:  # same size: only the margins go
            win = win[o0 - r0:o1 - r0]
        strip = np.moveaxis(win, -1, 0)
        if dtype == np.uint8:
            out[:, o0:o1] = strip
        else:
            np.multiply(strip, np.float32(1 / 255), out=out[:, o0:o1], casting="unsafe")
    return out


def _pick_level(levels: list, microns_per_pixel: float, target_um: float):
    """The coarsest level still at least as fine as the target (so resizing only shrinks)."""
    full_h = levels[0].shape[1]
    best, f = 0, 1.0
    base_cost = _graph_layers(levels[0])
    for i, lev in enumerate(levels):
        fi = full_h / lev.shape[1]
        # A level computed lazily from the full image (an in-memory pyramid) costs more to read
        # than the full image itself; stored levels cost no more than it.
        if microns_per_pixel * fi <= target_um * 1.0001 and _graph_layers(lev) <= base_cost:
            best, f = i, fi
    return _unwrap(levels[best]), f


def _float_to_255(levels: list) -> float:
    """What a float image is multiplied by to be 0-255: 255 if its values are in [0, 1], else 1.

    Decided once per image, from its coarsest level, so that every strip of it is scaled alike.
    """
    coarsest = _unwrap(levels[-1])
    if np.dtype(coarsest.dtype).kind != "f":
        return 1.0
    top = coarsest.max()
    return 255.0 if float(top.compute() if hasattr(top, "compute") else top) <= 1.0 else 1.0


def _read_window(data, a0: int, b0: int, h: int, w: int, fill: float,
                 to_255: float = 1.0) -> np.ndarray:
    """A window of a ``(c, y, x)`` image as ``(h, w, 3)`` uint8, ``fill`` outside the image.

    The window is rows ``a0`` to ``a0 + h`` and columns ``b0`` to ``b0 + w``; float values are
    multiplied by ``to_255`` first.
    """
    lh, lw = data.shape[1:]
    win = np.full((h, w, 3), round(fill * 255), dtype=np.uint8)
    ca0, cb0, ca1, cb1 = max(a0, 0), max(b0, 0), min(a0 + h, lh), min(b0 + w, lw)
    if ca1 > ca0 and cb1 > cb0:
        part = data[:3, ca0:ca1, cb0:cb1]
        part = np.asarray(part.compute() if hasattr(part, "compute") else part)
        if part.dtype.kind == "f":
            part = np.clip(part * to_255, 0, 255)
        win[ca0 - a0:ca1 - a0, cb0 - b0:cb1 - b0] = np.moveaxis(part, 0, -1).astype(np.uint8)
    return win


def _unwrap(level):
    """The array inside an xarray level (numpy or dask); other arrays as they are."""
    return level.data if hasattr(level, "dims") else level


def _graph_layers(level) -> int:
    data = _unwrap(level)
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
