"""Library-size normalisation that keeps the raw counts, and the table lookup shared by ``pp``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from .._core._checks import check_counts, warn_if_not_counts
from .._core._docs import shared_parameters

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


def resolve_table(data, table_key: str | None = None):
    """The AnnData behind ``data``: the table of a SpatialData, or ``data`` itself.

    Parameters
    ----------
    data
        A SpatialData object or an AnnData.
    table_key
        Table of the SpatialData; the only one (or ``"table"``) by default, as in
        :func:`diffst_sc._core.section_view`.

    Returns
    -------
    anndata.AnnData
        The table itself (not a copy): writing to it writes into ``data``.
    """
    import anndata as ad

    if isinstance(data, ad.AnnData):
        if table_key is not None:
            raise ValueError(f"table_key={table_key!r} was given with an AnnData; it only applies "
                             "to a SpatialData. Leave it out.")
        adata = data
    elif hasattr(data, "tables"):
        from .._core._elements import pick_table

        adata = data.tables[pick_table(data, table_key)]
    else:
        raise TypeError(f"Expected a SpatialData or an AnnData, got {type(data).__name__}.")
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"The table is empty ({adata.n_obs} spots x {adata.n_vars} genes); "
                         "it needs spots and genes.")
    return adata


def counts_layer(adata, layer: str | None = None) -> str | None:
    """The layer holding raw counts: ``layer`` if given, else ``"counts"`` if present, else X."""
    if layer is not None:
        if layer not in adata.layers:
            raise KeyError(f"No layer {layer!r} in the table; it has {list(adata.layers)}. Pass "
                           "one of them, or `layer=None` for X.")
        return layer
    return "counts" if "counts" in adata.layers else None


def get_matrix(adata, layer: str | None):
    """``X`` or ``layers[layer]`` of ``adata`` (sparse or dense, not copied)."""
    return adata.X if layer is None else adata.layers[layer]


def log1p_normalize(x, target_sum: float = 1e4, library=None, *, dtype=np.float32,
                    keep_sparse: bool = False) -> np.ndarray | sp.csr_matrix:
    """``log1p(x / library_size * target_sum)`` per spot (row).

    The one log1p-normalisation of the package (``pp.normalize``, gene selection, the
    co-expression graph); scanpy's ``normalize_total`` + ``log1p`` give the same values.

    Parameters
    ----------
    x
        ``(n_spots, n_genes)`` counts, dense or sparse.
    target_sum
        Library size every spot is scaled to.
    library
        ``(n_spots,)`` library sizes; the row sums of ``x`` by default. Pass the totals over
        all genes when ``x`` holds only some of them.
    dtype
        Of the result.
    keep_sparse
        Return sparse input as a CSR matrix (the zeros stay zero) instead of dense.

    Returns
    -------
    numpy.ndarray or scipy.sparse.csr_matrix
        ``(n_spots, n_genes)``. Spots with no counts stay 0.

    Examples
    --------
    >>> import numpy as np
    >>> from diffst_sc.pp import log1p_normalize
    >>> [round(float(v), 3) for v in log1p_normalize(np.array([[1.0, 3.0]]), target_sum=4)[0]]
    [0.693, 1.386]
    """
    if target_sum <= 0:
        raise ValueError(f"target_sum must be positive, got {target_sum}.")
    total = np.dtype(dtype).type(target_sum)
    if keep_sparse and sp.issparse(x):
        x = sp.csr_matrix(x, dtype=dtype, copy=True)
        lib = np.asarray(x.sum(axis=1)).ravel() if library is None else np.ravel(library)
        rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
        x.data /= np.where(lib > 0, lib, 1.0)[rows]
        x.data *= total
        np.log1p(x.data, out=x.data)
        return x
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    x = x.astype(dtype, copy=True)
    lib = x.sum(axis=1, keepdims=True) if library is None else np.reshape(library, (-1, 1))
    np.divide(x, np.where(lib > 0, lib, 1.0), out=x)
    x *= total
    return np.log1p(x, out=x)


def expression_for_genes(adata, layer: str | None, gene_index=None, *,
                         where: str = "the table") -> tuple:
    """Dense log1p-normalised expression, and whether the source held counts.

    Raw counts are library-size normalised (library = all genes of the table) and
    log1p-transformed; values that are not counts (already normalised) are used as they are,
    with a :class:`~diffst_sc.io.NotCountsWarning`. ``gene_index`` picks columns (all if None).
    """
    full = get_matrix(adata, layer)
    x = full if gene_index is None else full[:, np.asarray(gene_index)]
    is_counts = check_counts(x, where=where)
    if is_counts:
        library = np.asarray(full.sum(axis=1), dtype=np.float64).ravel()
        return log1p_normalize(x, library=library), True
    warn_if_not_counts(False, where=where)
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    return x.astype(np.float32), False


@shared_parameters
def normalize(data: SpatialData | AnnData, *, target_sum: float = 1e4, key_added: str = "log1p_norm",
              layer: str | None = None, table_key: str | None = None) -> None:
    """Write ``log1p(counts / library size * target_sum)`` into ``layers[key_added]``.

    The raw counts (``layers["counts"]`` and ``X``) are left untouched, so the model can still
    be fitted on counts; downstream analyses read the new layer.

    Parameters
    ----------
    data
        SpatialData (its table is changed in place) or AnnData.
    target_sum
        Library size every spot is scaled to (10,000 by default, as in scanpy).
    key_added
        Layer written. Must not be ``"counts"``.
    {layer}
    {table_key}

    Returns
    -------
    None
        Writes ``layers[key_added]`` (float32, CSR if the counts are sparse) and
        ``uns[key_added]`` (``{"target_sum": ..., "source_layer": ...}``).

    Warns
    -----
    NotCountsWarning
        When the source values are not integer counts (already normalised data are normalised
        again, which is rarely what you want: pass the raw layer).

    Examples
    --------
    >>> import diffst_sc as ds
    >>> ds.pp.normalize(sdata)  # doctest: +SKIP
    >>> sdata.tables["table"].layers["log1p_norm"]  # doctest: +SKIP
    """
    if key_added == "counts":
        raise ValueError("key_added='counts' would overwrite the raw counts; pick another name, "
                         "e.g. 'log1p_norm'.")
    adata = resolve_table(data, table_key)
    layer = counts_layer(adata, layer)
    x = get_matrix(adata, layer)
    where = f"layer {layer!r}" if layer else "X"
    warn_if_not_counts(check_counts(x, where=where), where=where)
    out = log1p_normalize(x, target_sum)
    adata.layers[key_added] = sp.csr_matrix(out) if sp.issparse(x) else out
    adata.uns[key_added] = {"target_sum": float(target_sum), "source_layer": layer or "X"}
