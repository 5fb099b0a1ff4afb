"""The low-capacity path: how far the fine map departs from the interpolated spots, from the H&E.

Its inputs at each grid pixel are deviations from what the spots already say: the histology
descriptors (``pp._descriptors``) of the discs around the pixel minus their mean over the
pixel's cell (the input spot it lies nearest to); and each gene's interpolated expression minus
its cell mean, an input only that gene's output sees. (Subtracting instead the descriptors'
footprint means interpolated like the expression, on her2st: 0.439 against 0.441 at the
footprints.) A ridge regression, fitted
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
import scipy.sparse as sp

from .._core._grid import Grid
from ..metrics import block_means
from ..pp import DESCRIPTOR_NAMES, WINDOW_BYTES, section_descriptors, stabilise_variance
from ._calibration import (
    Calibration,
    count_spread,
    histology_weights,
    weight_sums,
)
from ._ridge import Ridge

#: Radii of the descriptor discs relative to the resolved footprint. The widest is about one
#: input spacing (a footprint's radius is a quarter of the input spot's diameter, and spots are
#: about half their spacing wide): the neighbourhood the interpolation draws on (her2st mean
#: wPCC 0.446 -> 0.450 single, 0.452 -> 0.456 across when it was added; 16 as well: 0.453 /
#: 0.456; 32, most of a section in training: 0.441).
SCALES = (0.5, 1.0, 2.0, 4.0, 8.0)
#: Ridge penalties (on standardised inputs, one row per target spot) whose fits the path
#: averages. A penalty chosen by cross-validation over a few hundred rows was unstable: on
#: her2st it picked the weakest on one section, which then did worst at the finer scale the map
#: is read at (single-section wPCC 0.41 against 0.45 for the mean of the penalties).
ALPHAS = (30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)
#: Output directions the shared weights keep (reduced-rank ridge): the genes' departures follow
#: a few tissue factors (her2st: ranks 2 to 5 score alike, 1 is worse).
RANK = 3
N_FOLDS = 5
#: Side of the square tiles (grid pixels) dealt to the folds: neighbours are held out together.
FOLD_TILE = 16
#: What the path's ridge reads, recorded with a saved model (a model saved with other inputs
#: cannot be applied).
INPUTS = f"descriptors{SCALES}/sqrt-counts/section-sd+own-gene"
#: Largest deviation (model units, standard deviations of a gene) the path may add.
MAX_DEVIATION = 3.0
#: Largest gain (``HistologyPath.gain``) a section's own pairs may set (her2st: 0.4 to 1.7).
MAX_GAIN = 2.0


def cells_of(view, grid: Grid) -> np.ndarray:
    """``(H * W,)`` the input spot whose cell each grid pixel lies in (its nearest), or -1.

    Pixels farther than one spacing from every spot form no cell.
    """
    from scipy.spatial import cKDTree

    dist, nearest = cKDTree(view.centres_px).query(grid.pixel_centres(),
                                                   distance_upper_bound=view.spacing_px)
    return np.where(np.isfinite(dist), nearest, -1).astype(np.int64)


def _membership(cell_of: np.ndarray) -> sp.csr_matrix:
    """``(H * W, n_cells)`` sparse: each pixel's cell, with columns averaging over the cell."""
    inside = np.nonzero(cell_of >= 0)[0]
    n = int(cell_of.max()) + 1 if inside.size else 0
    counts = np.bincount(cell_of[inside], minlength=n).astype(np.float64)
    vals = 1.0 / counts[cell_of[inside]]
    return sp.csr_matrix((vals, (inside, cell_of[inside])), shape=(len(cell_of), n))


