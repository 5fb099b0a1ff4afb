"""fit + superresolve end to end on real her2st C2, with a small training budget.

C2 is the full section from ../shared/data, or the demo copy shipped with the package (same
spots, 500 genes, H&E at half size) where that is absent.
"""

import copy
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import diffst_sc as ds
from conftest import FIT_BUDGET as BUDGET
from conftest import FIT_GENES as GENES
from conftest import SAMPLING
from diffst_sc._core import affine_matrix, layer_footprint_means, section_view

# the benchmark's baselines (bicubic, the 2x2 degradation of a section) are importable here
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


@pytest.fixture(scope="module")
def fitted(fitted_c2):
    return fitted_c2


def test_fit_returns_a_model_with_history_and_graph(fitted):
    sdata, model = fitted
    assert model.genes == GENES
    assert [h["step"] for h in model.history][-1] == BUDGET["max_steps"]
    assert np.isfinite([h["loss"] for h in model.history]).all()
    table = sdata.tables["table"]
    assert table.varp["diffst_coexpr"].shape == (table.n_vars, table.n_vars)


def test_layers_are_genes_over_the_he(fitted):
    sdata, _ = fitted
    layer = sdata.images["diffst"]
    assert list(map(str, layer.coords["c"].values)) == GENES
    assert layer.data.chunksize[0] == 1  # one gene per chunk
    # The layer's transformation maps its pixel grid onto the H&E: a spot's centre in the H&E
    # falls inside the layer and the layer pixel there lies inside the spot's footprint.
    view = section_view(sdata)
    from spatialdata.transformations import get_transformation

    a = np.linalg.inv(affine_matrix(get_transformation(layer, to_coordinate_system=view.coordinate_system)))
    ij = (np.c_[view.centres_px, np.ones(view.n_spots)] @ a.T)[:, :2]
    h, w = layer.shape[1:]
    assert ((ij >= 0) & (ij < [w, h])).all()
    pixel_px = 1 / a[0, 0]
    assert pixel_px < view.diameter_px  # finer than a spot
    assert np.isclose(sdata.tables["table"].uns["diffst"]["pixel_size_um"],
                      pixel_px * view.microns_per_pixel)


def _kept(sdata):
    """The spots not flagged as failed captures (superresolve leaves those out)."""
    return ~sdata.tables["table"].obs["diffst_low_counts"].to_numpy()


def test_layer_is_consistent_with_the_measured_spots(fitted):
    sdata, _ = fitted
    view = section_view(sdata)
    got = layer_footprint_means(sdata, "diffst", view.centres_px, view.diameter_px,
                                view.coordinate_system)
    want = view.expression(GENES)
    kept = _kept(sdata)
    assert kept.sum() == view.n_spots - 2  # C2's two empty spots (in the demo too)
    rel = np.abs(got[kept] - want[kept]).sum() / want[kept].sum()
    assert rel < 0.05, rel
    assert sdata.tables["table"].uns["diffst"]["consistency_error"] < 0.05
    assert (got[~kept].sum(1) > 10 * want[~kept].sum(1) + 10).all()  # filled, not empty


def test_uncertainty_is_non_negative_and_informative(fitted):
    sdata, _ = fitted
    std = np.asarray(sdata.images["diffst_std"].values)
    mean = np.asarray(sdata.images["diffst"].values)
    assert np.isfinite(mean).all() and np.isfinite(std).all()
    tissue = mean > 0  # 0 marks the outside of the tissue, in both layers
    assert (std[~tissue] == 0).all() and 0.2 < tissue.mean() < 0.9
    assert (std >= 0).all() and std[tissue].max() > 0


def test_layers_are_in_memory_and_outlive_the_process_state(fitted, tmp_path):
    """The layers are ordinary arrays (no temporary store behind them): written with the
    SpatialData they read back equal."""
    import spatialdata as sd

    sdata, model = fitted
    ds.tl.superresolve(sdata, model, key_added="disk", **SAMPLING)
    layer = sdata.images["disk"]
    assert not any("from-zarr" in str(k[0] if isinstance(k, tuple) else k)
                   for k in layer.data.dask)
    out = tmp_path / "out.zarr"
    sdata.subset(["disk", "disk_std"]).write(out)
    back = sd.read_zarr(out)
    np.testing.assert_array_equal(np.asarray(back.images["disk_std"].values),
                                  np.asarray(sdata.images["disk_std"].values))


