"""Plots: checked by what they draw, not only that they run."""

import matplotlib

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


def test_layer_renders_with_spatialdata_plot_where_the_values_are(fitted_c2):
    """spatialdata-plot draws the layer over the H&E: bright where the layer is high."""
    import spatialdata_plot  # noqa: F401

    sdata, _ = fitted_c2
    view = ds.io.section_view(sdata)
    layer = sdata.images["diffst"].sel(c="ERBB2")
    values = np.asarray(layer.values)
    fig, ax = plt.subplots(figsize=(6, 6), dpi=80)
    sdata.pl.render_images("diffst", channel="ERBB2", cmap="gray").pl.show(
        coordinate_systems=view.coordinate_system, ax=ax, colorbar=False, title="")
    ax.set_axis_off()
    fig.canvas.draw()
    rendered = np.asarray(fig.canvas.buffer_rgba())[..., :3].mean(-1) / 255.0
    # Map the layer's pixel centres through the axes transform and compare intensities.
    from diffst_sc.pl._utils import layer_extent

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


def test_spots_overlay_draws_on_tissue(her2st_c2, tmp_path):
    fig = ds.pl.spots(her2st_c2, "ERBB2", show=False)
    ax = fig.axes[0]
    assert len(ax.collections[0].get_paths()) == her2st_c2.tables["table"].n_obs
    plt.close("all")
