"""How far a fitted histology path holds on a section, measured on held-out pairs.

The path is fitted once; each section it maps is different. Its own spots, summed into
pseudo-spots, are pairs the path did not learn from (or, on the section it was fitted on,
its held-out tiles): what they say about the path's departures on that section is its
calibration, which weighs the histology per gene and measures the spread of counts the
uncertainty is built from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Calibration:
    """What a section's own pairs say about the path's departures on that section.

    Attributes
    ----------
    gain
        Scale of the map's departures from the spots' cells (:meth:`HistologyPath.gain`).
    weight
        ``(G,)`` weight of each gene's histology departure in ``[0, 1]``
        (:func:`histology_weights`); ``None``: every weight 1.
    dispersion
        ``(G,)`` :func:`count_dispersion` on the section's own pairs; ``None``: not measured.
    spread_scale
        :func:`count_spread` on the same pairs: the factor on the counts' variance that puts
        90% of them within 1.645 standard deviations.
    """

    gain: float = 1.0
    weight: np.ndarray | None = None
    dispersion: np.ndarray | None = None
    spread_scale: float = 1.0


def weight_sums(shared: np.ndarray, own_part: np.ndarray, y: np.ndarray):
    """Per gene, ``(e.p, p.p, e.e, n)`` for :func:`histology_weights`.

    ``p`` is the histology part of held-out predictions, ``e`` what it should explain: the
    departures less the path's own-gene part.
    """
    e = y - own_part
    p = shared - shared.mean(0)
    return (e * p).sum(0), (p * p).sum(0), (e * e).sum(0), np.full(y.shape[1], len(y), float)


def histology_weights(ep, pp, ee, n) -> np.ndarray:
    """``(G,)`` how much of each gene's histology departure held-out pairs support, in [0, 1].

    Per gene, the least-squares slope of what the histology part should explain on held-out
    pairs on what it predicts there (1: the departures are as large as they should be, 0: they
    explain nothing). One gene's slope from a few hundred noisy spots is itself noisy, so each
    is shrunk toward the slope of all genes together by how its own sampling variance compares
    with the genes' spread (empirical Bayes), then clipped to ``[0, 1]``: a map departs from
    its interpolated spots no further than the section's own held-out data support.
    """
    ep, pp, ee, n = (np.asarray(a, np.float64) for a in (ep, pp, ee, n))
    ok = pp > 1e-12
    if not ok.any():
        return np.zeros(len(ep))
    slope = np.where(ok, ep / np.where(ok, pp, 1.0), 0.0)
    resid = np.maximum(ee - slope * ep, 0.0) / np.maximum(n - 1, 1.0)
    var = np.where(ok, resid / np.where(ok, pp, 1.0), np.inf)
    pooled = float(ep[ok].sum() / pp[ok].sum())
    spread = max(0.0, float(np.var(slope[ok]) - np.mean(var[ok]))) if ok.sum() > 1 else 0.0
    share = np.where(ok, spread / (spread + var), 0.0)
    return np.clip(pooled + share * (slope - pooled), 0.0, 1.0)


def count_dispersion(rows: list, pred: np.ndarray) -> np.ndarray | None:
    """``(G,)`` how far target spots' counts spread about the map beyond counting noise.

    The first part of :func:`count_spread`; ``None`` when the rows keep no counts.
    """
    return count_spread(rows, pred)[0]


def count_spread(rows: list, pred: np.ndarray,
                 level: float = 0.9) -> tuple[np.ndarray | None, float]:
    """The spread of target spots' counts about the map: its dispersion and interval scale.

    ``rows`` are ``FootprintRows``; ``pred`` ``(n, G)`` the path's (held-out) predictions of
    the rows' departures, stacked in the order of ``rows``. Each target spot's predicted counts
    ``yhat`` are its parent's counts shared among the parent's targets as the map's densities
    share them. Given the parent's counts, a target holding the share ``p = yhat / parent`` of
    them spreads about ``yhat`` with variance ``(1 - p) * (yhat + c * yhat**2)``: a multinomial
    share of the parent (Poisson and a negative-binomial dispersion ``c``, less what the parent's
    known total takes away; 0 for a parent's only target).

    Returns
    -------
    dispersion
        ``(G,)`` ``c`` of each gene, the moment estimate: what the squared errors hold beyond
        the Poisson part, over ``(1 - p) * yhat**2``; ``None`` when the rows keep no counts.
    scale
        The factor on that variance that puts the share ``level`` of the targets (over genes;
        those whose variance is not 0) within ``z`` standard deviations of their predicted
        counts, ``z`` the normal quantile of ``level`` (1.645 for 90%). A variance right on
        average still puts intervals in the wrong place when counts are skewed; this is where
        the section's own held-out targets fall. 1 when nothing is measured.
    """
    from scipy.stats import norm

    shared = _shared(rows, pred)
    if shared is None:
        return None, 1.0
    excess = sum((((y - yhat) ** 2 - rest * yhat).sum(0) for y, yhat, rest in shared), 0.0)
    scale = sum(((rest * yhat**2).sum(0) for _, yhat, rest in shared), 0.0)
    c = np.clip(excess / np.maximum(scale, 1e-12), 0.0, None)
    z = []
    for y, yhat, rest in shared:
        var = rest * (yhat + c * yhat**2)
        ok = var > 1e-12
        z.append(np.abs(y - yhat)[ok] / np.sqrt(var[ok]))
    z = np.concatenate(z)
    if z.size < 20:
        return c, 1.0
    return c, float((np.quantile(z, level) / norm.ppf(0.5 + level / 2)) ** 2)


def _shared(rows: list, pred: np.ndarray):
    """Per set of rows, ``(counts, yhat, 1 - share)``; ``None`` without counts.

    ``yhat`` is each target's parent's counts shared among the parent's targets as the map's
    densities share them, ``share`` the part of the parent's counts it holds.
    """
    from .._core._units import to_density

    if not rows or any(r.counts is None for r in rows):
        return None
    out, start = [], 0
    for r in rows:
        n = len(r.target)
        v = to_density(r.lr + pred[start:start + n], r.mu, r.sd) + 1e-12
        start += n
        _, parent = np.unique(r.parent, return_inverse=True)
        share = v / _parent_sums(v, parent)[parent]
        out.append((r.counts, _parent_sums(r.counts, parent)[parent] * share, 1.0 - share))
    return out


def _parent_sums(a: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """``(n_parents, G)`` the rows of ``a`` summed over each parent (``parent`` from 0)."""
    return np.stack([np.bincount(parent, a[:, j]) for j in range(a.shape[1])], 1)
