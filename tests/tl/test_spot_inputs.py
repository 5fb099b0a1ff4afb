"""fit / superresolve on the embedded section: ``layer=``, ``microns_per_pixel=``, flagged
spots treated as missing, and what the pixels outside the tissue hold."""

import warnings

import numpy as np
import pytest
from scipy.spatial import cKDTree

import diffst_sc as ds
from conftest import jittered_section
from diffst_sc._core import layer_footprint_means, section_view

GENES = ["ERBB2", "IGKC", "COL1A1", "FASN", "KRT19", "MGP", "CD74", "SCGB2A2"]
#: The H&E pixel size of the demo section (``read_legacy_st`` records it).
MPP = 1.3779429470086806
GUESS_WARNING = "pixel size is not recorded"


def _raw_section():
    """The demo section with its counts in ``layers["raw"]``, scaled values (negative) in X
    and no recorded pixel size, as a table that went through ``sc.pp.scale`` would be."""
    sdata = ds.datasets.her2st_demo()
    table = sdata.tables["table"]
    table.layers["raw"] = table.layers["counts"].copy()
    del table.layers["counts"]
    log = np.log1p(table.layers["raw"].toarray())
    table.X = ((log - log.mean(0)) / (log.std(0) + 1e-6)).astype(np.float32)
    del table.uns["diffst_section"]["microns_per_pixel"]
    return sdata


@pytest.fixture(scope="module")
def run():
    """One fit and two superresolve calls: flagged spots missing and 0 outside the tissue (the
    defaults) / every spot used and NaN outside the tissue."""
    sdata = _raw_section()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = ds.tl.fit(sdata, genes=GENES, layer="raw", microns_per_pixel=MPP,
                          progress=False)
        ds.tl.superresolve(sdata, model, layer="raw", microns_per_pixel=MPP, progress=False)
        ds.tl.superresolve(sdata, model, key_added="every_spot", layer="raw",
                           microns_per_pixel=MPP, missing_key=None, outside_tissue=np.nan,
                           progress=False)
    view = section_view(sdata, layer="raw", microns_per_pixel=MPP)
    return sdata, view, [str(w.message) for w in caught]


def _means(sdata, view, key):
    return layer_footprint_means(sdata, key, view.centres_px, view.diameter_px,
                                 view.coordinate_system)


def test_spots_off_any_lattice_are_fitted_and_super_resolved():
    sdata = jittered_section(jitter=0.15)
    view = section_view(sdata)
    lr_views, target = ds.pp.self_supervised_pairs(view, genes=GENES)
    assert len(lr_views) == 4  # every phase of the 2 x 2 blocks of bins
    assert all(15 < v.n_spots < view.n_spots / 2 for v in lr_views)
    model = ds.tl.fit(sdata, genes=GENES, progress=False)
    ds.tl.superresolve(sdata, model, progress=False)
    record = sdata.tables["table"].uns["diffst"]
    assert record["consistency_error"] < 0.05
    assert "array_row" not in sdata.tables["table"].obs  # the user's table is left alone


def test_without_layer_the_scaled_x_is_refused_before_work():
    with pytest.raises(ValueError, match="negative values.*layer="):
        ds.tl.fit(_raw_section(), genes=GENES, microns_per_pixel=MPP, progress=False)


def test_layer_and_pixel_size_are_used(run):
    sdata, view, messages = run
    assert not [m for m in messages if GUESS_WARNING in m]  # no guess anywhere, pairs included
    record = sdata.tables["table"].uns["diffst"]
    assert record["pixel_size_um"] == pytest.approx(view.spacing_px / 8 * MPP)
    # the maps integrate back to the raw counts of the measured spots
    kept = ~sdata.tables["table"].obs["diffst_low_counts"].to_numpy()
    got, want = _means(sdata, view, "diffst")[kept], view.expression(GENES)[kept]
    assert np.abs(got - want).sum() / want.sum() < 0.01
    assert record["consistency_error"] < 0.01


def test_a_guessed_pixel_size_warns_and_bad_values_are_refused():
    sdata = _raw_section()
    with pytest.warns(UserWarning, match=GUESS_WARNING):
        view = section_view(sdata, layer="raw")
    assert abs(view.microns_per_pixel / MPP - 1) > 0.3  # the guess is far off on this section
    untrained = ds.tl.fit(sdata, genes=GENES, layer="raw", microns_per_pixel=MPP,
                          progress=False)
    with pytest.raises(ValueError, match="microns_per_pixel must be a positive number"):
        ds.tl.superresolve(sdata, untrained, layer="raw", microns_per_pixel=-1.0)
    with pytest.raises(ValueError, match="outside_tissue must be 0.0 or numpy.nan"):
        ds.tl.superresolve(sdata, untrained, layer="raw", microns_per_pixel=MPP,
                           outside_tissue=-1.0)
    with pytest.raises(ValueError, match="2 values for 1 sections"):
        ds.tl.fit(sdata, genes=GENES, layer="raw", microns_per_pixel=[MPP, MPP])


