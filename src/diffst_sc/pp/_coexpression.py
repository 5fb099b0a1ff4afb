"""Gene x gene co-expression graph: correlation of genes across spots."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from .._core._docs import shared_parameters
from ._normalize import counts_layer, expression_for_genes, resolve_table

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

METHODS = ("pearson", "spearman")
#: Above this many genes, ``genes=None`` uses the most expressed ones (the graph is genes^2).
MAX_DEFAULT_GENES = 2000


def coexpression_matrix(x: np.ndarray, *, method: str = "pearson", k: int | None = None,
                        min_abs: float = 0.0) -> np.ndarray:
    """Gene x gene correlation of an expression matrix, with no self loops.

    Parameters
    ----------
    x
        ``(n_spots, n_genes)`` expression, e.g. log1p-normalised counts.
    method
        ``"pearson"`` (correlation of the values) or ``"spearman"`` (of their ranks across
        spots, ties averaged).
    k
        Keep, for each gene, only its ``k`` neighbours of largest absolute correlation (an edge
        kept by either end is kept, so the matrix stays symmetric). ``None`` keeps all.
    min_abs
        Set correlations with ``abs(r) < min_abs`` to 0.

    Returns
    -------
    numpy.ndarray
        ``(n_genes, n_genes)`` float32, symmetric, zero diagonal, values in [-1, 1]. Genes that
        do not vary across spots have no edges.

    Examples
    --------
    >>> import numpy as np
    >>> from diffst_sc.pp import coexpression_matrix
    >>> x = np.random.default_rng(0).poisson(2.0, (50, 4)).astype(float)
    >>> c = coexpression_matrix(x)
    >>> c.shape, float(c[0, 0])
    ((4, 4), 0.0)
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; use one of {METHODS}.")
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (spots x genes), got shape {x.shape}.")
    if x.shape[0] < 2:
        raise ValueError(f"At least 2 spots are needed to correlate genes, got {x.shape[0]}.")
    if not np.isfinite(x).all():
        raise ValueError("x has NaN or infinite values; fill or drop them first.")
    if method == "spearman":
        from scipy.stats import rankdata

        x = rankdata(x, axis=0)
    z = np.array(x, dtype=np.float32, copy=True)
    z -= z.mean(axis=0, keepdims=True, dtype=np.float64).astype(np.float32)
    norm = np.sqrt(np.einsum("ij,ij->j", z, z, dtype=np.float64))
    # A gene constant across spots has no defined correlation: it gets no edges.
    varies = norm > 1e-8 * max(1.0, float(norm.max(initial=0.0)))
    z /= np.where(varies, norm, 1.0).astype(np.float32)
    z[:, ~varies] = 0.0
    c = z.T @ z
    np.clip(c, -1.0, 1.0, out=c)
    np.fill_diagonal(c, 0.0)
    if min_abs > 0:
        c[np.abs(c) < min_abs] = 0.0
    if k is not None:
        c = _keep_top_k(c, int(k))
    return c


def _keep_top_k(c: np.ndarray, k: int) -> np.ndarray:
    n = c.shape[0]
    if k < 1:
        raise ValueError(f"k must be at least 1 (or None to keep all neighbours), got {k}.")
    if k >= n - 1:
        return c
    a = np.abs(c)
    np.fill_diagonal(a, -1.0)  # never pick the self loop
    top = np.argpartition(-a, k - 1, axis=1)[:, :k]
    keep = np.zeros(c.shape, dtype=bool)
    keep[np.arange(n)[:, None], top] = True
    keep |= keep.T
    return np.where(keep, c, np.float32(0.0))


@shared_parameters
def coexpression_graph(
    data: SpatialData | AnnData,
    layer: str | None = None,
    genes: Sequence[str] | None = None,
    key_added: str = "diffst_coexpr",
    k: int | None = None,
    method: str = "pearson",
    min_abs: float = 0.0,
    table_key: str | None = None,
) -> None:
    """Build the gene co-expression graph and store it in ``table.varp[key_added]``.

    The weight of an edge is the correlation of the two genes' log1p-normalised expression
    (``log1p(counts / library size * 1e4)``) across spots; the model's graph convolution mixes
    genes along these edges so they are reconstructed jointly.

    Parameters
    ----------
    data
        SpatialData (its table is changed in place) or AnnData.
    layer
        Layer to read; ``"counts"`` if present, else ``X``. Raw counts are log1p-normalised;
        values that are not counts are taken as already normalised (with a
        :class:`~diffst_sc.io.NotCountsWarning`).
    genes
        Genes of the graph; the others get empty rows and columns. By default all genes, or the
        2,000 most expressed (see :func:`select_genes`) when the table has more.
    key_added
        Key in ``varp`` and ``uns``.
    k
        Keep each gene's ``k`` strongest neighbours (symmetrised); ``None`` keeps all.
    method
        ``"pearson"`` or ``"spearman"``.
    min_abs
        Drop edges with ``abs(r) < min_abs``.
    {table_key}

    Returns
    -------
    None
        Writes ``varp[key_added]``: ``(n_genes, n_genes)`` float32 CSR, symmetric, zero
        diagonal, signed correlations; ``uns[key_added]``: the parameters (``genes``,
        ``method``, ``k`` (0 means all), ``min_abs``, ``layer``, ``normalisation``, ``n_spots``).

    Examples
    --------
    >>> import diffst_sc as ds
    >>> ds.pp.coexpression_graph(sdata, genes=ds.pp.select_genes(sdata, n_top=100), k=10)  # doctest: +SKIP
    >>> sdata.tables["table"].varp["diffst_coexpr"]  # doctest: +SKIP
    """
    from ._genes import select_genes

    adata = resolve_table(data, table_key)
    layer = counts_layer(adata, layer)
    if genes is None:
        genes = (list(map(str, adata.var_names)) if adata.n_vars <= MAX_DEFAULT_GENES
                 else select_genes(adata, n_top=MAX_DEFAULT_GENES, exclude=()))
    else:
        genes = select_genes(adata, genes=genes)
    if len(genes) < 2:
        raise ValueError(f"A co-expression graph needs at least 2 genes, got {genes}.")
    names = list(map(str, adata.var_names))
    idx = np.asarray(_index_of(names, genes))
    where = f"layer {layer!r}" if layer else "X"
    x, was_counts = expression_for_genes(adata, layer, idx, where=where)
    c = coexpression_matrix(x, method=method, k=k, min_abs=min_abs)
    rows, cols = np.nonzero(c)
    graph = sp.csr_matrix((c[rows, cols], (idx[rows], idx[cols])),
                          shape=(adata.n_vars, adata.n_vars), dtype=np.float32)
    adata.varp[key_added] = graph
    adata.uns[key_added] = {
        "genes": list(genes),
        "method": method,
        "k": int(k) if k is not None else 0,
        "min_abs": float(min_abs),
        "layer": layer or "X",
        "normalisation": "log1p(counts / library * 1e4)" if was_counts else "none (not counts)",
        "n_spots": int(adata.n_obs),
    }


def _index_of(names: list[str], genes: Sequence[str]) -> list[int]:
    pos = {g: i for i, g in enumerate(names)}
    return [pos[g] for g in genes]
