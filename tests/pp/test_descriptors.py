"""Histology descriptors: what they measure on synthetic images, and on the real H&E."""

from __future__ import annotations

import numpy as np
import pytest

from diffst_sc._core import section_view
from diffst_sc.pp import (
    BASE_UM,
    COUNT_LIKE,
    DESCRIPTOR_NAMES,
    StainQuantities,
    disc_means,
    histology_descriptors,
    reading_pixel_um,
    section_descriptors,
    section_quantities,
    stabilise_variance,
    stain_quantities,
    working_pixel_um,
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


@pytest.mark.parametrize("radius_um", [5.0, 13.0, 40.0, 150.0])  # blocks of 1, 2, 6, 25 px
def test_few_and_many_centres_give_the_same_disc_means(radius_um):
    """A few centres are read from the pixels around them, many by FFT over the whole window:
    the same means, at the window's edges, past them and on blocks the window cuts too."""
    rng = np.random.default_rng(1)
    h, w = 301, 257  # a multiple of no block
    q = StainQuantities(rng.random((3, h, w), dtype=np.float32), origin_px=(5.0, 7.0),
                        pixel_px=1.5, pixel_um=1.0)
    few = np.array([[5.0, 7.0], [5 + 1.5 * w, 7 + 1.5 * h], [200.0, 30.0], [-20.0, 250.0]])
    direct = disc_means(q, few, radius_um)
    by_fft = disc_means(q, np.tile(few, (30000, 1)), radius_um)[:len(few)]
    np.testing.assert_allclose(direct, by_fft, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("image_um", [0.25, 0.69, 1.38, 3.0, 18.0])
def test_the_working_pixel_is_never_finer_than_the_image(image_um):
    for radius_um in (10.0, 25.0, 50.0, 100.0):
        pixel = working_pixel_um(radius_um, (0.5, 1.0), image_um)
        read = reading_pixel_um(image_um, pixel)
        assert pixel >= max(image_um, BASE_UM)
        # an image finer than the working pixel is read at BASE_UM (its nuclei), one as coarse
        # or coarser as it is; either way a working pixel is a whole number of read pixels
        assert read == (image_um if image_um >= pixel else BASE_UM)
        assert pixel / read == pytest.approx(round(pixel / read))
    # an image finer than the discs need: the working pixel they need, as before
    assert working_pixel_um(25.0, (0.5,), 0.69) == working_pixel_um(25.0, (0.5,)) == 2.0


def test_a_coarse_image_is_read_as_it_is_and_described_alike(her2st_c2_or_demo):
    """The section's H&E at 16 um per pixel (a Visium lowres image) is read on its own pixels,
    not upsampled to 1 um; the colour means over discs are those of the upsampled read."""
    from dataclasses import replace


    view = section_view(her2st_c2_or_demo)
    f = int(round(16.0 / view.microns_per_pixel))
    img = np.asarray(view.image)[:3].astype(np.float32)
    h, w = img.shape[1] // f * f, img.shape[2] // f * f
    small = img[:, :h, :w].reshape(3, h // f, f, w // f, f).mean((2, 4)).round().astype(np.uint8)
    coarse = replace(view, image=small, image_scales=[small], centres_px=view.centres_px / f,
                     diameter_px=view.diameter_px / f, microns_per_pixel=view.microns_per_pixel * f)
    c = coarse.centres_px[:30]
    bbox = (10.0, 12.0, 60.0, 70.0)
    q = section_quantities(coarse, bbox, pixel_um=2.0)
    assert q.pixel_um == q.base_um == coarse.microns_per_pixel
    assert q.values.shape[1:] == (58, 50)  # the image's own pixels, cut as they are
    np.testing.assert_allclose(q.values[0], small[0, 12:70, 10:60] / 255.0, atol=1e-6)
    upsampled = coarse.image_at(BASE_UM, bbox, dtype=np.uint8)
    q1 = stain_quantities(upsampled, bbox[:2], ((bbox[2] - bbox[0]) / upsampled.shape[2],
                                                (bbox[3] - bbox[1]) / upsampled.shape[1]), 2.0)
    inside = (c[:, 0] > 20) & (c[:, 0] < 50) & (c[:, 1] > 22) & (c[:, 1] < 60)
    radius = coarse.spot_diameter_um
    native = histology_descriptors(q, c[inside], radius, (1.0,))
    fine = histology_descriptors(q1, c[inside], radius, (1.0,))
    means = [DESCRIPTOR_NAMES.index(f"mean_{ch}") for ch in "RGBHED"]
    np.testing.assert_allclose(native[:, means], fine[:, means], atol=0.01)


def test_a_section_is_described_alike_in_one_window_and_in_many(her2st_c2_or_demo):
    """Windows start on whole blocks of one lattice of read pixels and hold the discs' reach,
    and the nuclear level is that of the region described: a centre's descriptors do not
    depend on the windows that describe it. Exactly, from the same pixels; a window read on its
    own differs from one read of the whole in a few pixels' last 8-bit level (the resize's
    rounding)."""
    from dataclasses import replace


    view = section_view(her2st_c2_or_demo)
    c = view.centres_px[:60]
    m = 1.5 * view.spacing_px
    extent = (c[:, 0].min() - m, c[:, 1].min() - m, c[:, 0].max() + m, c[:, 1].max() + m)
    radius, scales = view.spot_diameter_um / 4, (0.5, 1.0, 2.0, 4.0, 8.0)

    def described(v, window_bytes, threshold=None):
        return section_descriptors(v, c, radius, scales, extent_px=extent,
                                   threshold=threshold, window_bytes=window_bytes)

    one = described(view, 2**30, threshold=0.2)
    many = described(view, 2**22, threshold=0.2)
    means = [i for i, n in enumerate(DESCRIPTOR_NAMES * len(scales)) if "mean" in n]
    np.testing.assert_allclose(many[:, means], one[:, means], atol=1e-4)
    # the windows cut from one read of the whole, whose pixels they are
    whole = view.image_at(BASE_UM, extent, dtype=np.uint8)
    origin = np.array(extent[:2])
    pitch = (np.array(extent[2:]) - origin) / np.array(whole.shape[:0:-1])

    def cut(um, bbox, dtype):
        j0, i0, j1, i1 = np.round((np.reshape(bbox, (2, 2)) - origin) / pitch).astype(int).ravel()
        return whole[:, i0:i1, j0:j1]

    cut_view = replace(view)
    cut_view.image_at = cut
    many, one = described(cut_view, 2**22), described(cut_view, 2**30)
    # nuclei counted at their centroids: a cluster of nuclei wider than the context kept around
    # a window's edge is counted where the cut leaves its centroid
    counts = np.array(["nuclei_per" in n for n in DESCRIPTOR_NAMES * len(scales)])
    np.testing.assert_allclose(many[:, ~counts], one[:, ~counts], rtol=1e-9, atol=1e-12)
    assert np.abs(many[:, counts] - one[:, counts]).mean() < 0.01 * one[:, counts].mean()


def test_rejects_a_float_image():
    with pytest.raises(ValueError, match="uint8"):
        stain_quantities(np.zeros((3, 10, 10), np.float32), (0, 0), 1.0, 1.0)


def test_real_spots_differ_and_scales_stack(her2st_c2_or_demo):

    view = section_view(her2st_c2_or_demo)
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
