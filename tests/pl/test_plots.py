"""Plots: checked by what they draw, not only that they run (on her2st C2 or its demo copy)."""

import matplotlib

from diffst_sc._core import section_view

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import diffst_sc as ds  # noqa: E402


def _png(path):
    return plt.imread(path)[..., :3]


def test_superresolved_panels(fitted_c2, tmp_path):
    sdata, _ = fitted_c2
    out = tmp_path / "panels.png"
    ds.pl.superresolved(sdata, ["ERBB2", "IGKC"], save=out, show=False)
    img = _png(out)
    assert img.shape[0] > 500 and img.shape[1] > 1000
    # four panels per row, none blank: each quarter of the first row has real content
    h, w = img.shape[:2]
    for k in range(4):
        quarter = img[: h // 2, k * w // 4:(k + 1) * w // 4]
        assert quarter.std() > 0.05, k
    with pytest.raises(KeyError, match="superresolve"):
        ds.pl.superresolved(sdata, "ERBB2", key="missing", show=False)
    with pytest.raises(KeyError, match="NOTAGENE"):
        ds.pl.superresolved(sdata, "NOTAGENE", show=False)
    plt.close("all")


def test_training_loss_curve(fitted_c2, tmp_path):
    _, model = fitted_c2
    fig = ds.pl.training_loss(model, show=False)
    ax = fig.axes[0]
    steps = ax.lines[0].get_xdata()
    assert steps[-1] == model.history[-1]["step"]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [h["loss"] for h in model.history])
    plt.close("all")


def test_training_loss_refuses_a_model_without_one(fitted_c2):
    """The histology model is fitted in closed form: the plot says so and points elsewhere."""
    import copy

    _, model = fitted_c2
    assert isinstance(model.base, ds.HistologyModel)
    with pytest.raises(TypeError, match=r"no training loss") as err:
        ds.pl.training_loss(model.base, show=False)
    assert "model.diagnostics()" in str(err.value) and "deep=True" in str(err.value)
    untrained = copy.copy(model)
    untrained.history = []
    with pytest.raises(ValueError, match="no training history"):
        ds.pl.training_loss(untrained, show=False)
    with pytest.raises(TypeError, match="not of a dict"):
        ds.pl.training_loss({}, show=False)
    assert not plt.get_fignums()  # refused before drawing


def test_layer_renders_with_spatialdata_plot_where_the_values_are(fitted_c2):
    """spatialdata-plot draws the layer over the H&E: bright where the layer is high."""
    import spatialdata_plot  # noqa: F401

    sdata, _ = fitted_c2
    view = section_view(sdata)
    layer = sdata.images["diffst"].sel(c="ERBB2")
    values = np.asarray(layer.values)
    fig, ax = plt.subplots(figsize=(6, 6), dpi=80)
    sdata.pl.render_images("diffst", channel="ERBB2", cmap="gray").pl.show(
        coordinate_systems=view.coordinate_system, ax=ax, colorbar=False, title="")
    ax.set_axis_off()
    fig.canvas.draw()
    rendered = np.asarray(fig.canvas.buffer_rgba())[..., :3].mean(-1) / 255.0
    # Map the layer's pixel centres through the axes transform and compare intensities.
    from diffst_sc._core import layer_extent

    arr, (x0, x1, y1, y0) = layer_extent(sdata, view, "diffst")
    h, w = values.shape
    jj, ii = np.meshgrid(np.arange(w), np.arange(h))
    xs = x0 + (jj + 0.5) * (x1 - x0) / w
    ys = y0 + (ii + 0.5) * (y1 - y0) / h
    disp = ax.transData.transform(np.c_[xs.ravel(), ys.ravel()])
    px = disp[:, 0].astype(int)
    py = (rendered.shape[0] - disp[:, 1]).astype(int)
    ok = (px >= 0) & (px < rendered.shape[1]) & (py >= 0) & (py < rendered.shape[0])
    drawn = rendered[py[ok], px[ok]]
    from scipy.stats import spearmanr

    # spatialdata-plot may clip the colour range, so compare ranks (any monotone colour map).
    r = spearmanr(drawn, values.ravel()[ok]).statistic
    plt.close(fig)
    assert ok.mean() > 0.9 and r > 0.9, (ok.mean(), r)


