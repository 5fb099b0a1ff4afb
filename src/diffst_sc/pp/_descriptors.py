"""Histology descriptors: stain and nuclear statistics of the H&E over discs, in micrometres.

Every descriptor is a ratio of disc means of per-pixel quantities (a colour, its square, an
indicator such as "hematoxylin above 0.06", a nucleus centroid), so one pass over the H&E at a
fixed 1 um per pixel gives them for any disc centre and radius: the quantities are averaged into
coarser working pixels, convolved with a disc, and read at the centres. The same code describes a
measured spot, a pseudo-spot and a grid pixel, in training and in inference alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

#: Pixel size (um) at which the H&E is read for the per-pixel quantities.
BASE_UM = 1.0
#: Thresholds on skimage's ``rgb2hed`` channels of RGB in [0, 1].
_H_LEVELS = (0.06, 0.10)
_E_LEVEL = 0.04
_NONWHITE_H_LEVELS = (0.04, 0.08, 0.12)
_WHITE = 0.85
#: Nuclei: hematoxylin above this quantile of the image, one opening; "large" above this area.
_NUCLEUS_QUANTILE = 0.8
_LARGE_NUCLEUS_UM2 = 40.0

#: Names of the descriptors of one disc, in column order.
DESCRIPTOR_NAMES = (
    [f"mean_{c}" for c in "RGBHED"] + [f"std_{c}" for c in "RGBHED"]
    + ["white_fraction"] + [f"H>{t}" for t in _H_LEVELS] + [f"E>{_E_LEVEL}"]
    + [f"nonwhite_mean_{c}" for c in "HED"]
    + [f"nonwhite_H>{t}" for t in _NONWHITE_H_LEVELS]
    + ["nuclei_per_1000um2", "nuclear_fraction", "large_nuclei_per_1000um2"]
)


@dataclass
class StainQuantities:
    """Per-pixel quantities of an H&E window, averaged into working pixels.

    Attributes
    ----------
    values
        ``(Q, h, w)`` float32 means of each quantity over each working pixel.
    origin_px
        ``(x, y)`` of the window's top-left corner in full-resolution H&E pixels.
    pixel_px
        Side of one working pixel in full-resolution H&E pixels.
    pixel_um
        The same in micrometres.
    """

    values: np.ndarray
    origin_px: tuple[float, float]
    pixel_px: float
    pixel_um: float

    def to_working(self, xy_px: np.ndarray, factor: int = 1) -> np.ndarray:
        """Full-resolution pixel positions ``(n, 2)`` (x, y) to working (row, col) coordinates.

        ``factor``: on working pixels coarsened that many times (blocks of ``factor**2``).
        """
        xy = (np.asarray(xy_px, float) - self.origin_px) / (factor * self.pixel_px) - 0.5
        return xy[:, ::-1].T


def _hed(rgb: np.ndarray) -> np.ndarray:
    """``skimage.color.rgb2hed`` of ``(3, h, w)`` uint8, in float32 through a table of 256 logs."""
    from skimage.color import hed_from_rgb

    od = (np.log(np.maximum(np.arange(256) / 255.0, 1e-6)) / np.log(1e-6)).astype(np.float32)
    m = hed_from_rgb.astype(np.float32)
    v = od[rgb]  # optical density per channel
    return np.maximum(np.einsum("chw,cd->dhw", v, m), 0)


#: Number of per-pixel colour quantities (:func:`_rgb_quantities`); three nuclear ones follow.
_N_COLOUR = 23


def _rgb_quantities(x: np.ndarray, hed: np.ndarray) -> Iterator[np.ndarray]:
    """RGB ``(3, h, w)`` in [0, 1] and its ``rgb2hed`` to the 23 per-pixel colour quantities.

    Yields them one ``(h, w)`` map at a time, so that a caller averaging each into working
    pixels holds one full-resolution map, not 23.
    """
    h, e = hed[0], hed[1]
    nonwhite = (x.mean(0) <= _WHITE).astype(np.float32)
    yield from x
    yield from (c**2 for c in x)
    yield from hed
    yield from (c**2 for c in hed)
    yield 1.0 - nonwhite
    yield from ((h > t).astype(np.float32) for t in _H_LEVELS)
    yield (e > _E_LEVEL).astype(np.float32)
    yield nonwhite
    yield from (c * nonwhite for c in hed)
    yield from (((h > t) & (nonwhite > 0)).astype(np.float32) for t in _NONWHITE_H_LEVELS)


def _nuclear_quantities(hema: np.ndarray, threshold: float) -> np.ndarray:
    """``(3, h, w)``: nuclear mask, and at each nucleus' centroid 1 and whether it is large."""
    from scipy import ndimage

    mask = ndimage.binary_opening(hema > threshold)
    labels, n = ndimage.label(mask)
    out = np.zeros((3, *mask.shape), np.float32)
    out[0] = mask
    if n == 0:
        return out
    rr, cc = np.nonzero(labels)
    lab = labels[rr, cc]
    area = np.bincount(lab, minlength=n + 1)[1:].astype(np.float64)
    r = (np.bincount(lab, rr, minlength=n + 1)[1:] / area).astype(int)
    c = (np.bincount(lab, cc, minlength=n + 1)[1:] / area).astype(int)
    np.add.at(out[1], (r, c), 1.0)
    np.add.at(out[2], (r, c), (area * BASE_UM**2 > _LARGE_NUCLEUS_UM2).astype(np.float32))
    return out


