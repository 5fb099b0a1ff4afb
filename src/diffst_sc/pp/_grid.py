"""A raster grid over the H&E and the spot <-> pixel operators the model needs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class Grid:
    """A raster of square pixels laid over the H&E.

    Attributes
    ----------
    x0, y0
        Top-left corner of pixel (0, 0) in H&E pixels.
    pixel
        Side of one grid pixel in H&E pixels.
    height, width
        Number of grid rows and columns.
    """

    x0: float
    y0: float
    pixel: float
    height: int
    width: int

    @classmethod
    def around(cls, centres_px: np.ndarray, pixel: float, margin: float) -> Grid:
        """The smallest grid covering ``centres_px`` plus ``margin`` (H&E pixels) on each side."""
        lo = centres_px.min(0) - margin
        hi = centres_px.max(0) + margin
        w, h = np.ceil((hi - lo) / pixel).astype(int)
        return cls(float(lo[0]), float(lo[1]), float(pixel), int(h), int(w))

    def pixel_centres(self) -> np.ndarray:
        """``(H * W, 2)`` pixel centres (x, y) in H&E pixels, row-major."""
        ys = self.y0 + (np.arange(self.height) + 0.5) * self.pixel
        xs = self.x0 + (np.arange(self.width) + 0.5) * self.pixel
        gx, gy = np.meshgrid(xs, ys)
        return np.c_[gx.ravel(), gy.ravel()]

    def to_grid(self, xy_px: np.ndarray) -> np.ndarray:
        """H&E pixel coordinates to continuous grid coordinates (x, y), pixel edges at integers."""
        return (np.asarray(xy_px, float) - [self.x0, self.y0]) / self.pixel


def coverage_matrix(centres_px: np.ndarray, diameter_px: float, grid: Grid,
                    supersample: int = 4) -> sp.csr_matrix:
    """Fraction of each grid pixel inside each spot disc, ``(n_spots, H * W)``.

    Each pixel is sampled at ``supersample ** 2`` points, so discs a few pixels wide are
    measured to within a few percent.
    """
    r = diameter_px / 2 / grid.pixel
    c = grid.to_grid(centres_px)
    offs = (np.arange(supersample) + 0.5) / supersample
    rows, cols, vals = [], [], []
    span = int(np.ceil(r)) + 1
    di, dj = np.meshgrid(np.arange(-span, span + 1), np.arange(-span, span + 1), indexing="ij")
    for s, (cx, cy) in enumerate(c):
        ii = (np.floor(cy) + di).ravel().astype(int)
        jj = (np.floor(cx) + dj).ravel().astype(int)
        ok = (ii >= 0) & (ii < grid.height) & (jj >= 0) & (jj < grid.width)
        ii, jj = ii[ok], jj[ok]
        py = ii[:, None, None] + offs[None, :, None] - cy
        px = jj[:, None, None] + offs[None, None, :] - cx
        frac = ((px**2 + py**2) <= r * r).mean((1, 2))
        nz = frac > 0
        rows.append(np.full(int(nz.sum()), s))
        cols.append(ii[nz] * grid.width + jj[nz])
        vals.append(frac[nz])
    n = len(c)
    if not rows:
        return sp.csr_matrix((n, grid.height * grid.width))
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(n, grid.height * grid.width))


def gaussian_weights(centres_px: np.ndarray, grid: Grid, sigma_px: float,
                     cutoff: float = 3.0) -> sp.csr_matrix:
    """Gaussian weight of each spot at each pixel centre, ``(n_spots, H * W)``, cut at ``cutoff`` sd."""
    from scipy.spatial import cKDTree

    pix = grid.pixel_centres()
    tree = cKDTree(pix)
    rows, cols, vals = [], [], []
    for s, pts in enumerate(tree.query_ball_point(centres_px, cutoff * sigma_px)):
        if not pts:
            continue
        d2 = ((pix[pts] - centres_px[s]) ** 2).sum(1)
        rows.append(np.full(len(pts), s))
        cols.append(np.asarray(pts))
        vals.append(np.exp(-d2 / (2 * sigma_px**2)))
    shape = (len(centres_px), grid.height * grid.width)
    if not rows:
        return sp.csr_matrix(shape)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=shape)


def spread_values(values: np.ndarray, weights: sp.csr_matrix, grid: Grid,
                  floor: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Normalised convolution of per-spot ``values`` ``(n, G)`` onto the grid.

    Returns
    -------
    field
        ``(G, H, W)`` weighted mean of the spots' values at each pixel.
    support
        ``(H, W)`` summed weights (how much evidence each pixel has).
    """
    wt = weights.T.tocsr()
    support = np.asarray(wt.sum(1)).ravel()
    field = (wt @ values) / np.maximum(support, floor)[:, None]
    shape = (grid.height, grid.width)
    return (np.ascontiguousarray(field.T.reshape(-1, *shape), dtype=np.float32),
            support.reshape(shape).astype(np.float32))


def normalised_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    """Scale rows to sum to one (empty rows stay empty)."""
    s = np.asarray(m.sum(1)).ravel()
    return sp.diags(np.where(s > 0, 1.0 / np.where(s > 0, s, 1), 0.0)) @ m
