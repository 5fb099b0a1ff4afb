"""The pairs ``fit`` learns from on its own: a section's spots summed into pseudo-spots -> its spots.

The pseudo-spots are those of :func:`~diffst_sc.pp.degrade`, summed from a checked section
view's arrays (``_core.coarsen_view``): no SpatialData is built and nothing is checked twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._core._blocks import coarsen_view
from .._core._lattice import is_hex_lattice
from ._low_counts import spots_to_skip

if TYPE_CHECKING:
    from .._core._view import SectionView


def self_supervised_pairs(view: SectionView, missing_key: str | None = None,
                          genes: list[str] | None = None) -> tuple[list[SectionView], SectionView]:
    """A section's spots summed into pseudo-spots (the inputs), and its spots (the target).

    These are the pairs :func:`diffst_sc.tl.fit` learns from with ``pairs="self"``. Spots
    flagged in ``obs[missing_key]`` are dropped first, so they are neither summed into a
    pseudo-spot nor a target. The pseudo-spots are the 2 x 2 blocks (square array, or spots
    grouped by square bins when they lie on no lattice) or the hexagons of 7 spots (Visium) of
    :func:`diffst_sc.pp.degrade`, with the same sums, library sizes and measured shares. On a
    square array every phase of the blocks is used (4 pseudo-spot lattices), which multiplies
    what a single section teaches without inventing any count.

    Parameters
    ----------
    view
        The section (:func:`diffst_sc._core.section_view`).
    missing_key
        Boolean ``obs`` column of the spots to leave out; computed with the rule of
        :func:`flag_low_count_spots` and written to the table when absent. ``None`` keeps every
        spot.
    genes
        Genes the views hold (all by default); each spot's library size over all genes is kept
        alongside (``obs["diffst_library_size"]``), so the model's units do not change.

    Returns
    -------
    inputs : list of SectionView
        One view of pseudo-spots per phase of the blocks (those with at least 2 pseudo-spots).
    target : SectionView
        The section's kept spots, with array positions (``obs["array_row"]``,
        ``obs["array_col"]``; placed from the centres when the table records none).

    Raises
    ------
    ValueError
        When fewer than 2 spots are left, or no phase gives 2 pseudo-spots.

    Examples
    --------
    >>> import diffst_sc as ds
    >>> from diffst_sc._core import section_view
    >>> view = section_view(ds.datasets.her2st_demo())
    >>> inputs, target = ds.pp.self_supervised_pairs(view, genes=["ERBB2", "IGKC"])
    >>> len(inputs), target.n_spots == view.n_spots
    (4, True)
    """
    target = _training_view(view, ~spots_to_skip(view, missing_key), genes)
    obs = target.adata.obs
    row, col = obs["array_row"].to_numpy(int), obs["array_col"].to_numpy(int)
    hexagonal = is_hex_lattice(row, col)
    phases = [(0, 0)] if hexagonal else [(0, 0), (0, 1), (1, 0), (1, 1)]
    mode = "hex" if hexagonal else "square"
    lr_views = [lr for dy, dx in phases
                if (lr := coarsen_view(target, row + dy, col + dx, mode=mode)).n_spots >= 2]
    if not lr_views:
        raise ValueError(f"Section {view.name!r} has too few spots ({view.n_spots}) to learn "
                         "from: at least a few dozen measured spots are needed.")
    return lr_views, target


def _training_view(view, kept: np.ndarray, genes: list[str] | None = None):
    """The view reduced to its ``kept`` spots and ``genes``, as the pseudo-spots are summed from.

    Its table holds the view's counts of ``genes`` (all by default) in ``X``, each spot's
    library size over all genes in ``obs[LIBRARY_KEY]`` and array positions (placed by
    ``spot_positions`` from all the spots when the table records none); copying only the
    model's genes keeps the block phases small on a slide of many genes.
    """
    import dataclasses

    import anndata as ad

    from .._core._lattice import spot_positions
    from .._core._view import LIBRARY_KEY, gene_indices

    if kept.sum() < 2:
        raise ValueError(f"Section {view.name!r} has {int(kept.sum())} spots left after leaving "
                         "out the flagged ones; check the flags, or pass missing_key=None.")
    table = view.adata
    x = table.X if view.layer is None else table.layers[view.layer]
    gidx = np.arange(table.n_vars) if genes is None else gene_indices(table, genes)
    obs = table.obs[kept].copy()
    obs[LIBRARY_KEY] = view.library_sizes()[kept]
    if not {"array_row", "array_col"} <= set(obs.columns):  # placed once, from all the spots
        row, col, _ = spot_positions(view)
        obs["array_row"], obs["array_col"] = row[kept], col[kept]
    sub = ad.AnnData(X=x[:, gidx][kept], obs=obs, var=table.var.iloc[gidx].copy())
    return dataclasses.replace(view, adata=sub, layer=None, centres_px=view.centres_px[kept])
