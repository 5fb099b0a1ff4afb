"""Histology descriptors: what they measure on synthetic images, and on the real H&E."""

from __future__ import annotations

import numpy as np
import pytest

from diffst_sc.pp import (
    COUNT_LIKE,
    DESCRIPTOR_NAMES,
    StainQuantities,
    disc_means,
    histology_descriptors,
    section_quantities,
    stabilise_variance,
    stain_quantities,
)


def _col(name: str, scale: int = 0) -> int:
    return scale * len(DESCRIPTOR_NAMES) + DESCRIPTOR_NAMES.index(name)


def test_white_and_dark_halves_are_told_apart():
    rgb = np.full((3, 200, 400), 255, np.uint8)
    rgb[:, :, :200] = np.array([90, 40, 140], np.uint8)[:, None, None]  # hematoxylin-like purple on the left half
    q = stain_quantities(rgb, (0.0, 0.0), base_px=1.0, pixel_um=2.0)
    d = histology_descriptors(q, np.array([[100.0, 100.0], [300.0, 100.0]]), radius_um=40,
                              scales=(1.0,))
    assert d[0, _col("white_fraction")] == pytest.approx(0.0, abs=1e-6)
    assert d[1, _col("white_fraction")] == pytest.approx(1.0, abs=1e-6)
    assert d[0, _col("mean_H")] > d[1, _col("mean_H")] + 0.05
    assert d[0, _col("std_R")] == pytest.approx(0.0, abs=1e-3)  # a uniform disc


def test_nuclei_are_counted_per_area():
    rgb = np.full((3, 240, 240), 235, np.uint8)
    yy, xx = np.mgrid[:240, :240]
    centres = [(30 + 40 * i, 30 + 40 * j) for i in range(5) for j in range(5)]
    for cy, cx in centres:  # 25 dark discs of radius 5 px (um): about 78 um2 each
        rgb[:, (yy - cy) ** 2 + (xx - cx) ** 2 <= 25] = np.array([60, 30, 120], np.uint8)[:, None]
    q = stain_quantities(rgb, (0.0, 0.0), base_px=1.0, pixel_um=1.0)
    d = histology_descriptors(q, np.array([[110.0, 110.0]]), radius_um=100,
                              scales=(1.0,))
    # A disc of radius 100 um around the middle holds about 19 of the 25 nuclei.
    n_in = sum((cy - 110) ** 2 + (cx - 110) ** 2 <= 100**2 for cy, cx in centres)
    per_1000 = d[0, _col("nuclei_per_1000um2")]
    assert per_1000 * np.pi * 100**2 / 1000 == pytest.approx(n_in, rel=0.15)
    assert d[0, _col("large_nuclei_per_1000um2")] == pytest.approx(per_1000, rel=1e-6)
    assert d.shape == (1, len(DESCRIPTOR_NAMES))


@pytest.mark.parametrize("radius_um", [5.0, 40.0, 150.0])  # working pixels as they are, 4x, 15x
def test_disc_means_are_centred_on_small_and_coarsened_discs(radius_um):
    # A linear ramp: a disc's mean is the ramp at its centre, so any offset of the disc shows.
    h, w = 700, 800
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    q = StainQuantities(np.stack([xx, yy]), origin_px=(10.0, 20.0), pixel_px=2.0, pixel_um=1.0)
    want = np.array([[300.3, 250.8], [420.0, 399.6], [500.5, 333.3]])  # working (col, row)
    centres = (10.0, 20.0) + 2.0 * (want + 0.5)  # (x, y) in image pixels, discs inside
    got = disc_means(q, centres, radius_um)
    np.testing.assert_allclose(got, want, atol=0.05 * max(1.0, radius_um / 6))


def test_rejects_a_float_image():
    with pytest.raises(ValueError, match="uint8"):
        stain_quantities(np.zeros((3, 10, 10), np.float32), (0, 0), 1.0, 1.0)


def test_real_spots_differ_and_scales_stack(her2st_c2_or_demo):
    import diffst_sc as ds

    view = ds.io.section_view(her2st_c2_or_demo)
    c = view.centres_px[:40]
    m = view.spacing_px
    bbox = (c[:, 0].min() - m, c[:, 1].min() - m, c[:, 0].max() + m, c[:, 1].max() + m)
    q = section_quantities(view, bbox, pixel_um=4.0)
    d = histology_descriptors(q, c, radius_um=view.spot_diameter_um / 2)
    assert d.shape == (40, 3 * len(DESCRIPTOR_NAMES))
    assert np.isfinite(d).all()
    # Tissue differs from spot to spot: hematoxylin and nuclear density vary.
    assert d[:, _col("mean_H", 1)].std() > 1e-3
    assert d[:, _col("nuclei_per_1000um2", 1)].std() > 0


def test_fractions_and_densities_are_square_rooted_at_every_scale():
    rng = np.random.default_rng(0)
    d = rng.uniform(0, 4, size=(5, 3 * len(DESCRIPTOR_NAMES)))
    out = stabilise_variance(d.copy())
    for k in range(3):
        for name in DESCRIPTOR_NAMES:
            i = _col(name, k)
            expected = np.sqrt(d[:, i]) if name in COUNT_LIKE else d[:, i]
            np.testing.assert_allclose(out[:, i], expected)
    assert {"white_fraction", "nuclei_per_1000um2", "nuclear_fraction"} <= set(COUNT_LIKE)
    assert not {"mean_R", "mean_H", "std_E"} & set(COUNT_LIKE)
