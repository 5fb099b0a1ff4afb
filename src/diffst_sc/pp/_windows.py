"""Descriptors of many centres of a section, the H&E read window by window around them.

The windows cut the centres into a few equal tiles, each read with the widest disc's reach
around the centres it holds, on one lattice of read pixels: memory is that of one window on any
slide, and the H&E is read only where there are centres (tissue near spots), not over the whole
extent. Windows start on whole blocks of every disc and the nuclear level is that of the whole
region the discs read, so a centre's descriptors do not depend on the window that describes it
(but for a cluster of nuclei wider than the context kept at a window's edge).
"""

from __future__ import annotations

from math import ceil, floor, lcm

import numpy as np

from ._descriptors import (
    DESCRIPTOR_NAMES,
    histology_descriptors,
    nuclear_threshold,
    reading_pixel_um,
    section_quantities,
    working_pixel_um,
)
from ._discs import coarsening, disc_reach_um

#: About how many bytes the H&E and its quantities of one window take: windows about 4 mm
#: wide at 2 um working pixels, 7 mm at 4 um (each with the discs' reach around its tile).
WINDOW_BYTES = 2**29
#: Read pixels of context beyond the discs' reach, so that a nucleus cut by a window's edge
#: changes no disc (``stain_quantities`` keeps as many around its strips).
_NUCLEUS_MARGIN = 16
#: Bytes per working pixel of the per-pixel quantities (26 float32 planes), and per read pixel
#: of the uint8 RGB window.
_QUANTITY_BYTES, _RGB_BYTES = 26 * 4, 3


