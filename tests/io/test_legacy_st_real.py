"""read_legacy_st on her2st C2 (Andersson et al., Nat Commun 2021): spots, pixel size, overlay."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from diffst_sc._core import section_view


def _grey_level(sdata, level: int) -> tuple[np.ndarray, float]:
    """Grey H&E of pyramid level ``level`` in [0, 1] and its downsampling factor."""
    el = sdata.images["he"]
    full = el["scale0"]["image"].shape[1]
    img = np.asarray(el[f"scale{level}"]["image"].data.compute(), dtype=np.float32) / 255.0
    return img.mean(axis=0), full / img.shape[1]


def test_c2_has_the_in_tissue_spots(her2st_c2, her2st_dir):
    spots = pd.read_csv(her2st_dir / "C2" / "spots.tsv", sep="\t")
    table = her2st_c2.tables["table"]
    assert table.n_obs == 187 == int((spots["selected"] == 1).sum())
    assert table.n_vars > 15000
    x = table.layers["counts"]
    assert np.allclose(x.data, np.round(x.data)) and x.data.min() >= 0
    # median UMI per spot of about 10k (data README)
    assert 5_000 < np.median(np.asarray(x.sum(axis=1)).ravel()) < 20_000
    # array positions survive: names are "XxY" = (array_col, array_row)
    name = table.obs_names[0]
    x_, y_ = map(int, name.split("x"))
    assert (table.obs["array_col"].iloc[0], table.obs["array_row"].iloc[0]) == (x_, y_)


def test_c2_pixel_size_and_geometry(her2st_c2):
    view = section_view(her2st_c2)
    assert view.microns_per_pixel == pytest.approx(0.69, abs=0.02)
    assert view.spot_diameter_um == pytest.approx(100.0)
    # neighbours 200 um apart on the array; the median nearest neighbour is a little shorter
    assert 170 < view.spacing_um < 210
    assert view.image.shape[0] == 3 and view.image.shape[1:] == (9911, 9274)


def test_c2_spots_sit_on_tissue(her2st_c2):
    view = section_view(her2st_c2)
    grey, f = _grey_level(her2st_c2, 2)
    yy, xx = np.mgrid[: grey.shape[0], : grey.shape[1]]
    in_spots = np.zeros(grey.shape, bool)
    r = view.diameter_px / 2 / f
    for cx, cy in view.centres_px / f:
        y0, y1 = int(max(cy - r, 0)), int(min(cy + r + 1, grey.shape[0]))
        x0, x1 = int(max(cx - r, 0)), int(min(cx + r + 1, grey.shape[1]))
        sub = (yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2 <= r * r
        in_spots[y0:y1, x0:x1] |= sub
    corner = max(1, grey.shape[0] // 10)
    corners = np.concatenate([grey[:corner, :corner].ravel(), grey[:corner, -corner:].ravel(),
                              grey[-corner:, :corner].ravel(), grey[-corner:, -corner:].ravel()])
    # stained tissue under the spots is clearly darker than the bare glass at the corners
    assert grey[in_spots].mean() < corners.mean() - 0.1
    assert grey[in_spots].mean() < grey[~in_spots].mean()


def test_c2_overlay_figure_shows_spots_where_they_are(her2st_c2, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle
    from PIL import Image

    view = section_view(her2st_c2)
    rgb = np.moveaxis(np.asarray(her2st_c2.images["he"]["scale3"]["image"].data.compute()), 0, -1)
    f = view.image.shape[1] / rgb.shape[0]
    fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
    ax.imshow(rgb, extent=(0, view.image.shape[2], view.image.shape[1], 0))
    for cx, cy in view.centres_px:
        ax.add_patch(Circle((cx, cy), view.diameter_px / 2, color=(0.0, 0.0, 1.0), lw=0))
    ax.set_axis_off()
    fig.canvas.draw()
    to_display = ax.transData
    path = tmp_path / "c2_spots.png"
    fig.savefig(path, dpi=100)
    height = fig.canvas.get_width_height()[1]
    plt.close(fig)

    png = np.asarray(Image.open(path).convert("RGB")).astype(int)
    disp = to_display.transform(view.centres_px)
    cols = np.round(disp[:, 0]).astype(int)
    rows = np.round(height - disp[:, 1]).astype(int)
    at_spots = png[rows, cols]
    # every spot centre is drawn in the circle colour (pure blue)
    assert (at_spots[:, 2] > 200).all() and (at_spots[:, :2] < 60).all()
    # and the image is there too: the blue covers only a small part of the axes
    blue = (png[..., 2] > 200) & (png[..., 0] < 60) & (png[..., 1] < 60)
    assert 0.005 < blue.mean() < 0.2
    assert f > 1
