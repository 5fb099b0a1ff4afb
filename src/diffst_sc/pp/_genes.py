"""Which genes to super-resolve: the most expressed, the most variable, or a validated list."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._core._checks import (
    MAKE_GENES_UNIQUE,
    check_counts,
    check_unique_genes,
    matrix_name,
    warn_if_not_counts,
)
from .._core._docs import shared_parameters
from ._normalize import counts_layer, get_matrix, log1p_normalize, resolve_table

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

#: Gene-name prefixes :func:`select_genes` leaves out by default: mitochondrial and ribosomal
#: genes.
DEFAULT_EXCLUDE = ("MT-", "RPL", "RPS", "mt-")
FLAVORS = ("expressed", "highly_variable")


@shared_parameters
def select_genes(
    data: SpatialData | AnnData | list[SpatialData | AnnData],
    n_top: int = 100,
    flavor: str = "expressed",
    genes: Sequence[str] | None = None,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    table_key: str | None = None,
) -> list[str]:
    """Pick the genes to model, from one section or several.

    Parameters
    ----------
    data
        SpatialData, AnnData, or a list of them (several sections: only genes present in every
        section are considered).
    n_top
        Number of genes to return; with fewer genes available, all of them (and a warning).
    flavor
        ``"expressed"``: the highest mean of ``log1p(counts / library size * 1e4)`` over spots
        (summed over sections), the rule of the project's benchmark. ``"highly_variable"``:
        scanpy's :func:`~scanpy.pp.highly_variable_genes` (``seurat_v3`` on raw counts, which
        needs ``scikit-misc``; ``seurat`` on normalised values), ranked by its score.
    genes
        A list of your own: checked against every section and returned in the given order
        (``n_top``, ``flavor`` and ``exclude`` are then ignored).
    exclude
        Gene-name prefixes to leave out (mitochondrial and ribosomal genes by default); pass
        ``()`` to keep every gene.
    {table_key}

    Returns
    -------
    list of str
        Gene names, best first.

    Raises
    ------
    KeyError
        When genes of ``genes`` are missing from a section (the message names them).
    ValueError
        When a table has duplicated gene names (the message names them).

    Examples
    --------
    >>> import diffst_sc as ds
    >>> genes = ds.pp.select_genes(sdata, n_top=50)  # doctest: +SKIP
    >>> genes = ds.pp.select_genes([sdata_b4, sdata_c2], n_top=100)  # doctest: +SKIP
    """
    tables, labels = _tables(data, table_key)
    if genes is not None:
        return _validate_genes(tables, labels, genes)
    if flavor not in FLAVORS:
        raise ValueError(f"Unknown flavor {flavor!r}; use one of {FLAVORS}.")
    if int(n_top) < 1:
        raise ValueError(f"n_top must be at least 1, got {n_top}.")
    common = _common_genes(tables)
    keep = [g for g in common if not g.startswith(tuple(exclude))]
    if not keep:
        raise ValueError(f"No gene is left after excluding the prefixes {tuple(exclude)}; pass a "
                         "shorter `exclude=`.")
    if int(n_top) > len(keep):
        warnings.warn(f"n_top={n_top} but only {len(keep)} genes are available (genes common to "
                      f"every section, without the prefixes {tuple(exclude)}); returning all "
                      f"{len(keep)}.", UserWarning, stacklevel=2)
    if flavor == "expressed":
        score = sum(_mean_log_expression(t, where=where)[keep]
                    for t, where in zip(tables, labels, strict=True))
    else:
        # scanpy normalises dispersions within bins of mean: rank on all genes, then exclude
        n_rank = int(n_top) + len(common) - len(keep)
        score = _variability_score(tables, labels, common, n_rank)[keep]
    order = np.lexsort((np.arange(len(score)), -score.to_numpy()))
    return list(score.index[order[: int(n_top)]])


def _tables(data, table_key) -> tuple[list, list[str]]:
    """The sections' tables, and how messages name each: as ``fit`` does where it can."""
    from .._core._view import section_name

    items = list(data) if isinstance(data, list | tuple) else [data]
    if not items:
        raise ValueError("No section given: pass a SpatialData, an AnnData or a list of them.")
    tables = [resolve_table(d, table_key) for d in items]
    labels = []
    for i, d in enumerate(items):
        name = section_name(d, table_key)
        labels.append(f"section {name!r}" if name is not None
                      else f"section {i}" if len(items) > 1 else "the table")
    for t, label in zip(tables, labels, strict=True):
        where = "The table" if label == "the table" else f"The table of {label}"
        check_unique_genes(t.var_names, where=where, fix=MAKE_GENES_UNIQUE)
    return tables, labels


