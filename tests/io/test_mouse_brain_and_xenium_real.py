"""Normalised Visium data (squidpy's mouse brain crop) and the Xenium crop (SegTraQ test data)."""

from __future__ import annotations

import numpy as np
import pytest

import diffst_sc as ds
from diffst_sc._core import check_counts, section_view, warn_if_not_counts
from diffst_sc.io import NotCountsWarning


@pytest.fixture(scope="module")
def mouse_brain(mouse_brain_dir):
    import anndata as ad
    from PIL import Image

    adata = ad.read_h5ad(mouse_brain_dir / "test_data.h5ad")
    image = np.asarray(Image.open(mouse_brain_dir / "test_img.jpg").convert("RGB"))
    return adata, image


def test_mouse_brain_values_are_noticed_as_not_counts(mouse_brain):
    adata, _ = mouse_brain
    is_counts = check_counts(adata.X, where="test_data.h5ad")
    assert is_counts is False
    with pytest.warns(NotCountsWarning, match="not integer counts"):
        warn_if_not_counts(is_counts, where="test_data.h5ad")


def test_mouse_brain_from_anndata_with_its_full_resolution_image(mouse_brain):
    adata, image = mouse_brain
    sdata = ds.io.from_anndata(adata, image=image)
    view = section_view(sdata)
    assert view.n_spots == 49
    assert view.image.shape == (3, 1717, 950)
    np.testing.assert_allclose(view.centres_px, adata.obsm["spatial"])
    # Visium: 100 um between neighbouring spots
    assert view.microns_per_pixel * view.spacing_px == pytest.approx(100.0, rel=0.02)
    # the pipeline's own entry points warn on these values too
    with pytest.warns(NotCountsWarning):
        ds.pp.normalize(sdata)


def test_xenium_crop_units_and_registration(xenium_sdata):
    from spatialdata.transformations import get_transformation

    from diffst_sc._core import affine_matrix

    points = xenium_sdata.points["transcripts"]
    a_pts = affine_matrix(get_transformation(points, "global"))
    a_he = affine_matrix(get_transformation(xenium_sdata.images["he_image"], "global"))
    # transcripts are in micrometres; 'global' is in morphology pixels of 0.2125 um
    um_per_cs = 1 / np.sqrt(abs(np.linalg.det(a_pts[:2, :2])))
    assert um_per_cs == pytest.approx(0.2125, rel=1e-4)
    he_um = um_per_cs * np.sqrt(abs(np.linalg.det(a_he[:2, :2])))
    assert he_um == pytest.approx(0.36, abs=0.01)

    df = points[["x", "y", "overlaps_nucleus"]].compute()
    xy = np.c_[df["x"].to_numpy(float), df["y"].to_numpy(float), np.ones(len(df))]
    px = (xy @ (np.linalg.inv(a_he) @ a_pts).T)[:, :2]
    he = np.asarray(xenium_sdata.images["he_image"]["scale0"]["image"].data.compute())
    grey = he.astype(np.float32).mean(axis=0) / 255.0
    h, w = grey.shape
    assert (px[:, 0] > -5).mean() > 0.99 and (px[:, 0] < w + 5).mean() > 0.99
    assert (px[:, 1] > -5).mean() > 0.99 and (px[:, 1] < h + 5).mean() > 0.99
    ij = np.clip(np.round(px).astype(int), 0, [w - 1, h - 1])
    value = grey[ij[:, 1], ij[:, 0]]
    nucleus = df["overlaps_nucleus"].to_numpy() == 1
    # registered: transcripts over nuclei sit on darker (haematoxylin) H&E than the others
    assert value[nucleus].mean() < value[~nucleus].mean() - 0.1
