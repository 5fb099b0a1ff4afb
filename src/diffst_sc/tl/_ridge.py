"""A ridge regression on standardised inputs: the model's low-capacity path and a baseline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Ridge:
    """Multi-output ridge regression ``y ~ (x - x_mean) / x_sd @ coef + intercept``.

    Attributes
    ----------
    x_mean, x_sd
        ``(d,)`` standardisation of the inputs (constant inputs get sd 1 and so no weight).
    coef
        ``(d, k)`` weights on the standardised inputs.
    intercept
        ``(k,)``.
    """

    x_mean: np.ndarray
    x_sd: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, alpha: float,
            weight: np.ndarray | None = None) -> Ridge:
        """Weighted ridge fit in closed form.

        Parameters
        ----------
        x
            ``(n, d)`` inputs.
        y
            ``(n, k)`` targets.
        alpha
            Penalty on the standardised weights, as in scikit-learn's ``Ridge(alpha)``: the fit
            minimises ``sum(weight * residual**2) + alpha * |coef|**2``.
        weight
            ``(n,)`` non-negative sample weights (1 by default).

        Returns
        -------
        Ridge
        """
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64)
        if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
            raise ValueError(f"x {x.shape} and y {y.shape} must be (n, d) and (n, k).")
        w = np.ones(len(x)) if weight is None else np.asarray(weight, np.float64)
        total = w.sum()
        if total <= 0:
            raise ValueError("The ridge has no sample with positive weight to learn from.")
        mean = (w @ x) / total
        sd = np.sqrt((w @ (x - mean) ** 2) / total)
        sd = np.where(sd > 1e-8, sd, 1.0)
        xs = (x - mean) / sd
        y_mean = (w @ y) / total
        xw = xs * w[:, None]
        gram = xw.T @ xs + alpha * np.eye(x.shape[1])
        coef = np.linalg.solve(gram, xw.T @ (y - y_mean))
        return cls(mean, sd, coef, y_mean)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``(n, k)`` predictions for ``(n, d)`` inputs."""
        return ((np.asarray(x, np.float64) - self.x_mean) / self.x_sd) @ self.coef + self.intercept

    def to_dict(self) -> dict:
        """JSON-serialisable form (see :meth:`from_dict`)."""
        return {k: np.asarray(v).tolist() for k, v in vars(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> Ridge:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: np.asarray(d[k], np.float64) for k in ("x_mean", "x_sd", "coef",
                                                                  "intercept")})

