"""Consistency with the measurement: the super-resolved map averaged over a spot equals the spot."""

from __future__ import annotations

import math

import torch

#: Pseudo-count of the correction (model units: density per 10,000 per area) when the caller
#: does not give the density of one count over a footprint.
DENSITY_FLOOR = 1e-3
#: Largest change of log-density one correction round may make.
MAX_LOG_STEP = 3.0


class FootprintProjection:
    """Rescale maps so that their mean over each spot footprint matches the measured spot.

    The correction is multiplicative on the density plus ``pseudo``, each pixel's factor the
    spots' factors blended by ``spread`` (a pixel between two spots takes a mix of their
    corrected maps, so that neither's extreme factor wipes out the other's share), so that
    pixels outside any footprint are corrected like their neighbours. With ``pseudo`` the
    density of one count over a footprint, ratios below the counts' resolution are not taken
    literally: where the map put two counts of a gene over a spot that measured none, the
    spot's cell is scaled by one count in three (and its footprint's mean drops to zero over
    the rounds), not by the literal ratio of nothing to two, which would also wipe out the
    pixels of a neighbour's footprint that reach into the cell.

    Parameters
    ----------
    coverage
        ``(n_spots, H * W)`` fraction of each pixel inside each spot's footprint.
    spread
        ``(H * W, n_spots)`` weights spreading a per-spot correction to pixels; rows sum to 1
        where a pixel has any spot nearby, 0 elsewhere.
    target
        ``(n_spots, G)`` measured expression density of each spot (model units, linear).
    mu, sd
        ``(G,)`` standardisation of ``log1p(density)`` used by the model.
    iters
        Number of correction rounds per call.
    pseudo
        Density added to both sides of each ratio (model units): that of one count over a
        footprint, or a small floor by default.

    Examples
    --------
    >>> import torch
    >>> from diffst_sc.model import FootprintProjection
    >>> proj = FootprintProjection(torch.ones(1, 4), torch.ones(4, 1), torch.tensor([[5.0]]),
    ...                            torch.zeros(1), torch.ones(1))
    >>> z = proj(torch.ones(1, 1, 2, 2))
    >>> round(float(proj.to_density(z.reshape(1, 1, 4)).mean()), 2)
    5.0
    """

    def __init__(self, coverage: torch.Tensor, spread: torch.Tensor, target: torch.Tensor,
                 mu: torch.Tensor, sd: torch.Tensor, iters: int = 2,
                 pseudo: float = DENSITY_FLOOR):
        area = coverage.sum(1, keepdim=True)
        keep = area[:, 0] > 0
        self.coverage = coverage[keep] / area[keep]
        self.spread = spread[:, keep]
        self.pseudo = float(pseudo)
        self.log_target = torch.log(target[keep].clamp_min(0) + self.pseudo)
        self.mu = mu.view(1, -1, 1)
        self.sd = sd.view(1, -1, 1)
        self.iters = iters

    def to_density(self, z: torch.Tensor) -> torch.Tensor:
        """Model units ``(N, G, H*W)`` to non-negative density."""
        return torch.expm1(z * self.sd + self.mu).clamp_min(0)

    def to_model(self, v: torch.Tensor) -> torch.Tensor:
        """Density to model units."""
        return (torch.log1p(v) - self.mu) / self.sd

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """Project ``(N, G, H, W)`` maps in model units; returns the same shape."""
        if self.coverage.shape[0] == 0:
            return z
        n, g, h, w = z.shape
        p = self.pseudo  # also lets the correction lift pixels that are exactly zero
        v = self.to_density(z.reshape(n, g, h * w))
        for _ in range(self.iters):
            means = v @ self.coverage.T  # (N, G, spots)
            log_ratio = self.log_target.T.unsqueeze(0) - torch.log(means + p)
            # the spots' factors blended by the spread (1 where no spot is near); the clamps
            # keep one round from amplifying pixels far from every footprint
            d = torch.expm1(log_ratio.clamp(-MAX_LOG_STEP, MAX_LOG_STEP)) @ self.spread.T
            d = d.clamp(math.expm1(-MAX_LOG_STEP), math.expm1(MAX_LOG_STEP))  # factor - 1
            v = (v + (v + p) * d).clamp_min(0)  # (v + p) * factor - p
        return self.to_model(v).reshape(n, g, h, w)

    def relative_error(self, z: torch.Tensor) -> torch.Tensor:
        """Mean absolute relative error of footprint means against the target, per sample."""
        n, g, h, w = z.shape
        means = self.to_density(z.reshape(n, g, h * w)) @ self.coverage.T
        target = self.log_target.exp().T.unsqueeze(0) - self.pseudo
        return ((means - target).abs().sum((1, 2)) / target.abs().sum().clamp_min(1e-6))