def _block_mean(a: np.ndarray, k: int) -> np.ndarray:
    """float32 mean over ``k x k`` blocks of the last two axes, whose sizes are multiples of ``k``.

    Strided sums (one pass per offset) rather than a reduction over a reshaped view, which
    numpy runs about five times slower.
    """
    if k == 1:
        return a.astype(np.float32, copy=False)
    cols = a[..., 0::k].astype(np.float32)
    for j in range(1, k):
        cols += a[..., j::k]
    out = cols[..., 0::k, :].copy()
    for i in range(1, k):
        out += cols[..., i::k, :]
    return out * np.float32(1.0 / (k * k))


def nuclear_threshold(rgbs) -> float:
    """The hematoxylin level above which a pixel counts as nuclear, over H&E windows ``rgbs``.

    ``rgbs`` is an iterable of ``(3, h, w)`` uint8 windows at :data:`BASE_UM` (e.g. the bands
    of one section, read one at a time): the level is the :data:`_NUCLEUS_QUANTILE` of their
    hematoxylin on every fourth pixel of every fourth row (a sixteenth of the pixels is kept).
    """
    return float(np.quantile(np.concatenate([_hed(rgb[:, ::4, ::4])[0].ravel() for rgb in rgbs]),
                             _NUCLEUS_QUANTILE))