def section_descriptors(view, centres_px: np.ndarray, radius_um: float,
                        scales: tuple[float, ...], *,
                        extent_px: tuple[float, float, float, float],
                        window_bytes: float = WINDOW_BYTES,
                        threshold: float | None = None) -> np.ndarray:
    """:func:`histology_descriptors` of a section view's H&E at ``centres_px``, window by window.

    Parameters
    ----------
    view
        The section (``diffst_sc._core.section_view``).
    centres_px
        ``(n, 2)`` disc centres (x, y) in full-resolution H&E pixels, inside ``extent_px``.
    radius_um, scales
        As :func:`histology_descriptors`; the working pixel is :func:`working_pixel_um` for the
        image's own pixel size, so a coarse image is read as it is.
    extent_px
        ``(x0, y0, x1, y1)`` the region whose H&E the discs may read (e.g. a grid's extent): a
        disc reaching past it averages what lies inside. The read pixels are those of one read
        of the whole region.
    window_bytes
        About how much memory one window takes.
    threshold
        Hematoxylin level of nuclei (:func:`nuclear_threshold`); by default that of the region
        the discs read (the centres with the widest disc's reach around them), however it is
        cut into windows.

    Returns
    -------
    numpy.ndarray
        ``(n, len(scales) * len(DESCRIPTOR_NAMES))``, scale-major.
    """
    centres_px = np.asarray(centres_px, float).reshape(-1, 2)
    out = np.empty((len(centres_px), len(scales) * len(DESCRIPTOR_NAMES)))
    if not len(centres_px):
        return out
    mpp = view.microns_per_pixel
    pixel_um = working_pixel_um(radius_um, scales, mpp)
    base_um = reading_pixel_um(mpp, pixel_um)
    k = max(1, round(pixel_um / base_um))
    # windows start on whole blocks of every disc, so that a block is the same in every window,
    # and on the rows and columns of the nuclear level's sample (every fourth)
    block = lcm(4, k * lcm(*(coarsening(radius_um * s, pixel_um) for s in scales)))
    reach = (max(disc_reach_um(radius_um * s, pixel_um) for s in scales) / base_um
             + _NUCLEUS_MARGIN)
    origin, pitch, size = read_lattice(extent_px, mpp, base_um)
    at = (centres_px - origin) / pitch  # (x, y) in read pixels
    side = np.sqrt(window_bytes / (_RGB_BYTES + _QUANTITY_BYTES / k**2))
    # the region the discs read: the centres with the reach around them, from a row and column
    # of the nuclear level's sample (every fourth), however it is cut into windows
    region = [(max(0, floor(lo - reach) // 4 * 4), min(int(n), ceil(hi + reach)))
              for lo, hi, n in zip(at.min(0), at.max(0), size, strict=True)]
    cuts = [_tiles(lo, hi, int(n), reach, side)
            for lo, hi, n in zip(at.min(0), at.max(0), size, strict=True)]
    cell = [np.clip(np.searchsorted(c, v, side="right") - 1, 0, len(c) - 2)
            for c, v in zip(cuts, at.T, strict=True)]
    cells = cell[1] * len(cuts[0]) + cell[0]
    windows = []
    for c in np.unique(cells):
        members = np.nonzero(cells == c)[0]
        lo, hi = at[members].min(0) - reach, at[members].max(0) + reach
        start = [max(0, floor(v / block) * block) for v in lo]
        end = [min(int(n), ceil(v / block) * block) for n, v in zip(size, hi, strict=True)]
        windows.append((start, end, members))

    def read(start, end):
        bbox = (*(origin + np.array(start) * pitch), *(origin + np.array(end) * pitch))
        return tuple(map(float, bbox)), view.image_at(base_um, bbox, dtype=np.uint8)

    def sample(start, rgb):  # the region's part of a window, from a row and column of the sample
        (x0, x1), (y0, y1) = region
        top, left = max(y0, start[1]), max(x0, start[0])
        return rgb[:, top - start[1] + (-top % 4):y1 - start[1],
                   left - start[0] + (-left % 4):x1 - start[0]]

    first = None  # one window: read once, its region's sample taken from it
    if threshold is None and len(windows) == 1:
        first = read(*windows[0][:2])
        threshold = nuclear_threshold([sample(windows[0][0], first[1])])
    elif threshold is None:  # the region read once more, in bands of rows of about a window
        (x0, x1), (y0, y1) = region
        rows = max(4, int(side**2 / max(x1 - x0, 1)) // 4 * 4)
        threshold = nuclear_threshold(read((x0, r), (x1, min(y1, r + rows)))[1]
                                      for r in range(y0, y1, rows))
    for start, end, members in windows:
        bbox, rgb = first or read(start, end)
        first = None
        q = section_quantities(view, bbox, pixel_um, rgb=rgb, threshold=threshold)
        del rgb
        out[members] = histology_descriptors(q, centres_px[members], radius_um, scales)
        del q  # before the next window's are made: one window's quantities in memory at a time
    return out


def _tiles(lo: float, hi: float, n: int, reach: float, side: float) -> np.ndarray:
    """Edges of the tiles that cut the centres from ``lo`` to ``hi`` along one axis (of ``n``).

    One tile where its window (the tile with ``reach`` around it, within ``[0, n)``) is at
    most ``side`` wide; else as few equal tiles as keep each window about ``side``, a tile at
    least half of it (a deep reach would otherwise leave thin tiles, most of each window read
    again by its neighbours).
    """
    if min(n, hi + reach) - max(0, lo - reach) <= side:
        return np.array([lo, hi + 1])
    count = ceil((hi - lo + 1) / max(side - 2 * reach, side / 2))
    return np.linspace(lo, hi + 1, count + 1)


def read_lattice(extent_px: tuple[float, float, float, float], microns_per_pixel: float,
                 base_um: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The read pixels over ``extent_px``: origin and side (x, y) in H&E pixels, count along x, y.

    An image read at another pixel size than its own is resampled, into the pixels one read of
    the whole extent gives (a whole number along each axis); one read at its own is cut as it
    is, on its own pixels.
    """
    x0, y0, x1, y1 = map(float, extent_px)
    if microns_per_pixel != base_um:
        ext = np.array([x1 - x0, y1 - y0])
        n = np.maximum(1, np.round(ext * microns_per_pixel / base_um))
        return np.array([x0, y0]), ext / n, n.astype(np.int64)
    origin = np.floor([x0, y0])
    n = np.maximum(1, np.ceil(np.array([x1, y1]) - origin))
    return origin, np.ones(2), n.astype(np.int64)