def test_finer_pixels_keep_the_spots_consistent(fitted):
    sdata, model = fitted
    view = section_view(sdata)
    ds.tl.superresolve(sdata, model, key_added="fine", pixel_size_um=20.0, **SAMPLING)
    layer = sdata.images["fine"]
    assert np.isclose(sdata.tables["table"].uns["fine"]["pixel_size_um"], 20.0, rtol=0.02)
    assert layer.shape[1] > sdata.images["diffst"].shape[1]
    got = layer_footprint_means(sdata, "fine", view.centres_px, view.diameter_px,
                                view.coordinate_system)
    want = view.expression(GENES)
    kept = _kept(sdata)
    assert np.abs(got[kept] - want[kept]).sum() / want[kept].sum() < 0.1
    # the finer grid marks the same outside of the tissue as the native one
    fine, native = np.asarray(layer.values), np.asarray(sdata.images["diffst"].values)
    assert ((np.asarray(sdata.images["fine_std"].values) == 0) == (fine == 0)).all()
    assert (fine == 0).mean() == pytest.approx((native == 0).mean(), abs=0.03)
    with pytest.raises(ValueError, match="pixel_size_um must be positive"):
        ds.tl.superresolve(sdata, model, key_added="bad", pixel_size_um=0, **SAMPLING)


def test_no_silent_overwrite(fitted):
    sdata, model = fitted
    before = np.asarray(sdata.images["diffst"].values).copy()
    with pytest.raises(ValueError, match="overwrite=True"):
        ds.tl.superresolve(sdata, model, **SAMPLING)
    np.testing.assert_array_equal(np.asarray(sdata.images["diffst"].values), before)


def test_save_load_gives_identical_output(fitted, tmp_path):
    sdata, model = fitted
    path = model.save(tmp_path / "model")
    import torch

    state = torch.load(path / "model.pt", weights_only=True)
    assert set(state) == set(model.module.state_dict())
    again = ds.DiffST.load(path)
    for k, v in model.module.state_dict().items():
        assert torch.equal(v, again.module.state_dict()[k]), k
    ds.tl.superresolve(sdata, model, key_added="a", seed=3, **SAMPLING)
    ds.tl.superresolve(sdata, again, key_added="b", seed=3, **SAMPLING)
    np.testing.assert_array_equal(np.asarray(sdata.images["a"].values),
                                  np.asarray(sdata.images["b"].values))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(tmp_path / "model")


def test_model_rejects_data_without_its_genes(fitted):
    sdata, model = fitted
    other = copy.deepcopy(sdata)
    table = other.tables["table"]
    other.tables["table"] = table[:, [g for g in table.var_names if g != "ERBB2"]].copy()
    with pytest.raises(KeyError, match="ERBB2"):
        ds.tl.superresolve(other, model, key_added="x", **SAMPLING)


def test_superresolve_needs_a_model(her2st_c2_or_demo):
    fresh = copy.deepcopy(her2st_c2_or_demo)
    with pytest.raises(ValueError, match="ds.tl.fit"):
        ds.tl.superresolve(fresh, **SAMPLING)


def test_pixel_table_for_scanpy(fitted):
    sdata, model = fitted
    ds.tl.superresolve(sdata, model, key_added="px", add_pixel_table=True,
                       outside_tissue=np.nan, **SAMPLING)
    assert sdata.tables["table"].uns["px"]["outside_tissue"] == "nan"
    layer = np.asarray(sdata.images["px"].values)
    outside = np.isnan(layer)
    assert outside.any() and (outside == outside[:1]).all()  # one outside for every gene
    assert (layer[~outside] > 0).all()
    t = sdata.tables["px_table"]
    assert list(t.var_names) == GENES and t.n_obs == (~outside[0]).sum() > 100
    assert np.isfinite(t.X).all()  # tissue pixels only
    assert t.obsm["spatial"].shape == (t.n_obs, 2)
    lib = t.uns["spatial"]["px"]
    assert lib["images"]["hires"].ndim == 3 and lib["scalefactors"]["tissue_hires_scalef"] <= 1


