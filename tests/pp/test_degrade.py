"""LR/HR pairs from real data: her2st C2 (square), Visium (hex), the Xenium crop (transcripts).

The square tests run on the full C2 from ../shared/data, or on the demo copy of it shipped with
the package (same spots, fewer genes, H&E at half size) where that is absent.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from spatialdata.transformations import get_transformation

import diffst_sc as ds
from conftest import jittered_section
from diffst_sc._core import affine_matrix, section_view


@pytest.fixture(scope="module")
def c2_lr(her2st_c2_or_demo):
    return ds.pp.degrade(her2st_c2_or_demo, mode="square", factor=2)


def test_square_blocks_are_the_benchmark_rule(c2_lr, her2st_c2_or_demo_dir):
    spots = pd.read_csv(her2st_c2_or_demo_dir / "spots.tsv", sep="\t")
    spots = spots[spots["selected"] == 1]
    blocks = spots.groupby([spots["x"] // 2, spots["y"] // 2])
    lr = c2_lr.tables["table"]
    assert lr.n_obs == blocks.ngroups == 56
    # each pseudo-spot sits at the mean pixel position of its children (BENCHMARK.md step 3)
    centres = blocks[["pixel_x", "pixel_y"]].mean()
    got = pd.DataFrame(lr.obsm["spatial"], columns=["px", "py"],
                       index=pd.MultiIndex.from_arrays([lr.obs["array_col"], lr.obs["array_row"]]))
    got = got.loc[centres.index]
    np.testing.assert_allclose(got.to_numpy(), centres.to_numpy(), rtol=1e-9)
    np.testing.assert_array_equal(
        lr.obs["n_spots"].to_numpy(),
        blocks.size().loc[list(zip(lr.obs["array_col"], lr.obs["array_row"], strict=True))])
    assert lr.uns["diffst_degrade"]["mode"] == "square"


def test_blocks_cut_by_the_tissue_edge_record_what_share_they_measured(c2_lr):
    lr = c2_lr.tables["table"]
    n = lr.obs["n_spots"].to_numpy()
    assert (n < 4).any() and (n == 4).any()  # C2 has blocks cut by its edge
    np.testing.assert_allclose(lr.obs["diffst_measured_fraction"].to_numpy(), n / 4)
    view = section_view(c2_lr)
    np.testing.assert_allclose(view.footprint_library_sizes() * n / 4, view.library_sizes(),
                               rtol=1e-6)
    # degraded again, each block measured the shares of its pseudo-spots (of 16 spots)
    llr = ds.pp.degrade(c2_lr, mode="square", factor=2).tables["table"]
    lr_spot = c2_lr.tables["table"].obs
    parent = pd.Series(np.arange(lr.n_obs)).groupby(
        [lr_spot["array_row"].to_numpy() // 2, lr_spot["array_col"].to_numpy() // 2])
    measured = {k: n[v.to_numpy()].sum() / 16 for k, v in parent}
    want = [measured[(r, c)] for r, c in zip(llr.obs["array_row"], llr.obs["array_col"],
                                            strict=True)]
    np.testing.assert_allclose(llr.obs["diffst_measured_fraction"].to_numpy(), want)


def test_square_lr_totals_equal_hr_totals_per_block(c2_lr, her2st_c2_or_demo):
    lr, hr = c2_lr.tables["table"], c2_lr.tables["hr_table"]
    assert hr.n_obs == 187 and list(hr.var_names) == list(lr.var_names)
    x_hr = hr.layers["counts"].toarray().astype(np.float64)
    summed = pd.DataFrame(x_hr).groupby(hr.obs["lr_spot"].to_numpy()).sum()
    np.testing.assert_array_equal(summed.index.to_numpy(), np.arange(lr.n_obs))
    np.testing.assert_array_equal(summed.to_numpy(), lr.layers["counts"].toarray())
    assert sp.issparse(lr.X) and lr.X.dtype == np.float32
    assert (lr.X != lr.layers["counts"]).nnz == 0
    # children of a block are array neighbours
    rows = hr.obs["array_row"].to_numpy() // 2
    cols = hr.obs["array_col"].to_numpy() // 2
    par = hr.obs["lr_spot"].to_numpy()
    np.testing.assert_array_equal(lr.obs["array_row"].to_numpy()[par], rows)
    np.testing.assert_array_equal(lr.obs["array_col"].to_numpy()[par], cols)
    # the HR truth is the measured data itself
    src = her2st_c2_or_demo.tables["table"]
    assert (hr.layers["counts"] != src.layers["counts"]).nnz == 0


def test_a_few_genes_keep_the_library_sizes_of_all(c2_lr, her2st_c2_or_demo):
    """Degrading some genes records every spot's counts over all genes, which normalise them."""
    from diffst_sc.model import scaler_for

    src = her2st_c2_or_demo.tables["table"]
    genes = list(map(str, src.var_names[:5]))
    few = ds.pp.degrade(her2st_c2_or_demo, mode="square", factor=2, genes=genes)
    full_totals = np.asarray(src.layers["counts"].sum(1)).ravel()
    hr = few.tables["hr_table"]
    np.testing.assert_allclose(hr.obs["diffst_library_size"], full_totals)
    lr_all = np.asarray(c2_lr.tables["table"].layers["counts"].sum(1)).ravel()
    np.testing.assert_allclose(few.tables["table"].obs["diffst_library_size"], lr_all, rtol=1e-6)
    # the model's units on the few genes are those of the whole table
    a = scaler_for(section_view(few), genes)
    b = scaler_for(section_view(c2_lr), genes)
    np.testing.assert_allclose([a.section_scale, *a.mu], [b.section_scale, *b.mu], rtol=1e-6)


