"""``evaluate`` on real data: her2st C2 degraded 2 x 2 (spot truth), Xenium crop (grid truth)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.spatial import cKDTree

import diffst_sc as ds
from diffst_sc._core import section_view
from diffst_sc.tl import evaluate

LAYER_PX = 24.0  # H&E pixels per layer pixel (about 17 um on her2st)


@pytest.fixture(scope="module")
def c2_degraded(her2st_c2, bench_genes):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ds.pp.degrade(her2st_c2, mode="square", factor=2, genes=bench_genes)


def _layer(values_per_hr_spot, hr_centres_px, cs, genes, pixel=LAYER_PX):
    """A layer over the H&E whose pixels take the value of their nearest HR spot."""
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Scale, Sequence, Translation

    lo = hr_centres_px.min(0) - 400
    n = np.ceil((hr_centres_px.max(0) + 400 - lo) / pixel).astype(int)
    gx, gy = np.meshgrid(lo[0] + (np.arange(n[0]) + 0.5) * pixel,
                         lo[1] + (np.arange(n[1]) + 0.5) * pixel)
    _, nearest = cKDTree(hr_centres_px).query(np.c_[gx.ravel(), gy.ravel()])
    img = values_per_hr_spot[nearest].T.reshape(len(genes), n[1], n[0]).astype(np.float32)
    transform = Sequence([Scale([pixel, pixel], axes=("y", "x")),
                          Translation([lo[1], lo[0]], axes=("y", "x"))])
    return Image2DModel.parse(img, dims=("c", "y", "x"), c_coords=genes,
                              transformations={cs: transform}, chunks=(1, n[1], n[0]))


def _with_layers(lr, mean, std, genes):
    from spatialdata import SpatialData

    hr = lr.tables["hr_table"]
    cs = list(lr.coordinate_systems)[0]
    out = SpatialData(images=dict(lr.images), shapes=dict(lr.shapes),
                      tables={k: v.copy() for k, v in lr.tables.items()})
    out.images["diffst"] = _layer(mean, hr.obsm["spatial"], cs, genes)
    if std is not None:
        out.images["diffst_std"] = _layer(std, hr.obsm["spatial"], cs, genes)
    return out


def _counts(adata, genes):
    return np.asarray(adata[:, genes].layers["counts"].toarray(), dtype=np.float64)


def test_uniform_layer_on_c2_scores_like_copying_lr(c2_degraded, bench_genes):
    lr = c2_degraded
    hr, table = lr.tables["hr_table"], lr.tables["table"]
    # the uniform baseline as a map: each HR spot's area holds its pseudo-spot's counts over
    # the whole footprint (a block cut by the tissue's edge measured only part of it)
    whole = _counts(table, bench_genes) / table.obs["diffst_measured_fraction"].to_numpy()[:, None]
    per_spot = whole[hr.obs["lr_spot"].to_numpy()]
    sdata = _with_layers(lr, per_spot, 0.3 * per_spot, bench_genes)
    res = evaluate(sdata)
    mean = res.loc["mean"]
    assert list(res.index[:-1]) == bench_genes
    assert abs(mean["wPCC"]) < 1e-9
    assert 0.74 < mean["PCC"] < 0.77  # BENCHMARK.md's reference for C2: 0.753
    assert 0.66 < mean["SSIM"] < 0.69  # reference: 0.675
    assert 0.13 < mean["NRMSE"] < 0.15  # reference: 0.140
    assert 0 < mean["coverage"] < 1
    # a std proportional to the mean is a trivial shape: it says nothing about where the
    # errors are (0 at best, below 0 where counting noise is the better trivial shape)
    assert np.isfinite(mean["unc_gain"]) and mean["unc_gain"] <= 1e-9
    # the map averaged over each 200 um pseudo-spot gives back those counts (up to the edges of
    # blocks with missing spots)
    assert mean["consistency_error"] < 0.02
    summary = sdata.tables["table"].uns["diffst_evaluation"]
    assert summary["wPCC"] == pytest.approx(mean["wPCC"])
    assert summary["n_genes"] == 100 and summary["truth_kind"] == "spots"


def test_perfect_layer_on_c2_scores_perfectly(c2_degraded, bench_genes):
    lr = c2_degraded
    truth = _counts(lr.tables["hr_table"], bench_genes)
    # any common scale: renormalisation to the pseudo-spots restores the counts
    sdata = _with_layers(lr, 3.7 * truth, np.zeros_like(truth), bench_genes)
    res = evaluate(sdata, genes=bench_genes[:20])
    mean = res.loc["mean"]
    assert mean["PCC"] == pytest.approx(1.0)
    assert mean["NRMSE"] == pytest.approx(0.0, abs=1e-6)
    assert mean["SSIM"] == pytest.approx(1.0)
    assert mean["wPCC"] == pytest.approx(1.0)
    assert mean["coverage"] == pytest.approx(1.0)  # zero-width interval on the exact truth
    assert len(res) == 21


def test_nan_outside_the_tissue_scores_as_no_counts(c2_degraded, bench_genes):
    """superresolve writes NaN outside the tissue: evaluate reads it as 0, as it read the 0s."""
    lr = c2_degraded
    hr, table = lr.tables["hr_table"], lr.tables["table"]
    genes = bench_genes[:10]
    per_spot = _counts(table, bench_genes)[hr.obs["lr_spot"].to_numpy()]
    zero = _with_layers(lr, per_spot, 0.3 * per_spot, bench_genes)
    nan = _with_layers(lr, per_spot, 0.3 * per_spot, bench_genes)
    # blank every pixel farther than a spot radius from the HR centres (and a few inside
    # footprints of the edge, so that some discs straddle the blank)
    cs = list(lr.coordinate_systems)[0]
    from diffst_sc._core import element_raster

    raster, affine = element_raster(zero, "diffst", cs)
    h, w = raster.shape[1:]
    jj, ii = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    xy = np.c_[jj.ravel(), ii.ravel(), np.ones(h * w)] @ affine.T
    view = section_view(lr, table_key="hr_table", coordinate_system=cs)
    d = cKDTree(hr.obsm["spatial"]).query(xy[:, :2] @ np.linalg.inv(view.image_to_cs)[:2, :2].T
                                           + np.linalg.inv(view.image_to_cs)[:2, 2])[0]
    blank = (d > 0.4 * view.diameter_px).reshape(h, w)
    assert 0.3 < blank.mean() < 0.95
    for sdata, fill in ((zero, 0.0), (nan, np.nan)):
        for key in ("diffst", "diffst_std"):
            values = np.asarray(sdata.images[key].values).copy()
            values[:, blank] = fill
            sdata.images[key] = _layer_like(sdata.images[key], values)
    a, b = evaluate(zero, genes=genes), evaluate(nan, genes=genes)
    np.testing.assert_allclose(b.to_numpy(float), a.to_numpy(float), equal_nan=True)
    assert np.isfinite(b.loc["mean"].to_numpy(float)).all()


def _layer_like(el, values):
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import get_transformation

    return Image2DModel.parse(values, dims=("c", "y", "x"),
                              c_coords=list(map(str, el.coords["c"].values)),
                              transformations=get_transformation(el, get_all=True))


def test_coverage_needs_std_layer_and_follows_its_width(c2_degraded, bench_genes):
    lr = c2_degraded
    hr, table = lr.tables["hr_table"], lr.tables["table"]
    per_spot = _counts(table, bench_genes)[hr.obs["lr_spot"].to_numpy()]
    genes = bench_genes[:10]
    no_std = _with_layers(lr, per_spot, None, bench_genes)
    assert np.isnan(evaluate(no_std, genes=genes).loc["mean", "coverage"])
    narrow = evaluate(_with_layers(lr, per_spot, 0.05 * per_spot, bench_genes), genes=genes)
    wide = evaluate(_with_layers(lr, per_spot, 5.0 * per_spot, bench_genes), genes=genes)
    assert narrow.loc["mean", "coverage"] < wide.loc["mean", "coverage"]
    assert wide.loc["mean", "coverage"] > 0.9


def test_errors_say_what_to_do(c2_degraded, bench_genes):
    with pytest.raises(KeyError, match="superresolve"):
        evaluate(c2_degraded, key="diffst")
    hr, table = c2_degraded.tables["hr_table"], c2_degraded.tables["table"]
    per_spot = _counts(table, bench_genes)[hr.obs["lr_spot"].to_numpy()]
    sdata = _with_layers(c2_degraded, per_spot, None, bench_genes)
    with pytest.raises(KeyError, match="not in layer 'diffst'"):
        evaluate(sdata, genes=["ERBB2", "NOT_A_GENE"])
    with pytest.raises(ValueError, match="interval"):
        evaluate(sdata, interval=90)


def test_grid_truth_on_xenium_crop(xenium_sdata):
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import get_transformation

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lr = ds.pp.degrade(xenium_sdata, mode="transcripts", hr_pixel_um=8.0)
    truth = lr.images["hr_truth"]
    transform = get_transformation(truth, get_all=True)
    cs = next(iter(transform))
    a = transform[cs].to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))
    radius = float(lr.shapes["spots"]["radius"].iloc[0])
    # the truth itself in LR-spot units (counts of a pseudo-spot's disc), placed like the truth
    to_lr_units = np.pi * radius**2 / abs(np.linalg.det(np.asarray(a)[:2, :2]))
    genes = [str(g) for g in truth.coords["c"].values]
    lr.images["diffst"] = Image2DModel.parse(truth.data.compute() * to_lr_units,
                                             dims=("c", "y", "x"), c_coords=genes,
                                             transformations=transform)
    res = evaluate(lr)
    mean = res.loc["mean"]
    assert mean["PCC"] == pytest.approx(1.0)
    assert mean["SSIM"] == pytest.approx(1.0)
    assert mean["NRMSE"] == pytest.approx(0.0, abs=1e-9)
    # the pixels' counts summed over each disc's area match the transcripts counted in the disc,
    # up to transcripts in pixels that straddle the disc's edge
    assert mean["consistency_error"] < 0.3
    assert lr.tables["table"].uns["diffst_evaluation"]["truth_kind"] == "grid"
    # a map off by a factor loses on NRMSE, hardly on correlation (log1p bends it a little)
    lr.images["diffst"] = Image2DModel.parse(truth.data.compute() * to_lr_units * 2,
                                             dims=("c", "y", "x"), c_coords=genes,
                                             transformations=transform)
    doubled = evaluate(lr).loc["mean"]
    assert 0.99 < doubled["PCC"] < 1.0
    assert doubled["NRMSE"] > 0.05


def test_the_default_maps_uncertainty_locates_its_errors(c2_degraded, bench_genes):
    """Fitted on the pseudo-spots alone, the default model's std beats both trivial shapes
    (proportional to the mean, or to its square root) at the held-back spots, and its 90%
    intervals hold there: the spread is conditional on what each footprint's spot measured."""
    from spatialdata import SpatialData

    genes = bench_genes[:30]
    lr = c2_degraded
    seen = SpatialData(images={"he": lr.images["he"]}, shapes={"spots": lr.shapes["spots"]},
                       tables={"table": lr.tables["table"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.tl.fit(seen, genes=genes, progress=False)
        ds.tl.superresolve(seen, progress=False)
    lr.images["diffst"], lr.images["diffst_std"] = seen.images["diffst"], seen.images["diffst_std"]
    try:
        mean = evaluate(lr, genes=genes).loc["mean"]
    finally:
        del lr.images["diffst"], lr.images["diffst_std"]
    assert mean["unc_gain"] > 0.02
    assert 0.85 <= mean["coverage"] <= 0.95
