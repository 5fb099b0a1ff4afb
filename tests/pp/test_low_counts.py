"""``ds.pp.flag_low_count_spots``: failed captures flagged, low regions left alone."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import diffst_sc as ds
from diffst_sc._core import section_view


def _lattice(n: int = 10) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n]
    return np.c_[xx.ravel(), yy.ravel()].astype(float) * 100.0


def _low_count_spots(totals: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The default flags of spots with these library sizes at these centres (an AnnData)."""
    adata = ad.AnnData(X=np.asarray(totals, np.float32)[:, None],
                       obs=pd.DataFrame(index=[f"s{i}" for i in range(len(totals))]))
    adata.obsm["spatial"] = centres
    ds.pp.flag_low_count_spots(adata)
    return adata.obs["diffst_low_counts"].to_numpy()


def test_a_spot_far_below_its_neighbours_is_flagged_a_low_region_is_not():
    centres = _lattice()
    totals = np.full(len(centres), 3000.0)
    low_region = (centres[:, 0] < 300) & (centres[:, 1] < 300)  # a 3 x 3 corner of stroma
    totals[low_region] = 600.0  # a fifth of the rest, even at the region's corner
    failed = 55  # inside the section, neighbours at 3000
    totals[failed] = 250.0
    flags = _low_count_spots(totals, centres)
    assert np.nonzero(flags)[0].tolist() == [failed]
    # just above the threshold, not flagged
    totals[failed] = 0.11 * 3000
    assert not _low_count_spots(totals, centres).any()


def test_demo_section_flags_its_two_empty_spots_and_records_them():
    sdata = ds.datasets.her2st_demo()
    assert ds.pp.flag_low_count_spots(sdata) is None
    table = sdata.tables["table"]
    flagged = table.obs_names[table.obs["diffst_low_counts"].to_numpy()].tolist()
    assert flagged == ["18x20", "23x27"]  # 0 and 40 counts, neighbours in the thousands
    totals = np.asarray(table.layers["counts"].sum(1)).ravel()
    assert totals[table.obs["diffst_low_counts"].to_numpy()].max() <= 40
    record = table.uns["diffst_low_counts"]
    assert record == {"n_flagged": 2, "n_spots": 187, "fraction": 0.1, "n_neighbors": 6,
                      "layer": "counts"}
    ds.pp.flag_low_count_spots(sdata, fraction=0.5, key_added="below_half")
    assert table.uns["below_half"]["n_flagged"] > 2
    assert table.obs["below_half"].dtype == bool


def test_a_pseudo_spot_cut_by_the_tissue_edge_is_judged_by_what_it_measured(her2st_dir,
                                                                            bench_genes):
    """her2st B4 at 2 x 2: block (15, 7) holds one spot of 546 counts, against 4-spot
    neighbours of thousands; per measured spot it is like them, so it is no failed capture."""
    lr = ds.pp.degrade(ds.io.read_legacy_st(her2st_dir / "B4"), mode="square", factor=2,
                       genes=bench_genes)
    table = lr.tables["table"]
    ds.pp.flag_low_count_spots(lr)
    assert table.uns["diffst_low_counts"]["n_flagged"] == 0
    edge = table.obs.loc["lr_15_7"]
    assert edge["n_spots"] == 1 and edge["diffst_library_size"] < 600
    # judged by its counts over the whole disc, as before, it would be flagged
    del table.obs["diffst_measured_fraction"]
    ds.pp.flag_low_count_spots(lr)
    assert table.obs_names[table.obs["diffst_low_counts"].to_numpy()].tolist() == ["lr_15_7"]
    table.obs["diffst_measured_fraction"] = 0.0
    with pytest.raises(ValueError, match="must be positive"):
        ds.pp.flag_low_count_spots(lr)


def test_anndata_with_spatial_coordinates():
    centres = _lattice(6)
    counts = np.full((len(centres), 3), 1000.0)
    counts[14] = 1.0
    adata = ad.AnnData(X=counts, obs=pd.DataFrame(index=[f"s{i}" for i in range(len(centres))]))
    adata.obsm["spatial"] = centres
    ds.pp.flag_low_count_spots(adata, key_added="low")
    assert adata.obs_names[adata.obs["low"].to_numpy()].tolist() == ["s14"]
    assert adata.uns["low"]["layer"] == "X"
    del adata.obsm["spatial"]
    with pytest.raises(KeyError, match="obsm\\['spatial'\\]"):
        ds.pp.flag_low_count_spots(adata)


@pytest.mark.parametrize(("kw", "match"), [({"fraction": 0}, "between 0 and 1"),
                                           ({"fraction": 1.5}, "between 0 and 1"),
                                           ({"n_neighbors": 0}, "positive whole number"),
                                           ({"layer": "raw"}, "No layer 'raw'")])
def test_bad_rules_are_refused(kw, match):
    with pytest.raises((ValueError, KeyError), match=match):
        ds.pp.flag_low_count_spots(ds.datasets.her2st_demo(), **kw)


def _skipped(view, key) -> list[str]:
    """The spots that ``missing_key=key`` leaves out of ``fit``'s pairs (and ``superresolve``'s
    measured spots)."""
    _, target = ds.pp.self_supervised_pairs(view, key, genes=["ERBB2"])
    kept = set(target.adata.obs_names)
    return [s for s in view.adata.obs_names if s not in kept]


def test_missing_spots_are_read_from_the_column_or_computed():
    sdata = ds.datasets.her2st_demo()
    view = section_view(sdata)
    table = sdata.tables["table"]
    assert _skipped(view, None) == []
    assert "diffst_low_counts" not in table.obs
    skipped = _skipped(view, "diffst_low_counts")  # absent: computed and written
    assert sorted(skipped) == ["18x20", "23x27"] and table.obs["diffst_low_counts"].sum() == 2
    assert table.uns["diffst_low_counts"]["n_flagged"] == 2
    table.obs["mine"] = False
    table.obs.loc["10x21", "mine"] = True  # a hand-made column is used as it is
    assert _skipped(view, "mine") == ["10x21"]
    table.obs["words"] = "no"
    with pytest.raises(ValueError, match="must be boolean.*missing_key=None"):
        _skipped(view, "words")


def test_a_table_of_some_genes_is_judged_by_its_recorded_library_sizes():
    """``obs["diffst_library_size"]`` (a table of a few genes) sets the totals, not the genes."""
    from diffst_sc._core import LIBRARY_KEY

    centres = _lattice(6)
    counts = np.full((len(centres), 2), 50.0)
    counts[14] = 0.0  # a spot that expresses these two genes little, not a failed one
    adata = ad.AnnData(X=counts, obs=pd.DataFrame(index=[f"s{i}" for i in range(len(centres))]))
    adata.obsm["spatial"] = centres
    adata.obs[LIBRARY_KEY] = 3000.0
    adata.obs.loc["s20", LIBRARY_KEY] = 100.0
    ds.pp.flag_low_count_spots(adata, key_added="low")
    assert adata.obs_names[adata.obs["low"].to_numpy()].tolist() == ["s20"]
    sdata = ds.datasets.her2st_demo()
    sdata.tables["table"].obs[LIBRARY_KEY] = 3000.0  # its two empty spots, recorded as full
    assert _skipped(section_view(sdata), "diffst_low_counts") == []
