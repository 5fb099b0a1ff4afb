"""Messages on real data that name the problem and the fix: a wrong layer, spots off the image."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

import diffst_sc as ds
from diffst_sc._core import image_levels, section_view


def test_a_wrong_layer_names_it_the_layers_and_what_to_pass():
    sdata = ds.datasets.her2st_demo()
    with pytest.raises(KeyError, match=re.escape(
            "No layer 'raw_counts' in table 'table'; its layers are ['counts']. Pass one of them "
            "as `layer=`, or `layer=None` to read the expression in `X`.")):
        section_view(sdata, layer="raw_counts")


def test_a_layer_of_a_table_without_layers():
    sdata = ds.datasets.her2st_demo()
    table = sdata.tables["table"]
    del table.layers["counts"]
    with pytest.raises(KeyError, match=re.escape(
            "No layer 'counts' in table 'table'; it has no layers. Pass `layer=None` to read the "
            "expression in `X`.")):
        section_view(sdata, layer="counts")
    assert section_view(sdata).layer is None  # X, as the message says


@pytest.fixture(scope="module")
def tiny_adata(visium_tiny_dir):
    import scanpy as sc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sc.read_visium(visium_tiny_dir)


def test_anndata_spots_off_a_given_image_say_pass_the_right_image(tiny_adata):
    # the lowres image given as if it were the full-resolution one
    lib = next(iter(tiny_adata.uns["spatial"]))
    lowres = tiny_adata.uns["spatial"][lib]["images"]["lowres"]
    with pytest.raises(ValueError) as err:
        ds.io.from_anndata(tiny_adata, image=lowres)
    msg = str(err.value)
    assert re.match(r"\d+ of 100 spots lie outside the 600 x 600 px image", msg)
    assert "pass as `image=` the H&E those pixels refer to (the full-resolution image)" in msg
    assert "uns['spatial']" in msg and "scale factor" in msg
    assert "image_key" not in msg and "coordinate_system" not in msg


def test_anndata_spots_off_an_image_from_uns_say_check_its_scale_factor(tiny_adata):
    adata = tiny_adata.copy()
    lib = next(iter(adata.uns["spatial"]))
    adata.uns["spatial"][lib]["scalefactors"]["tissue_lowres_scalef"] = 1.0  # written wrong
    with pytest.raises(ValueError) as err:
        ds.io.from_anndata(adata, img_key="lowres")
    msg = str(err.value)
    assert "spots lie outside the 600 x 600 px image" in msg
    assert (f"uns['spatial'][{lib!r}]['scalefactors']['tissue_lowres_scalef'] (here 1) must "
            "bring them into the pixels of the 'lowres' image: check that scale factor") in msg
    assert "pass the full-resolution H&E as `image=`" in msg
    assert "image_key" not in msg and "coordinate_system" not in msg


def test_spatialdata_spots_off_the_image_still_name_image_key():
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import get_transformation

    sdata = ds.datasets.her2st_demo()
    placed = get_transformation(sdata.images["he"], get_all=True)
    he = np.asarray(image_levels(sdata.images["he"])[-1].values)  # a corner's worth
    sdata.images["he"] = Image2DModel.parse(he, dims=("c", "y", "x"), c_coords=["r", "g", "b"],
                                            transformations=placed)
    with pytest.raises(ValueError, match=r"spots lie outside the 579 x 619 px image.*pass "
                                         r"`image_key=` / `coordinate_system=`"):
        section_view(sdata)