def test_square_result_is_a_section(c2_lr, her2st_c2_or_demo):
    view = section_view(c2_lr)
    src = section_view(her2st_c2_or_demo)
    assert view.n_spots == 56 and view.coordinate_system == src.coordinate_system
    assert view.microns_per_pixel == pytest.approx(src.microns_per_pixel)
    assert view.spot_diameter_um == pytest.approx(200.0)
    assert view.diameter_px == pytest.approx(2 * src.diameter_px)
    meta = c2_lr.tables["table"].uns["diffst_section"]
    assert meta["spot_spacing_um"] == pytest.approx(400.0)
    # same H&E, same placement
    assert c2_lr.images["he"]["scale0"]["image"].shape == her2st_c2_or_demo.images["he"][
        "scale0"]["image"].shape
    np.testing.assert_array_equal(view.image_to_cs, src.image_to_cs)
    hr_view = section_view(c2_lr, table_key="hr_table")
    np.testing.assert_allclose(hr_view.centres_px, src.centres_px)


def test_spots_off_any_lattice_are_grouped_with_their_neighbours():
    from diffst_sc._core import area_per_spot, spot_positions

    src = jittered_section(jitter=0.15)
    view = section_view(src)
    assert spot_positions(view)[2] == "binned"
    lr = ds.pp.degrade(src, genes=["ERBB2", "IGKC", "COL1A1"])  # auto: grouped, square blocks
    table, hr = lr.tables["table"], lr.tables["hr_table"]
    assert table.uns["diffst_degrade"]["positions"] == "binned"
    parent = hr.obs["lr_spot"].to_numpy()
    sizes = np.bincount(parent, minlength=table.n_obs)
    assert sizes.sum() == view.n_spots and (sizes >= 1).all()
    assert 2.5 < sizes.mean() < 5 and sizes.max() <= 9
    # each pseudo-spot is the sum of its spots, which lie near one another
    np.testing.assert_allclose(table.X.toarray(),
                               sp.csr_matrix((np.ones(len(parent)), (parent, np.arange(len(parent)))))
                               @ hr.X.toarray(), rtol=1e-6)
    lr_view = section_view(lr)
    far = np.linalg.norm(view.centres_px - lr_view.centres_px[parent], axis=1)
    assert far.max() < 2 * np.sqrt(area_per_spot(view.centres_px))  # within a 2 x 2 block
    with pytest.raises(ValueError, match="no regular lattice.*mode='auto'"):
        ds.pp.degrade(src, mode="hex")


