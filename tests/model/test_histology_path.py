"""The histology path's maps: bounded-memory descriptors and the deviation computed in G maps."""

from __future__ import annotations

import numpy as np
import pytest

import diffst_sc as ds
from diffst_sc._core import Grid, section_view
from diffst_sc.model import FootprintRows, GridSpec, HistologyPath, Ridge, cells_of, descriptor_maps


@pytest.fixture(scope="module")
def demo_view():
    sdata = ds.datasets.her2st_demo()
    return section_view(sdata)


@pytest.fixture(scope="module")
def small_grid(demo_view):
    """A grid over the middle of the embedded section (a few spots wide)."""
    full = GridSpec().grid_for(demo_view)
    h, w = min(full.height, 48), min(full.width, 64)
    top, left = (full.height - h) // 2, (full.width - w) // 2
    return Grid(full.x0 + left * full.pixel, full.y0 + top * full.pixel, full.pixel, h, w)


def test_windowed_descriptors_match_one_read(demo_view, small_grid):
    """Reading the H&E window by window (a slide) describes the tissue as one read does: the
    colour means to the resize's rounding; the fractions and nuclear densities, which a pixel's
    last 8-bit level can flip, alike."""
    from diffst_sc.pp import DESCRIPTOR_NAMES

    radius = demo_view.spot_diameter_um / 2
    whole = descriptor_maps(demo_view, small_grid, radius)
    windows = descriptor_maps(demo_view, small_grid, radius, window_bytes=2**23)
    assert windows.shape == whole.shape
    assert np.isfinite(windows).all()
    means = np.array(["mean" in n for n in DESCRIPTOR_NAMES * (len(whole) // 25)])
    np.testing.assert_allclose(windows[means], whole[means], atol=1e-4)
    corr = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in
            zip(windows[~means], whole[~means], strict=True)]
    assert np.median(corr) > 0.999 and min(corr) > 0.98


def test_only_pixels_near_spots_are_described(demo_view):
    """Pixels far from every spot, which lie in no cell, are not described: they hold one value
    per descriptor (its mean over the described pixels); the cells' pixels are described."""
    grid = GridSpec(margin_spacings=4.0).grid_for(demo_view)
    d = descriptor_maps(demo_view, grid, demo_view.spot_diameter_um / 4).reshape(125, -1)
    dist = np.linalg.norm(grid.pixel_centres()[:, None] - demo_view.centres_px[None], axis=2)
    far = dist.min(1) > 3 * demo_view.spacing_px
    cells = cells_of(demo_view, grid) >= 0
    assert far.sum() > 100
    np.testing.assert_array_equal(d[:, far], np.repeat(d[:, far][:, :1], far.sum(), axis=1))
    assert (d[:, cells].std(1) > 0).all()


def _from_cells(values: np.ndarray, cell_of: np.ndarray) -> np.ndarray:
    """``(C, H * W)`` each pixel's values minus their mean over its cell; 0 outside every cell."""
    out = np.zeros(values.shape)
    for c in np.unique(cell_of[cell_of >= 0]):
        members = cell_of == c
        out[:, members] = values[:, members] - values[:, members].mean(1, keepdims=True)
    return out


def test_cells_are_the_nearest_spot_within_a_spacing(demo_view, small_grid):
    cell_of = cells_of(demo_view, small_grid)
    assert cell_of.shape == (small_grid.height * small_grid.width,)
    d = np.linalg.norm(small_grid.pixel_centres()[:, None] - demo_view.centres_px[None], axis=2)
    inside = d.min(1) <= demo_view.spacing_px
    np.testing.assert_array_equal(cell_of[inside], d.argmin(1)[inside])
    assert (cell_of[~inside] == -1).all() and inside.mean() > 0.9


def test_deviation_equals_the_ridge_on_deviated_features(demo_view, small_grid):
    """The path's map is the ridge applied to each pixel's deviations from its cell, the
    descriptors' in units of their spread over the cells' pixels (the section's own units)."""
    rng = np.random.default_rng(0)
    radius = demo_view.spot_diameter_um / 2
    d = descriptor_maps(demo_view, small_grid, radius)
    g = 5
    lr = rng.normal(size=(g, small_grid.height, small_grid.width)).astype(np.float32)
    cell_of = cells_of(demo_view, small_grid)
    deviated = _from_cells(d.reshape(len(d), -1), cell_of)
    spread = np.maximum(deviated[:, cell_of >= 0].std(1), 1e-8)
    feats = deviated.T / spread
    own = _from_cells(lr.reshape(g, -1), cell_of).T
    y = 0.5 * own + feats[:, :g] * 0.1 + rng.normal(size=own.shape) * 0.01
    path = HistologyPath(Ridge.fit(feats, y, alpha=10.0, own=own), radius_ratio=0.5)
    expected = np.clip(path.ridge.predict(feats, own), -3, 3).T.reshape(g, *lr.shape[1:])
    got = path.deviation(d, lr, cell_of)
    np.testing.assert_allclose(got, expected, atol=1e-3)
    # Pixels outside every spot's cell depart by the intercept only.
    outside = (cell_of < 0).reshape(lr.shape[1:])
    if outside.any():
        np.testing.assert_allclose(got[:, outside].std(1), 0, atol=1e-5)


def test_gain_scales_the_maps_whole_departure_from_the_cells(demo_view, small_grid):
    """A gain of 0.5 halves how far the base map (interpolation + path) departs from each
    cell's mean, the interpolation's slope included, not the path's share alone."""
    rng = np.random.default_rng(4)
    d = descriptor_maps(demo_view, small_grid, demo_view.spot_diameter_um / 2)
    g, n_feats = 4, len(d)
    lr = rng.normal(size=(g, small_grid.height, small_grid.width)).astype(np.float32)
    cell_of = cells_of(demo_view, small_grid)
    x = rng.normal(size=(200, n_feats))
    own = rng.normal(size=(200, g))
    path = HistologyPath(Ridge.fit(x, x[:, :g] * 0.05 - 0.3 * own, alpha=10.0, own=own), 0.5)
    lr_dev = _from_cells(lr.reshape(g, -1), cell_of).reshape(lr.shape)
    whole = path.deviation(d, lr, cell_of) + lr_dev
    half = path.deviation(d, lr, cell_of, gain=0.5) + lr_dev
    inside = (cell_of >= 0).reshape(lr.shape[1:])
    assert np.abs(whole[:, inside]).max() < 3  # no clipping in the comparison
    np.testing.assert_allclose(half[:, inside], 0.5 * whole[:, inside], atol=1e-4)


def test_gain_is_one_on_the_training_pairs_and_follows_the_spots_departures():
    """Measured on the pairs the path was fitted on, the gain is 1; on a section whose spots
    depart from their parents half as much as those pairs', it is 0.5."""
    rows = _synthetic_rows(np.random.default_rng(5))
    path = HistologyPath.fit([rows], 0.5)
    assert path.gain([rows]) == pytest.approx(1.0, abs=1e-9)
    total = rows.target - rows.lr + rows.own  # each spot's departure from its parent, + offset
    offset = _parent_means(total, rows.parent)
    calmer = FootprintRows(rows.features, rows.own, rows.lr,
                           rows.lr - rows.own + offset + 0.5 * (total - offset), rows.parent,
                           rows.position)
    assert path.gain([calmer]) == pytest.approx(0.5, rel=1e-6)
    # The reference slope is saved with the model; a path saved before it was is left at 1.
    saved = path.to_dict()
    assert HistologyPath.from_dict(saved).gain([calmer]) == pytest.approx(0.5, rel=1e-6)
    del saved["fitted_slope"]
    assert HistologyPath.from_dict(saved).gain([calmer]) == 1.0


def _synthetic_rows(rng, n_parents: int = 300, g: int = 3, d: int = 6, noise: float = 0.3):
    """Footprint rows of 4 children per parent whose departures follow the features."""
    parent = np.repeat(np.arange(n_parents), 4)
    n = len(parent)
    x = rng.normal(size=(n, d))
    lr = rng.normal(size=(n, g))
    offset = rng.normal(scale=5.0, size=(n_parents, g))[parent]  # fixed by the measurement
    target = lr + x[:, :g] * 0.8 + offset + rng.normal(scale=noise, size=(n, g))
    side = int(np.ceil(np.sqrt(n_parents)))
    position = np.c_[parent // side, parent % side] * 8.0 + rng.uniform(0, 4, size=(n, 2))
    return FootprintRows(x.astype(np.float32), np.zeros((n, g), np.float32),
                         lr.astype(np.float32), target.astype(np.float32), parent, position)


def test_a_path_saved_with_other_inputs_is_refused():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(30, 2))
    saved = HistologyPath(Ridge.fit(x, y, 1.0, own=y * 0.5), 0.5).to_dict()
    assert HistologyPath.from_dict(saved).radius_ratio == 0.5
    saved["inputs"] = "descriptors(0.5, 1.0, 1.5)+all-genes"
    with pytest.raises(ValueError, match="fit the model again"):
        HistologyPath.from_dict(saved)


def test_model_error_is_held_out_and_within_each_spot():
    """The error the path adds to the uncertainty is what remains once the measurement has set
    each input spot's total: an offset shared by a spot's children does not count, and it is
    measured on tiles the fit did not see."""
    noise = 0.3
    rows = _synthetic_rows(np.random.default_rng(3), noise=noise)
    x, lr, target, parent = rows.features, rows.lr, rows.target, rows.parent
    n, g = lr.shape
    path = HistologyPath.fit([rows], 0.5)
    sd = np.asarray(path.residual_sd)
    # Within a parent of 4 the noise keeps 3/4 of its variance; the offsets (sd 5) add nothing.
    assert ((sd > 0.8 * noise * np.sqrt(0.75)) & (sd < 2 * noise)).all(), sd
    # Held out: above the error of the same fit on the spots it was fitted to.
    fitted = np.clip(path.ridge.predict(x - _parent_means(x, parent), np.zeros((n, g))), -3, 3)
    y = target - lr
    in_sample = np.sqrt(((fitted - (y - _parent_means(y, parent))) ** 2).mean(0))
    assert (sd > in_sample).all()
    # Saved with the model.
    back = HistologyPath.from_dict(path.to_dict())
    np.testing.assert_allclose(back.residual_sd, path.residual_sd)


def _parent_means(values, parent):
    sums = np.zeros((parent.max() + 1, values.shape[1]))
    np.add.at(sums, parent, values)
    return (sums / np.bincount(parent)[:, None])[parent]


def test_the_section_fitted_on_alone_is_recognised_without_reading_its_he(her2st_c2_or_demo):
    """superresolve on the section the path was fitted on alone takes gain 1 from the pairs'
    fingerprint (reading the H&E again costs minutes on a slide); a changed count is another
    section, whose gain is measured."""
    import copy
    import dataclasses

    from diffst_sc.model import section_calibration

    sdata = copy.deepcopy(her2st_c2_or_demo)
    genes = ["ERBB2", "IGKC", "COL1A1", "FASN", "KRT19", "MGP"]
    model = ds.tl.fit(sdata, genes=genes, progress=False)
    path = dataclasses.replace(model.path, fitted_slope=1e6)  # measured: about 0
    view = section_view(sdata)
    # the spots fit flagged as failed captures and superresolve leaves out
    flagged = view.adata.obs["diffst_low_counts"].to_numpy(bool)
    kept = dataclasses.replace(view, adata=view.adata[~flagged],
                               centres_px=view.centres_px[~flagged])
    cal = section_calibration(path, kept, genes, model.grid_spec)
    assert cal.gain == 1.0
    np.testing.assert_array_equal(cal.weight, model.path.held_out_weight)
    np.testing.assert_array_equal(cal.dispersion, model.path.dispersion)
    changed = kept.adata.copy()
    counts = (changed.X if kept.layer is None else changed.layers[kept.layer]).tolil()
    counts[0, list(changed.var_names).index("ERBB2")] += 1
    if kept.layer is None:
        changed.X = counts.tocsr()
    else:
        changed.layers[kept.layer] = counts.tocsr()
    other = dataclasses.replace(kept, adata=changed)
    assert section_calibration(path, other, genes, model.grid_spec).gain < 0.01


def test_histology_weights_follow_what_held_out_pairs_support():
    """A gene whose held-out departures follow the histology keeps weight 1; one whose
    departures are unrelated to it gets about 0; weights stay in [0, 1]."""
    from diffst_sc.model import histology_weights

    rng = np.random.default_rng(0)
    n, g = 400, 6
    p = rng.standard_normal((n, g))
    e = p.copy()
    e[:, :3] = p[:, :3] * 1.5 + 0.3 * rng.standard_normal((n, 3))  # followed (slope above 1)
    e[:, 3:] = rng.standard_normal((n, 3))  # unrelated
    w = histology_weights((e * p).sum(0), (p * p).sum(0), (e * e).sum(0), np.full(g, n))
    assert np.all(w[:3] == 1.0)
    assert np.all(w[3:] < 0.2) and np.all(w >= 0)


def test_an_image_whose_tissue_misses_the_spots_is_refused_before_any_work(her2st_c2_or_demo):
    """The section's H&E turned upside down (as another section's image would be): most spots
    fall on background, and fit and superresolve refuse it, naming the image and what to check,
    before anything is written."""
    import copy

    from spatialdata.models import Image2DModel
    from spatialdata.transformations import get_transformation

    genes = ["ERBB2", "IGKC", "COL1A1", "FASN", "KRT19", "MGP"]
    sdata = copy.deepcopy(her2st_c2_or_demo)
    model = ds.tl.fit(sdata, genes=genes, progress=False)
    key = section_view(sdata).image_key
    img = sdata.images[key]
    arr = np.asarray(img["scale0"].image.values if hasattr(img, "children") else img.values)
    sdata.images[key] = Image2DModel.parse(arr[:, ::-1, ::-1].copy(), dims=("c", "y", "x"),
                                           transformations=get_transformation(img, get_all=True))
    with pytest.raises(ValueError, match=f"lie on tissue in the image '{key}'.*scale factors"):
        ds.tl.fit(sdata, genes=genes, progress=False, key_added="other")
    with pytest.raises(ValueError, match="not this section's H&E"):
        ds.tl.superresolve(sdata, model=model, progress=False)
    assert "diffst" not in sdata.images and "other" not in sdata.tables["table"].uns


def test_count_dispersion_measures_the_spread_beyond_counting_noise():
    """Counts about a known map: Poisson counts give about 0, negative-binomial counts a
    dispersion that grows with theirs (measured, as scored, after each parent's counts are
    shared among its spots, which takes part of the spread away)."""
    from diffst_sc.model import FootprintRows, count_dispersion

    rng = np.random.default_rng(1)
    n, g = 4000, 3
    parent = np.repeat(np.arange(n // 4), 4)
    lr = rng.normal(0, 1, (n, g)).astype(np.float32)
    mu, sd = np.full(g, 2.0), np.full(g, 0.5)
    rate = np.expm1(lr * sd + mu)  # the map's densities, taken as the counts' means
    counts = np.c_[rng.poisson(rate[:, 0]),
                   rng.poisson(rng.gamma(1 / 0.2, rate[:, 1] * 0.2)),
                   rng.poisson(rng.gamma(1 / 1.0, rate[:, 2] * 1.0))].astype(float)
    rows = FootprintRows(np.zeros((n, 1), np.float32), np.zeros((n, g), np.float32), lr,
                         lr, parent, np.zeros((n, 2)), counts, mu, sd)
    est = count_dispersion([rows], np.zeros((n, g)))
    assert est[0] < 0.02
    assert 0.05 < est[1] < est[2]


def test_count_spread_scales_intervals_to_where_held_out_counts_fall():
    """Where the variance model is right (Poisson counts about the map), the interval scale
    is about 1; a parent's only target adds no spread, so there is nothing to scale."""
    from diffst_sc.model import FootprintRows, count_spread

    rng = np.random.default_rng(2)
    n = 4000
    parent = np.repeat(np.arange(n // 4), 4)
    lr = rng.normal(0, 1, (n, 1)).astype(np.float32)
    mu, sd = np.full(1, 3.0), np.full(1, 0.3)
    rate = np.expm1(lr * sd + mu)

    def spread(counts, parents=parent):
        rows = FootprintRows(np.zeros((n, 1), np.float32), np.zeros((n, 1), np.float32), lr,
                             lr, parents, np.zeros((n, 2)), counts, mu, sd)
        return count_spread([rows], np.zeros((n, 1)))

    c, scale = spread(rng.poisson(rate).astype(float))
    assert c[0] < 0.02 and 0.85 < scale < 1.2
    # each parent's only target holds all of its counts: no spread, nothing to scale
    c, scale = spread(rng.poisson(rate).astype(float), np.arange(n))
    assert scale == 1.0


def test_the_shipped_reference_loads_by_name_and_a_fit_starts_from_it(her2st_c2_or_demo):
    """The her2st reference loads by name with its provenance; a fit given it records, per
    gene, how much of it the held-out tiles kept (0 for a gene the reference lacks), and a
    reference of another scale is refused."""
    import copy
    import dataclasses

    ref = ds.model.HistologyModel.reference("her2st")
    assert len(ref.genes) >= 100 and ref.training["name"] == "her2st"
    assert "Andersson" in (ds.model.REFERENCES["her2st"])
    with pytest.raises(KeyError, match="ships"):
        ds.model.HistologyModel.reference("mouse")
    sdata = copy.deepcopy(her2st_c2_or_demo)
    genes = ["ERBB2", "IGKC", "COL1A1", "FASN", "KRT19", "MGP"]
    absent = next(g for g in section_view(sdata).genes if g not in ref.genes)
    model = ds.tl.fit(sdata, genes=[*genes, absent], reference="her2st", progress=False)
    strength = np.asarray(model.path.prior_strength)
    assert strength.shape == (7,) and np.all((strength >= 0) & (strength <= 1))
    assert strength[:6].max() > 0  # her2st's own tissue: the reference is kept for some genes
    assert model.training["reference"] == "her2st"
    again = ds.model.HistologyModel.from_uns(model.to_uns())
    np.testing.assert_array_equal(again.path.prior_strength, model.path.prior_strength)
    other = dataclasses.replace(ref.path, radius_ratio=0.3)
    with pytest.raises(ValueError, match="same scale"):
        ds.tl.fit(sdata, genes=genes, progress=False,
                  reference=ds.model.HistologyModel(ref.genes, other, ref.grid_spec))
    with pytest.raises(ValueError, match="neither a shipped reference"):
        ds.tl.fit(sdata, genes=genes, progress=False, reference="no-such-thing")
