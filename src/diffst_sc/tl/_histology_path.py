"""The low-capacity path: how far the fine map departs from the interpolated spots, from the H&E.

Its inputs at each grid pixel are deviations from what the spots already say: the histology
descriptors (``pp._descriptors``) of the disc around the pixel, minus those descriptors averaged
over the spot footprints and interpolated like the expression; and the interpolated expression
of every gene minus its own footprint averages, interpolated again. A ridge regression, fitted
in closed form on the training pairs, maps them to the deviation of the target from the
interpolated expression. Its prediction, added to the interpolated expression, is the *base*
map the deep network refines: the network sees the base as its expression condition and learns
only the residual, so with few pairs it cannot fall far below the ridge.

The descriptor disc is the footprint the map resolves: in training the target spots' radius, in
inference the input spots' radius times the same ratio, so the descriptors describe the same
relative scale in both, and the same physical scale when a model fitted on measured spots is
applied to spots of the same size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..pp._descriptors import histology_descriptors, section_quantities, working_pixel_um
from ..pp._grid import Grid
from ._metrics import block_means
from ._ridge import Ridge

#: Radii of the descriptor discs relative to the resolved footprint.
SCALES = (0.5, 1.0, 1.5)
#: Candidate ridge penalties (on standardised inputs, one row per target spot), chosen by
#: cross-validation over spatial folds of the target spots.
ALPHAS = (30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)
N_FOLDS = 5
#: Side of the square tiles (grid pixels) dealt to the folds: neighbours are held out together.
FOLD_TILE = 16
#: Largest deviation (model units, standard deviations of a gene) the path may add.
MAX_DEVIATION = 3.0


def _cell_mean(values: np.ndarray, view, grid: Grid) -> np.ndarray:
    """``(C, H, W)`` maps replaced by their mean over each spot's cell (the pixels nearest to it).

    Pixels farther than one spacing from every spot form no cell and get their own value, so
    that they deviate by nothing.
    """
    from scipy.spatial import cKDTree

    c, h, w = values.shape
    flat = values.reshape(c, h * w)
    dist, nearest = cKDTree(view.centres_px).query(grid.pixel_centres(),
                                                   distance_upper_bound=view.spacing_px)
    inside = np.isfinite(dist)
    n = np.bincount(nearest[inside], minlength=view.n_spots).astype(np.float64)
    out = flat.astype(np.float32, copy=True)
    for i in range(c):
        sums = np.bincount(nearest[inside], flat[i, inside], minlength=view.n_spots)
        out[i, inside] = (sums / np.maximum(n, 1))[nearest[inside]]
    return out.reshape(c, h, w)


def descriptor_maps(view, grid: Grid, radius_um: float, *, rgb: np.ndarray | None = None,
                    bbox_px=None) -> np.ndarray:
    """Histology descriptors of the disc of ``radius_um`` around every grid pixel, ``(D, H, W)``.

    ``rgb`` is the H&E over ``bbox_px`` (x0, y0, x1, y1, full-resolution pixels) already read at
    1 um per pixel as uint8, if at hand (by default the grid's extent, read from ``view``).
    """
    if bbox_px is None:
        bbox_px = (grid.x0, grid.y0, grid.x0 + grid.width * grid.pixel,
                   grid.y0 + grid.height * grid.pixel)
    q = section_quantities(view, bbox_px, working_pixel_um(radius_um, SCALES), rgb=rgb)
    d = histology_descriptors(q, grid.pixel_centres(), radius_um, SCALES)
    return d.T.reshape(-1, grid.height, grid.width).astype(np.float32)


def path_features(descriptors: np.ndarray, lr: np.ndarray, view, grid: Grid) -> np.ndarray:
    """The path's inputs: descriptor and expression deviations from the spots, ``(D + G, H, W)``.

    Parameters
    ----------
    descriptors
        ``(D, H, W)`` from :func:`descriptor_maps`.
    lr
        ``(G, H, W)`` the input spots' expression interpolated onto the grid (model units).
    view
        The section whose spots are the input.
    grid
        The model's grid over the section.
    """
    x = np.concatenate([descriptors - _cell_mean(descriptors, view, grid),
                        lr - _cell_mean(lr, view, grid)])
    return x.astype(np.float32)


@dataclass
class HistologyPath:
    """A fitted low-capacity path.

    Attributes
    ----------
    ridge
        Features ``(F,)`` -> deviation of each gene ``(G,)`` from the interpolated expression.
    radius_ratio
        Radius of the resolved footprint over the input spots' radius (0.5 for 2 x 2 pairs).
    alpha, cv_error
        The chosen penalty, and each candidate's held-out error (mean squared error of the
        standardised within-parent deviations).
    """

    ridge: Ridge
    radius_ratio: float
    alpha: float = float("nan")
    cv_error: dict | None = None

    @classmethod
    def fit(cls, pairs: list, radius_ratio: float,
            alphas: tuple[float, ...] = ALPHAS) -> HistologyPath:
        """Fit through the footprints of the target spots, one row per spot and pair.

        The map the path adds is linear in its pixel features, so its mean over a target
        footprint is the ridge applied to the features averaged over that footprint: the ridge
        is fitted on those averages against each spot's departure from the interpolated
        expression averaged the same way (``pairs``: ``SectionArrays`` with ``features``,
        ``footprints``, ``spot_target`` and ``spot_parent``). Both sides are taken within each
        parent: what the spots say about a parent as a whole is the measurement's to set. The
        penalty is the one of ``alphas`` with the least error on held-out tiles of spots.
        """
        xs, ys, folds = [], [], []
        for p in pairs:
            f, g = len(p.features), len(p.lr)
            x = p.footprints @ p.features.reshape(f, -1).T
            y = p.spot_target - p.footprints @ p.lr.reshape(g, -1).T
            xs.append(x - block_means(x, p.spot_parent))
            ys.append(y - block_means(y, p.spot_parent))
            folds.append(_spatial_folds(p))
        x, y, fold = np.concatenate(xs), np.concatenate(ys), np.concatenate(folds)
        cv = {a: _cv_error(x, y, fold, a) for a in alphas}
        alpha = min(cv, key=cv.get)
        return cls(Ridge.fit(x, y, alpha), float(radius_ratio), float(alpha),
                   {str(a): float(e) for a, e in cv.items()})

    def deviation(self, features: np.ndarray) -> np.ndarray:
        """``(G, H, W)`` predicted deviation from the interpolated expression (model units)."""
        f, h, w = features.shape
        dev = self.ridge.predict(features.reshape(f, h * w).T)
        return np.clip(dev, -MAX_DEVIATION, MAX_DEVIATION).T.reshape(-1, h, w).astype(np.float32)

    def apply(self, arrays) -> None:
        """Make ``arrays`` (a ``SectionArrays`` with ``features``) the deep path's: ``lr`` becomes
        the base map and ``target``, if any, the residual the network learns."""
        arrays.lr = arrays.lr + self.deviation(arrays.features)
        if arrays.target is not None:
            arrays.target = arrays.target - arrays.lr
        arrays.features = None

    def radius_um(self, view) -> float:
        """Radius of the footprint the map resolves on a section with ``view``'s spots."""
        return self.radius_ratio * view.spot_diameter_um / 2

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        return {"ridge": self.ridge.to_dict(), "radius_ratio": self.radius_ratio,
                "alpha": self.alpha, "cv_error": self.cv_error}

    @classmethod
    def from_dict(cls, d: dict) -> HistologyPath:
        """Inverse of :meth:`to_dict`."""
        return cls(Ridge.from_dict(d["ridge"]), float(d["radius_ratio"]),
                   float(d.get("alpha", float("nan"))), d.get("cv_error"))


def _spatial_folds(arrays) -> np.ndarray:
    """``(n,)`` fold of each target spot: square tiles of the grid dealt round the folds."""
    h, w = arrays.lr.shape[1:]
    rows, cols = np.divmod(np.arange(h * w), w)
    r = (arrays.footprints @ rows) // FOLD_TILE
    c = (arrays.footprints @ cols) // FOLD_TILE
    return (r.astype(int) * 7 + c.astype(int)) % N_FOLDS


def _cv_error(x: np.ndarray, y: np.ndarray, fold: np.ndarray, alpha: float) -> float:
    """Held-out mean squared error of the ridge, each gene's target scaled to unit variance."""
    scale = np.maximum(y.std(0), 1e-8)
    err, n = 0.0, 0
    for k in np.unique(fold):
        test = fold == k
        if test.all() or not test.any():
            continue
        r = Ridge.fit(x[~test], y[~test], alpha)
        err += float((((r.predict(x[test]) - y[test]) / scale) ** 2).sum())
        n += int(test.sum()) * y.shape[1]
    return err / max(n, 1)