def test_anndata_path_with_normalised_values_warns_and_works(mouse_brain_dir):
    import scanpy as sc
    from PIL import Image

    adata = sc.read_h5ad(mouse_brain_dir / "test_data.h5ad")
    image = np.asarray(Image.open(mouse_brain_dir / "test_img.jpg"))
    genes = list(adata.var_names[:6])
    with pytest.warns(ds.io.NotCountsWarning):
        model = ds.tl.fit(adata, image, genes=genes, **BUDGET)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ds.io.NotCountsWarning)
        out = ds.tl.superresolve(adata, image=image, **SAMPLING)
    assert out is not None and "diffst" in out.images and "he" in out.images
    assert list(map(str, out.images["diffst"].coords["c"].values)) == genes
    assert model.genes == genes


def test_supervised_pairs_on_xenium_truth_then_evaluate(xenium_zarr):
    import spatialdata as sd

    xen = sd.read_zarr(xenium_zarr)
    pair = ds.pp.degrade(xen, mode="transcripts", hr_pixel_um=8.0, spot_diameter_um=20.0,
                         spot_spacing_um=30.0)
    genes = ds.pp.select_genes(pair, n_top=6, table_key="table")
    with pytest.raises(ValueError, match="hr_table"):
        ds.tl.fit(ds.pp.degrade(xen, mode="transcripts", hr_pixel_um=8.0,
                                spot_diameter_um=20.0, spot_spacing_um=30.0).subset(
                                    ["he", "spots", "table"]),
                  genes=genes, pairs="supervised", **BUDGET)
    model = ds.tl.fit(pair, genes=genes, pairs="supervised", table_key="table", **BUDGET)
    ds.tl.superresolve(pair, model, table_key="table", **SAMPLING)
    scores = ds.tl.evaluate(pair, "diffst")
    assert set(genes) <= set(scores.index) and "mean" in scores.index
    assert np.isfinite(scores.loc["mean", ["PCC", "NRMSE", "SSIM"]].astype(float)).all()


def test_histology_path_is_saved_and_drives_the_map(fitted, tmp_path):
    _, model = fitted
    path = model.base.path
    assert path.radius_ratio == pytest.approx(0.5)
    n_features = path.ridge.coef.shape[0]
    assert path.ridge.coef.shape[1] == len(GENES) and n_features > len(GENES)
    loaded = ds.DiffST.load(model.save(tmp_path / "m"))
    np.testing.assert_allclose(loaded.base.path.ridge.coef, path.ridge.coef)


def test_histology_path_alone_beats_interpolation_within_spots(her2st_c2_or_demo):
    """deep=False: the ridge alone, fitted in seconds; its map departs from the spots where
    the H&E says so, and still integrates back to every spot."""
    from baselines import bicubic, degrade_2x2, lr_input, score_predictions

    genes = GENES
    lr = degrade_2x2(her2st_c2_or_demo, genes)
    target = lr_input(lr)
    model = ds.tl.fit(target, genes=genes, deep=False, progress=False)
    assert isinstance(model, ds.model.HistologyModel)
    ds.tl.superresolve(target, model=model, progress=False)
    # Fitted on this very section: its departures keep the size they were fitted at.
    assert target.tables["table"].uns["diffst"]["path_gain"] == pytest.approx(1.0, abs=1e-6)
    view = section_view(target)
    got = layer_footprint_means(target, "diffst", view.centres_px, view.diameter_px,
                                view.coordinate_system)
    want = view.footprint_expression(genes)  # pseudo-spots: counts over the whole disc
    assert np.abs(got - want).sum() / want.sum() < 0.05
    hr = section_view(lr, table_key="hr_table", image_key=view.image_key,
                            coordinate_system=view.coordinate_system,
                            microns_per_pixel=view.microns_per_pixel)
    pred = layer_footprint_means(target, "diffst", hr.centres_px, hr.diameter_px,
                                 view.coordinate_system)
    ours = score_predictions(lr, pred, genes)["wPCC"]
    assert ours > score_predictions(lr, bicubic(lr, genes), genes)["wPCC"]


def test_deep_false_needs_the_histology_path(her2st_c2_or_demo):
    with pytest.raises(ValueError, match="deep=True"):
        ds.tl.fit(her2st_c2_or_demo, genes=GENES, deep=False, histology_path=False, progress=False)


