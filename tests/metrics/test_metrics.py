"""Scores of the benchmark protocol and the footprint read-out, on hand-computed cases."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from skimage.metrics import structural_similarity

from diffst_sc._core import (
    footprint_means,
    footprint_weights,
    layer_footprint_means,
    resample_to_grid,
)
from diffst_sc.metrics import (
    block_means,
    consistency_error,
    expression_scores,
    gene_mean,
    interval_coverage,
    nrmse,
    pcc,
    renormalise_to_blocks,
    ssim_on_grid,
    uncertainty_gain,
    values_on_grid,
    within_block_pcc,
)

# --------------------------------------------------------------------------------------------
# scores


def test_pcc_hand_computed():
    t = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.0, 3.0, 2.0, 4.0])
    # centred: t = (-1.5, -.5, .5, 1.5), p = (-1.5, .5, -.5, 1.5): sum t*p = 4, sum t^2 = 5
    assert pcc(t, p)[0] == pytest.approx(0.8)
    assert pcc(t, -p)[0] == pytest.approx(-0.8)


def test_pcc_constant_truth_skipped_constant_prediction_zero():
    truth = np.c_[[1.0, 1.0, 1.0], [0.0, 1.0, 2.0]]
    pred = np.c_[[0.0, 1.0, 2.0], [5.0, 5.0, 5.0]]
    r = pcc(truth, pred)
    assert np.isnan(r[0])
    assert r[1] == 0.0
    assert gene_mean(r) == 0.0


def test_nrmse_hand_computed():
    t = np.c_[[0.0, 2.0], [0.0, 4.0]]
    p = np.c_[[1.0, 1.0], [0.0, 4.0]]
    np.testing.assert_allclose(nrmse(t, p), [0.5, 0.0])


def test_shapes_must_match():
    with pytest.raises(ValueError, match="same shape"):
        pcc(np.zeros((3, 2)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="NaN"):
        nrmse(np.arange(3.0), np.array([0.0, np.nan, 1.0]))


def _grid_case(seed=0, n_genes=3):
    rng = np.random.default_rng(seed)
    rows, cols = np.meshgrid(np.arange(14), np.arange(16), indexing="ij")
    keep = rng.random(rows.size) < 0.8
    rows, cols = rows.ravel()[keep] + 5, cols.ravel()[keep] + 2  # grids need not start at 0
    truth = rng.poisson(3.0, (len(rows), n_genes)).astype(float)
    return np.log1p(truth), rows, cols


def test_values_on_grid_layout():
    g = values_on_grid(np.array([[1.0], [2.0]]), rows=[3, 4], cols=[10, 12])
    np.testing.assert_array_equal(g, [[[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]]])


def test_ssim_perfect_is_one_and_matches_skimage_layout():
    truth, rows, cols = _grid_case()
    np.testing.assert_allclose(ssim_on_grid(truth, truth, rows, cols), 1.0)
    pred = truth[::-1].copy()
    tg = np.zeros((14, 16))
    pg = np.zeros((14, 16))
    tg[rows - 5, cols - 2] = truth[:, 1]
    pg[rows - 5, cols - 2] = pred[:, 1]
    expected = structural_similarity(tg, pg, data_range=np.ptp(truth[:, 1]),
                                     gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False)
    assert ssim_on_grid(truth, pred, rows, cols)[1] == pytest.approx(expected)
    assert expected < 0.9


def test_ssim_small_grid_says_why():
    with pytest.raises(ValueError, match="needs at least"):
        ssim_on_grid(np.arange(4.0), np.arange(4.0), [0, 0, 1, 1], [0, 1, 0, 1])


def test_within_block_pcc_hand_computed():
    block = np.array([0, 0, 1, 1, 2])
    truth = np.array([1.0, 3.0, 2.0, 6.0, 9.0])
    pred = np.array([0.0, 2.0, 5.0, 5.5, -4.0])
    # deviations: truth (-1, 1, -2, 2), pred (-1, 1, -.25, .25); the singleton block is left out
    expected = 3.0 / np.sqrt(10.0 * 2.125)
    assert within_block_pcc(truth, pred, block)[0] == pytest.approx(expected)


def test_within_block_pcc_copy_is_zero_perfect_is_one():
    truth, rows, cols = _grid_case(n_genes=4)
    block = (rows // 2) * 100 + cols // 2
    copy = block_means(truth, block)
    np.testing.assert_allclose(within_block_pcc(truth, copy, block), 0.0)
    np.testing.assert_allclose(within_block_pcc(truth, truth, block), 1.0)
    assert pcc(truth, copy).min() > 0.3  # a copy still correlates overall: wPCC isolates that


def test_within_block_pcc_needs_blocks():
    with pytest.raises(ValueError, match="two or more"):
        within_block_pcc(np.arange(3.0), np.arange(3.0), [0, 1, 2])


def test_perfect_prediction_scores():
    truth, rows, cols = _grid_case()
    block = (rows // 2) * 100 + cols // 2
    s = expression_scores(truth, truth.copy(), block=block, rows=rows, cols=cols)
    assert gene_mean(s["PCC"]) == pytest.approx(1.0)
    assert gene_mean(s["NRMSE"]) == 0.0
    assert gene_mean(s["SSIM"]) == pytest.approx(1.0)
    assert gene_mean(s["wPCC"]) == pytest.approx(1.0)


def test_renormalise_makes_block_sums_equal():
    rng = np.random.default_rng(1)
    block = np.array([0, 0, 0, 1, 1, 2, 3, 3])
    totals = rng.poisson(20, (4, 3)).astype(float)
    pred = rng.random((8, 3)) * 7
    pred[3:5, 1] = 0.0  # block 1 predicted as zero for gene 1: equal split
    pred[0, 2] = -3.0  # negatives count as zero
    pred[6, 0] = np.nan
    out = renormalise_to_blocks(pred, block, totals)
    sums = np.zeros_like(totals)
    np.add.at(sums, block, out)
    np.testing.assert_allclose(sums, totals)
    np.testing.assert_allclose(out[3:5, 1], totals[1, 1] / 2)
    assert out[0, 2] == 0.0 and out[6, 0] == 0.0
    # shares within a block follow the prediction
    assert out[1, 0] / out[2, 0] == pytest.approx(pred[1, 0] / pred[2, 0])


def test_renormalise_checks_blocks():
    with pytest.raises(ValueError, match="rows"):
        renormalise_to_blocks(np.ones((2, 1)), np.array([0, 5]), np.ones((2, 1)))


def test_interval_coverage_hand_computed():
    truth = np.c_[[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]]
    lower = np.c_[[0.0, 2.5, 3.0, 0.0], [0.0, 1.0, -1.0, -1.0]]
    upper = np.c_[[2.0, 3.0, 3.0, 3.0], [0.0, 2.0, 1.0, 1.0]]
    np.testing.assert_allclose(interval_coverage(truth, lower, upper), [0.5, 0.75])


def _errors_case(n=2000, genes=3, seed=0):
    """Means, the real size of each error (unrelated to the mean) and truths drawn with it."""
    rng = np.random.default_rng(seed)
    mean = rng.uniform(1.0, 40.0, (n, genes))
    err = np.exp(rng.normal(0.0, 0.8, (n, genes)))
    return mean, err, mean + err * rng.standard_normal((n, genes))


def test_uncertainty_gain_is_zero_for_the_trivial_shapes():
    rng = np.random.default_rng(1)
    mean = rng.uniform(1.0, 40.0, (3000, 2))
    # errors that grow like the mean: a std proportional to the mean is the best trivial shape
    truth = mean + 0.3 * mean * rng.standard_normal(mean.shape)
    np.testing.assert_allclose(uncertainty_gain(truth, mean, 2.5 * mean), 0.0, atol=1e-12)
    # counting noise: the square root is the better trivial shape and scores 0, the mean < 0
    truth = rng.poisson(mean).astype(float)
    np.testing.assert_allclose(uncertainty_gain(truth, mean, 3 * np.sqrt(mean)), 0.0,
                               atol=1e-12)
    assert (uncertainty_gain(truth, mean, mean) < -0.05).all()


def test_uncertainty_gain_rewards_the_true_error_scale_and_punishes_its_inverse():
    mean, err, truth = _errors_case()
    good = uncertainty_gain(truth, mean, err)
    assert (good > 0.3).all()  # about 0.8 nats per spot on this case
    bad = uncertainty_gain(truth, mean, 1.0 / err)  # largest where the errors are smallest
    assert (bad < -0.3).all()
    assert gene_mean(good) > 0.3


def test_uncertainty_gain_skips_spots_of_mean_zero():
    mean, err, truth = _errors_case(genes=1)
    base = uncertainty_gain(truth, mean, err)
    # spots predicted at 0 (with any truth and any std) are left out
    more_mean = np.r_[mean, np.zeros((50, 1))]
    more_truth = np.r_[truth, np.full((50, 1), 1e3)]
    more_std = np.r_[err, np.full((50, 1), 1e-9)]
    np.testing.assert_allclose(uncertainty_gain(more_truth, more_mean, more_std), base)
    # a gene predicted at 0 everywhere, or with no residual, has no score
    assert np.isnan(uncertainty_gain(truth, np.zeros_like(mean), err)[0])
    assert np.isnan(uncertainty_gain(mean, mean, err)[0])


def test_uncertainty_gain_std_of_zero_is_floored_not_infinite():
    mean, err, truth = _errors_case(genes=1)
    std = err.copy()
    std[:5] = 0.0  # exact values claimed at a few spots where the errors are not 0
    got = uncertainty_gain(truth, mean, std)[0]
    assert np.isfinite(got) and got < uncertainty_gain(truth, mean, err)[0] - 0.1
    # no spread anywhere: scored as a constant std (finite, whatever it scores)
    flat = uncertainty_gain(truth, mean, np.zeros_like(err))[0]
    assert np.isfinite(flat)
    assert flat == pytest.approx(uncertainty_gain(truth, mean, np.ones_like(err))[0])
    with pytest.raises(ValueError, match="negative"):
        uncertainty_gain(truth, mean, -err)


def test_consistency_error_hand_computed():
    m = np.c_[[1.0, 1.0], [2.0, 4.0], [1.0, 1.0]]
    y = np.c_[[1.0, 2.0], [2.0, 4.0], [0.0, 0.0]]
    r = consistency_error(m, y)
    assert r[0] == pytest.approx(1.0 / np.sqrt(5.0))
    assert r[1] == 0.0
    assert np.isnan(r[2])


# --------------------------------------------------------------------------------------------
# footprint read-out

#: raster -> cs: scale 3, then translate by (100, 50) (x, y)
SCALED = np.array([[3.0, 0.0, 100.0], [0.0, 3.0, 50.0], [0.0, 0.0, 1.0]])


def _paint_discs(shape, to_cs, centres, radius, values, margin):
    """Raster whose pixels near each disc (pixel centre within radius + margin) hold its value."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    pc = np.c_[xx.ravel() + 0.5, yy.ravel() + 0.5, np.ones(xx.size)] @ to_cs.T
    img = np.full((len(values[0]), h * w), -100.0)
    for c, v in zip(centres, values, strict=True):
        near = np.hypot(pc[:, 0] - c[0], pc[:, 1] - c[1]) <= radius + margin
        img[:, near] = np.asarray(v)[:, None]
    return img.reshape(-1, h, w)