def test_degrade_leaves_the_input_alone(her2st_c2_or_demo):
    from spatialdata.transformations import Scale, set_transformation

    src = her2st_c2_or_demo
    cs = section_view(src).coordinate_system
    table = src.tables["table"]
    n_obs, keys = table.n_obs, set(table.obs.columns)
    lr = ds.pp.degrade(src, genes=["ERBB2", "GRB7", "IGKC"])
    assert list(lr.tables["table"].var_names) == ["ERBB2", "GRB7", "IGKC"]
    assert table.n_obs == n_obs and set(table.obs.columns) == keys
    assert set(src.tables) == {"table"} and set(src.shapes) == {"spots"}
    set_transformation(lr.images["he"], Scale([2.0, 2.0], axes=("x", "y")), cs)
    set_transformation(lr.shapes["hr_spots"], Scale([2.0, 2.0], axes=("x", "y")), cs)
    assert np.allclose(affine_matrix(get_transformation(src.images["he"], cs)), np.eye(3))
    assert np.allclose(affine_matrix(get_transformation(src.shapes["spots"], cs)), np.eye(3))


def test_hex_on_visium(visium_tiny_dir):
    import spatialdata_io

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdata = spatialdata_io.visium(visium_tiny_dir, dataset_id="tiny")
    out = ds.pp.degrade(sdata, image_key="tiny_lowres_image")  # auto: Visium's lattice -> hex
    lr, hr = out.tables["table"], out.tables["hr_table"]
    assert lr.uns["diffst_degrade"]["mode"] == "hex"
    par = hr.obs["lr_spot"].to_numpy()
    summed = sp.csr_matrix((np.ones(hr.n_obs), (par, np.arange(hr.n_obs)))) @ hr.X
    np.testing.assert_array_equal(np.asarray(summed.todense()), lr.X.toarray())
    # children are within one lattice step of each other's hexagon centre
    src = section_view(sdata, image_key="tiny_lowres_image")
    view = section_view(out)
    step = 100.0 / src.microns_per_pixel
    d = np.linalg.norm(src.centres_px - view.centres_px[par], axis=1)
    assert d.max() <= 2 * step * 1.01
    assert view.spot_diameter_um == pytest.approx(np.sqrt(7) * src.spot_diameter_um)
    assert lr.uns["diffst_section"]["spot_spacing_um"] == pytest.approx(100 * np.sqrt(7), rel=0.01)
    # the coarse lattice keeps Visium's layout, so it can be degraded again
    parity = (lr.obs["array_row"] + lr.obs["array_col"]) % 2
    assert parity.nunique() == 1


def test_hex_tiles_the_whole_visium_lattice(visium_tiny_dir):
    from diffst_sc._core import hex_parents

    pos = pd.read_csv(visium_tiny_dir / "spatial" / "tissue_positions_list.csv", header=None,
                      names=["barcode", "in_tissue", "row", "col", "px_row", "px_col"])
    px = pos[["px_col", "px_row"]].to_numpy(float)
    for factor, size in ((2, 7), (3, 19)):
        parent = hex_parents(pos["row"].to_numpy(), pos["col"].to_numpy(), factor - 1)
        _, inv, counts = np.unique(parent, axis=0, return_inverse=True, return_counts=True)
        assert counts.max() == size and np.median(counts) == size
        # a full hexagon is compact: every child within (factor - 1) steps of its mean
        inv = inv.ravel()
        centre = np.stack([np.bincount(inv, px[:, i]) / counts for i in (0, 1)], 1)
        full = counts[inv] == size
        dist = np.linalg.norm(px - centre[inv], axis=1)[full]
        assert dist.max() < (factor - 1) * 138 * 1.05


