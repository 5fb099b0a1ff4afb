"""The H&E read from real data: the same pixels from memory and from zarr, and checked before work.

The embedded her2st C2 section (``ds.datasets.her2st_demo()``) is multiscale in memory, its
coarser levels computed lazily from the full image; written with ``sdata.write`` and read back
with ``spatialdata.read_zarr``, the same levels are stored arrays. Space Ranger's tiny output
(scanpy's test data) has a blank all-black RGBA hires PNG next to a real lowres H&E.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

import diffst_sc as ds
from diffst_sc._core import image_levels, image_problem, image_sample, pick_level, section_view

#: Pixel sizes (um) read in the round trip; 11.7 and 25 are far enough above the demo's
#: 1.38 um/px to read its coarser levels.
PIXEL_SIZES = (1.0, 2.76, 5.0, 10.0, 11.7, 25.0)


def _quiet_read_zarr(path):
    import spatialdata as sd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sd.read_zarr(path)


def _quiet_write(sdata, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr's notes on its future defaults
        sdata.write(path)


@pytest.fixture(scope="module")
def demo_and_zarr(tmp_path_factory):
    sdata = ds.datasets.her2st_demo()
    path = tmp_path_factory.mktemp("demo") / "demo.zarr"
    _quiet_write(sdata, path)
    return sdata, _quiet_read_zarr(path)


def _assert_same_pixels(view_a, view_b, um, bbox=None):
    a, b = view_a.image_at(um, bbox), view_b.image_at(um, bbox)
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= 1e-6 * a.max(), f"{um} um/px: pixels differ"


@pytest.mark.parametrize("um", PIXEL_SIZES)
def test_same_pixels_from_a_pyramid_in_memory_and_after_a_zarr_round_trip(demo_and_zarr, um):
    from xarray import DataTree

    sdata, back = demo_and_zarr
    assert isinstance(sdata.images["he"], DataTree) and isinstance(back.images["he"], DataTree)
    mem, disk = section_view(sdata), section_view(back)
    assert len(mem.image_scales) == len(disk.image_scales) == 4
    _assert_same_pixels(mem, disk, um)
    _assert_same_pixels(mem, disk, um, bbox=(500.3, 800.7, 4000.2, 3000.9))


def test_same_pixels_from_a_single_scale_image_and_after_a_zarr_round_trip(tmp_path):
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import get_transformation

    sdata = ds.datasets.her2st_demo()
    full = image_levels(sdata.images["he"])[0]
    sdata.images["he"] = Image2DModel.parse(
        np.asarray(full.values), dims=("c", "y", "x"), c_coords=["r", "g", "b"],
        transformations=get_transformation(sdata.images["he"], get_all=True))
    _quiet_write(sdata, tmp_path / "single.zarr")
    back = _quiet_read_zarr(tmp_path / "single.zarr")
    mem, disk = section_view(sdata), section_view(back)
    for um in (2.76, 10.0):
        _assert_same_pixels(mem, disk, um)


def test_the_level_read_depends_on_the_pyramid_shapes_only(demo_and_zarr):
    sdata, back = demo_and_zarr
    mem, disk = section_view(sdata), section_view(back)
    for um in PIXEL_SIZES:
        got = pick_level(mem.image_scales, mem.microns_per_pixel, um)
        assert got == pick_level(disk.image_scales, disk.microns_per_pixel, um)
    # a level is read only where it is 4 times finer than the target: never at the model's scale
    assert pick_level(mem.image_scales, mem.microns_per_pixel, 2.76) == 0
    assert pick_level(mem.image_scales, mem.microns_per_pixel, 25.0) == 2


def test_a_coarser_level_is_placed_where_the_full_image_is(demo_and_zarr):
    # The level of 4955 // 2 rows covers 4954 full rows (factor 2, not 4955 / 2477): read at
    # 25 um from level 2 or from the full image alone, the pixels line up.
    _, back = demo_and_zarr
    view = section_view(back)
    from diffst_sc._core import resample_image

    pyramid = view.image_at(25.0)
    full_only = resample_image(view.image_scales[:1], view.microns_per_pixel, 25.0)
    diff = np.abs(pyramid - full_only)
    assert np.percentile(diff, 99) < 0.06 and diff.mean() < 0.01


def test_a_window_is_the_same_pixels_as_the_whole_image(demo_and_zarr):
    # Output pixels of a window falling on the whole image's pixel grid are those pixels.
    sdata, _ = demo_and_zarr
    view = section_view(sdata)
    um = 10.0
    whole = view.image_at(um)
    h, w = view.image.shape[1:]
    sy, sx = h / whole.shape[1], w / whole.shape[2]  # full pixels per output pixel (not whole)
    i0, j0, i1, j1 = 37, 51, 237, 301
    part = view.image_at(um, (j0 * sx, i0 * sy, j1 * sx, i1 * sy))
    assert part.shape == (3, i1 - i0, j1 - j0)
    assert np.abs(part - whole[:, i0:i1, j0:j1]).max() <= 1 / 255 + 1e-6


# ---------------------------------------------------------------------------------------------
# which image is the H&E


@pytest.fixture(scope="module")
def tiny_sdata(visium_tiny_dir):
    import spatialdata_io

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return spatialdata_io.visium(visium_tiny_dir, dataset_id="tiny")


def test_the_blank_hires_png_is_found_blank_and_the_lowres_not(tiny_sdata):
    assert image_problem(tiny_sdata.images["tiny_hires_image"]) == (
        "blank: every sampled pixel has the colour (0, 0, 0) (R, G, B)")
    assert image_problem(tiny_sdata.images["tiny_lowres_image"]) is None


def test_the_blank_hires_is_skipped_for_the_real_lowres(tiny_sdata):
    with pytest.warns(UserWarning) as record:
        view = section_view(tiny_sdata)
    assert view.image_key == "tiny_lowres_image"
    messages = [str(w.message) for w in record]
    assert any("Skipped finer images with no histology ('tiny_hires_image' is blank" in m
               and "reading the H&E from 'tiny_lowres_image'" in m for m in messages)
    # the lowres H&E is 16 um per pixel: too coarse to resolve cells, and said so
    assert any(re.search(r"'tiny_lowres_image' has 16\.\d um per pixel, coarser than 4 um", m)
               for m in messages)


def test_a_blank_image_named_with_image_key_is_refused(tiny_sdata):
    with pytest.raises(ValueError, match=re.escape(
            "Image 'tiny_hires_image' cannot be the H&E: it is blank: every sampled pixel has the "
            "colour (0, 0, 0) (R, G, B). Pass another image as `image_key=` (usable H&E images "
            "here: ['tiny_lowres_image']), or check the file it was read from.")):
        section_view(tiny_sdata, image_key="tiny_hires_image")


def test_no_usable_image_lists_each_image_and_the_fix(tiny_sdata):
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import get_transformation

    lowres = tiny_sdata.images["tiny_lowres_image"]
    two = Image2DModel.parse(np.asarray(lowres.values)[:2], dims=("c", "y", "x"),
                             c_coords=["a", "b"],
                             transformations=get_transformation(lowres, get_all=True))
    # the lowres H&E replaced by two of its channels: no usable image is left
    sdata = SpatialData(images={"tiny_hires_image": tiny_sdata.images["tiny_hires_image"],
                                "two": two},
                        shapes=dict(tiny_sdata.shapes), tables=dict(tiny_sdata.tables))
    with pytest.raises(ValueError) as err:
        section_view(sdata)
    msg = str(err.value)
    assert msg.startswith("No usable H&E image in coordinate system 'tiny': ")
    assert "'tiny_hires_image' is blank: every sampled pixel has the colour (0, 0, 0)" in msg
    assert "'two' is not RGB(A): 2 channels ['a', 'b'], where an H&E has 3" in msg
    assert "Pass the H&E's name as `image_key=`, or check the image files" in msg


def test_a_blank_finer_image_does_not_replace_the_h_and_e():
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Scale, Sequence, get_transformation

    sdata = ds.datasets.her2st_demo()
    cs = next(iter(get_transformation(sdata.images["he"], get_all=True)))
    # white, twice as fine as the H&E over the same tissue: the finest image, but no histology
    sdata.images["white"] = Image2DModel.parse(
        np.full((3, 512, 512), 255, np.uint8), dims=("c", "y", "x"), c_coords=["r", "g", "b"],
        transformations={cs: Sequence([Scale([0.5, 0.5], axes=("y", "x"))])})
    with pytest.warns(UserWarning, match=r"'white' is blank: every sampled pixel has the colour "
                                         r"\(255, 255, 255\).*reading the H&E from 'he'"):
        view = section_view(sdata)
    assert view.image_key == "he"


def test_the_check_reads_a_coarse_level_not_the_full_image(demo_and_zarr):
    _, back = demo_and_zarr
    levels = image_levels(back.images["he"])
    sample = image_sample(levels)
    # the stored 619 x 579 level, strided to about 256 a side; not the 4955 x 4637 image
    assert sample.shape == (3, 207, 193)
    np.testing.assert_array_equal(sample, np.asarray(levels[-1].values)[:, ::3, ::3])


def test_tissue_in_one_corner_of_a_large_lazy_image_is_not_blank():
    import dask.array as da

    he = np.asarray(image_levels(ds.datasets.her2st_demo().images["he"])[0].values)
    big = np.full((3, 3000, 3000), 255, np.uint8)
    big[:, -150:, -150:] = he[:, 2000:2150, 2000:2150]  # real tissue, missed by strides of 12
    lazy = da.from_array(big, chunks=(3, 512, 512))
    assert image_problem_of(lazy) is None
    assert image_problem_of(da.from_array(np.full_like(big, 255), chunks=(3, 512, 512))) == (
        "blank: every sampled pixel has the colour (255, 255, 255) (R, G, B)")


def image_problem_of(arr):
    from spatialdata.models import Image2DModel

    return image_problem(Image2DModel.parse(arr, dims=("c", "y", "x"), c_coords=["r", "g", "b"]))


def test_a_fine_h_and_e_gives_no_coarse_image_warning():
    from diffst_sc.io import CoarseImageWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", CoarseImageWarning)
        view = section_view(ds.datasets.her2st_demo())
    assert view.microns_per_pixel < 4


# ---------------------------------------------------------------------------------------------
# AnnData (scanpy's layout) and image arrays


@pytest.fixture(scope="module")
def tiny_adata(visium_tiny_dir):
    import scanpy as sc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sc.read_visium(visium_tiny_dir)


def test_anndata_default_skips_the_blank_hires(tiny_adata):
    with pytest.warns(UserWarning, match=r"Skipped uns\['spatial'\]\[.*\]\['images'\] images "
                                         r"with no histology \('hires' is blank.*from 'lowres'"):
        sdata = ds.io.from_anndata(tiny_adata)
    assert image_levels(sdata.images["he"])[0].shape == (3, 600, 600)


def test_anndata_blank_hires_named_is_refused(tiny_adata):
    with pytest.raises(ValueError, match=r"No usable H&E in uns\['spatial'\]\[.*\]\['images'\]: "
                                         r"'hires' is blank: every sampled pixel of its 2000 x "
                                         r"2000 px has the colour \(0, 0, 0\).*pass another of "
                                         r"them as `img_key=` \(\['lowres'\]\)"):
        ds.io.from_anndata(tiny_adata, img_key="hires")


def test_an_all_zero_image_array_is_refused(tiny_adata):
    with pytest.raises(ValueError, match=r"The image is blank: every sampled pixel of its 600 x "
                                         r"600 px has the colour \(0, 0, 0\) \(R, G, B\), so there "
                                         r"is no histology to read\. Pass the H&E as `image=`"):
        ds.io.from_anndata(tiny_adata, image=np.zeros((600, 600, 3), np.uint8))


def test_a_greyscale_image_array_is_refused(tiny_adata):
    lib = next(iter(tiny_adata.uns["spatial"]))
    lowres = tiny_adata.uns["spatial"][lib]["images"]["lowres"]
    grey = np.asarray(lowres, np.float32)[..., :3].mean(-1)
    with pytest.raises(ValueError, match=r"The image is greyscale \(shape \(600, 600\), one "
                                         r"channel\).*Pass the colour H&E"):
        ds.io.from_anndata(tiny_adata, image=grey)