def test_footprint_means_exact_for_constant_discs_scaled_translated():
    centres = np.array([[160.0, 110.0], [251.5, 140.2], [190.3, 230.9]])
    values = [[1.0, 10.0], [2.0, 20.0], [3.5, -7.0]]
    diameter = 25.0
    img = _paint_discs((80, 70), SCALED, centres, diameter / 2, values, margin=3 * 1.5)
    out = footprint_means(img, SCALED, centres, diameter)
    np.testing.assert_allclose(out, values, rtol=0, atol=1e-12)


def test_footprint_means_exact_under_rotation_and_anisotropy():
    theta = 0.4
    lin = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]) @ np.diag(
        [2.0, 1.2])
    to_cs = np.eye(3)
    to_cs[:2, :2], to_cs[:2, 2] = lin, [40.0, -30.0]
    centres = np.array([[60.0, 40.0], [90.0, 70.0]])
    img = _paint_discs((120, 120), to_cs, centres, 6.0, [[5.0], [9.0]], margin=3.0)
    np.testing.assert_allclose(footprint_means(img, to_cs, centres, 12.0), [[5.0], [9.0]],
                               atol=1e-12)


def test_footprint_weights_measure_the_disc_area():
    w = footprint_weights((80, 70), SCALED, [[200.0, 150.0]], 15.0)
    area_px = np.pi * (15.0 / 2 / 3.0) ** 2  # a disc 5 raster pixels wide
    assert w.sum() == pytest.approx(area_px, rel=0.01)


