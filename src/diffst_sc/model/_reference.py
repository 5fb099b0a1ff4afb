"""Reference models: fits of the histology path that a new section's own fit starts from.

A section fitted alone learns from a few hundred spots; a reference fitted on other sections'
measured spots knows more, where the tissue is alike. ``fit(..., reference=...)`` shrinks the
section's ridge toward the reference's weights instead of toward 0, as far as the section's own
held-out tiles support, gene by gene.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._histology_path import _averaged_ridge, _held_out
from ._ridge import Ridge

#: Strengths of a reference's weights the held-out tiles choose from, per gene: how far each
#: gene's fit starts from the reference instead of from 0.
PRIOR_STRENGTHS = (0.0, 0.5, 1.0)
#: How much more the section's own fit is penalised on top of the reference (the ridge's
#: penalties times each): the larger, the closer a gene stays to the reference.
PRIOR_PENALTIES = (1.0, 10.0, 100.0, 1e6)


def prior_fit(cls, rows, radius_ratio, x, own, y, fold, prior: Ridge, alphas, rank):
    """The path fitted on top of ``prior``, each gene's prior strength chosen on held-out tiles.

    For each strength ``w`` of :data:`PRIOR_STRENGTHS` and each penalty factor of
    :data:`PRIOR_PENALTIES` (with ``w = 0``, the plain fit), the ridges are fitted to what ``w``
    times the prior leaves (so the penalties shrink toward the prior, not toward 0; the last
    factor keeps the reference as it is), and their held-out error is measured on the spatial
    folds. Each gene keeps the candidate whose held-out error is lowest (an empirical-Bayes
    choice of how far to trust the prior, gene by gene, on the section's own pairs): a tissue
    like the reference's borrows its weights, another keeps its own fit. The chosen strengths
    are recorded as ``prior_strength``.
    """
    p_shared, p_own = prior.parts(x, own)
    fits, grid = [], []
    for w in PRIOR_STRENGTHS:
        for k in (PRIOR_PENALTIES if w > 0 else (1.0,)):
            base = (w * p_shared, w * p_own)
            al = tuple(a * k for a in alphas)
            ridge = _averaged_ridge(x, own, y - base[0] - base[1], al, rank)
            fits.append((ridge, *_held_out(x, own, y, fold, al, rank, base=base)))
            grid.append(w)
    held_out = fits[0][2] is not None
    g = y.shape[1]
    best = (np.argmin(np.stack([f[2] for f in fits]), axis=0) if held_out
            else np.zeros(g, int))
    cols = np.arange(g)
    strength = np.asarray(grid)[best]
    a, a_own, off = (np.stack(v) for v in zip(*(f[0].linear() for f in fits), strict=True))
    pa, pa_own, poff = prior.linear()
    ridge = Ridge(np.zeros(x.shape[1]), np.ones(x.shape[1]),
                  a[best, :, cols].T + pa * strength, off[best, cols] + poff * strength,
                  np.zeros(g), np.ones(g), a_own[best, cols] + pa_own * strength)
    if not held_out:
        path = cls._finish(rows, radius_ratio, x, own, y, ridge, float("nan"), None, None, None)
    else:
        sums = tuple(np.stack([f[3][i] for f in fits])[best, cols] for i in range(4))
        held = np.stack([f[4] for f in fits])[best, :, cols].T
        cv = float((((held - y) ** 2).mean(0) / np.maximum(y.var(0), 1e-16)).mean())
        rmse = np.stack([np.asarray(f[2], np.float64) for f in fits])[best, cols]
        path = cls._finish(rows, radius_ratio, x, own, y, ridge, cv, rmse.tolist(), sums, held)
    path.prior_strength = strength.tolist()
    return path


def prior_for(reference, genes: list[str]) -> Ridge:
    """A reference model's ridge as a prior for ``genes``: 0 for genes it does not model."""
    index = {g: i for i, g in enumerate(reference.genes)}
    a, a_own, off = reference.path.ridge.linear()
    d = a.shape[0]
    out_a, out_own, out_off = np.zeros((d, len(genes))), np.zeros(len(genes)), np.zeros(len(genes))
    for j, g in enumerate(genes):
        if g in index:
            i = index[g]
            out_a[:, j], out_off[j] = a[:, i], off[i]
            out_own[j] = 0.0 if a_own is None else a_own[i]
    return Ridge(np.zeros(d), np.ones(d), out_a, out_off, np.zeros(len(genes)),
                 np.ones(len(genes)), out_own)


#: The reference models shipped with the package: name -> what it was fitted on.
REFERENCES = {
    "her2st": "the histology model fitted on the measured spots of her2st sections B4, C2 and C3 "
              "(HER2+ breast cancer, legacy Spatial Transcriptomics; Andersson et al., Nat "
              "Commun 12, 6012, 2021), 2 x 2 pseudo-spot pairs",
}


def reference_folder(name: str) -> Path:
    """The folder of the shipped reference model ``name``."""
    if name not in REFERENCES:
        raise KeyError(f"No reference model named {name!r}; the package ships "
                       f"{sorted(REFERENCES)}. Pass a fitted HistologyModel or a folder saved "
                       "with model.save() instead.")
    return Path(__file__).parent / "references" / name
