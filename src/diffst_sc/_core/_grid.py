"""A raster grid over the H&E and the spot <-> pixel operators the model needs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class Grid:
    """A raster of square pixels, axis-aligned in the units of the points it holds.

    The model's grids are laid over the H&E, in its pixels; ``pp.degrade``'s HR grid is laid in
    the coordinate system of the transcripts it bins.

    Attributes
    ----------
    x0, y0
        Top-left corner of pixel (0, 0).
    pixel
        Side of one grid pixel.
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

    @property
    def origin(self) -> np.ndarray:
        """``(x0, y0)``."""
        return np.array([self.x0, self.y0])

    @property
    def extent(self) -> np.ndarray:
        """The corner opposite the origin, ``(x, y)``."""
        return self.origin + self.pixel * np.array([self.width, self.height])

    def affine(self) -> np.ndarray:
        """``3 x 3`` affine from grid (x, y), pixel edges at integers, to the points' units."""
        return np.array([[self.pixel, 0.0, self.x0], [0.0, self.pixel, self.y0], [0.0, 0.0, 1.0]])

    def to_grid(self, xy_px: np.ndarray) -> np.ndarray:
        """Coordinates to continuous grid coordinates (x, y), pixel edges at integers."""
        return (np.asarray(xy_px, float) - [self.x0, self.y0]) / self.pixel

    def contains(self, xy: np.ndarray) -> np.ndarray:
        """``(n,)`` whether each point ``(x, y)`` lies on the grid."""
        lo, hi = self.origin, self.extent
        return (xy[:, 0] >= lo[0]) & (xy[:, 0] < hi[0]) & (xy[:, 1] >= lo[1]) & (xy[:, 1] < hi[1])

    def pixel_of(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row and column of the pixel holding each point (clipped onto the grid)."""
        ij = np.floor((xy - self.origin) / self.pixel).astype(np.int64)
        return np.clip(ij[:, 1], 0, self.height - 1), np.clip(ij[:, 0], 0, self.width - 1)

    def centres(self, iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
        """``(n, 2)`` centres (x, y) of pixels at rows ``iy`` and columns ``ix``."""
        return self.origin + self.pixel * (np.c_[ix, iy] + 0.5)

    def bin(self, xy: np.ndarray, codes: np.ndarray, n_genes: int) -> np.ndarray:
        """``(n_genes, H, W)`` float32 counts of points ``xy`` of genes ``codes`` per pixel."""
        iy, ix = self.pixel_of(xy)
        flat = (codes * self.height + iy) * self.width + ix
        out = np.bincount(flat, minlength=n_genes * self.height * self.width)
        return out.reshape(n_genes, self.height, self.width).astype(np.float32)

    def image(self, values: np.ndarray, channels: list[str], cs: str):
        """``values`` ``(C, H, W)`` as an image element placed on this grid in system ``cs``."""
        from spatialdata.models import Image2DModel
        from spatialdata.transformations import Scale, Sequence, Translation

        transform = Sequence([Scale([self.pixel, self.pixel], axes=("y", "x")),
                              Translation([self.y0, self.x0], axes=("y", "x"))])
        return Image2DModel.parse(values, dims=("c", "y", "x"), c_coords=list(channels),
                                  transformations={cs: transform},
                                  chunks=(1, self.height, self.width))


def coverage_matrix(centres_px: np.ndarray, diameter_px: float, grid: Grid,
                    supersample: int = 4) -> sp.csr_matrix:
    """Fraction of each grid pixel inside each spot disc, ``(n_spots, H * W)``.

    :func:`~diffst_sc._core._raster.footprint_weights` on the grid, each pixel sampled at
    ``supersample ** 2`` points (discs a few pixels wide are measured to within a few percent):
    the same discretisation that reads a written layer back over the spots.
    """
    from ._raster import footprint_weights

    return footprint_weights((grid.height, grid.width), grid.affine(), centres_px, diameter_px,
                             supersample=supersample)


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


def cell_weights(sites_px: np.ndarray, spacing_px: float, grid: Grid,
                 sigma_spacings: float) -> sp.csr_matrix:
    """``(H * W, n_sites)`` a soft partition of the grid into the sites' cells.

    Gaussian weights ``sigma_spacings`` spacings wide, normalised over the sites within one
    spacing of each pixel: a pixel belongs to its nearest site, with a blend in a band about
    ``sigma_spacings**2`` spacings wide where cells meet. Rows sum to 1 within one spacing of a
    site and are 0 farther.
    """
    sigma = sigma_spacings * spacing_px
    w = gaussian_weights(sites_px, grid, sigma_px=sigma, cutoff=1.0 / sigma_spacings).T.tocsr()
    s = np.asarray(w.sum(1)).ravel()
    return sp.diags(1.0 / np.maximum(s, 1e-300)) @ w


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
