"""select_genes and normalize on real data."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import diffst_sc as ds
from diffst_sc.io import NotCountsWarning


def _counts_only(section_dir) -> ad.AnnData:
    """In-tissue spots' counts of a her2st section, read straight from its files."""
    spots = pd.read_csv(section_dir / "spots.tsv", sep="\t")
    spots = spots[spots["selected"] == 1]
    counts = pd.read_csv(section_dir / "counts.tsv.gz", sep="\t", index_col=0)
    keep = pd.Index([f"{x}x{y}" for x, y in zip(spots["x"], spots["y"], strict=True)])
    counts = counts.loc[keep.intersection(counts.index)]
    return ad.AnnData(sp.csr_matrix(counts.to_numpy(np.float32)),
                      var=pd.DataFrame(index=counts.columns.astype(str)))


@pytest.fixture(scope="module")
def three_sections(her2st_dir):
    return [_counts_only(her2st_dir / s) for s in ("B4", "C2", "C3")]


def test_expressed_reproduces_the_benchmark_panel(three_sections, bench_genes):
    assert ds.pp.select_genes(three_sections, n_top=100) == bench_genes


def test_expressed_on_one_section_is_the_rule(her2st_c2_or_demo):
    genes = ds.pp.select_genes(her2st_c2_or_demo, n_top=30)
    table = her2st_c2_or_demo.tables["table"]
    x = table.layers["counts"].toarray().astype(float)
    lib = x.sum(1, keepdims=True)  # zero for the demo's one spot without counts: zeros there
    mean = np.log1p(x / np.where(lib > 0, lib, 1) * 1e4).mean(0)
    s = pd.Series(mean, index=table.var_names)
    s = s[~s.index.str.startswith(("MT-", "RPL", "RPS", "mt-"))]
    assert genes == list(s.sort_values(ascending=False, kind="stable").index[:30])
    assert not any(g.startswith(("MT-", "RPL", "RPS")) for g in genes)
    # the AnnData gives the same answer as the SpatialData
    assert ds.pp.select_genes(table, n_top=30) == genes
    # her2st ships no MT-/RPL/RPS genes; other prefixes can be left out the same way
    no_ig = ds.pp.select_genes(her2st_c2_or_demo, n_top=30, exclude=("IG",))
    assert "IGKC" in genes and not any(g.startswith("IG") for g in no_ig)
    assert [g for g in genes if not g.startswith("IG")] == no_ig[: len(genes) - sum(
        g.startswith("IG") for g in genes)]


def test_several_sections_use_genes_present_in_all(three_sections):
    b4, c2, _ = three_sections
    c2_less = c2[:, [g for g in c2.var_names if g != "ERBB2"]].copy()
    assert "ERBB2" in ds.pp.select_genes([b4, c2], n_top=100)
    assert "ERBB2" not in ds.pp.select_genes([b4, c2_less], n_top=100)


def test_user_list_is_validated_and_kept_in_order(her2st_c2, three_sections):
    assert ds.pp.select_genes(her2st_c2, genes=["GRB7", "ERBB2", "GRB7"]) == ["GRB7", "ERBB2"]
    b4, c2, _ = three_sections
    c2_less = c2[:, [g for g in c2.var_names if g != "ERBB2"]].copy()
    with pytest.raises(KeyError, match=r"not in the table of section 1: \['ERBB2'\]"):
        ds.pp.select_genes([b4, c2_less], genes=["GRB7", "ERBB2"])


def test_highly_variable_on_normalised_values(mouse_brain_dir):
    adata = ad.read_h5ad(mouse_brain_dir / "test_data.h5ad")
    with pytest.warns(NotCountsWarning):
        genes = ds.pp.select_genes(adata, n_top=50, flavor="highly_variable")
    assert len(genes) == 50 == len(set(genes))
    # seurat's normalised dispersion ranks them
    import scanpy as sc

    hv = sc.pp.highly_variable_genes(adata.copy(), flavor="seurat", inplace=False)
    hv.index = adata.var_names
    top = hv["dispersions_norm"].fillna(-np.inf).sort_values(ascending=False, kind="stable")
    top = [g for g in top.index if not g.startswith(("MT-", "RPL", "RPS", "mt-"))][:50]
    assert genes == top


def test_highly_variable_on_counts(her2st_c2_or_demo):
    try:
        import skmisc  # noqa: F401

        context = warnings.catch_warnings()
    except ImportError:
        context = pytest.warns(UserWarning, match="scikit-misc")
    with context:
        genes = ds.pp.select_genes(her2st_c2_or_demo, n_top=40, flavor="highly_variable")
    assert len(genes) == 40
    expressed = ds.pp.select_genes(her2st_c2_or_demo, n_top=40)
    assert genes != expressed


def test_bad_flavor(her2st_c2_or_demo):
    with pytest.raises(ValueError, match="Unknown flavor 'variance'"):
        ds.pp.select_genes(her2st_c2_or_demo, flavor="variance")


def test_normalize_keeps_raw_counts(her2st_c2_or_demo):
    table = her2st_c2_or_demo.tables["table"][:, :500].copy()
    counts_before = table.layers["counts"].copy()
    x_before = table.X.copy()
    ds.pp.normalize(table)
    assert (table.layers["counts"] != counts_before).nnz == 0
    assert (table.X != x_before).nnz == 0
    out = table.layers["log1p_norm"]
    assert out.dtype == np.float32 and sp.issparse(out)
    # library over the genes of this table
    x = counts_before.toarray().astype(np.float64)
    lib = x.sum(1, keepdims=True)
    expected = np.log1p(x / np.where(lib > 0, lib, 1) * 1e4)
    np.testing.assert_allclose(out.toarray(), expected, rtol=1e-5, atol=1e-5)
    assert table.uns["log1p_norm"] == {"target_sum": 1e4, "source_layer": "counts"}


def test_normalize_writes_into_a_spatialdata_table(her2st_c2_or_demo):
    from spatialdata import SpatialData

    table = her2st_c2_or_demo.tables["table"][:, :200].copy()
    del table.uns["spatialdata_attrs"]  # a table that annotates nothing
    sdata = SpatialData(tables={"table": table})
    ds.pp.normalize(sdata, target_sum=100, key_added="norm100")
    assert "norm100" in sdata.tables["table"].layers
    with pytest.raises(ValueError, match="overwrite the raw counts"):
        ds.pp.normalize(sdata, key_added="counts")


def test_log1p_normalisation_is_scanpys(her2st_c2_or_demo):
    """One log1p-normalisation, dense or sparse, equal to scanpy's normalize_total + log1p."""
    import scanpy as sc

    from diffst_sc.pp import log1p_normalize

    counts = sp.csr_matrix(her2st_c2_or_demo.tables["table"].X[:, :300], dtype=np.float64)
    ref = ad.AnnData(X=counts.copy())
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.log1p(ref)
    kept = log1p_normalize(counts, dtype=np.float64, keep_sparse=True)
    assert sp.issparse(kept)
    np.testing.assert_allclose(kept.toarray(), ref.X.toarray(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(log1p_normalize(counts), ref.X.toarray(), rtol=1e-5, atol=1e-6)