def test_footprint_means_of_a_ramp_is_its_centre_value():
    h, w = 60, 90
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx + 0.5, yy + 0.5]).astype(float)  # raster coordinates of pixel centres
    centres = np.array([[150.0, 120.0], [222.2, 163.7]])
    out = footprint_means(img, SCALED, centres, 16.0)
    inv = np.linalg.inv(SCALED)
    expected = centres @ inv[:2, :2].T + inv[:2, 2]
    np.testing.assert_allclose(out, expected, atol=0.02)


def test_footprint_means_reads_dataarray_channels_and_dask_once():
    centres = np.array([[160.0, 110.0], [251.5, 140.2]])
    img = _paint_discs((80, 70), SCALED, centres, 10.0, [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],
                       margin=5.0)
    arr = xr.DataArray(da.from_array(img, chunks=(1, 80, 70)), dims=("c", "y", "x"),
                       coords={"c": ["A", "HLA-B", "c.3"]})
    out = footprint_means(arr, SCALED, centres, 20.0, channels=["c.3", "A"])
    np.testing.assert_allclose(out, [[3.0, 1.0], [6.0, 4.0]], atol=1e-12)
    with pytest.raises(KeyError, match="not in the raster"):
        footprint_means(arr, SCALED, centres, 20.0, channels=["nope"])


