"""Spots whose library is far below their neighbours': failed captures, flagged in ``obs``.

A spot that measured almost nothing while the spots around it measured thousands of counts is a
failed capture (a bubble, detached tissue, a damaged spot), not biology: neighbouring spots see
similar tissue, and on the her2st sections a spot's library size differs from the median of its
6 nearest neighbours' by a robust standard deviation (1.4826 MAD) of 0.44-0.55 in log units.
A tenth of the neighbours' median is 2.3 log units below it, more than 4 such deviations, and
it falls in a gap: the spots below it have 0-3% of their neighbours' counts, the next ones 14% or
more. Regions where all spots are low (stroma, fat) are not flagged, since each spot there is
compared with neighbours that are low too. A pseudo-spot of ``pp.degrade`` is judged by its
counts over its whole footprint (``SectionView.footprint_library_sizes``): at the tissue's edge
a block of one spot has a quarter of its full neighbours' counts by construction, not because a
capture failed.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING

import numpy as np

from .._core._docs import shared_parameters
from ._normalize import counts_layer, resolve_table

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

#: ``obs`` column (and ``uns`` key) of the flags, read by ``ds.tl.fit`` and ``ds.tl.superresolve``.
LOW_COUNTS_KEY = "diffst_low_counts"
#: A spot is flagged when its library is below this fraction of its neighbours' median.
DEFAULT_FRACTION = 0.1
#: Neighbours a spot is compared with: the ring of a hexagonal lattice (Visium), the 4 sides
#: and 2 of the corners of a square one (legacy ST).
DEFAULT_NEIGHBORS = 6


@shared_parameters
def flag_low_count_spots(
    data: SpatialData | AnnData,
    *,
    fraction: float = DEFAULT_FRACTION,
    n_neighbors: int = DEFAULT_NEIGHBORS,
    key_added: str = LOW_COUNTS_KEY,
    layer: str | None = None,
    table_key: str | None = None,
) -> None:
    """Flag spots whose library size is far below that of their neighbours.

    A spot is flagged when its total counts over all genes (``obs["diffst_library_size"]``
    where a table of some genes records them) are below ``fraction`` times the median total of
    its ``n_neighbors`` nearest spots. With the defaults (a tenth of the median of 6
    neighbours) this flags failed captures, not regions of low expression: a region where every
    spot is low has low neighbours (only a spot at the corner of a region more than ten times
    lower than its surroundings, where most neighbours lie outside, would be flagged; on the
    her2st sections the flagged spots have 0-3% of their neighbours' counts and the next ones
    14% or more). Pseudo-spots made by :func:`diffst_sc.pp.degrade` are compared by their
    counts over the measured share of their footprint (``obs["diffst_measured_fraction"]``),
    so that a block cut by the tissue's edge is not taken for a failed capture.
    :func:`diffst_sc.tl.superresolve` and :func:`diffst_sc.tl.fit` treat flagged spots as
    missing (see ``missing_key`` there).

    Parameters
    ----------
    data
        A SpatialData (spots annotated by a table; its table is changed in place) or an AnnData
        with spot centres in ``obsm["spatial"]``.
    fraction
        Flag spots below this fraction of their neighbours' median library size, in (0, 1).
    n_neighbors
        How many nearest spots each spot is compared with.
    key_added
        Name of the ``obs`` column and of the ``uns`` record.
    {layer}
    {table_key}

    Returns
    -------
    None
        Writes ``obs[key_added]`` (bool, ``True`` for a flagged spot) and ``uns[key_added]``
        (``n_flagged``, ``n_spots``, ``fraction``, ``n_neighbors``, ``layer``).

    Examples
    --------
    >>> import diffst_sc as ds
    >>> sdata = ds.datasets.her2st_demo()
    >>> ds.pp.flag_low_count_spots(sdata)
    >>> sdata.tables["table"].uns["diffst_low_counts"]["n_flagged"]
    2
    """
    _check_rule(fraction, n_neighbors)
    adata = resolve_table(data, table_key)
    layer = counts_layer(adata, layer)
    from .._core._view import footprint_library_sizes

    totals = footprint_library_sizes(adata, layer)
    flags = low_count_spots(totals, _spot_positions(data, adata, table_key), fraction=fraction,
                            n_neighbors=n_neighbors)
    write_flags(adata, flags, key_added, fraction=fraction, n_neighbors=n_neighbors, layer=layer)


def low_count_spots(totals: np.ndarray, centres: np.ndarray, *, fraction: float = DEFAULT_FRACTION,
                    n_neighbors: int = DEFAULT_NEIGHBORS) -> np.ndarray:
    """``(n_spots,)`` bool: totals below ``fraction`` x the median of the nearest spots' totals.

    Parameters
    ----------
    totals
        ``(n_spots,)`` library sizes.
    centres
        ``(n_spots, 2)`` spot centres, in any units.
    fraction, n_neighbors
        The rule, see :func:`flag_low_count_spots`.

    Returns
    -------
    numpy.ndarray
        ``True`` for the flagged spots (none with fewer than 2 spots).
    """
    from scipy.spatial import cKDTree

    _check_rule(fraction, n_neighbors)
    totals = np.asarray(totals, np.float64).ravel()
    centres = np.asarray(centres, np.float64).reshape(len(totals), -1)
    k = min(int(n_neighbors), len(totals) - 1)
    if k < 1:
        return np.zeros(len(totals), bool)
    _, idx = cKDTree(centres).query(centres, k=k + 1)
    neighbour_median = np.median(totals[idx[:, 1:]], axis=1)
    return totals < fraction * neighbour_median


def write_flags(adata, flags: np.ndarray, key: str, *, fraction: float, n_neighbors: int,
                layer: str | None) -> None:
    """Record ``flags`` in ``adata.obs[key]`` and the rule and count in ``adata.uns[key]``."""
    adata.obs[key] = np.asarray(flags, bool)
    adata.uns[key] = {"n_flagged": int(np.sum(flags)), "n_spots": int(len(flags)),
                      "fraction": float(fraction), "n_neighbors": int(n_neighbors),
                      "layer": layer or "X"}


def spots_to_skip(view, key: str | None) -> np.ndarray:
    """``(n_spots,)`` bool: the spots of a ``SectionView`` to treat as missing.

    ``obs[key]`` of the view's table when it exists (a boolean column, e.g. one edited by hand);
    when it does not, the spots are flagged with the default rule and the flags written there
    (as :func:`flag_low_count_spots` does). ``key=None`` skips no spot.
    """
    n = view.n_spots
    if key is None:
        return np.zeros(n, bool)
    obs = view.adata.obs
    if key in obs.columns:
        col = obs[key]
        if col.dtype != bool:
            raise ValueError(f"obs[{key!r}] of table {view.table_key!r} must be boolean (True for "
                             f"a spot to treat as missing), not {col.dtype}. Recompute it with "
                             f"ds.pp.flag_low_count_spots(sdata, key_added={key!r}), or pass "
                             "missing_key=None to use every spot.")
        return col.to_numpy(bool)
    flags = low_count_spots(view.footprint_library_sizes(), view.centres_px)
    write_flags(view.adata, flags, key, fraction=DEFAULT_FRACTION,
                n_neighbors=DEFAULT_NEIGHBORS, layer=view.layer)
    return flags


def _check_rule(fraction, n_neighbors) -> None:
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) \
            or not 0 < fraction < 1:
        raise ValueError(f"fraction must be a number between 0 and 1 (a share of the "
                         f"neighbours' median library size), not {fraction!r}.")
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, numbers.Integral) \
            or n_neighbors < 1:
        raise ValueError(f"n_neighbors must be a positive whole number, not {n_neighbors!r}.")


def _spot_positions(data, adata, table_key: str | None) -> np.ndarray:
    """``(n_spots, 2)`` centres of the table's spots, in the order of its rows.

    A SpatialData's shapes in their own coordinates (any coordinate system has the same
    neighbours); an AnnData's ``obsm["spatial"]``.
    """
    if hasattr(data, "shapes"):
        from .._core._elements import centres_and_diameter, pick_table, table_spots

        shapes = table_spots(data, pick_table(data, table_key))
        return centres_and_diameter(shapes)[0]
    if "spatial" not in adata.obsm:
        raise KeyError("The AnnData has no obsm['spatial'] (spot centres), so the spots' "
                       "neighbours are unknown. Add the centres there, or pass the SpatialData.")
    return np.asarray(adata.obsm["spatial"], np.float64)[:, :2]
