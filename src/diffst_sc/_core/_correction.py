"""The footprint correction: rescale maps so that their mean over each spot equals the spot.

Written once for numpy and torch arrays: the histology model corrects its map in numpy, the
network's sampler (``schedulers.FootprintProjection``) in torch, each with these rounds.
"""

from __future__ import annotations

import math

import numpy as np

from ._units import to_density, to_model_units

#: Largest change of log-density one correction round may make.
MAX_LOG_STEP = 3.0


#: Pseudo-count of the correction (model units: density per 10,000 per area) when the caller
#: does not give the density of one count over a footprint.
DENSITY_FLOOR = 1e-3


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

    The arrays are all numpy or all torch; the projection runs on what it is given.

    Examples
    --------
    >>> import numpy as np
    >>> proj = FootprintProjection(np.ones((1, 4)), np.ones((4, 1)), np.array([[5.0]]),
    ...                            np.zeros(1), np.ones(1))
    >>> z = proj(np.ones((1, 1, 2, 2)))
    >>> round(float(proj.to_density(z.reshape(1, 1, 4)).mean()), 2)
    5.0
    """

    def __init__(self, coverage, spread, target, mu, sd, iters: int = 2,
                 pseudo: float = DENSITY_FLOOR):
        self.xp = np if isinstance(coverage, np.ndarray) else _torch()
        area = coverage.sum(1)
        keep = area > 0
        self.coverage = coverage[keep] / area[keep][:, None]
        self.spread = spread[:, keep]
        self.pseudo = float(pseudo)
        self.log_target = self.xp.log(target[keep].clip(0, None) + self.pseudo)
        self.mu = mu.reshape(1, -1, 1)
        self.sd = sd.reshape(1, -1, 1)
        self.iters = iters

    def to_density(self, z):
        """Model units ``(N, G, H*W)`` to non-negative density."""
        return to_density(z, self.mu, self.sd)

    def to_model(self, v):
        """Density to model units."""
        return to_model_units(v, self.mu, self.sd)

    def __call__(self, z):
        """Project ``(N, G, H, W)`` maps in model units; returns the same shape."""
        if self.coverage.shape[0] == 0:
            return z
        n, g, h, w = z.shape
        # pixels x (sample, gene) columns, the layout correction_rounds works in
        v = self.xp.moveaxis(self.to_density(z.reshape(n, g, h * w)), 2, 0)  # (hw, n, g)
        log_target = (np.tile(self.log_target, (1, n)) if self.xp is np
                      else self.log_target.repeat(1, n))
        v, _ = correction_rounds(v.reshape(h * w, n * g), self.coverage, self.spread,
                                 log_target, self.pseudo, self.iters)
        v = self.xp.moveaxis(v.reshape(h * w, n, g), 0, 2)  # (n, g, hw)
        return self.to_model(v).reshape(n, g, h, w)

    def relative_error(self, z):
        """Mean absolute relative error of footprint means against the target, per sample."""
        n, g, h, w = z.shape
        means = self.to_density(z.reshape(n, g, h * w)) @ self.coverage.T
        target = self.xp.exp(self.log_target).T[None] - self.pseudo
        return abs(means - target).sum((1, 2)) / max(float(abs(target).sum()), 1e-6)


def _torch():
    import torch

    return torch


def correction_rounds(v, coverage, spread, log_target, pseudo: float, iters: int, *,
                      floor: float = 0.0, carry=None):
    """Rounds of the footprint correction of densities ``v``, on numpy or on torch.

    Each round takes every spot's factor, (its target + ``pseudo``) over (its footprint's mean
    + ``pseudo``), and gives each pixel the blend of its spots' factors by ``spread``, 1 where
    no spot is near: ``v <- (v + pseudo) * factor - pseudo``, at least ``floor``. The clamps
    keep one round from amplifying pixels far from every footprint.

    Parameters
    ----------
    v
        ``(pixels, C)`` densities (C: genes, or samples x genes): a numpy array (with scipy
        sparse or numpy operators) or a torch tensor (with torch operators).
    coverage
        ``(spots, pixels)`` footprint weights, each row summing to 1.
    spread
        ``(pixels, spots)`` weights spreading the spots' factors to pixels.
    log_target
        ``(spots, C)`` log of (each spot's target density + ``pseudo``).
    pseudo, iters, floor
        Pseudo-density, number of rounds, least density a pixel keeps.
    carry
        ``(pixels, C)`` scaled by the same factors (the spread of samples), or ``None``.

    Returns
    -------
    v, carry
        The corrected densities, and ``carry`` rescaled (``None`` if not given).
    """
    xp = np if isinstance(v, np.ndarray) else _torch()
    lo, hi = math.expm1(-MAX_LOG_STEP), math.expm1(MAX_LOG_STEP)
    for _ in range(iters):
        ratio = (log_target - xp.log(coverage @ v + pseudo)).clip(-MAX_LOG_STEP, MAX_LOG_STEP)
        d = (spread @ xp.expm1(ratio)).clip(lo, hi)  # each pixel's factor, less 1
        v = (v + (v + pseudo) * d).clip(floor, None)
        if carry is not None:
            carry = carry * (1 + d)
    return v, carry