def test_footprint_means_skip_nan_and_mark_uncovered_discs():
    img = np.ones((1, 40, 40))
    img[0, :, :20] = np.nan
    out = footprint_means(img, np.eye(3), [[20.0, 20.0], [500.0, 500.0]], 10.0)
    assert out[0, 0] == pytest.approx(1.0)
    assert np.isnan(out[1, 0])


def test_footprint_means_weight_valid_pixels_by_their_coverage():
    """NaN pixels drop out with their weights; the others count by the area inside the disc."""
    from diffst_sc._core import footprint_weights

    rng = np.random.default_rng(0)
    img = rng.uniform(1, 5, (2, 30, 30))
    img[:, :, :14] = np.nan  # the tissue edge cuts the disc
    centre, diameter = [[15.3, 14.6]], 11.0
    w = footprint_weights((30, 30), np.eye(3), centre, diameter).toarray()[0]
    values = img.reshape(2, -1)
    valid = np.isfinite(values[0])
    assert 0 < w[~valid].sum() < w.sum()  # the disc straddles the edge
    want = (w[valid] * values[:, valid]).sum(1) / w[valid].sum()
    np.testing.assert_allclose(footprint_means(img, np.eye(3), centre, diameter)[0], want)
    as_zero = (w[valid] * values[:, valid]).sum(1) / w.sum()
    np.testing.assert_allclose(footprint_means(img, np.eye(3), centre, diameter, nan_as=0.0)[0],
                               as_zero)
    # off the raster is still NaN, whatever NaN pixels read as
    assert np.isnan(footprint_means(img, np.eye(3), [[500.0, 5.0]], diameter, nan_as=0.0)).all()


def test_layer_footprint_means_through_spatialdata_transformation():
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Scale, Sequence, Translation

    centres = np.array([[160.0, 110.0], [251.5, 140.2], [190.3, 230.9]])
    values = [[1.0, 10.0], [2.0, 20.0], [3.5, -7.0]]
    img = _paint_discs((128, 128), SCALED, centres, 12.5, values, margin=5.0)
    transform = Sequence([Scale([3.0, 3.0], axes=("y", "x")),
                          Translation([50.0, 100.0], axes=("y", "x"))])
    el = Image2DModel.parse(img, dims=("c", "y", "x"), c_coords=["g1", "g2"],
                            transformations={"sec": transform}, scale_factors=[2])
    sdata = SpatialData(images={"layer": el})
    out = layer_footprint_means(sdata, "layer", centres, 25.0, "sec", channels=["g2"])
    np.testing.assert_allclose(out, np.asarray(values)[:, 1:], atol=1e-12)
    with pytest.raises(ValueError, match="not placed in coordinate system"):
        layer_footprint_means(sdata, "layer", centres, 25.0, "other")


def test_resample_to_grid_block_means_and_identity():
    rng = np.random.default_rng(2)
    img = rng.random((2, 12, 16))
    same = resample_to_grid(img, SCALED, (12, 16), SCALED)
    np.testing.assert_allclose(same, img)
    # a target grid of pixels twice as large, aligned: each is the mean of 2 x 2 source pixels
    coarse_to_cs = SCALED @ np.diag([2.0, 2.0, 1.0])
    coarse = resample_to_grid(img, SCALED, (6, 8), coarse_to_cs)
    expected = img.reshape(2, 6, 2, 8, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(coarse, expected)
