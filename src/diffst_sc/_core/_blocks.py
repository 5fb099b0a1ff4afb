"""Blocks of a spot lattice (pseudo-spots): which block each spot falls in, and their sums.

Square blocks of ``factor x factor`` spots, or hexagons of ``factor - 1`` rings on a Visium-like
lattice, as the benchmark protocol groups spots. ``pp.degrade`` writes the blocks' sums as a
SpatialData; :func:`coarsen_view` makes the same pseudo-spots as a :class:`SectionView`, which
is how ``fit`` builds its training pairs.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._lattice import is_hex_lattice
from ._view import LIBRARY_KEY, MEASURED_KEY, SectionView


def spot_blocks(row: np.ndarray, col: np.ndarray, mode: str,
                factor: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The pseudo-spot (block) each spot at array position ``(row, col)`` falls in.

    Returns
    -------
    blocks
        ``(n_blocks, 2)`` array (row, col) of each block, on the coarse lattice.
    parent
        ``(n_spots,)`` row of ``blocks`` holding each spot.
    n_children
        Spots in a full block: ``factor ** 2`` (square), ``3 r^2 + 3 r + 1`` for hexagons of
        ``r = factor - 1`` rings.
    """
    if mode == "square":
        parent_rc = np.c_[row // factor, col // factor]
        n_children = factor * factor
    elif mode == "hex":
        parent_rc = hex_parents(row, col, factor - 1)
        n_children = 3 * (factor - 1) ** 2 + 3 * (factor - 1) + 1
    else:
        raise ValueError(f"Unknown spot mode {mode!r}.")
    blocks, parent = np.unique(parent_rc, axis=0, return_inverse=True)
    return blocks, parent.ravel(), n_children


def block_assignment(parent: np.ndarray, n_blocks: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """``(n_blocks, n_spots)`` 0/1 matrix summing spots into their blocks, and spots per block."""
    assign = sp.csr_matrix((np.ones(len(parent), np.float32), (parent, np.arange(len(parent)))),
                           shape=(n_blocks, len(parent)))
    return assign, np.asarray(assign.sum(axis=1)).ravel()


def block_obs(view: SectionView, blocks: np.ndarray, assign: sp.csr_matrix, n_per: np.ndarray,
              n_children: int) -> pd.DataFrame:
    """``obs`` of the pseudo-spots: array position, spots summed, library size, measured share."""
    return pd.DataFrame(
        {"array_row": blocks[:, 0], "array_col": blocks[:, 1], "n_spots": n_per.astype(int),
         LIBRARY_KEY: assign @ view.library_sizes(),
         MEASURED_KEY: (assign @ view.measured_fraction) / n_children},
        index=[f"lr_{r}_{c}" for r, c in blocks],
    )


def coarsen_view(view: SectionView, row: np.ndarray, col: np.ndarray, *, mode: str,
                 factor: int = 2) -> SectionView:
    """``pp.degrade``'s pseudo-spots of ``view`` as a view, with no SpatialData made.

    What ``fit`` trains on: the same sums, library sizes and measured shares as
    ``section_view(pp.degrade(sdata))``, from arrays the caller has checked. ``row``, ``col``:
    the spots' array positions (shifted, for another phase of the blocks).
    """
    import anndata as ad

    blocks, parent, n_children = spot_blocks(row, col, mode, factor)
    assign, n_per = block_assignment(parent, len(blocks))
    x = view.adata.X if view.layer is None else view.adata.layers[view.layer]
    counts = sp.csr_matrix(assign @ sp.csr_matrix(x, dtype=np.float32), dtype=np.float32)
    adata = ad.AnnData(X=counts, obs=block_obs(view, blocks, assign, n_per, n_children),
                       var=view.adata.var.copy())
    return dataclasses.replace(view, adata=adata, layer=None, shapes_key="spots",
                               table_key="table",
                               centres_px=(assign @ view.centres_px) / n_per[:, None],
                               diameter_px=float(np.sqrt(n_children)) * view.diameter_px)


def hex_parents(row: np.ndarray, col: np.ndarray, rings: int) -> np.ndarray:
    """Hexagon (of ``rings`` rings around a centre) holding each spot of a Visium-like lattice.

    Visium's ``array_col`` steps by 2 along a row and neighbouring rows are offset by 1, so the
    axial coordinates of the hexagonal lattice are ``q = (col - row - parity) / 2``, ``r = row``.
    Hexagons of ``rings`` rings tile the lattice with centres on the sub-lattice spanned by
    ``A = (rings + 1, rings)`` and ``B = (-rings, 2 rings + 1)`` (B is A turned by 60 degrees).

    Returns
    -------
    numpy.ndarray
        ``(n, 2)`` (array_row, array_col) of each spot's hexagon on the coarse lattice, in the
        same doubled layout as Visium's (so the result can be degraded again).
    """
    row = np.asarray(row, np.int64)
    col = np.asarray(col, np.int64)
    if not is_hex_lattice(row, col):
        raise ValueError("mode='hex' needs a Visium-like lattice: array_row + array_col must have "
                         "one parity for all spots (array_col steps by 2 along a row). Use "
                         "mode='square' for a square array (legacy ST).")
    parity = (row[0] + col[0]) % 2
    q = (col - row - parity) // 2
    r = row
    k = rings
    basis = np.array([[k + 1, -k], [k, 2 * k + 1]], dtype=float)  # columns: A, B
    mn = np.linalg.solve(basis, np.vstack([q, r]).astype(float))
    base = np.floor(mn).astype(np.int64)
    best_d = np.full(len(q), np.iinfo(np.int64).max)
    best = np.zeros((2, len(q)), np.int64)
    for dm in (-1, 0, 1, 2):
        for dn in (-1, 0, 1, 2):
            cand = base + np.array([[dm], [dn]])
            cq = (k + 1) * cand[0] - k * cand[1]
            cr = k * cand[0] + (2 * k + 1) * cand[1]
            dq, dr = q - cq, r - cr
            d = (np.abs(dq) + np.abs(dr) + np.abs(dq + dr)) // 2
            better = d < best_d
            best_d = np.where(better, d, best_d)
            best[:, better] = cand[:, better]
    assert (best_d <= k).all(), "hexagons of `rings` rings must tile the lattice"
    m, n = best
    return np.c_[n, 2 * m + n]
