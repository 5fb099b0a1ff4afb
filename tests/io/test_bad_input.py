"""Bad input built from real data: each error names what is wrong."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

import diffst_sc as ds
from diffst_sc._core import section_view
from diffst_sc.io import NotCountsWarning


@pytest.fixture(scope="module")
def tiny_adata(visium_tiny_dir):
    import scanpy as sc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = sc.read_visium(visium_tiny_dir)
    adata.X = adata.X.toarray().astype(np.float32)
    return adata


@pytest.fixture
def tiny(tiny_adata):
    return tiny_adata.copy()


def test_spots_outside_the_image(tiny):
    # the lowres image given as if it were full resolution: spots land far outside it
    lib = next(iter(tiny.uns["spatial"]))
    lowres = tiny.uns["spatial"][lib]["images"]["lowres"]
    with pytest.raises(ValueError, match=r"spots lie outside the 600 x 600 px image"):
        ds.io.from_anndata(tiny, image=lowres)


@pytest.mark.parametrize(("value", "problem"), [
    (np.nan, "NaN or infinite"),
    (np.inf, "NaN or infinite"),
    (-3.0, "negative values"),
])
def test_invalid_counts(tiny, value, problem):
    tiny.X[5, 7] = value
    sdata = ds.io.from_anndata(tiny, img_key="lowres")
    with pytest.raises(ValueError, match=problem):
        section_view(sdata)
    with pytest.raises(ValueError, match=problem):
        ds.pp.select_genes(tiny, n_top=5)


def test_non_integer_values_warn(tiny):
    tiny.X = tiny.X * 0.37
    with pytest.warns(NotCountsWarning, match="not integer counts"):
        ds.pp.select_genes(tiny, n_top=5)


def test_no_genes_in_common(her2st_c2_or_demo):
    with pytest.raises(KeyError, match=r"None of the 2 requested genes.*'Gapdh'"):
        ds.pp.select_genes(her2st_c2_or_demo, genes=["Gapdh", "Actb"])


def test_some_genes_missing(her2st_c2_or_demo):
    with pytest.raises(KeyError, match=r"1 of the 3 requested genes are not in the table.*NOTAGENE"):
        ds.pp.select_genes(her2st_c2_or_demo, genes=["ERBB2", "NOTAGENE", "GRB7"])


def test_empty_table(tiny):
    with pytest.raises(ValueError, match=r"empty \(0 spots x 100 genes\)"):
        ds.io.from_anndata(tiny[:0].copy(), img_key="lowres")
    with pytest.raises(ValueError, match=r"empty \(0 spots x 100 genes\)"):
        ds.pp.select_genes(tiny[:0].copy())


def test_image_of_the_wrong_shape(tiny):
    with pytest.raises(ValueError, match=r"shape \(5, 600, 600\).*RGB\(A\)"):
        ds.io.from_anndata(tiny, image=np.zeros((5, 600, 600), np.uint8))
    with pytest.raises(ValueError, match=r"must be 3-D \(y, x, channels\)"):
        ds.io.from_anndata(tiny, image=np.zeros((2, 3, 600, 600), np.uint8))


def test_image_with_the_wrong_channel_count(xenium_sdata):
    # the DAPI morphology image is no H&E: one channel
    with pytest.raises(ValueError, match=r"'morphology_mip' has 1 channel \[.*pass the RGB H&E"):
        section_view(xenium_sdata, image_key="morphology_mip")


def test_unknown_coordinate_system(her2st_c2_or_demo):
    from spatialdata.transformations import get_transformation

    # the message lists the systems the spots are in: one, named after the section
    known = list(get_transformation(her2st_c2_or_demo.shapes["spots"], get_all=True))
    assert len(known) == 1
    with pytest.raises(ValueError,
                       match=r"Unknown coordinate system 'aligned'.*" + re.escape(str(known))):
        section_view(her2st_c2_or_demo, coordinate_system="aligned")
    with pytest.raises(ValueError, match=r"Unknown coordinate system 'aligned'"):
        ds.pp.degrade(her2st_c2_or_demo, coordinate_system="aligned")


def _with_two_channel_image(sdata, keep_he: bool):
    """``sdata`` with a 2-channel image "two" placed like its H&E (and the H&E dropped if asked)."""
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import get_transformation

    placed = get_transformation(sdata.images["he"], get_all=True)
    sdata.images["two"] = Image2DModel.parse(np.zeros((2, 64, 64), np.uint8), dims=("c", "y", "x"),
                                             c_coords=["c0", "c1"], transformations=placed)
    if not keep_he:
        del sdata.images["he"]
    return sdata


@pytest.mark.parametrize(("keep_he", "fix"), [
    (True, r"pass the RGB H&E element's name as `image_key=` \(RGB images here: \['he'\]\)"),
    (False, r"add the RGB H&E as an image element and pass its name as `image_key=`"),
])
def test_a_named_image_that_is_not_rgb_says_so(keep_he, fix):
    sdata = _with_two_channel_image(ds.datasets.her2st_demo(), keep_he)
    with pytest.raises(ValueError, match=r"Image 'two' has 2 channels \['c0', 'c1'\] \(shape "
                       r"\(2, 64, 64\), \(c, y, x\)\), but an RGB H&E has 3 channels, or 4 with "
                       r"alpha; " + fix):
        section_view(sdata, image_key="two")


def test_no_rgb_image_lists_the_images_and_their_channels():
    sdata = _with_two_channel_image(ds.datasets.her2st_demo(), keep_he=False)
    with pytest.raises(ValueError, match=r"No RGB H&E image .*images: 'two' \(2 channels\)"):
        section_view(sdata)


def test_duplicated_gene_names_are_named_when_expression_is_read():
    view = section_view(ds.datasets.her2st_demo())
    names = list(view.adata.var_names)
    names[1] = names[0]
    view.adata.var_names = names
    with pytest.raises(ValueError, match=rf"1 duplicated gene name\(s\): \['{names[0]}'\]"):
        view.expression(["ERBB2"])