def test_transcripts_on_the_xenium_crop(xenium_sdata):
    out = ds.pp.degrade(xenium_sdata, spot_diameter_um=20.0, spot_spacing_um=30.0,
                        hr_pixel_um=8.0)  # auto: no spot array -> transcripts
    lr, hr = out.tables["table"], out.tables["hr_table"]
    rec = lr.uns["diffst_degrade"]
    assert rec["mode"] == "transcripts" and rec["um_per_cs_unit"] == pytest.approx(0.2125)

    # independent recount, straight from the points
    df = xenium_sdata.points["transcripts"][["x", "y", "feature_name"]].compute()
    names = df["feature_name"].astype(str)
    control = names.str.match(r"^(NegControl|BLANK|Unassigned|antisense|DeprecatedCodeword)")
    assert 0 < control.sum() < 200
    df, names = df[~control.to_numpy()], names[~control.to_numpy()]
    cs = np.c_[df["x"].to_numpy(float), df["y"].to_numpy(float)] / 0.2125
    origin, pixel = np.array(rec["grid_origin_cs"]), rec["grid_pixel_cs"]
    ny, nx = rec["grid_shape"]
    assert pixel == pytest.approx(8.0 / 0.2125)
    rel = (cs - origin) / pixel
    inside = (rel >= 0).all(1) & (rel[:, 0] < nx) & (rel[:, 1] < ny)
    assert inside.mean() > 0.95

    truth = out.images["hr_truth"]
    assert truth.shape == (len(lr.var_names), ny, nx) and truth.dtype == np.float32
    assert list(truth.coords["c"].values) == list(lr.var_names) == list(hr.var_names)
    hr_arr = np.asarray(truth.data.compute())
    assert hr_arr.sum() == inside.sum()
    # one gene, one pixel, recounted
    ix, iy = np.floor(rel[inside]).astype(int).T
    g = "LUM"
    gi = list(truth.coords["c"].values).index(g)
    expected = np.zeros((ny, nx))
    np.add.at(expected, (iy[names[inside] == g], ix[names[inside] == g]), 1)
    np.testing.assert_array_equal(hr_arr[gi], expected)
    # the image is placed exactly on the grid in the coordinate system
    a = affine_matrix(get_transformation(truth, "global"))
    np.testing.assert_allclose(a @ [0, 0, 1], [*origin, 1])
    np.testing.assert_allclose(a @ [nx, ny, 1], [*(origin + pixel * np.array([nx, ny])), 1])

    # pseudo-spots hold exactly the transcripts (of the grid) inside their discs
    spots = out.shapes["spots"]
    assert np.allclose(affine_matrix(get_transformation(spots, "global")), np.eye(3))
    centres = np.c_[spots.geometry.x, spots.geometry.y]
    radius = spots["radius"].to_numpy()
    assert radius == pytest.approx(10.0 / 0.2125)
    lr_x = lr.layers["counts"].toarray()
    code = pd.Index(lr.var_names).get_indexer(names[inside])
    pts = cs[inside]
    for i, c in enumerate(centres):
        within = np.hypot(*(pts - c).T) <= radius[i]
        assert within.sum() > 0
        np.testing.assert_array_equal(np.bincount(code[within], minlength=lr.n_vars), lr_x[i])
    assert lr.n_obs > 20
    # hexagonal lattice: nearest neighbours 30 um apart
    from scipy.spatial import cKDTree

    d, _ = cKDTree(centres).query(centres, k=2)
    assert np.median(d[:, 1]) * 0.2125 == pytest.approx(30.0)

    # HR pixels: those with counts, each tied to its nearest pseudo-spot
    assert hr.n_obs == int((hr_arr.sum(0) > 0).sum())
    np.testing.assert_array_equal(
        hr.X.toarray(), hr_arr[:, hr.obs["array_row"], hr.obs["array_col"]].T)
    pix_cs = origin + pixel * (np.c_[hr.obs["array_col"], hr.obs["array_row"]] + 0.5)
    nearest = np.argmin(np.linalg.norm(pix_cs[:, None] - centres[None], axis=2), axis=1)
    np.testing.assert_array_equal(hr.obs["lr_spot"].to_numpy(), nearest)
    boxes = out.shapes["hr_pixels"]
    assert boxes.geometry.area.to_numpy() == pytest.approx(pixel**2)