def test_mean_and_uncertainty_share_one_unit_and_panels_have_scale_bars(fitted_c2):
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    sdata, _ = fitted_c2
    view = section_view(sdata)
    mean = np.asarray(sdata.images["diffst"].sel(c="ERBB2").values)
    std = np.asarray(sdata.images["diffst_std"].sel(c="ERBB2").values)
    for log1p, unit in ((True, "log1p(counts per spot footprint)"),
                        (False, "counts per spot footprint")):
        fig = ds.pl.superresolved(sdata, "ERBB2", log1p=log1p, show=False)
        panels, bars = fig.axes[:4], fig.axes[4:]
        labels = [b.get_ylabel() for b in bars]
        assert labels == [unit, unit, f"sd, {unit}"], labels
        shown_mean = panels[2].images[-1].get_array()
        shown_std = panels[3].images[-1].get_array()
        assert (shown_mean.mask == (mean == 0)).all()  # outside the tissue: not drawn
        tissue = ~shown_mean.mask
        want_mean = np.log1p(mean) if log1p else mean
        want_std = std / (1 + mean) if log1p else std
        np.testing.assert_allclose(shown_mean.data[tissue], want_mean[tissue], rtol=1e-5)
        np.testing.assert_allclose(shown_std.data[tissue], want_std[tissue], rtol=1e-5)
        # the spots and the mean share the colour range
        assert panels[1].collections[0].get_clim() == panels[2].images[-1].get_clim()
        for ax in panels:
            (bar,) = [a for a in ax.artists if isinstance(a, AnchoredSizeBar)]
            text = bar.txt_label.get_text()
            um = float(text.split()[0]) * (1000 if text.endswith(" mm") else 1)
            length_px = bar.size_bar.get_children()[0].get_width()
            assert length_px * view.microns_per_pixel == pytest.approx(um)
            span_px = abs(np.diff(ax.get_xlim())[0])
            assert 0.1 < length_px / span_px < 0.4
        plt.close(fig)


def test_nan_outside_the_tissue_is_not_drawn_either(fitted_c2):
    """Layers written with ``outside_tissue=np.nan`` plot like those with 0."""
    from spatialdata import SpatialData

    sdata, _ = fitted_c2
    layers = {"nan": sdata.images["diffst"], "nan_std": sdata.images["diffst_std"]}
    layers = {k: v.where(sdata.images["diffst"] > 0) for k, v in layers.items()}
    with_nan = SpatialData(images={**sdata.images, **layers}, shapes=dict(sdata.shapes),
                           tables=dict(sdata.tables))
    zero = ds.pl.superresolved(sdata, "ERBB2", show=False).axes
    nan = ds.pl.superresolved(with_nan, "ERBB2", key="nan", show=False).axes
    for k in (2, 3):
        a, b = zero[k].images[-1].get_array(), nan[k].images[-1].get_array()
        assert (a.mask == b.mask).all() and b.mask.any()
        np.testing.assert_array_equal(a.data[~a.mask], b.data[~b.mask])
    plt.close("all")


def test_scale_bar_lengths_are_round():
    """The bar is the 1, 2 or 5 x 10^k um closest (in ratio) to a fifth of the panel's width."""
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    round_lengths = np.array([m * 10.0**k for k in range(-1, 6) for m in (1, 2, 5)])
    labels = []
    for n_columns in (2, 5, 12, 100):  # the demo section cut to its first columns of spots
        sdata = ds.datasets.her2st_demo()
        view = section_view(sdata)
        column = np.round(view.centres_px[:, 0] / view.spacing_px)
        keep = column < column.min() + n_columns
        sdata.tables["table"] = sdata.tables["table"][keep].copy()
        ax = ds.pl.spots(sdata, "ERBB2", show=False).axes[0]
        (bar,) = [a for a in ax.artists if isinstance(a, AnchoredSizeBar)]
        text = bar.txt_label.get_text()
        um = float(text.split()[0]) * (1000 if text.endswith(" mm") else 1)
        span_um = abs(np.diff(ax.get_xlim())[0]) * view.microns_per_pixel
        want = round_lengths[np.argmin(np.abs(np.log(round_lengths / (span_um / 5))))]
        assert um == pytest.approx(want), (text, span_um)
        length_px = bar.size_bar.get_children()[0].get_width()
        assert length_px * view.microns_per_pixel == pytest.approx(um)
        labels.append(text)
        plt.close("all")
    assert labels == ["100 µm", "200 µm", "500 µm", "1 mm"]


def test_spots_overlay_draws_on_tissue(her2st_c2_or_demo, tmp_path):
    sdata = her2st_c2_or_demo
    fig = ds.pl.spots(sdata, "ERBB2", show=False)
    ax = fig.axes[0]
    assert len(ax.collections[0].get_paths()) == sdata.tables["table"].n_obs
    assert fig.axes[1].get_ylabel() == "log1p(counts per spot footprint)"
    plt.close("all")
    fig = ds.pl.spots(sdata, log1p=False, vmin=0, vmax=5000, show=False)
    assert fig.axes[1].get_ylabel() == "total counts per spot"
    assert fig.axes[0].collections[0].get_clim() == (0, 5000)
    plt.close("all")
