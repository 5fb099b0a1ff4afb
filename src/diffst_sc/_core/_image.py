"""The H&E at a fixed physical pixel size, the scale at which the model sees histology."""

from __future__ import annotations

import numpy as np

from ._checks import CHECK_SIDE, blank_colour

#: A coarser pyramid level is read only where it is at least this many times finer than the
#: wanted pixel size: the resize's own anti-aliasing filter then dominates the level's block
#: averaging (the result stays within a few percent of the kernel width of a full-resolution
#: read), and a pyramid of factors of 2 is read at under ``(2 * MIN_REDUCTION) ** 2`` source
#: pixels per output pixel.
MIN_REDUCTION = 4.0


def resample_image(levels: list, microns_per_pixel: float, target_um: float,
                   bbox_px: tuple[float, float, float, float] | None = None,
                   fill: float = 1.0, dtype=np.float32,
                   strip_bytes: int = 128 * 2**20) -> np.ndarray:
    """Resample (a window of) an RGB(A) image pyramid to ``target_um`` micrometres per pixel.

    The source is read and resized in strips of rows, so that a large window of a lazily loaded
    (dask) image never sits in memory at full resolution. The level read depends only on the
    pyramid's shapes (see :func:`pick_level`), never on how its levels are stored, so an image
    gives the same pixels in memory and after a zarr round trip (where spatialdata writes the
    levels it computed lazily).

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
        ``(3, y, x)`` of ``dtype``; output pixel ``(i, j)`` covers finest-level pixels
        ``[x0 + j * dx, x0 + (j + 1) * dx) x [y0 + i * dy, y0 + (i + 1) * dy)``, with ``dx``
        and ``dy`` the window's width and height over the output's (about ``target_um`` in
        micrometres: the output has a whole number of pixels).
    """
    if target_um <= 0:
        raise ValueError(f"target pixel size must be positive, got {target_um}.")
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.uint8)):
        raise ValueError(f"dtype must be float32 or uint8, got {dtype}.")
    full_h, full_w = levels[0].shape[1:]
    x0, y0, x1, y1 = bbox_px if bbox_px is not None else (0, 0, full_w, full_h)
    out_w = max(1, round((x1 - x0) * microns_per_pixel / target_um))
    out_h = max(1, round((y1 - y0) * microns_per_pixel / target_um))
    i = pick_level(levels, microns_per_pixel, target_um)
    data = _unwrap(levels[i])
    fy, fx = level_factors(levels[0].shape[1:], levels[i].shape[1:])
    # The window in the level's pixels (edges at integers) and the part of the level read at
    # all: the image, widened to the window where the window reaches past it (filled there).
    lh, lw = data.shape[1:]
    win_y, win_x = (y0 / fy, y1 / fy), (x0 / fx, x1 / fx)
    lim_y = (min(0, int(np.floor(win_y[0]))), max(lh, int(np.ceil(win_y[1]))))
    lim_x = (min(0, int(np.floor(win_x[0]))), max(lw, int(np.ceil(win_x[1]))))
    sy = (win_y[1] - win_y[0]) / out_h  # level rows per output row
    sx = (win_x[1] - win_x[0]) / out_w
    # A margin wider than the resize filter's reach, so that a strip's pixels are those of a
    # resize of the whole window.
    margin_y = int(np.ceil(2 * max(sy, 1.0))) + 2
    margin_x = int(np.ceil(2 * max(sx, 1.0))) + 2
    b0 = max(lim_x[0], int(np.floor(win_x[0])) - margin_x)
    b1 = min(lim_x[1], int(np.ceil(win_x[1])) + margin_x)
    step = max(1, int(strip_bytes // max(3 * (b1 - b0) * max(sy, 1.0), 1)))
    to_255 = _float_to_255(levels)
    out = np.empty((3, out_h, out_w), dtype)
    for o0 in range(0, out_h, step):
        o1 = min(out_h, o0 + step)
        ya = win_y[0] + o0 * sy
        yb = win_y[1] if o1 == out_h else win_y[0] + o1 * sy  # never past the window
        a0 = max(lim_y[0], int(np.floor(ya)) - margin_y)
        a1 = min(lim_y[1], int(np.ceil(yb)) + margin_y)
        win = _read_window(data, a0, b0, a1 - a0, b1 - b0, fill, to_255)
        box = (win_x[0] - b0, ya - a0, win_x[1] - b0, yb - a0)
        for c in range(3):  # one 8-bit band at a time: PIL holds RGB in 4 bytes a pixel
            band = _resize(win[c], box, (out_w, o1 - o0))
            if dtype == np.uint8:
                out[c, o0:o1] = band
            else:
                np.multiply(band, np.float32(1 / 255), out=out[c, o0:o1], casting="unsafe")
    return out


def _resize(win: np.ndarray, box: tuple[float, float, float, float],
            size: tuple[int, int]) -> np.ndarray:
    """The ``box`` (left, top, right, bottom, in ``win``'s pixels) of ``win`` resized to ``size``.

    ``win`` is one ``(h, w)`` uint8 band. PIL's bilinear filter widens with the reduction
    factor, so shrinking is anti-aliased; a box of whole pixels of the output's size is cut out
    as it is.
    """
    from PIL import Image

    w, h = size
    if all(float(b).is_integer() for b in box) and (box[2] - box[0], box[3] - box[1]) == (w, h):
        left, top = int(box[0]), int(box[1])
        return win[top:top + h, left:left + w]
    return np.asarray(Image.fromarray(win).resize(size, Image.BILINEAR, box=box))


def level_factors(full_yx: tuple[int, int], level_yx: tuple[int, int]) -> tuple[float, float]:
    """Finest-level pixels per pixel of a level, along y and x.

    A level made by a whole factor (spatialdata's pyramids: blocks of 2 x 2, the remainder
    trimmed; others round up) has exactly that factor, not the ratio of the shapes (4955 / 2477
    is not 2); other levels have the ratio.
    """
    whole = round(max(full_yx[0] / level_yx[0], full_yx[1] / level_yx[1]))
    if whole >= 1 and all(n // whole <= m <= -(-n // whole)
                          for n, m in zip(full_yx, level_yx, strict=True)):
        return float(whole), float(whole)
    return full_yx[0] / level_yx[0], full_yx[1] / level_yx[1]


def pick_level(levels: list, microns_per_pixel: float, target_um: float) -> int:
    """The coarsest level at least :data:`MIN_REDUCTION` times finer than ``target_um`` (else 0).

    Chosen from the levels' shapes alone: whether a level is stored or computed lazily from the
    finest (spatialdata computes them in memory and writes them to zarr) must not change the
    pixels read.
    """
    best = 0
    for i, lev in enumerate(levels[1:], start=1):
        f = max(level_factors(levels[0].shape[1:], lev.shape[1:]))
        if microns_per_pixel * f * MIN_REDUCTION <= target_um * 1.0001:
            best = i
    return best


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
    """A window of a ``(c, y, x)`` image as ``(3, h, w)`` uint8, ``fill`` outside the image.

    The window is rows ``a0`` to ``a0 + h`` and columns ``b0`` to ``b0 + w``; float values are
    multiplied by ``to_255`` first.
    """
    lh, lw = data.shape[1:]
    ca0, cb0, ca1, cb1 = max(a0, 0), max(b0, 0), min(a0 + h, lh), min(b0 + w, lw)
    inside = (ca0, cb0, ca1, cb1) == (a0, b0, a0 + h, b0 + w)
    # filled only where the window leaves the image: a read inside it writes every pixel
    win = (np.empty((3, h, w), np.uint8) if inside
           else np.full((3, h, w), round(fill * 255), dtype=np.uint8))
    if ca1 > ca0 and cb1 > cb0:
        part = data[:3, ca0:ca1, cb0:cb1]
        part = np.asarray(part.compute() if hasattr(part, "compute") else part)
        if part.dtype.kind == "f":
            part = np.clip(part * to_255, 0, 255)
        win[:, ca0 - a0:ca1 - a0, cb0 - b0:cb1 - b0] = part  # cast as astype(uint8) would
    return win


def _unwrap(level):
    """The array inside an xarray level (numpy or dask); other arrays as they are."""
    return level.data if hasattr(level, "dims") else level


def image_sample(levels: list, side: int = CHECK_SIDE) -> np.ndarray:
    """About ``side`` x ``side`` pixels spread over an image, as ``(c, y, x)`` float in 0-255.

    Read cheaply, to check what an image holds: from its coarsest level that is stored (not
    computed from the finest on reading), with strides. A large lazily loaded level is read in
    an 8 x 8 grid of small patches first (a few chunks), and strided only where those patches
    hold one colour, so that an image with tissue in one corner is not taken for a blank one.
    """
    base = _graph_layers(levels[0])
    level = next(lev for lev in reversed(levels) if _graph_layers(lev) <= base)
    data = _unwrap(level)[:3]
    h, w = data.shape[1:]
    to_255 = _float_to_255([level])
    if hasattr(data, "compute") and h * w > (4 * side) ** 2:
        patches = _computed(_patches(data, n=8, p=max(1, side // 8))) * to_255
        if blank_colour(patches) is None:
            return patches
    step = max(1, -(-max(h, w) // side))
    return _computed(data[:, ::step, ::step]) * to_255


def _patches(data, n: int, p: int):
    """An ``n`` x ``n`` grid of ``p`` x ``p`` patches spread evenly over a dask ``(c, y, x)``."""
    import dask.array as da

    h, w = data.shape[1:]
    tops = [int(i) for i in np.linspace(0, max(h - p, 0), n)]
    lefts = [int(j) for j in np.linspace(0, max(w - p, 0), n)]
    return da.block([[data[:, t:t + p, c:c + p] for c in lefts] for t in tops])


def _computed(arr) -> np.ndarray:
    """A numpy float64 copy of a numpy or dask array."""
    return np.asarray(arr.compute() if hasattr(arr, "compute") else arr, dtype=np.float64)


def _graph_layers(level) -> int:
    """Layers of a lazy level's dask graph: more than the finest's where computed from it."""
    graph = getattr(_unwrap(level), "dask", None)
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
