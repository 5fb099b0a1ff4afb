"""A ridge regression on standardised inputs: the model's low-capacity path and a baseline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Ridge:
    """Multi-output ridge ``y_k ~ (x - x_mean) / x_sd @ coef[:, k] + own_coef[k] * own_k + b_k``.

    The inputs ``x`` are shared by every output; ``own`` (optional) has one column per output,
    an input that only that output sees (e.g. the gene's own interpolated expression).

    Attributes
    ----------
    x_mean, x_sd
        ``(d,)`` standardisation of the shared inputs (constant inputs get sd 1 and so no
        weight).
    coef
        ``(d, k)`` weights on the standardised shared inputs.
    intercept
        ``(k,)``.
    own_mean, own_sd, own_coef
        ``(k,)`` standardisation and weight of each output's own input, or ``None``.
    """

    x_mean: np.ndarray
    x_sd: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    own_mean: np.ndarray | None = None
    own_sd: np.ndarray | None = None
    own_coef: np.ndarray | None = None

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, alpha: float,
            weight: np.ndarray | None = None, own: np.ndarray | None = None,
            own_alpha: float | None = None) -> Ridge:
        """Weighted ridge fit in closed form.

        Parameters
        ----------
        x
            ``(n, d)`` shared inputs.
        y
            ``(n, k)`` targets.
        alpha
            Penalty on the standardised shared weights, as in scikit-learn's ``Ridge(alpha)``:
            the fit minimises ``sum(weight * residual**2) + alpha * |coef|**2`` (plus
            ``own_alpha`` times the squared own weights).
        weight
            ``(n,)`` non-negative sample weights (1 by default).
        own
            ``(n, k)`` each output's own input, or ``None``.
        own_alpha
            Penalty on the standardised own weights; ``alpha`` by default (the own input is
            one more input, penalised like the others).

        Returns
        -------
        Ridge
        """
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64)
        if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
            raise ValueError(f"x {x.shape} and y {y.shape} must be (n, d) and (n, k).")
        if own is not None and np.shape(own) != y.shape:
            raise ValueError(f"own {np.shape(own)} must have the shape of y {y.shape}.")
        w = np.ones(len(x)) if weight is None else np.asarray(weight, np.float64)
        total = w.sum()
        if total <= 0:
            raise ValueError("The ridge has no sample with positive weight to learn from.")
        mean, sd = _standardisation(x, w)
        xs = (x - mean) / sd
        y_mean = (w @ y) / total
        yc = y - y_mean
        xw = xs * w[:, None]
        gram = xw.T @ xs + alpha * np.eye(x.shape[1])
        if own is None:
            return cls(mean, sd, np.linalg.solve(gram, xw.T @ yc), y_mean)
        o_mean, o_sd = _standardisation(np.asarray(own, np.float64), w)
        o = (own - o_mean) / o_sd
        # Per output, the block system [[gram, b], [b', c]] [coef; own] = [x'y; o'y], solved
        # for every output at once through gram's inverse (Schur complement).
        b = xw.T @ o  # (d, k)
        c = (o * o * w[:, None]).sum(0) + (alpha if own_alpha is None else own_alpha)
        xy = xw.T @ yc
        oy = (o * yc * w[:, None]).sum(0)
        inv_b, inv_xy = np.linalg.solve(gram, b), np.linalg.solve(gram, xy)
        own_coef = (oy - (b * inv_xy).sum(0)) / (c - (b * inv_b).sum(0))
        coef = inv_xy - inv_b * own_coef
        return cls(mean, sd, coef, y_mean, o_mean, o_sd, own_coef)

    def reduced_rank(self, x: np.ndarray, rank: int) -> Ridge:
        """The ridge with its shared weights restricted to ``rank`` output directions.

        The directions are the leading right singular vectors of the shared part's predictions
        on ``x`` (the training inputs): reduced-rank ridge regression, which lets the outputs
        share what they learn (the genes' departures from a footprint's mean follow a few
        tissue factors). The own weights are kept.
        """
        from dataclasses import replace

        shared = ((np.asarray(x, np.float64) - self.x_mean) / self.x_sd) @ self.coef
        _, _, vt = np.linalg.svd(shared - shared.mean(0), full_matrices=False)
        v = vt[:rank].T
        return replace(self, coef=self.coef @ v @ v.T)

    @classmethod
    def average(cls, ridges: list[Ridge]) -> Ridge:
        """The mean of ridges fitted to the same inputs (a linear model: their mean prediction)."""
        first = ridges[0]
        if any(not (np.array_equal(r.x_mean, first.x_mean) and np.array_equal(r.x_sd, first.x_sd))
               for r in ridges):
            raise ValueError("Only ridges fitted to the same inputs can be averaged.")

        def mean(key):
            vals = [getattr(r, key) for r in ridges]
            return None if vals[0] is None else np.mean(vals, axis=0)

        return cls(first.x_mean, first.x_sd, mean("coef"), mean("intercept"), first.own_mean,
                   first.own_sd, mean("own_coef"))

    def predict(self, x: np.ndarray, own: np.ndarray | None = None) -> np.ndarray:
        """``(n, k)`` predictions for ``(n, d)`` inputs (and ``(n, k)`` own inputs if fitted)."""
        out = ((np.asarray(x, np.float64) - self.x_mean) / self.x_sd) @ self.coef + self.intercept
        if self.own_coef is not None:
            if own is None:
                raise ValueError("This ridge was fitted with own inputs; pass own=.")
            out = out + (np.asarray(own, np.float64) - self.own_mean) / self.own_sd * self.own_coef
        return out

    def parts(self, x: np.ndarray, own: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The prediction in two ``(n, k)`` parts, which sum to :meth:`predict`'s.

        From the shared inputs (with the intercept), and from each output's own input (zeros
        when fitted without one).
        """
        shared = ((np.asarray(x, np.float64) - self.x_mean) / self.x_sd) @ self.coef \
            + self.intercept
        if self.own_coef is None:
            return shared, np.zeros_like(shared)
        return shared, (np.asarray(own, np.float64) - self.own_mean) / self.own_sd * self.own_coef

    def linear(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """The fit on raw inputs: ``y = x @ a + own * a_own + offset``; returns ``(a, a_own, offset)``."""
        a = self.coef / self.x_sd[:, None]
        offset = self.intercept - (self.x_mean / self.x_sd) @ self.coef
        if self.own_coef is None:
            return a, None, offset
        a_own = self.own_coef / self.own_sd
        return a, a_own, offset - self.own_mean * a_own

    def to_dict(self) -> dict:
        """JSON-serialisable form (see :meth:`from_dict`)."""
        return {k: None if v is None else np.asarray(v).tolist() for k, v in vars(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> Ridge:
        """Inverse of :meth:`to_dict`."""
        def arr(key):
            return None if d.get(key) is None else np.asarray(d[key], np.float64)

        return cls(*(arr(k) for k in ("x_mean", "x_sd", "coef", "intercept", "own_mean",
                                      "own_sd", "own_coef")))


def _standardisation(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean and sd of the columns of ``x`` (sd 1 where a column is constant)."""
    mean = (w @ x) / w.sum()
    sd = np.sqrt((w @ (x - mean) ** 2) / w.sum())
    return mean, np.where(sd > 1e-8, sd, 1.0)
