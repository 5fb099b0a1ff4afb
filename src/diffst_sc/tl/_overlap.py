"""How much of each raster pixel each cell covers: cells as polygons or as a label image.

A cell's expected counts are the map's values summed over the cell, each pixel weighted by the
share of its area inside the cell. This module gives those weights, as a sparse
``(cells, pixels)`` matrix in pixel areas, for cells given as shapely geometries (exact areas of
intersection) or as a label image (exact when the label pixels are axis-aligned with the map's,
as a segmentation of the H&E is with a map over the H&E; otherwise each label pixel is split
into sub-pixels a few times finer than the map's pixels). Everything is in the raster's pixel
units: pixel ``(i, j)`` covers ``[j, j + 1) x [i, i + 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

#: Candidate (cell, pixel) pairs intersected at once (bounds the memory of one batch).
_BATCH_PAIRS = 500_000
#: Label pixels read at once.
_STRIP_PIXELS = 4_000_000
#: Where label and map pixels are not axis-aligned: sub-pixels per map pixel side, at least.
_SUBSAMPLES_PER_MAP_PIXEL = 8


@dataclass
class Overlaps:
    """Cells over a raster.

    Attributes
    ----------
    ids
        ``(n,)`` the cells' ids: the shapes' index, or the label values.
    weights
        ``(n, height * width)`` CSR: the area of each pixel inside each cell, in pixel areas
        (1 for a pixel wholly inside), pixels in row-major order.
    area
        ``(n,)`` each cell's whole area in pixel areas, on the raster or off it.
    centroids
        ``(n, 2)`` centroids (x, y) in the cells' own coordinates.
    """

    ids: np.ndarray
    weights: sp.csr_matrix
    area: np.ndarray
    centroids: np.ndarray


def geometry_overlaps(geoms, ids, raster_hw: tuple[int, int],
                      to_raster: np.ndarray) -> Overlaps:
    """Exact overlaps of shapely polygons (or multipolygons) with a raster's pixels.

    Parameters
    ----------
    geoms
        ``(n,)`` shapely geometries with area, in the cells' own coordinates.
    ids
        ``(n,)`` their ids.
    raster_hw
        ``(height, width)`` of the raster.
    to_raster
        ``3 x 3`` affine from the cells' coordinates (x, y) to the raster's pixel units.
    """
    import shapely

    geoms = np.asarray(geoms, dtype=object)
    centroids = shapely.get_coordinates(shapely.centroid(geoms))
    a = np.asarray(to_raster, float)
    moved = shapely.transform(geoms, lambda xy: xy @ a[:2, :2].T + a[:2, 2])
    area = shapely.area(moved)
    h, w = (int(s) for s in raster_hw)
    bounds = shapely.bounds(moved)
    x0 = np.clip(np.floor(bounds[:, 0]), 0, w).astype(np.int64)
    x1 = np.clip(np.ceil(bounds[:, 2]), 0, w).astype(np.int64)
    y0 = np.clip(np.floor(bounds[:, 1]), 0, h).astype(np.int64)
    y1 = np.clip(np.ceil(bounds[:, 3]), 0, h).astype(np.int64)
    nx, ny = np.maximum(x1 - x0, 0), np.maximum(y1 - y0, 0)
    n_pairs = nx * ny
    rows, cols, vals = [], [], []
    # Batches of whole cells, each about _BATCH_PAIRS candidate pixels.
    edges = np.searchsorted(np.cumsum(n_pairs), np.arange(_BATCH_PAIRS, n_pairs.sum(),
                                                           _BATCH_PAIRS), side="right")
    for lo, hi in zip(np.r_[0, edges], np.r_[edges, len(geoms)], strict=True):
        cell = np.repeat(np.arange(lo, hi), n_pairs[lo:hi])
        if not len(cell):
            continue
        k = np.arange(len(cell)) - np.repeat(np.cumsum(n_pairs[lo:hi]) - n_pairs[lo:hi],
                                             n_pairs[lo:hi])
        px = x0[cell] + k % nx[cell]
        py = y0[cell] + k // nx[cell]
        inter = shapely.area(shapely.intersection(moved[cell], shapely.box(px, py, px + 1,
                                                                           py + 1)))
        keep = inter > 0
        rows.append(cell[keep])
        cols.append(py[keep] * w + px[keep])
        vals.append(inter[keep])
    weights = _csr(rows, cols, vals, (len(geoms), h * w))
    return Overlaps(np.asarray(ids), weights, np.asarray(area, float), centroids)


def label_overlaps(labels, raster_hw: tuple[int, int], to_raster: np.ndarray) -> Overlaps:
    """Overlaps of the cells of a label image (0 = background) with a raster's pixels.

    Parameters
    ----------
    labels
        ``(y, x)`` integer label image (numpy, dask or xarray), read a strip of rows at a time.
    raster_hw
        ``(height, width)`` of the raster.
    to_raster
        ``3 x 3`` affine from label pixel units (x, y) to the raster's pixel units.

    Notes
    -----
    When the affine only scales and shifts (no rotation or shear), each label pixel's overlap
    with each raster pixel is the product of the overlaps of their extents along x and y: exact.
    Otherwise each label pixel is split into ``s x s`` sub-pixels (``s`` so that a sub-pixel is
    at most an eighth of a raster pixel wide, at most 8), each given to the raster pixel under
    its centre: a cell's area is exact, its split between raster pixels exact to a sub-pixel
    along its border.
    """
    data = getattr(labels, "data", labels)
    if data.ndim != 2:
        raise ValueError(f"Expected a (y, x) label image; got shape {tuple(data.shape)}.")
    a = np.asarray(to_raster, float)
    pixel_area = abs(float(np.linalg.det(a[:2, :2])))
    lh, lw = (int(s) for s in data.shape)
    h, w = (int(s) for s in raster_hw)
    aligned = abs(a[0, 1]) + abs(a[1, 0]) <= 1e-9 * (abs(a[0, 0]) + abs(a[1, 1]))
    if aligned:
        pieces_x = _interval_pieces(a[0, 0], a[0, 2], lw, w)
        pieces_y = _interval_pieces(a[1, 1], a[1, 2], lh, h)
    else:
        side = np.sqrt(pixel_area)
        s = int(np.clip(np.ceil(_SUBSAMPLES_PER_MAP_PIXEL * side), 1, 8))
    step = max(1, _STRIP_PIXELS // max(lw, 1))
    parts = []
    for top in range(0, lh, step):
        strip = np.asarray(data[top:top + step])
        ii, jj = np.nonzero(strip)
        if not len(ii):
            continue
        ids, inv = np.unique(strip[ii, jj], return_inverse=True)
        ii = ii + top
        stats = np.c_[np.bincount(inv), np.bincount(inv, jj + 0.5), np.bincount(inv, ii + 0.5)]
        if aligned:
            cols, vals, cell = _aligned_pieces(ii, jj, inv, pieces_x, pieces_y, w)
        else:
            cols, vals, cell = _subsampled(ii, jj, inv, a, s, h, w, pixel_area)
        parts.append((ids, stats, _csr([cell], [cols], [vals], (len(ids), h * w))))
    return _merge(parts, h * w, pixel_area)


def _interval_pieces(scale: float, shift: float, n: int, size: int):
    """Along one axis: the raster cells ``(n, P)`` each label pixel reaches and the lengths.

    Label pixel ``k`` spans ``[scale * k + shift, scale * (k + 1) + shift)`` in raster units;
    ``P`` is the most raster cells one label pixel reaches. Cells off the raster get length 0.
    """
    ends = scale * np.arange(n + 1) + shift
    lo, hi = np.minimum(ends[:-1], ends[1:]), np.maximum(ends[:-1], ends[1:])
    first = np.floor(lo).astype(np.int64)
    n_pieces = int(max(1, (np.ceil(hi) - first).max()))
    cells = first[:, None] + np.arange(n_pieces)
    length = np.clip(np.minimum(hi[:, None], cells + 1) - np.maximum(lo[:, None], cells), 0, None)
    length[(cells < 0) | (cells >= size)] = 0.0
    return np.clip(cells, 0, size - 1), length


def _aligned_pieces(ii, jj, inv, pieces_x, pieces_y, w):
    """Raster pixel, overlap area and cell of each (label pixel, raster pixel) piece."""
    (cx, lx), (cy, ly) = pieces_x, pieces_y
    cols, vals, cell = [], [], []
    for py in range(cy.shape[1]):
        for px in range(cx.shape[1]):
            v = ly[ii, py] * lx[jj, px]
            keep = v > 0
            cols.append(cy[ii[keep], py] * w + cx[jj[keep], px])
            vals.append(v[keep])
            cell.append(inv[keep])
    return np.concatenate(cols), np.concatenate(vals), np.concatenate(cell)


def _subsampled(ii, jj, inv, a, s, h, w, pixel_area):
    """As :func:`_aligned_pieces`, each label pixel split into ``s x s`` sub-pixels."""
    cols, vals, cell = [], [], []
    offsets = (np.arange(s) + 0.5) / s
    for dy in offsets:
        for dx in offsets:
            x, y = jj + dx, ii + dy
            rx = np.floor(a[0, 0] * x + a[0, 1] * y + a[0, 2]).astype(np.int64)
            ry = np.floor(a[1, 0] * x + a[1, 1] * y + a[1, 2]).astype(np.int64)
            keep = (rx >= 0) & (rx < w) & (ry >= 0) & (ry < h)
            cols.append(ry[keep] * w + rx[keep])
            vals.append(np.full(int(keep.sum()), pixel_area / (s * s)))
            cell.append(inv[keep])
    return np.concatenate(cols), np.concatenate(vals), np.concatenate(cell)


def _merge(parts, n_pixels: int, pixel_area: float) -> Overlaps:
    """One :class:`Overlaps` from the strips' ``(ids, stats, weights)``."""
    if not parts:
        return Overlaps(np.zeros(0, np.int64), sp.csr_matrix((0, n_pixels)), np.zeros(0),
                        np.zeros((0, 2)))
    ids = np.unique(np.concatenate([p[0] for p in parts]))
    stats = np.zeros((len(ids), 3))
    rows, cols, vals = [], [], []
    for strip_ids, strip_stats, weights in parts:
        at = np.searchsorted(ids, strip_ids)
        np.add.at(stats, at, strip_stats)
        coo = weights.tocoo()
        rows.append(at[coo.row])
        cols.append(coo.col)
        vals.append(coo.data)
    weights = _csr(rows, cols, vals, (len(ids), n_pixels))
    count = stats[:, 0]
    return Overlaps(ids, weights, count * pixel_area, stats[:, 1:] / count[:, None])


def _csr(rows, cols, vals, shape) -> sp.csr_matrix:
    """The CSR matrix of concatenated COO parts, duplicates summed."""
    if not rows:
        return sp.csr_matrix(shape)
    m = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=shape).tocsr()
    m.sum_duplicates()
    return m