def test_superresolve_finds_the_model_stored_with_the_data(her2st_c2_or_demo):
    sdata = copy.deepcopy(her2st_c2_or_demo)
    model = ds.tl.fit(sdata, genes=GENES[:5], progress=False)
    assert sdata.tables["table"].uns["diffst_histology"]["genes"].tolist() == model.genes
    ds.tl.superresolve(sdata, key_added="found", progress=False)
    assert sdata.tables["table"].uns["found"]["genes"] == model.genes
    # A copy holds the same table, so the same model; a table without one says what to do.
    ds.tl.superresolve(copy.deepcopy(sdata), key_added="copy", progress=False)
    del sdata.tables["table"].uns["diffst_histology"]
    with pytest.raises(ValueError, match="ds.tl.fit"):
        ds.tl.superresolve(sdata, key_added="other", progress=False)


def test_fit_writes_only_the_keys_it_lists(her2st_c2_or_demo):
    sdata = copy.deepcopy(her2st_c2_or_demo)
    table = sdata.tables["table"]
    before = (set(table.uns), set(table.obs), set(table.varp), set(sdata.images))
    ds.tl.fit(sdata, genes=GENES[:5], key_added="mine", progress=False)
    assert set(table.uns) - before[0] <= {"mine", "diffst_low_counts"}
    assert "mine" in table.uns
    assert set(table.obs) - before[1] <= {"diffst_low_counts"}
    assert set(table.varp) == before[2] and set(sdata.images) == before[3]


def _quarter_spread(sdata, key, view, genes):
    """How far a layer departs within the spots: the sd of its means over four discs in the
    quarters of each spot, relative to the spot's mean, averaged over spots and genes."""
    d = view.diameter_px
    quarters = [layer_footprint_means(sdata, key, view.centres_px + [dx, dy], d / 3,
                                      view.coordinate_system, channels=genes)
                for dx in (-d / 5, d / 5) for dy in (-d / 5, d / 5)]
    q = np.stack(quarters)  # (4, spots, genes)
    level = q.mean(0)
    ok = level > 0
    return float((q.std(0)[ok] / level[ok]).mean())


def test_a_path_fitted_elsewhere_is_rescaled_to_the_section(her2st_c2_or_demo):
    """On a section the path was not fitted on, superresolve measures the gain on that
    section's own spots, records it and scales the map's departures within each spot by it: a
    path trained on far steeper departures than the section's spots show gets a gain near 0,
    and its map is nearly flat inside each spot."""
    import dataclasses

    from baselines import degrade_2x2, lr_input

    genes = GENES[:5]
    model = ds.tl.fit(lr_input(degrade_2x2(her2st_c2_or_demo, genes)), genes=genes,
                      progress=False)
    sdata = copy.deepcopy(her2st_c2_or_demo)  # the measured spots: another section
    ds.tl.superresolve(sdata, model=model, key_added="as_fitted", progress=False)
    measured = sdata.tables["table"].uns["as_fitted"]["path_gain"]
    assert 0 < measured <= 2 and measured != pytest.approx(1.0, abs=1e-6)
    model.path = dataclasses.replace(model.path, fitted_slope=1e6)
    ds.tl.superresolve(sdata, model=model, key_added="calm", progress=False)
    assert sdata.tables["table"].uns["calm"]["path_gain"] < 0.01
    view = section_view(sdata)
    assert _quarter_spread(sdata, "calm", view, genes) < 0.5 * _quarter_spread(
        sdata, "as_fitted", view, genes)


def test_a_closed_gate_gives_the_base_models_map(fitted):
    """residual_scale is where a DiffST decides how much of its network's residual a map takes:
    at 0 the map is its histology model's, still consistent with the spots."""
    sdata, model = fitted
    ds.tl.superresolve(sdata, model.base, key_added="base", progress=False)
    kept = model.residual_scale
    try:
        model.residual_scale = 0.0
        ds.tl.superresolve(sdata, model, key_added="gated", **SAMPLING)
        model.residual_scale = 1.0
        ds.tl.superresolve(sdata, model, key_added="open", **SAMPLING)
    finally:
        model.residual_scale = kept
    base, gated = (np.asarray(sdata.images[k]) for k in ("base", "gated"))
    np.testing.assert_allclose(gated, base, rtol=1e-4, atol=1e-4 * base.max())
    assert not np.allclose(np.asarray(sdata.images["open"]), base, rtol=1e-3)
    uns = sdata.tables["table"].uns
    assert uns["gated"]["residual_scale"] == 0 and uns["open"]["residual_scale"] == 1
    assert "residual_scale" not in uns["base"]