def test_transcripts_result_is_a_section(xenium_sdata):
    out = ds.pp.degrade(xenium_sdata, mode="transcripts", spot_diameter_um=20.0,
                        spot_spacing_um=30.0)
    view = section_view(out)
    assert view.image_key == "he" and view.coordinate_system == "global"
    assert view.microns_per_pixel == pytest.approx(0.364, abs=0.002)
    assert view.spot_diameter_um == pytest.approx(20.0, rel=1e-3)
    np.testing.assert_allclose(view.centres_px, out.tables["table"].obsm["spatial"], atol=1e-6)
    # default Visium geometry fits only a disc or two in this 190 x 160 um crop, but works
    visium_like = ds.pp.degrade(xenium_sdata)
    assert visium_like.tables["table"].n_obs >= 1
    assert section_view(visium_like).spot_diameter_um == pytest.approx(55.0, rel=1e-3)


def test_transcripts_bad_parameters(xenium_sdata):
    with pytest.raises(ValueError, match="must not exceed spot_spacing_um"):
        ds.pp.degrade(xenium_sdata, mode="transcripts", spot_diameter_um=120.0)
    with pytest.raises(KeyError, match=r"not in the panel of 'transcripts': \['NOTAGENE'\]"):
        ds.pp.degrade(xenium_sdata, mode="transcripts", genes=["LUM", "NOTAGENE"])
    with pytest.raises(ValueError, match="not spots.*overlap.*mode='transcripts'"):
        ds.pp.degrade(xenium_sdata, mode="square")  # segmented cells are not grouped


def test_transcripts_result_round_trips_through_zarr(xenium_sdata, tmp_path):
    import spatialdata as sd

    out = ds.pp.degrade(xenium_sdata, spot_diameter_um=20.0, spot_spacing_um=30.0)
    ds.pp.coexpression_graph(out, k=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr's notices about its next release's defaults
        out.write(tmp_path / "pair.zarr")
        back = sd.read_zarr(tmp_path / "pair.zarr")
    assert set(back.images) == {"he", "hr_truth"} and set(back.tables) == {"table", "hr_table"}
    np.testing.assert_array_equal(back.tables["table"].X.toarray(),
                                  out.tables["table"].X.toarray())
    assert back.tables["table"].uns["diffst_degrade"]["mode"] == "transcripts"
    assert section_view(back).n_spots == out.tables["table"].n_obs


def _assert_same_section(a, b):
    """Two views of the same pseudo-spots: counts, library sizes, shares, geometry, pixel size."""
    np.testing.assert_array_equal(a.expression(), b.expression())
    np.testing.assert_array_equal(a.library_sizes(), b.library_sizes())
    np.testing.assert_array_equal(a.measured_fraction, b.measured_fraction)
    np.testing.assert_allclose(a.centres_px, b.centres_px, rtol=0, atol=1e-9)
    assert a.diameter_px == pytest.approx(b.diameter_px, rel=1e-12)
    assert a.microns_per_pixel == pytest.approx(b.microns_per_pixel, rel=1e-12)
    assert list(a.adata.obs_names) == list(b.adata.obs_names)


def test_arrays_coarsen_as_degrade_does_on_a_square_array(her2st_c2_or_demo):
    """fit sums its pairs from arrays; they are the pseudo-spots pp.degrade writes."""
    from diffst_sc._core import coarsen_view

    view = section_view(her2st_c2_or_demo)
    obs = view.adata.obs
    row, col = obs["array_row"].to_numpy(int), obs["array_col"].to_numpy(int)
    degraded = section_view(ds.pp.degrade(her2st_c2_or_demo),
                                  microns_per_pixel=view.microns_per_pixel)
    _assert_same_section(coarsen_view(view, row, col, mode="square"), degraded)


def test_arrays_coarsen_as_degrade_does_on_visium(visium_tiny_dir):
    import spatialdata_io

    from diffst_sc._core import coarsen_view

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdata = spatialdata_io.visium(visium_tiny_dir, dataset_id="tiny")
    view = section_view(sdata, image_key="tiny_lowres_image")
    obs = view.adata.obs
    row, col = obs["array_row"].to_numpy(int), obs["array_col"].to_numpy(int)
    degraded = section_view(ds.pp.degrade(sdata, image_key="tiny_lowres_image"),
                                  microns_per_pixel=view.microns_per_pixel)
    _assert_same_section(coarsen_view(view, row, col, mode="hex"), degraded)
