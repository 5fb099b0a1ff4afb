"""The gene co-expression graph on her2st C2 and the pure matrix function."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import diffst_sc as ds


@pytest.fixture(scope="module")
def c2_table(her2st_c2_or_demo):
    return her2st_c2_or_demo.tables["table"].copy()


def _log_norm(table, genes):
    x = table.layers["counts"].toarray().astype(np.float64)
    lib = x.sum(1, keepdims=True)
    idx = [list(table.var_names).index(g) for g in genes]
    # a spot with no counts at all (the demo's 500 genes leave C2 one) is zero everywhere
    return np.log1p(x[:, idx] / np.where(lib > 0, lib, 1) * 1e4)


def test_graph_in_varp_with_parameters_in_uns(her2st_c2_or_demo):
    from spatialdata import SpatialData

    c2 = her2st_c2_or_demo
    table = c2.tables["table"].copy()
    sdata = SpatialData(images={"he": c2.images["he"]}, shapes={"spots": c2.shapes["spots"]},
                        tables={"table": table})
    genes = ds.pp.select_genes(sdata, n_top=100)
    assert ds.pp.coexpression_graph(sdata, genes=genes) is None
    g = table.varp["diffst_coexpr"]
    assert sp.issparse(g) and g.shape == (table.n_vars, table.n_vars) and g.dtype == np.float32
    g = sp.csr_matrix(g)
    assert (g != g.T).nnz == 0
    assert not g.diagonal().any()
    idx = [list(table.var_names).index(x) for x in genes]
    # genes outside the list have empty rows and columns
    assert g[idx][:, idx].nnz == g.nnz == 100 * 99
    # the weights are the Pearson correlations of log1p-normalised expression
    expected = np.corrcoef(_log_norm(table, genes), rowvar=False)
    np.fill_diagonal(expected, 0)
    np.testing.assert_allclose(g[idx][:, idx].toarray(), expected, atol=2e-5)
    params = table.uns["diffst_coexpr"]
    assert list(params["genes"]) == genes
    assert params["method"] == "pearson" and params["k"] == 0 and params["layer"] == "counts"
    assert params["n_spots"] == 187 and params["normalisation"].startswith("log1p")


def test_known_co_expressed_pairs_score_high(c2_table):
    genes = ds.pp.select_genes(c2_table, n_top=200)
    genes += [g for g in ("ERBB2", "GRB7", "IGKC", "IGLC2") if g not in genes]
    ds.pp.coexpression_graph(c2_table, genes=genes)
    pos = {name: i for i, name in enumerate(genes)}
    idx = [list(c2_table.var_names).index(x) for x in genes]
    g = sp.csr_matrix(c2_table.varp["diffst_coexpr"])[idx][:, idx].toarray()
    random_pairs = np.abs(g[np.triu_indices(len(idx), 1)])
    # ERBB2 and GRB7 share the 17q12 amplicon of HER2+ tumours; immunoglobulin light chains
    # come from the same plasma cells
    assert g[pos["ERBB2"], pos["GRB7"]] > np.quantile(random_pairs, 0.9)
    assert g[pos["IGKC"], pos["IGLC2"]] > np.quantile(random_pairs, 0.99)


def test_top_k_spearman_and_min_abs(c2_table):
    genes = ds.pp.select_genes(c2_table, n_top=60)
    ds.pp.coexpression_graph(c2_table, genes=genes, k=5, method="spearman", min_abs=0.1,
                             key_added="knn")
    g = sp.csr_matrix(c2_table.varp["knn"])
    assert (g != g.T).nnz == 0
    idx = [list(c2_table.var_names).index(x) for x in genes]
    sub = g[idx][:, idx].toarray()
    assert g.nnz == (sub != 0).sum()
    degree = (sub != 0).sum(1)
    assert degree.min() >= 1 and np.median(degree) < 15 and (sub != 0).sum() < 60 * 59
    assert np.abs(sub[sub != 0]).min() >= 0.1
    from scipy.stats import spearmanr

    full = spearmanr(_log_norm(c2_table, genes)).statistic
    i, j = np.unravel_index(np.argmax(np.abs(sub)), sub.shape)
    assert sub[i, j] == pytest.approx(full[i, j], abs=1e-4)
    assert c2_table.uns["knn"]["k"] == 5 and c2_table.uns["knn"]["method"] == "spearman"


def test_coexpression_matrix_is_pure_and_exact():
    rng = np.random.default_rng(0)
    base = rng.gamma(2.0, size=(300, 1))
    x = np.hstack([base + rng.normal(0, 0.3, (300, 1)), rng.normal(size=(300, 3)),
                   np.full((300, 1), 2.0), base])
    c = ds.pp.coexpression_matrix(x)
    expected = np.corrcoef(x[:, [0, 1, 2, 3, 5]], rowvar=False)
    np.fill_diagonal(expected, 0)
    np.testing.assert_allclose(c[np.ix_([0, 1, 2, 3, 5], [0, 1, 2, 3, 5])], expected, atol=1e-5)
    assert not c[4].any() and not c[:, 4].any()  # constant gene: no edges
    assert c.dtype == np.float32 and c[0, 5] > 0.9
    top1 = ds.pp.coexpression_matrix(x, k=1)
    assert top1[0, 5] == c[0, 5] and top1[5, 0] == c[5, 0]
    with pytest.raises(ValueError, match="Unknown method 'kendall'"):
        ds.pp.coexpression_matrix(x, method="kendall")
    with pytest.raises(ValueError, match="NaN or infinite"):
        ds.pp.coexpression_matrix(np.where(x > 3, np.nan, x))


def test_normalised_input_is_used_as_is(mouse_brain_dir):
    import anndata as ad

    from diffst_sc.io import NotCountsWarning

    adata = ad.read_h5ad(mouse_brain_dir / "test_data.h5ad")
    genes = list(adata.var_names[:40])
    with pytest.warns(NotCountsWarning):
        ds.pp.coexpression_graph(adata, genes=genes)
    assert adata.uns["diffst_coexpr"]["normalisation"] == "none (not counts)"
    x = adata[:, genes].X.toarray()
    ok = x.std(0) > 0
    expected = np.corrcoef(x[:, ok], rowvar=False)
    np.fill_diagonal(expected, 0)
    got = adata.varp["diffst_coexpr"].toarray()[:40, :40][np.ix_(ok, ok)]
    np.testing.assert_allclose(got, expected, atol=1e-5)
