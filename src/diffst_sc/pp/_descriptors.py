"""Histology descriptors: stain and nuclear statistics of the H&E over discs, in micrometres.

Every descriptor is a ratio of disc means of per-pixel quantities (a colour, its square, an
indicator such as "hematoxylin above 0.06", a nucleus centroid), so one pass over the H&E at a
fixed 1 um per pixel (or at the image's own pixel, where that is coarser: a finer read would
invent nothing) gives them for any disc centre and radius: the quantities are averaged into
coarser working pixels, convolved with a disc, and read at the centres (``pp._discs``). The same
code describes a measured spot, a pseudo-spot and a grid pixel, in training and in inference
alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ._discs import _block_mean, disc_means

#: Pixel size (um) at which the H&E is read for the per-pixel quantities: the finest the
#: descriptors need (nuclei); an image coarser than this is read at its own pixel size.
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
        Side of one working pixel in full-resolution H&E pixels; ``(x, y)`` where the sides
        differ (a resampled window has a whole number of pixels along each axis).
    pixel_um
        The same in micrometres.
    base_um
        Side of one pixel of the H&E read (:func:`reading_pixel_um`), in micrometres.
    coarse
        ``values`` as block means, by block side, as the discs have read them so far.
    """

    values: np.ndarray
    origin_px: tuple[float, float]
    pixel_px: float | tuple[float, float]
    pixel_um: float
    base_um: float = BASE_UM
    coarse: dict = field(default_factory=dict, repr=False, compare=False)

    def to_working(self, xy_px: np.ndarray, factor: int = 1) -> np.ndarray:
        """Full-resolution pixel positions ``(n, 2)`` (x, y) to working (row, col) coordinates.

        ``factor``: on working pixels coarsened that many times (blocks of ``factor**2``).
        """
        xy = ((np.asarray(xy_px, float) - self.origin_px)
              / (factor * np.asarray(self.pixel_px, float)) - 0.5)
        return xy[:, ::-1].T


def _hed(rgb: np.ndarray) -> np.ndarray:
    """``skimage.color.rgb2hed`` of ``(3, h, w)`` uint8, in float32 through a table of 256 logs."""
    from skimage.color import hed_from_rgb

    od = (np.log(np.maximum(np.arange(256) / 255.0, 1e-6)) / np.log(1e-6)).astype(np.float32)
    m = hed_from_rgb.astype(np.float32)
    hed = np.einsum("chw,cd->dhw", od[rgb], m)  # from the optical density per channel
    return np.maximum(hed, 0, out=hed)


#: Number of per-pixel colour quantities (:func:`_rgb_quantities`); three nuclear ones follow.
_N_COLOUR = 23


def _rgb_quantities(x: np.ndarray, hed: np.ndarray) -> Iterator[np.ndarray]:
    """RGB ``(3, h, w)`` in [0, 1] and its ``rgb2hed`` to the 23 per-pixel colour quantities.

    Yields them one ``(h, w)`` map at a time, so that a caller averaging each into working
    pixels holds one full-resolution map, not 23; indicators as booleans (a quarter of the
    memory of floats, averaged as whole numbers).
    """
    h, e = hed[0], hed[1]
    nonwhite = x.mean(0) <= _WHITE
    yield from x
    yield from (c**2 for c in x)
    yield from hed
    yield from (c**2 for c in hed)
    yield ~nonwhite
    yield from (h > t for t in _H_LEVELS)
    yield e > _E_LEVEL
    yield nonwhite
    yield from (np.where(nonwhite, c, np.float32(0)) for c in hed)
    yield from ((h > t) & nonwhite for t in _NONWHITE_H_LEVELS)


def _nuclear_quantities(hema: np.ndarray, threshold: float,
                        base_um: float = BASE_UM) -> np.ndarray:
    """``(3, h, w)``: nuclear mask, and at each nucleus' centroid 1 and whether it is large.

    ``base_um`` is the side of one pixel of ``hema`` in micrometres.
    """
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
    np.add.at(out[2], (r, c), (area * base_um**2 > _LARGE_NUCLEUS_UM2).astype(np.float32))
    return out


def nuclear_threshold(rgbs) -> float:
    """The hematoxylin level above which a pixel counts as nuclear, over H&E windows ``rgbs``.

    ``rgbs`` is an iterable of ``(3, h, w)`` uint8 windows read at :func:`reading_pixel_um`
    (e.g. the windows of one section, read one at a time): the level is the
    :data:`_NUCLEUS_QUANTILE` of their hematoxylin on every fourth pixel of every fourth row (a
    sixteenth of the pixels is kept).
    """
    return float(np.quantile(np.concatenate([_hed(rgb[:, ::4, ::4])[0].ravel() for rgb in rgbs]),
                             _NUCLEUS_QUANTILE))


