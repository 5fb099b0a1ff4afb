"""Quality scores of super-resolved expression against high-resolution truth (``BENCHMARK.md``).

Every score takes ``(n_obs, n_genes)`` arrays and returns one value per gene; ``NaN`` marks a gene
the score does not apply to (for example a gene whose truth is constant), and :func:`gene_mean`
averages over the genes that have a value. Expression scores expect ``log1p(counts)``; the
block functions (:func:`renormalise_to_blocks`, :func:`consistency_error`) work on counts.
"""

from __future__ import annotations

import numpy as np

#: A prediction whose standard deviation is below this is treated as constant (correlation 0).
CONSTANT_STD = 1e-12
#: Standard deviation of the Gaussian weights of SSIM, as in the benchmark protocol.
SSIM_SIGMA = 1.5
#: :func:`uncertainty_gain` floors a gene's std at this fraction of its mean std (a std of 0
#: would make the Gaussian likelihood infinite).
UNC_STD_FLOOR = 1e-3


def _as_2d(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"`{name}` must be an (n_obs, n_genes) array; it has shape {x.shape}.")
    return x


def _pair(truth, pred) -> tuple[np.ndarray, np.ndarray]:
    truth, pred = _as_2d(truth, "truth"), _as_2d(pred, "pred")
    if truth.shape != pred.shape:
        raise ValueError(f"`truth` {truth.shape} and `pred` {pred.shape} must have the same shape "
                         "(spots x genes, in the same order).")
    if not np.isfinite(pred).all():
        raise ValueError("`pred` has NaN or infinite values; a prediction is needed at every "
                         "observation (fill gaps before scoring).")
    return truth, pred


def scorable_genes(truth: np.ndarray) -> np.ndarray:
    """Genes whose truth varies over the observations (the others are skipped by every score).

    Parameters
    ----------
    truth
        ``(n_obs, n_genes)`` true values.

    Returns
    -------
    numpy.ndarray
        Boolean mask over genes.
    """
    truth = _as_2d(truth, "truth")
    return np.ptp(truth, axis=0) > 0


def _correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Column-wise Pearson correlation; 0 where ``b`` is constant, NaN where ``a`` is."""
    ac, bc = a - a.mean(0), b - b.mean(0)
    sa, sb = np.sqrt((ac**2).mean(0)), np.sqrt((bc**2).mean(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (ac * bc).mean(0) / (sa * sb)
    r = np.where(sb < CONSTANT_STD, 0.0, r)
    return np.where(sa > 0, np.clip(r, -1.0, 1.0), np.nan)


def pcc(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Pearson correlation of prediction and truth, per gene.

    Parameters
    ----------
    truth, pred
        ``(n_obs, n_genes)`` log1p expression.

    Returns
    -------
    numpy.ndarray
        ``(n_genes,)``; ``NaN`` for genes with constant truth, 0 for a constant prediction.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.array([[0.0], [1.0], [2.0]])
    >>> float(pcc(t, 2 * t)[0])
    1.0
    """
    truth, pred = _pair(truth, pred)
    r = _correlation(truth, pred)
    return np.where(scorable_genes(truth), r, np.nan)


