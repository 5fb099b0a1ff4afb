"""Reading the H&E at a physical pixel size, strip by strip, on the real her2st C2 image."""

import numpy as np
import pytest

from diffst_sc._core import resample_image, section_view


@pytest.fixture(scope="module")
def c2_levels(her2st_c2_or_demo):
    view = section_view(her2st_c2_or_demo)
    return view.image_scales or [view.image], view.microns_per_pixel


@pytest.mark.parametrize(("um", "bbox"), [(1.0, (500.3, 800.7, 4000.2, 3000.9)),
                                          (11.7, (-300, -200, 9500, 10200))])
def test_strips_give_the_same_image_as_one_read(c2_levels, um, bbox):
    levels, mpp = c2_levels
    whole = resample_image(levels, mpp, um, bbox, strip_bytes=2**40)
    strips = resample_image(levels, mpp, um, bbox, strip_bytes=2**20)
    assert whole.shape == strips.shape == (3, round((bbox[3] - bbox[1]) * mpp / um),
                                           round((bbox[2] - bbox[0]) * mpp / um))
    # Bilinear resizes of the strips and of the whole agree to the last 8-bit level.
    assert np.abs(whole - strips).max() <= 1 / 255 + 1e-6
    assert whole.dtype == np.float32 and 0 <= whole.min() and whole.max() <= 1


def test_uint8_is_the_same_image_in_a_quarter_of_the_memory(c2_levels):
    levels, mpp = c2_levels
    f = resample_image(levels, mpp, 4.0, (0, 0, 3000, 2000))
    u = resample_image(levels, mpp, 4.0, (0, 0, 3000, 2000), dtype=np.uint8)
    assert u.dtype == np.uint8 and u.nbytes * 4 == f.nbytes
    assert np.abs(u / 255.0 - f).max() < 1e-6
    with pytest.raises(ValueError, match="float32 or uint8"):
        resample_image(levels, mpp, 4.0, dtype=np.int64)


def test_a_float_image_is_scaled_alike_in_every_strip():
    # 0-255 floats with a near-black band (values 1): a strip holding only the band must not be
    # taken for a 0-1 image and turned white.
    img = np.full((3, 300, 200), 200.0, np.float32)
    img[:, 100:200] = 1.0
    out = resample_image([img], 1.0, 1.0, strip_bytes=3 * 200 * 40, dtype=np.uint8)
    assert (out[:, 110:190] == 1).all() and (out[:, :90] == 200).all()
    unit = resample_image([img / 255.0], 1.0, 1.0, strip_bytes=3 * 200 * 40, dtype=np.uint8)
    np.testing.assert_array_equal(unit, out)


def test_a_read_at_the_images_own_pixel_cuts_it_as_it_is(c2_levels):
    levels, mpp = c2_levels
    out = resample_image(levels, mpp, mpp, (100, 200, 400, 350), dtype=np.uint8)
    np.testing.assert_array_equal(out, np.asarray(levels[0])[:3, 200:350, 100:400])
