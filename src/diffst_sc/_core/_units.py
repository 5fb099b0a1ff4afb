"""The model's units: standardised ``log1p`` of density, and back; on numpy or on torch.

The scaler that turns a section's counts into density (``model._scaler.ExpressionScaler``) and
the projection that corrects the sampled maps (``schedulers.FootprintProjection``) both read
expression through these two functions, so the two sides cannot drift apart.
"""

from __future__ import annotations

import numpy as np


def to_model_units(density, mu, sd):
    """``(log1p(density) - mu) / sd``: a numpy array or a torch tensor, as given."""
    log = np.log1p(density) if isinstance(density, np.ndarray) else density.log1p()
    return (log - mu) / sd


def to_density(z, mu, sd):
    """The inverse of :func:`to_model_units`, clipped at 0 (no negative density)."""
    e = z * sd + mu
    return (np.expm1(e) if isinstance(e, np.ndarray) else e.expm1()).clip(0, None)