def nrmse(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Root mean squared error divided by the range (max - min) of the truth, per gene.

    Parameters
    ----------
    truth, pred
        ``(n_obs, n_genes)`` log1p expression.

    Returns
    -------
    numpy.ndarray
        ``(n_genes,)``; ``NaN`` for genes with constant truth.
    """
    truth, pred = _pair(truth, pred)
    rng = np.ptp(truth, axis=0)
    rmse = np.sqrt(((pred - truth) ** 2).mean(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rng > 0, rmse / rng, np.nan)


def values_on_grid(values: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Lay per-observation values out on their 2-D grid, 0 where there is no observation.

    Parameters
    ----------
    values
        ``(n_obs, n_genes)`` values.
    rows, cols
        Integer grid position of each observation (e.g. ``array_row``, ``array_col``).

    Returns
    -------
    numpy.ndarray
        ``(n_genes, n_rows, n_cols)`` spanning the observations' bounding box.
    """
    values = _as_2d(values, "values")
    rows, cols = _grid_index(rows, "rows"), _grid_index(cols, "cols")
    if not len(rows) == len(cols) == values.shape[0]:
        raise ValueError(f"{values.shape[0]} observations but {len(rows)} rows and {len(cols)} "
                         "cols; give one grid position per observation.")
    r, c = rows - rows.min(), cols - cols.min()
    grid = np.zeros((values.shape[1], r.max() + 1, c.max() + 1))
    grid[:, r, c] = values.T
    return grid


def _grid_index(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"`{name}` must be a non-empty 1-D array of grid positions.")
    if not np.allclose(x, np.round(x)):
        raise ValueError(f"`{name}` must hold integer grid positions (e.g. array_row/array_col).")
    return np.round(x).astype(int)


def ssim_on_grid(truth: np.ndarray, pred: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Structural similarity of prediction and truth laid out on their grid, per gene.

    scikit-image's ``structural_similarity`` with Gaussian weights (sigma 1.5), no sample
    covariance and ``data_range`` the truth's range; cells without an observation are 0.

    Parameters
    ----------
    truth, pred
        ``(n_obs, n_genes)`` log1p expression.
    rows, cols
        Integer grid position of each observation.

    Returns
    -------
    numpy.ndarray
        ``(n_genes,)``; ``NaN`` for genes with constant truth.
    """
    from skimage.metrics import structural_similarity

    truth, pred = _pair(truth, pred)
    tg, pg = values_on_grid(truth, rows, cols), values_on_grid(pred, rows, cols)
    window = 2 * int(3.5 * SSIM_SIGMA + 0.5) + 1  # scikit-image's window for these weights
    if min(tg.shape[1:]) < window:
        raise ValueError(f"The grid is {tg.shape[1]} x {tg.shape[2]}; SSIM with sigma "
                         f"{SSIM_SIGMA} needs at least {window} x {window} cells.")
    rng = np.ptp(truth, axis=0)
    out = np.full(truth.shape[1], np.nan)
    for j in np.flatnonzero(rng > 0):
        out[j] = structural_similarity(tg[j], pg[j], data_range=float(rng[j]),
                                       gaussian_weights=True, sigma=SSIM_SIGMA,
                                       use_sample_covariance=False)
    return out


def _block_index(block, n_obs: int) -> tuple[np.ndarray, np.ndarray]:
    block = np.asarray(block)
    if block.shape != (n_obs,):
        raise ValueError(f"`block` must give one block per observation ({n_obs}); it has shape "
                         f"{block.shape}.")
    _, inverse, sizes = np.unique(block, return_inverse=True, return_counts=True)
    return inverse.ravel(), sizes


def block_means(values: np.ndarray, block: np.ndarray) -> np.ndarray:
    """Mean of each observation's block, per gene (same shape as ``values``).

    Parameters
    ----------
    values
        ``(n_obs, n_genes)`` values.
    block
        ``(n_obs,)`` block label of each observation (any hashable labels).

    Returns
    -------
    numpy.ndarray
    """
    values = _as_2d(values, "values")
    inverse, sizes = _block_index(block, values.shape[0])
    sums = np.zeros((len(sizes), values.shape[1]))
    np.add.at(sums, inverse, values)
    return (sums / sizes[:, None])[inverse]


def within_block_pcc(truth: np.ndarray, pred: np.ndarray, block: np.ndarray) -> np.ndarray:
    """wPCC: correlation of the deviations of prediction and truth from their block means, per gene.

    Only observations in blocks of two or more members count. A prediction that is constant
    within every block (a copy of the low-resolution value) scores 0: this isolates what a
    method adds beyond the measurement.

    Parameters
    ----------
    truth, pred
        ``(n_obs, n_genes)`` log1p expression.
    block
        ``(n_obs,)`` block (low-resolution spot) of each observation.

    Returns
    -------
    numpy.ndarray
        ``(n_genes,)``; ``NaN`` for genes with constant truth or no within-block variation.
    """
    truth, pred = _pair(truth, pred)
    inverse, sizes = _block_index(block, truth.shape[0])
    multi = sizes[inverse] >= 2
    if not multi.any():
        raise ValueError("No block has two or more members: within-block correlation needs "
                         "blocks (low-resolution spots) that hold several observations.")
    dt = (truth - block_means(truth, block))[multi]
    dp = (pred - block_means(pred, block))[multi]
    r = _correlation(dt, dp)
    return np.where(scorable_genes(truth), r, np.nan)


def renormalise_to_blocks(pred_counts: np.ndarray, block: np.ndarray, block_totals: np.ndarray) -> np.ndarray:
    """Rescale predicted counts so that each block's members sum to the block's measured counts.

    Negative or NaN predictions count as 0. A block whose prediction sums to 0 for a gene gets
    the block's total split equally among its members.

    Parameters
    ----------
    pred_counts
        ``(n_obs, n_genes)`` predicted counts (any non-negative scale).
    block
        ``(n_obs,)`` integer row of each observation's block in ``block_totals``.
    block_totals
        ``(n_blocks, n_genes)`` measured counts of the blocks (low-resolution spots).

    Returns
    -------
    numpy.ndarray
        ``(n_obs, n_genes)`` counts whose block sums equal ``block_totals``.
    """
    factor, equal_share = renormalisation_factors(pred_counts, block, block_totals)
    pred = np.clip(np.nan_to_num(_as_2d(pred_counts, "pred_counts"), nan=0.0), 0, None)
    return np.where(np.isnan(factor), equal_share, pred * np.nan_to_num(factor))


def renormalisation_factors(pred_counts, block, block_totals) -> tuple[np.ndarray, np.ndarray]:
    """Per-observation factor of :func:`renormalise_to_blocks`, and the equal-split fallback.

    Returns
    -------
    factor
        ``(n_obs, n_genes)`` block total over predicted block sum; ``NaN`` where that sum is 0.
    equal_share
        ``(n_obs, n_genes)`` block total divided by the block's number of members.
    """
    pred = np.clip(np.nan_to_num(_as_2d(pred_counts, "pred_counts"), nan=0.0), 0, None)
    totals = _as_2d(block_totals, "block_totals")
    block = np.asarray(block)
    if block.shape != (pred.shape[0],) or not np.issubdtype(block.dtype, np.integer):
        raise ValueError(f"`block` must be {pred.shape[0]} integer rows of `block_totals`; got "
                         f"dtype {block.dtype}, shape {block.shape}.")
    if block.min() < 0 or block.max() >= totals.shape[0]:
        raise ValueError(f"`block` indexes rows {block.min()}..{block.max()} but `block_totals` "
                         f"has {totals.shape[0]} rows.")
    if totals.shape[1] != pred.shape[1]:
        raise ValueError(f"`block_totals` has {totals.shape[1]} genes, `pred_counts` "
                         f"{pred.shape[1]}.")
    sums = np.zeros_like(totals)
    np.add.at(sums, block, pred)
    n = np.bincount(block, minlength=totals.shape[0])[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = np.where(sums > 0, totals / sums, np.nan)[block]
        equal_share = (totals / np.maximum(n, 1))[block]
    return factor, equal_share


def interval_coverage(truth: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Fraction of observations whose truth lies in ``[lower, upper]`` (up to rounding), per gene.

    Parameters
    ----------
    truth, lower, upper
        ``(n_obs, n_genes)``, all in the same units.

    Returns
    -------
    numpy.ndarray
        ``(n_genes,)`` in [0, 1]; a calibrated 90% interval gives about 0.9.
    """
    truth = _as_2d(truth, "truth")
    lower, upper = _as_2d(lower, "lower"), _as_2d(upper, "upper")
    if not truth.shape == lower.shape == upper.shape:
        raise ValueError(f"`truth` {truth.shape}, `lower` {lower.shape} and `upper` "
                         f"{upper.shape} must have the same shape.")
    if (lower > upper).any():
        raise ValueError("Some `lower` bounds exceed their `upper` bound; pass (lower, upper).")
    # float32 rounding of a layer must not push a truth sitting on a bound (e.g. a zero-width
    # interval) out.
    tol = 1e-6 * np.maximum(1.0, np.abs(truth))
    return ((truth >= lower - tol) & (truth <= upper + tol)).mean(0)


def _shape_nll(resid: np.ndarray, sig: np.ndarray) -> float:
    """Gaussian NLL per observation of ``resid`` under ``sig`` rescaled by its best factor.

    Constants dropped: ``mean(log sig) + 0.5 * log(mean(resid^2 / sig^2))``.
    """
    return float(np.mean(np.log(sig)) + 0.5 * np.log(np.mean(resid**2 / sig**2)))


def uncertainty_gain(truth: np.ndarray, mean: np.ndarray, std: np.ndarray, *,
                     std_floor: float = UNC_STD_FLOOR) -> np.ndarray:
    """unc_gain: how much better a std says where the errors are than the trivial shapes, per gene.

    Over the observations whose ``mean`` is positive, with residuals ``r = truth - mean``, the
    Gaussian negative log-likelihood of ``r`` under a spread ``sig`` rescaled by its best
    factor (so that calibration does not count, only the shape over the observations) is
    ``nll(sig) = mean(log sig) + 0.5 * log(mean(r^2 / sig^2))`` (nats per observation,
    constants dropped), and the gain is ``min(nll(mean), nll(sqrt(mean))) - nll(std)``: 0 for a
    std proportional to the mean when that is the better trivial shape (it is never above 0),
    negative for a std worse than the better of the two trivial shapes, clearly above 0 for a
    std that follows the actual size of the errors. ``BENCHMARK.md`` (Uncertainty) defines it
    on counts.

    A std of 0 claims an exact value, which a Gaussian likelihood turns into an infinite reward
    (residual 0) or penalty (any other residual). So each gene's std is floored at
    ``std_floor`` times its mean over the scored observations: a std of 0 where the residual is
    not then costs a large but finite penalty, and a std that is 0 at every scored observation
    (no spread claimed at all) is scored as a constant std, a shape that says nothing about
    where the errors are. Floor and score both ignore the std's units.

    Parameters
    ----------
    truth
        ``(n_obs, n_genes)`` measured values (counts).
    mean, std
        ``(n_obs, n_genes)`` predicted mean and standard deviation, in the units of ``truth``.
    std_floor
        Smallest std, relative to the gene's mean std over the scored observations.

    Returns
    -------
    numpy.ndarray
        ``(n_genes,)`` in nats per observation; ``NaN`` for a gene with fewer than two
        observations of positive mean or whose residuals there are all 0 (nothing to explain).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> mean = rng.uniform(1, 50, (500, 1))
    >>> err = rng.uniform(0.5, 5, (500, 1))  # the real size of each error, unrelated to the mean
    >>> truth = mean + err * rng.standard_normal((500, 1))
    >>> # counting-noise-like spread is the better trivial shape here: it scores 0
    >>> bool(abs(uncertainty_gain(truth, mean, 3 * np.sqrt(mean))[0]) < 1e-9)
    True
    >>> bool(uncertainty_gain(truth, mean, err)[0] > 0.3)
    True
    """
    truth, mean, std = (_as_2d(truth, "truth"), _as_2d(mean, "mean"), _as_2d(std, "std"))
    if not truth.shape == mean.shape == std.shape:
        raise ValueError(f"`truth` {truth.shape}, `mean` {mean.shape} and `std` {std.shape} "
                         "must have the same shape.")
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):
        raise ValueError("`mean` and `std` must be finite at every observation.")
    if (std < 0).any():
        raise ValueError("`std` has negative values; pass a standard deviation.")
    if not std_floor > 0:
        raise ValueError(f"`std_floor` must be positive, not {std_floor!r}.")
    out = np.full(truth.shape[1], np.nan)
    for j in range(truth.shape[1]):
        keep = mean[:, j] > 0
        if keep.sum() < 2:
            continue
        m, s = mean[keep, j], std[keep, j]
        r = truth[keep, j] - m
        if not np.any(r):
            continue
        level = s.mean()
        sig = np.maximum(s, std_floor * level) if level > 0 else np.ones_like(s)
        out[j] = min(_shape_nll(r, m), _shape_nll(r, np.sqrt(m))) - _shape_nll(r, sig)
    return out


def consistency_error(footprint_means: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Relative error of a super-resolved map's footprint means against the measured spots.

    Per gene, ``||m - y|| / ||y||`` over the spots, where ``m`` is the map averaged over each
    spot's footprint and ``y`` the spot's measurement, both in the measurement's units. 0 means
    the map integrates back exactly to what was measured.

    Parameters
    ----------
    footprint_means
        ``(n_spots, n_genes)`` mean of the map over each spot's footprint.
    measured
        ``(n_spots, n_genes)`` measured expression of the spots.

    Returns
    -------
    numpy.ndarray
        ``(n_genes,)``; ``NaN`` for genes not measured in any spot.
    """
    m, y = _as_2d(footprint_means, "footprint_means"), _as_2d(measured, "measured")
    if m.shape != y.shape:
        raise ValueError(f"`footprint_means` {m.shape} and `measured` {y.shape} must have the "
                         "same shape.")
    ok = np.isfinite(m).all(1)
    if not ok.any():
        raise ValueError("No spot footprint overlaps the map; check the coordinate system.")
    m, y = m[ok], y[ok]
    norm = np.sqrt((y**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, np.sqrt(((m - y) ** 2).sum(0)) / norm, np.nan)


def gene_mean(per_gene) -> float:
    """Mean of a per-gene score over the genes that have one (``NaN`` if none has)."""
    v = np.asarray(per_gene, dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def expression_scores(truth: np.ndarray, pred: np.ndarray, *, block: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> dict[str, np.ndarray]:
    """The four scores of the benchmark protocol, per gene.

    Parameters
    ----------
    truth, pred
        ``(n_obs, n_genes)`` log1p expression.
    block
        ``(n_obs,)`` block (low-resolution spot) of each observation.
    rows, cols
        Integer grid position of each observation.

    Returns
    -------
    dict
        ``{"PCC", "NRMSE", "SSIM", "wPCC"}`` to ``(n_genes,)`` arrays; :func:`gene_mean`
        averages them.
    """
    return {
        "PCC": pcc(truth, pred),
        "NRMSE": nrmse(truth, pred),
        "SSIM": ssim_on_grid(truth, pred, rows, cols),
        "wPCC": within_block_pcc(truth, pred, block),
    }