def _deviations(values: np.ndarray, cell_of: np.ndarray,
                membership: sp.csr_matrix | None = None, in_place: bool = False) -> np.ndarray:
    """``(C, H * W)`` values minus their mean over each pixel's cell (0 outside every cell).

    ``membership`` is :func:`_membership` of ``cell_of``, when the caller has it already;
    ``in_place`` writes the result over ``values`` (float32), which then holds a section's maps
    once instead of three times.
    """
    m = (_membership(cell_of) if membership is None else membership).T.tocsr()
    out = values if in_place and values.dtype == np.float32 else values.astype(np.float32)
    inside = cell_of >= 0
    cells = cell_of[inside]
    # a few rows at a time: the product's dense operand is copied to C order
    step = max(1, (32 * 2**20) // max(1, 8 * values.shape[1]))
    for c0 in range(0, len(out), step):
        block = out[c0:c0 + step]
        means = (m @ block.T.astype(np.float64)).T  # (rows, n_cells)
        block[:, inside] -= means[:, cells]
        block[:, ~inside] = 0.0
    return out


def _add_scaled(out: np.ndarray, scale: np.ndarray, values: np.ndarray, rows: int = 8) -> None:
    """``out += scale[:, None] * values``, a few rows at a time (no full-size temporary)."""
    for r0 in range(0, len(out), rows):
        out[r0:r0 + rows] += scale[r0:r0 + rows, None] * values[r0:r0 + rows]


def _spread(deviations: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """``(C,)`` standard deviation of each row of ``deviations`` over the ``inside`` pixels."""
    if not inside.any():
        return np.ones(len(deviations))
    return np.maximum(deviations[:, inside].std(1, dtype=np.float64), 1e-8)


#: Spot spacings around the spots within which grid pixels are described. A pixel's cell
#: (:func:`cells_of`) lies within one spacing of its spot, and the training pairs read one map
#: for every phase of the pseudo-spot blocks (``path_rows``), whose spots lie within one
#: spacing of the first phase's: the path reads no pixel farther out.
DESCRIBED_SPACINGS = 2.0


def descriptor_maps(view, grid: Grid, radius_um: float, *,
                    window_bytes: float = WINDOW_BYTES) -> np.ndarray:
    """Histology descriptors of the disc of ``radius_um`` around every grid pixel, ``(D, H, W)``.

    Only the pixels within :data:`DESCRIBED_SPACINGS` spot spacings of a spot of ``view`` are
    described; the others lie in no cell, and hold each descriptor's mean over the described
    ones. The H&E is read at 1 um per pixel, or at its own pixel size where that is coarser, in
    windows of about ``window_bytes`` around the described pixels, so that memory is bounded by
    a window on any slide and time follows the tissue near the spots, not the grid's extent
    (``pp.section_descriptors``). The nuclear threshold is that of the region the discs read.
    """
    from scipy.spatial import cKDTree

    centres = grid.pixel_centres()
    near = cKDTree(view.centres_px).query(centres, distance_upper_bound=DESCRIBED_SPACINGS
                                          * view.spacing_px)[0]
    described = np.nonzero(np.isfinite(near))[0]
    extent = (grid.x0, grid.y0, grid.x0 + grid.width * grid.pixel,
              grid.y0 + grid.height * grid.pixel)
    d = stabilise_variance(section_descriptors(view, centres[described], radius_um, SCALES,
                                               extent_px=extent, window_bytes=window_bytes))
    out = np.empty((len(SCALES) * len(DESCRIPTOR_NAMES), grid.height * grid.width), np.float32)
    out[:] = d.mean(0)[:, None] if len(d) else 0.0
    out[:, described] = d.T
    return out.reshape(-1, grid.height, grid.width)


def section_scale(descriptors: np.ndarray, cell_of: np.ndarray) -> np.ndarray:
    """``(D,)`` spread of each descriptor's deviation from the cells, over the cells' pixels.

    The path divides the descriptor deviations by it, so that each section's histology is
    measured in its own units: what a section's stain or scanner shifts or stretches, the
    model does not see (her2st, fitted across sections: wPCC 0.39 -> 0.43, see
    ``benchmarks/results``).
    """
    m, inside = _membership(cell_of), cell_of >= 0
    flat = descriptors.reshape(len(descriptors), -1)
    # one descriptor at a time: the deviations of all of them are D maps of memory
    return np.concatenate([_spread(_deviations(v[None], cell_of, m), inside) for v in flat])


@dataclass
class FootprintRows:
    """The path's training data from one pair: one row per target spot.

    Attributes
    ----------
    features
        ``(n, D)`` descriptor deviations from the input spots' cells, averaged over each target
        footprint, in units of :func:`section_scale`.
    own
        ``(n, G)`` each gene's interpolated expression, its deviation from the cells averaged
        the same way (the input only that gene's output sees).
    lr
        ``(n, G)`` the interpolated input expression averaged over each footprint.
    target
        ``(n, G)`` the target spots (model units).
    parent
        ``(n,)`` the input spot nearest to each target spot.
    position
        ``(n, 2)`` (row, col) of each footprint's centre on the grid, for the spatial folds.
    counts
        ``(n, G)`` the target spots' counts, for the spread of counts about the map
        (:func:`count_dispersion`); ``None`` when not kept.
    mu, sd
        ``(G,)`` the model units of ``target`` and ``lr`` (log-density mean and sd per gene).
    """

    features: np.ndarray
    own: np.ndarray
    lr: np.ndarray
    target: np.ndarray
    parent: np.ndarray
    position: np.ndarray
    counts: np.ndarray | None = None
    mu: np.ndarray | None = None
    sd: np.ndarray | None = None

    @classmethod
    def from_maps(cls, descriptors: np.ndarray, lr: np.ndarray, cell_of: np.ndarray,
                  footprints, target: np.ndarray, parent: np.ndarray,
                  counts: np.ndarray | None = None, units=None) -> FootprintRows:
        """Average the maps ``(D, H, W)``, ``(G, H, W)`` over ``footprints`` ``(n, H * W)``.

        ``cell_of`` is :func:`cells_of` for the pair's input spots; ``counts`` the target
        spots' counts and ``units`` the ``(mu, sd)`` of the model units, kept for
        :func:`count_dispersion`.
        """
        d, g = len(descriptors), len(lr)
        h, w = lr.shape[1:]
        m = _membership(cell_of)
        dev = _deviations(descriptors.reshape(d, -1), cell_of, m)
        x = (footprints @ dev.T) / _spread(dev, cell_of >= 0)  # in section_scale's units
        del dev
        own = footprints @ _deviations(lr.reshape(g, -1), cell_of, m).T
        rows, cols = np.divmod(np.arange(h * w), w)
        pos = np.c_[footprints @ rows, footprints @ cols]
        mu, sd = (None, None) if units is None else (np.asarray(u, np.float64) for u in units)
        return cls(x.astype(np.float32), own.astype(np.float32),
                   (footprints @ lr.reshape(g, -1).T).astype(np.float32),
                   np.asarray(target, np.float32), np.asarray(parent), pos,
                   None if counts is None else np.asarray(counts, np.float64), mu, sd)


@dataclass
class HistologyPath:
    """A fitted low-capacity path.

    Attributes
    ----------
    ridge
        Features ``(F,)`` -> deviation of each gene ``(G,)`` from the interpolated expression.
    radius_ratio
        Radius of the resolved footprint over the input spots' radius (0.5 for 2 x 2 pairs).
    cv_error
        Held-out error of the fit on tiles of the training spots (mean squared error of the
        within-parent deviations, each gene in units of its spread; 1 is no better than 0).
    residual_sd
        ``(G,)`` held-out RMS error of each gene's within-parent deviation (model units), on the
        same tiles: what the map still gets wrong once the measurement has set each spot's
        total, the model error ``superresolve`` adds to the uncertainty.
    fitted_slope
        Least-squares slope of the training spots' departures from their parents on the map's
        (above 1: the penalties shrink the predictions): the reference :meth:`gain` divides by
        (``None`` in a model saved before it was recorded, which :meth:`gain` leaves at 1).
    fitted_on
        Fingerprint (``model._pairs.pairs_fingerprint``) of the one section the path was fitted
        on by itself, whose gain is 1 and whose histology weights are :attr:`held_out_weight`
        without measuring them; ``None`` otherwise.
    held_out_weight
        ``(G,)`` the weight of each gene's histology departure that the held-out tiles of the
        training pairs support (:func:`histology_weights`): the calibration of the section
        the path was fitted on alone.
    dispersion
        ``(G,)`` the spread of the target spots' counts about the held-out map beyond counting
        noise (:func:`count_dispersion`), which the uncertainty is built from.
    prior_strength
        ``(G,)`` how much of a reference's weights each gene's fit started from
        (``model._reference``); ``None`` when fitted without a reference.
    spread_scale
        The factor on that spread's variance that puts 90% of the held-out targets within
        1.645 standard deviations (:func:`count_spread`).
    """

    ridge: Ridge
    radius_ratio: float
    cv_error: float = float("nan")
    residual_sd: list[float] | None = None
    fitted_slope: float | None = None
    fitted_on: str | None = None
    held_out_weight: list[float] | None = None
    dispersion: list[float] | None = None
    prior_strength: list[float] | None = None
    spread_scale: float = 1.0

    @classmethod
    def fit(cls, rows: list[FootprintRows], radius_ratio: float,
            alphas: tuple[float, ...] = ALPHAS, rank: int = RANK,
            prior: Ridge | None = None) -> HistologyPath:
        """Fit through the footprints of the target spots, one row per spot and pair.

        The map the path adds is linear in its pixel features, so its mean over a target
        footprint is the ridge applied to the features averaged over that footprint: the ridge
        is fitted on those averages (``rows``) against each spot's departure from the
        interpolated expression averaged the same way. Both sides are taken within each
        parent: what the spots say about a parent as a whole is the measurement's to set.

        The fit is the mean of reduced-rank ridges (``rank`` output directions), one per
        penalty of ``alphas``, each gene's own input penalised like the shared ones.

        ``prior`` (a ridge on the same inputs, the model's genes as outputs; a reference
        model's, see ``model._reference``) is what the penalties shrink toward instead of 0,
        as far as the held-out tiles support for each gene.
        """
        x, own, y = _within_parents(rows)
        fold = np.concatenate([_spatial_folds(r.position) for r in rows])
        if prior is not None:
            from ._reference import prior_fit

            return prior_fit(cls, rows, radius_ratio, x, own, y, fold, prior, alphas, rank)
        ridge = _averaged_ridge(x, own, y, alphas, rank)
        cv_error, residual_sd, sums, pred = _held_out(x, own, y, fold, alphas, rank)
        return cls._finish(rows, radius_ratio, x, own, y, ridge, cv_error, residual_sd, sums,
                           pred)

    @classmethod
    def _finish(cls, rows, radius_ratio, x, own, y, ridge, cv_error, residual_sd, sums, pred):
        """The fitted path and what its held-out predictions say about it."""
        if residual_sd is None:  # too few spots for two folds: the in-sample error, smaller
            pred = np.clip(ridge.predict(x, own), -MAX_DEVIATION, MAX_DEVIATION)
            residual_sd = np.sqrt(((pred - y) ** 2).mean(0)).tolist()
            sums = weight_sums(*ridge.parts(x, own), y)
        path = cls(ridge, float(radius_ratio), cv_error, residual_sd)
        path.held_out_weight = histology_weights(*sums).tolist()
        dispersion, path.spread_scale = count_spread(rows, pred)
        path.dispersion = None if dispersion is None else dispersion.tolist()
        path.fitted_slope = path._slope(x, own, y) or 1.0
        return path

    def calibrate(self, rows: list[FootprintRows]) -> Calibration:
        """What a section's own pairs (``rows``) say about the path's departures on it.

        The histology weight of each gene (:func:`histology_weights`, from the path's
        predictions on these rows, which it was not fitted on), then the :meth:`gain` of the
        map with those weights.
        """
        x, own, y = _within_parents(rows)
        weight = histology_weights(*weight_sums(*self.ridge.parts(x, own), y))
        weighted = self.weighted(weight)
        pred = np.clip(weighted.ridge.predict(x, own), -MAX_DEVIATION, MAX_DEVIATION)
        return Calibration(weighted.gain(rows), weight, *count_spread(rows, pred))

    def weighted(self, weight) -> HistologyPath:
        """The path with each gene's histology weights scaled by ``weight`` ``(G,)``."""
        from dataclasses import replace

        if weight is None:
            return self
        w = np.asarray(weight, np.float64)
        r = self.ridge
        return replace(self, ridge=replace(r, coef=r.coef * w, intercept=r.intercept * w))

    def gain(self, rows: list[FootprintRows]) -> float:
        """How much larger a section's departures are than predicted, relative to training.

        ``rows`` are the section's spots as targets of its pseudo-spots (the pairs ``fit``
        would learn from on it alone). The gain is the least-squares slope of their departures
        from their parents on the map's (the interpolation's and the path's together), over
        the same slope on the training pairs (:attr:`fitted_slope`), in ``[0, MAX_GAIN]``:
        exactly 1 on the section the path was fitted on, and 1 when the map does not depart.
        A path fitted on other sections predicts departures of the size those sections had;
        see ``docs/method.md`` for what it measures on her2st.
        """
        slope = None if self.fitted_slope is None else self._slope(*_within_parents(rows))
        if slope is None:
            return 1.0
        return float(np.clip(slope / self.fitted_slope, 0.0, MAX_GAIN))

    def _slope(self, x: np.ndarray, own: np.ndarray, y: np.ndarray) -> float | None:
        """Least-squares slope of the spots' departures from their parents on the map's.

        ``own`` is the interpolation's departure, ``y`` the spots' departure from it, both
        within the parents (:func:`_within_parents`); the map departs by ``own`` plus the
        path's prediction. ``None`` when the map does not depart.
        """
        pred = np.clip(self.ridge.predict(x, own), -MAX_DEVIATION, MAX_DEVIATION) + own
        y = y + own
        den = float((pred * pred).sum())
        return float((pred * y).sum() / den) if den > 0 else None

    def deviation(self, descriptors: np.ndarray, lr: np.ndarray,
                  cell_of: np.ndarray, gain: float = 1.0) -> np.ndarray:
        """``(G, H, W)`` predicted deviation from the interpolated expression (model units).

        ``gain`` (:meth:`gain`) scales the map's whole departure from the cells' means (the
        interpolation's and the path's) before it is clipped. The ridge is linear and so is a
        cell mean: the prediction from the deviations of the inputs is the deviation of the
        prediction from the raw maps, which needs ``G`` maps of memory instead of one per
        input.
        """
        d, (g, h, w) = len(descriptors), lr.shape
        a, a_own, offset = self.ridge.linear()
        a = a / section_scale(descriptors, cell_of)[:, None]
        flat = lr.reshape(g, -1)
        raw = a.T.astype(np.float32) @ descriptors.reshape(d, -1)
        _add_scaled(raw, a_own.astype(np.float32), flat)
        if gain != 1.0:  # gain * (the interpolation's + the path's) - the interpolation's
            raw *= np.float32(gain)
            _add_scaled(raw, np.full(g, gain - 1, np.float32), flat)
        dev = _deviations(raw, cell_of, in_place=True)
        dev += np.float32(gain) * offset.astype(np.float32)[:, None]
        return np.clip(dev, -MAX_DEVIATION, MAX_DEVIATION, out=dev).reshape(-1, h, w)

    def radius_um(self, view) -> float:
        """Radius of the footprint the map resolves on a section with ``view``'s spots."""
        return self.radius_ratio * view.spot_diameter_um / 2

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        return {"inputs": INPUTS, "ridge": self.ridge.to_dict(),
                "radius_ratio": self.radius_ratio, "cv_error": self.cv_error,
                "residual_sd": self.residual_sd, "fitted_slope": self.fitted_slope,
                "fitted_on": self.fitted_on, "held_out_weight": self.held_out_weight,
                "dispersion": self.dispersion, "prior_strength": self.prior_strength,
                "spread_scale": self.spread_scale}

    @classmethod
    def from_dict(cls, d: dict) -> HistologyPath:
        """Inverse of :meth:`to_dict`."""
        if d.get("inputs") != INPUTS:
            raise ValueError("This model's histology path was saved by an older diffst_sc, whose "
                             "path read other inputs; fit the model again (`ds.tl.fit`).")
        cv = d.get("cv_error")
        return cls(Ridge.from_dict(d["ridge"]), float(d["radius_ratio"]),
                   float(cv) if isinstance(cv, int | float) else float("nan"),
                   d.get("residual_sd"), d.get("fitted_slope"), d.get("fitted_on"),
                   d.get("held_out_weight"), d.get("dispersion"), d.get("prior_strength"),
                   float(d.get("spread_scale", 1.0)))


def _within_parents(rows: list[FootprintRows]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shared inputs, own inputs and departures of ``rows``, each less its parent's mean.

    The departures are from the interpolated expression; the rows are stacked.
    """
    xs, owns, ys = [], [], []
    for r in rows:
        y = r.target - r.lr
        xs.append(r.features - block_means(r.features, r.parent))
        owns.append(r.own - block_means(r.own, r.parent))
        ys.append(y - block_means(y, r.parent))
    return np.concatenate(xs), np.concatenate(owns), np.concatenate(ys)


def _spatial_folds(position: np.ndarray) -> np.ndarray:
    """``(n,)`` fold of each target spot: square tiles of the grid dealt round the folds."""
    r, c = (np.asarray(position) // FOLD_TILE).astype(int).T
    return (r * 7 + c) % N_FOLDS


def _averaged_ridge(x: np.ndarray, own: np.ndarray, y: np.ndarray,
                    alphas: tuple[float, ...], rank: int) -> Ridge:
    """The mean of the reduced-rank ridges of every penalty in ``alphas``."""
    return Ridge.average([Ridge.fit(x, y, a, own=own).reduced_rank(x, rank) for a in alphas])


def _held_out(x: np.ndarray, own: np.ndarray, y: np.ndarray, fold: np.ndarray,
              alphas: tuple[float, ...], rank: int, base=None):
    """Errors of the path's fit on each fold of tiles, fitted on the others.

    Returns the mean squared error with each gene's target scaled to unit variance, each
    gene's root mean squared error in model units (``nan`` and ``None`` with a single fold),
    the held-out :func:`weight_sums` and the held-out predictions (``None`` with a single
    fold). ``base`` ``(shared, own)`` ``(n, G)`` each, when given, is a fixed prediction the
    ridge is fitted on top of (on ``y`` less it); the errors are those of the sum.
    """
    sq, n = np.zeros(y.shape[1]), 0
    sums = None
    held = np.zeros_like(y)
    for k in np.unique(fold):
        test = fold == k
        if test.all() or not test.any():
            continue
        target = y if base is None else y - base[0] - base[1]
        r = _averaged_ridge(x[~test], own[~test], target[~test], alphas, rank)
        shared, own_part = r.parts(x[test], own[test])
        if base is not None:
            shared, own_part = shared + base[0][test], own_part + base[1][test]
        pred = np.clip(shared + own_part, -MAX_DEVIATION, MAX_DEVIATION)
        held[test] = pred
        sq += ((pred - y[test]) ** 2).sum(0)
        n += int(test.sum())
        fold_sums = weight_sums(shared, own_part, y[test])
        sums = fold_sums if sums is None else tuple(
            a + b for a, b in zip(sums, fold_sums, strict=True))
    if not n:
        return float("nan"), None, None, None
    scale = np.maximum(y.var(0), 1e-16)
    return float((sq / n / scale).mean()), np.sqrt(sq / n).tolist(), sums, held