def stain_quantities(rgb: np.ndarray, origin_px: tuple[float, float],
                     base_px: float | tuple[float, float], pixel_um: float,
                     strip_pixels: int = 2**22, threshold: float | None = None,
                     base_um: float = BASE_UM) -> StainQuantities:
    """The per-pixel quantities of an H&E window read at ``base_um``, in working pixels.

    Parameters
    ----------
    rgb
        ``(3, h, w)`` uint8 H&E at ``base_um`` micrometres per pixel.
    origin_px
        Its top-left corner in full-resolution H&E pixels.
    base_px
        One of its pixels in full-resolution H&E pixels (``(x, y)`` where the sides differ).
    pixel_um
        Working pixel size (a multiple of ``base_um``).
    strip_pixels
        About how many pixels are processed at a time (bounds the memory of the float copies,
        under 100 bytes per pixel, on a window of any width).
    threshold
        Hematoxylin level of nuclei (:func:`nuclear_threshold`); by default the window's own.
    base_um
        Side of one pixel of ``rgb`` in micrometres: :data:`BASE_UM`, or the image's own pixel
        where that is coarser (:func:`reading_pixel_um`).

    Returns
    -------
    StainQuantities
    """
    if rgb.ndim != 3 or rgb.shape[0] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"Expected a (3, y, x) uint8 RGB image, got {rgb.dtype} {rgb.shape}.")
    k = max(1, round(pixel_um / base_um))
    strip = max(k, strip_pixels // max(rgb.shape[2], 1) // k * k)
    # Whole working pixels: pad the window with white (the slide's background) to multiples of k.
    if rgb.shape[1] % k or rgb.shape[2] % k:
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
        x = rgb[:, top:bottom].astype(np.float32)
        x /= np.float32(255.0)  # in place: one float copy of the strip, not two
        hed = _hed(rgb[:, lo:hi])  # with the rows of context, for the nuclei
        core, rows = slice(top - lo, bottom - lo), slice(top // k, bottom // k)
        for i, q in enumerate(_rgb_quantities(x, hed[:, core])):
            out[i, rows] = _block_mean(q, k)
        nuclear = _nuclear_quantities(hed[0], threshold, base_um)
        out[_N_COLOUR:, rows] = _block_mean(nuclear[:, core], k)
    px = k * np.asarray(base_px, float)
    pixel_px = float(px.flat[0]) if px.size == 1 or px[0] == px[1] else (float(px[0]),
                                                                          float(px[1]))
    return StainQuantities(out, tuple(map(float, origin_px)), pixel_px, k * base_um, base_um)


def descriptors_from_means(m: np.ndarray, base_um: float = BASE_UM) -> np.ndarray:
    """Disc means of the quantities ``(n, 26)`` to the descriptors ``(n, len(DESCRIPTOR_NAMES))``.

    ``base_um`` is the side of the pixels the quantities were read on: nuclei per pixel become
    nuclei per 1000 square micrometres.

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
    per_1000um2 = 1000.0 / base_um**2
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
    return np.concatenate([descriptors_from_means(disc_means(q, centres_px, radius_um * s),
                                                  q.base_um) for s in scales], axis=1)


def reading_pixel_um(image_um: float | None, pixel_um: float) -> float:
    """The pixel size (um) at which an image of ``image_um`` per pixel is read for ``pixel_um``.

    The read is averaged into working pixels of ``pixel_um``. It is at :data:`BASE_UM` where the
    image is finer than the working pixel (nuclei are found at that scale; ``None``: an image
    of unknown pixel), and at the image's own pixel where that is as coarse or coarser: a finer
    read would only interpolate, at the cost of an image hundreds of times its size (a 600 px
    Visium image of 18 um pixels over 11 mm, read at 1 um).
    """
    if image_um is not None and image_um >= pixel_um:
        return float(image_um)
    return BASE_UM


def working_pixel_um(radius_um: float, scales: tuple[float, ...] = (0.5, 1.0, 1.5),
                     image_um: float | None = None) -> float:
    """A working pixel about a sixth of the smallest disc radius, never finer than the image.

    At least :data:`BASE_UM`, and the image's own pixel (``image_um``) where that is coarser
    than the discs need.
    """
    needed = float(max(BASE_UM, round(radius_um * min(scales) / 6.0)))
    return needed if image_um is None else max(needed, float(image_um))


def section_quantities(view, bbox_px: tuple[float, float, float, float], pixel_um: float,
                       rgb: np.ndarray | None = None,
                       threshold: float | None = None) -> StainQuantities:
    """:func:`stain_quantities` of a section view's H&E over ``bbox_px`` (x0, y0, x1, y1).

    The H&E is read at :func:`reading_pixel_um` of its pixel size; ``rgb``, if given, is that
    window already read so, as uint8; ``threshold`` the nuclear level (by default the window's).
    """
    base_um = reading_pixel_um(view.microns_per_pixel, pixel_um)
    if rgb is None:
        rgb = view.image_at(base_um, bbox_px, dtype=np.uint8)
    base_px = ((bbox_px[2] - bbox_px[0]) / rgb.shape[2], (bbox_px[3] - bbox_px[1]) / rgb.shape[1])
    return stain_quantities(rgb, (bbox_px[0], bbox_px[1]), base_px, pixel_um,
                            threshold=threshold, base_um=base_um)