def stain_quantities(rgb: np.ndarray, origin_px: tuple[float, float], base_px: float,
                     pixel_um: float, strip_pixels: int = 2**22,
                     threshold: float | None = None) -> StainQuantities:
    """The per-pixel quantities of an H&E window read at :data:`BASE_UM`, in working pixels.

    Parameters
    ----------
    rgb
        ``(3, h, w)`` uint8 H&E at :data:`BASE_UM` micrometres per pixel.
    origin_px
        Its top-left corner in full-resolution H&E pixels.
    base_px
        One of its pixels in full-resolution H&E pixels.
    pixel_um
        Working pixel size (a multiple of :data:`BASE_UM`).
    strip_pixels
        About how many pixels are processed at a time (bounds the memory of the float copies,
        under 100 bytes per pixel, on a window of any width).
    threshold
        Hematoxylin level of nuclei (:func:`nuclear_threshold`); by default the window's own.

    Returns
    -------
    StainQuantities
    """
    if rgb.ndim != 3 or rgb.shape[0] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"Expected a (3, y, x) uint8 RGB image, got {rgb.dtype} {rgb.shape}.")
    k = max(1, round(pixel_um / BASE_UM))
    strip = max(k, strip_pixels // max(rgb.shape[2], 1) // k * k)
    # Whole working pixels: pad the window with white (the slide's background) to multiples of k.
    pad = [(0, 0), (0, -rgb.shape[1] % k), (0, -rgb.shape[2] % k)]
    rgb = np.pad(rgb, pad, constant_values=255)
    h = rgb.shape[1]
    # The nuclear threshold is a quantile of hematoxylin over the whole window (stain-relative).
    if threshold is None:
        threshold = nuclear_threshold([rgb])
    margin = 16  # rows of context so that nuclei cut by a strip's edge are still whole
    out = np.empty((_N_COLOUR + 3, h // k, rgb.shape[2] // k), np.float32)
    for top in range(0, h, strip):
        bottom = min(h, top + strip)
        lo, hi = max(0, top - margin), min(h, bottom + margin)
        x = rgb[:, lo:hi].astype(np.float32) / 255.0
        hed = _hed(rgb[:, lo:hi])
        core, rows = slice(top - lo, bottom - lo), slice(top // k, bottom // k)
        for i, q in enumerate(_rgb_quantities(x[:, core], hed[:, core])):
            out[i, rows] = _block_mean(q, k)
        out[_N_COLOUR:, rows] = _block_mean(_nuclear_quantities(hed[0], threshold)[:, core], k)
    return StainQuantities(out, tuple(map(float, origin_px)), k * base_px, k * BASE_UM)


def _disc_kernel(radius: float) -> np.ndarray:
    """A disc of ``radius`` working pixels, anti-aliased by 4 x 4 supersampling."""
    n = int(np.ceil(radius)) + 1
    offs = (np.arange(4) + 0.5) / 4 - 0.5
    y, x = np.mgrid[-n:n + 1, -n:n + 1].astype(float)
    k = np.zeros_like(y)
    for dy in offs:
        for dx in offs:
            k += ((y + dy) ** 2 + (x + dx) ** 2) <= radius**2
    return k / 16


#: Working pixels a disc's radius spans at least: a disc of twice as many or more is read on
#: working pixels coarsened by the whole factor that brings it to 6-12, which costs a disc of
#: any size about the same and softens its rim by up to a sixth of its radius (her2st quality
#: unchanged: single-section mean wPCC 0.423 before and after).
DISC_RADIUS_PIXELS = 6


def disc_means(q: StainQuantities, centres_px: np.ndarray, radius_um: float) -> np.ndarray:
    """``(n, Q)`` mean of each quantity over the disc of ``radius_um`` around each centre.

    The image window's edge is handled by normalised convolution: a disc partly outside the
    window averages what is inside. A disc wider than :data:`DISC_RADIUS_PIXELS` working pixels
    is read on working pixels coarsened by a whole factor (block means) when its radius spans
    twice that or more, so that its kernel stays about that size.
    """
    from scipy import ndimage
    from scipy.fft import set_workers
    from scipy.signal import fftconvolve

    k = max(1, int(radius_um / q.pixel_um / DISC_RADIUS_PIXELS))
    kernel = _disc_kernel(max(radius_um / (k * q.pixel_um), 0.5))
    h, w = q.values.shape[1:]

    def coarse(a):  # block means over the window padded with zeros to whole blocks
        return _block_mean(np.pad(a, ((0, -h % k), (0, -w % k))) if k > 1 else a, k)

    at = q.to_working(centres_px, k)
    # One plane at a time (memory stays that of one plane), each transform on every core.
    with set_workers(_fft_workers()):
        ones = fftconvolve(coarse(np.ones((h, w), np.float32)), kernel, mode="same")
        norm = ndimage.map_coordinates(ones, at, order=1, mode="nearest")
        out = np.empty((len(centres_px), len(q.values)), np.float64)
        for i, v in enumerate(q.values):
            conv = fftconvolve(coarse(v), kernel, mode="same")
            out[:, i] = ndimage.map_coordinates(conv, at, order=1, mode="nearest")
    return out / np.maximum(norm, 1e-6)[:, None]


def _fft_workers() -> int:
    """Threads for scipy's FFTs: the cores this process may use."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def descriptors_from_means(m: np.ndarray) -> np.ndarray:
    """Disc means of the quantities ``(n, 26)`` to the descriptors ``(n, len(DESCRIPTOR_NAMES))``.

    Ratios per nucleus (mean area, fraction large) are left out on purpose: over a disc with few
    nuclei they are outliers that a linear model over-weights; densities are used instead.
    """
    mean_rgb, sq_rgb, mean_hed, sq_hed = m[:, 0:3], m[:, 3:6], m[:, 6:9], m[:, 9:12]
    std_rgb = np.sqrt(np.clip(sq_rgb - mean_rgb**2, 0, None))
    std_hed = np.sqrt(np.clip(sq_hed - mean_hed**2, 0, None))
    white, fractions, nonwhite = m[:, 12:13], m[:, 13:16], m[:, 16:17]
    nw = np.maximum(nonwhite, 1e-3)
    nonwhite_hed = m[:, 17:20] / nw
    nonwhite_h = m[:, 20:23] / nw
    per_1000um2 = 1000.0 / BASE_UM**2
    nuclear = np.c_[m[:, 24] * per_1000um2, m[:, 23], m[:, 25] * per_1000um2]
    return np.c_[mean_rgb, mean_hed, std_rgb, std_hed, white, fractions, nonwhite_hed,
                 nonwhite_h, nuclear]


#: Descriptors that are fractions of a disc or counts per area: binomial or Poisson-like, their
#: spread grows with their level.
COUNT_LIKE = ("white_fraction", *(f"H>{t}" for t in _H_LEVELS), f"E>{_E_LEVEL}",
              *(f"nonwhite_H>{t}" for t in _NONWHITE_H_LEVELS),
              "nuclei_per_1000um2", "nuclear_fraction", "large_nuclei_per_1000um2")


def stabilise_variance(descriptors: np.ndarray) -> np.ndarray:
    """Square roots of the :data:`COUNT_LIKE` columns of ``descriptors``, in place.

    ``descriptors`` is ``(..., n_scales * len(DESCRIPTOR_NAMES))`` scale-major (as
    :func:`histology_descriptors` returns), the descriptors along the last axis. The square root
    stabilises the variance of fractions and counts, so that a linear model weighs a change of
    nuclear density alike in sparse and in dense tissue (her2st, histology path: mean wPCC
    0.444 -> 0.446 in one section, 0.448 -> 0.452 across sections).
    """
    per = len(DESCRIPTOR_NAMES)
    cols = [i for i, name in enumerate(DESCRIPTOR_NAMES) if name in COUNT_LIKE]
    idx = np.concatenate([np.asarray(cols) + k * per
                          for k in range(descriptors.shape[-1] // per)])
    descriptors[..., idx] = np.sqrt(np.clip(descriptors[..., idx], 0, None))
    return descriptors


def histology_descriptors(q: StainQuantities, centres_px: np.ndarray, radius_um: float,
                          scales: tuple[float, ...] = (0.5, 1.0, 1.5)) -> np.ndarray:
    """Descriptors of the discs of ``radius_um * s`` around each centre, for each scale ``s``.

    Parameters
    ----------
    q
        The H&E's per-pixel quantities (:func:`stain_quantities`).
    centres_px
        ``(n, 2)`` disc centres (x, y) in full-resolution H&E pixels.
    radius_um
        Radius of the footprint described, in micrometres.
    scales
        Radii relative to ``radius_um``.

    Returns
    -------
    numpy.ndarray
        ``(n, len(scales) * len(DESCRIPTOR_NAMES))``, scale-major.

    Examples
    --------
    >>> q = stain_quantities(rgb, (0, 0), base_px=1 / 0.69, pixel_um=4)  # doctest: +SKIP
    >>> histology_descriptors(q, centres_px, radius_um=50).shape  # doctest: +SKIP
    (283, 75)
    """
    return np.concatenate([descriptors_from_means(disc_means(q, centres_px, radius_um * s))
                           for s in scales], axis=1)


def working_pixel_um(radius_um: float, scales: tuple[float, ...] = (0.5, 1.0, 1.5)) -> float:
    """A working pixel about a sixth of the smallest disc radius (at least :data:`BASE_UM`)."""
    return float(max(BASE_UM, round(radius_um * min(scales) / 6.0)))


def section_quantities(view, bbox_px: tuple[float, float, float, float], pixel_um: float,
                       rgb: np.ndarray | None = None,
                       threshold: float | None = None) -> StainQuantities:
    """:func:`stain_quantities` of a section view's H&E over ``bbox_px`` (x0, y0, x1, y1).

    ``rgb``, if given, is that window already read at :data:`BASE_UM` as uint8; ``threshold``
    the nuclear level (by default the window's).
    """
    if rgb is None:
        rgb = view.image_at(BASE_UM, bbox_px, dtype=np.uint8)
    base_px = (bbox_px[2] - bbox_px[0]) / rgb.shape[2]
    return stain_quantities(rgb, (bbox_px[0], bbox_px[1]), base_px, pixel_um,
                            threshold=threshold)