def test_flagged_spots_are_filled_from_their_neighbours(run):
    sdata, view, _ = run
    table = sdata.tables["table"]
    flagged = table.obs["diffst_low_counts"].to_numpy()
    assert table.obs_names[flagged].tolist() == ["18x20", "23x27"]
    assert table.uns["diffst_low_counts"]["n_flagged"] == 2
    assert table.uns["diffst"]["n_missing_spots"] == 2
    assert table.uns["every_spot"]["n_missing_spots"] == 0
    _, nearest = cKDTree(view.centres_px).query(view.centres_px[flagged], k=7)
    measured = view.expression(GENES)
    neighbours = np.array([np.median(measured[n[1:]], 0) for n in nearest]).sum(1)
    filled = _means(sdata, view, "diffst")[flagged].sum(1)
    kept = _means(sdata, view, "every_spot")[flagged].sum(1)
    # missing: like the neighbours (not a black hole); used: what the spot measured (~0)
    assert (filled > neighbours / 3).all() and (filled < 3 * neighbours).all(), (filled,
                                                                                  neighbours)
    np.testing.assert_allclose(kept, measured[flagged].sum(1), atol=0.05 * neighbours.min())


def test_outside_the_tissue_is_zero_or_nan(run):
    sdata, view, _ = run
    inv = np.linalg.inv(_layer_affine(sdata, view))
    ij = (np.c_[view.centres_px, np.ones(view.n_spots)] @ (inv @ view.image_to_cs).T)[:, :2]
    cols, rows = ij.astype(int).T
    fractions = []
    for key, is_outside in (("diffst", lambda a: a == 0), ("every_spot", np.isnan)):
        mean = np.asarray(sdata.images[key].values)
        std = np.asarray(sdata.images[key + "_std"].values)
        outside = is_outside(mean)
        assert (outside == outside[0]).all() and (is_outside(std) == outside).all()
        assert (mean[~outside] > 0).all() and (std[~outside] >= 0).all()  # positive on tissue
        assert not outside[0, rows, cols].any()  # every spot centre, flagged ones too, on tissue
        fractions.append(outside.mean())
    assert 0.2 < fractions[0] < 0.8 and fractions[1] == pytest.approx(fractions[0], abs=0.01)
    assert sdata.tables["table"].uns["every_spot"]["outside_tissue"] == "nan"
    # the readouts and the consistency record are the same with either marker
    kept = ~sdata.tables["table"].obs["diffst_low_counts"].to_numpy()
    got, want = _means(sdata, view, "every_spot")[kept], view.expression(GENES)[kept]
    assert np.abs(got - want).sum() / want.sum() < 0.01


def _layer_affine(sdata, view):
    from spatialdata.transformations import get_transformation

    from diffst_sc._core import affine_matrix

    return affine_matrix(get_transformation(sdata.images["diffst"],
                                      to_coordinate_system=view.coordinate_system))


def test_fit_leaves_flagged_spots_out_of_the_pairs():
    sdata = _raw_section()
    view = section_view(sdata, layer="raw", microns_per_pixel=MPP)
    raw = view.expression()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no pixel-size guess inside degrade
        lr_views, target = ds.pp.self_supervised_pairs(view, "diffst_low_counts")
    flagged = sdata.tables["table"].obs["diffst_low_counts"].to_numpy()
    assert target.n_spots == view.n_spots - 2
    assert not set(sdata.tables["table"].obs_names[flagged]) & set(target.adata.obs_names)
    np.testing.assert_allclose(target.expression(), raw[~flagged])
    assert len(lr_views) == 4  # the 4 phases of the 2 x 2 blocks
    for lr in lr_views:  # pseudo-spots sum the kept spots' raw counts only
        assert lr.expression().sum() == pytest.approx(raw[~flagged].sum(), rel=1e-6)
        assert lr.microns_per_pixel == pytest.approx(MPP)
    every_lr, every_target = ds.pp.self_supervised_pairs(view, None)
    assert every_target.n_spots == view.n_spots
    assert every_lr[0].expression().sum() == pytest.approx(raw.sum(), rel=1e-6)


def test_training_pairs_copy_only_the_model_genes_and_keep_library_sizes():
    """fit's pairs hold the model's genes only, normalised by every gene's counts as before."""
    from diffst_sc.model import scaler_for

    sdata = ds.datasets.her2st_demo()
    view = section_view(sdata)
    few, _ = ds.pp.self_supervised_pairs(view, None, GENES)
    every, _ = ds.pp.self_supervised_pairs(view, None)
    assert len(few) == len(every) == 4
    for a, b in zip(few, every, strict=True):
        assert a.genes == GENES and len(b.genes) == view.adata.n_vars
        np.testing.assert_allclose(a.expression(GENES), b.expression(GENES))
        np.testing.assert_allclose(a.library_sizes(), b.library_sizes(), rtol=1e-6)
        sa, sb = scaler_for(a, GENES), scaler_for(b, GENES)
        np.testing.assert_allclose([sa.section_scale, *sa.mu, *sa.sd],
                                   [sb.section_scale, *sb.mu, *sb.sd], rtol=1e-5)