def _names(adata) -> pd.Index:
    return pd.Index(map(str, adata.var_names))


def _common_genes(tables) -> list[str]:
    common = _names(tables[0])
    for t in tables[1:]:
        common = common.intersection(_names(t), sort=False)
    if len(common) == 0:
        raise ValueError("The sections have no gene in common; check that they use the same "
                         "gene naming (symbols vs Ensembl ids).")
    return list(common)


def _validate_genes(tables, labels, genes) -> list[str]:
    if isinstance(genes, str):
        genes = [genes]
    wanted = list(dict.fromkeys(map(str, genes)))
    if not wanted:
        raise ValueError("`genes` is empty: pass at least one gene name, or `genes=None` to "
                         "select them.")
    for t, label in zip(tables, labels, strict=True):
        names = _names(t)
        missing = [g for g in wanted if g not in names]
        if len(missing) == len(wanted):
            raise KeyError(
                f"None of the {len(wanted)} requested genes is in {label} (e.g. "
                f"{missing[:5]}); its genes look like {list(names[:5])}. Use the same naming "
                "as `table.var_names` or let `ds.pp.select_genes(data, n_top=...)` choose."
            )
        if missing:
            where = "" if label == "the table" else f" of {label}"
            raise KeyError(
                f"{len(missing)} of the {len(wanted)} requested genes are not in the table{where}: "
                f"{missing[:10]}{' ...' if len(missing) > 10 else ''}. Drop them from `genes=` or "
                "pick genes from `table.var_names`."
            )
    return wanted


def _mean_log_expression(adata, *, where: str) -> pd.Series:
    """Mean over spots of ``log1p(counts / library * 1e4)`` (float64; sparse stays sparse)."""
    layer = counts_layer(adata)
    x = get_matrix(adata, layer)
    if not check_counts(x, where=where, matrix=matrix_name(layer)):
        warn_if_not_counts(False, where=where)
        return pd.Series(np.asarray(x.mean(axis=0), dtype=float).ravel(), index=_names(adata))
    logged = log1p_normalize(x, library=np.asarray(x.sum(axis=1), dtype=np.float64).ravel(),
                             dtype=np.float64, keep_sparse=True)
    return pd.Series(np.asarray(logged.mean(axis=0)).ravel(), index=_names(adata))


def _variability_score(tables, labels, genes: list[str], n_top: int) -> pd.Series:
    """Scanpy's highly-variable-gene rank (lower is better), as a score (higher is better)."""
    import anndata as ad
    import scanpy as sc

    parts, all_counts = [], True
    for t, where in zip(tables, labels, strict=True):
        layer = counts_layer(t)
        x = get_matrix(t[:, genes], layer)
        is_counts = check_counts(x, where=where, matrix=matrix_name(layer))
        warn_if_not_counts(is_counts, where=where)
        all_counts &= is_counts
        parts.append(ad.AnnData(X=x.astype(np.float32), var=pd.DataFrame(index=genes)))
    joined = ad.concat(parts, label="section") if len(parts) > 1 else parts[0]
    if len(parts) == 1:
        joined.obs["section"] = "0"
    batch_key = "section" if len(parts) > 1 else None
    n = min(int(n_top), len(genes))
    flavor = "seurat_v3" if all_counts else "seurat"
    if flavor == "seurat_v3":
        try:
            import skmisc  # noqa: F401
        except ImportError:
            warnings.warn(
                "flavor='highly_variable' on raw counts uses scanpy's 'seurat_v3', which needs "
                "scikit-misc (`pip install scikit-misc`); falling back to 'seurat' on "
                "log1p-normalised counts.", UserWarning, stacklevel=3)
            flavor = "seurat"
    if flavor == "seurat":
        if all_counts:
            sc.pp.normalize_total(joined, target_sum=1e4)
            sc.pp.log1p(joined)
        hv = sc.pp.highly_variable_genes(joined, flavor="seurat", batch_key=batch_key,
                                         inplace=False)
        hv.index = genes
        score = hv["dispersions_norm"].astype(float).fillna(-np.inf)
        return score
    hv = sc.pp.highly_variable_genes(joined, flavor="seurat_v3", n_top_genes=n,
                                     batch_key=batch_key, inplace=False)
    hv.index = genes
    rank = hv["highly_variable_rank"].astype(float).fillna(np.inf)
    return -rank
