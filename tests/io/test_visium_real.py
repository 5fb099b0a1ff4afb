"""Real Space Ranger output (scanpy's test data): spatialdata-io and scanpy readers -> section_view."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

import diffst_sc as ds
from diffst_sc._core import section_view


@pytest.fixture(scope="module")
def tiny_sdata(visium_tiny_dir):
    import spatialdata_io

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # spatialdata-io 0.7: visium(path, dataset_id=None, counts_file=..., ...)
        return spatialdata_io.visium(visium_tiny_dir, dataset_id="tiny")


def _lattice_spacing_fullres(visium_tiny_dir) -> float:
    """Pixels between row neighbours (array_col +- 2), fitted on all 4,992 lattice positions."""
    pos = pd.read_csv(visium_tiny_dir / "spatial" / "tissue_positions_list.csv", header=None,
                      names=["barcode", "in_tissue", "row", "col", "px_row", "px_col"])
    a = np.c_[pos["col"], pos["row"], np.ones(len(pos))]
    coef, *_ = np.linalg.lstsq(a, pos[["px_col", "px_row"]].to_numpy(float), rcond=None)
    return 2 * float(np.linalg.norm(coef[0]))


def test_spatialdata_io_visium_section_view_default(tiny_sdata, visium_tiny_dir):
    # the finer hires PNG is blank (all black RGBA): it is skipped, with a warning, for the lowres
    with pytest.warns(UserWarning, match=r"'tiny_hires_image' is blank.*'tiny_lowres_image'"):
        view = section_view(tiny_sdata)
    # spatialdata-io names no 'global' system: the full-resolution one (the dataset id) is chosen
    assert view.coordinate_system == "tiny"
    assert view.n_spots == 100
    assert view.image_key == "tiny_lowres_image" and view.image.shape == (3, 600, 600)
    he = view.image_at(view.microns_per_pixel * 8)
    assert he.shape[0] == 3 and np.isfinite(he).all()
    # 100 um between lattice neighbours (spot_diameter_fullres is a 65 um disc, not the spot)
    sf = json.loads((visium_tiny_dir / "spatial" / "scalefactors_json.json").read_text())
    spacing_lowres = _lattice_spacing_fullres(visium_tiny_dir) * sf["tissue_lowres_scalef"]
    assert view.microns_per_pixel * spacing_lowres == pytest.approx(100.0, rel=0.01)
    assert view.spot_diameter_um == pytest.approx(65.0, rel=0.02)


def test_describe_section_says_what_fit_reads(tiny_sdata, visium_tiny_dir):
    """The public summary makes fit's choices: the blank hires image is skipped, the lattice
    sets the pixel size, and input fit refuses is refused here, before any work."""
    with pytest.warns(UserWarning, match=r"'tiny_hires_image' is blank"):
        info = ds.io.describe_section(tiny_sdata)  # and a CoarseImageWarning, as fit gives
    assert (info.image_key, info.coordinate_system, info.n_spots) == (
        "tiny_lowres_image", "tiny", 100)
    # the pixel size from Visium's lattice (100 um between neighbours), as fit reads it
    sf = json.loads((visium_tiny_dir / "spatial" / "scalefactors_json.json").read_text())
    spacing_lowres = _lattice_spacing_fullres(visium_tiny_dir) * sf["tissue_lowres_scalef"]
    assert info.microns_per_pixel * spacing_lowres == pytest.approx(100.0, rel=0.01)
    assert info.image_shape == (3, 600, 600) and info.counts
    assert "'tiny_lowres_image'" in repr(info) and "100 spots" in repr(info)
    with pytest.raises(KeyError, match="no_such_table.*has tables"):
        ds.io.describe_section(tiny_sdata, table_key="no_such_table")


def test_spatialdata_io_visium_lowres_in_either_coordinate_system(tiny_sdata):
    full = section_view(tiny_sdata, image_key="tiny_lowres_image")
    low = section_view(tiny_sdata, image_key="tiny_lowres_image",
                             coordinate_system="tiny_downscaled_lowres")
    assert low.coordinate_system == "tiny_downscaled_lowres"
    # the centres are in lowres-image pixels whichever system relates spots and image
    np.testing.assert_allclose(full.centres_px, low.centres_px, rtol=1e-6)
    assert full.microns_per_pixel == pytest.approx(low.microns_per_pixel)
    assert full.image.shape == (3, 600, 600)
    assert (full.centres_px >= 0).all() and (full.centres_px < 600).all()


def test_spatialdata_io_visium_spots_on_tissue(tiny_sdata):
    view = section_view(tiny_sdata, image_key="tiny_lowres_image")
    grey = np.asarray(view.image.data.compute(), dtype=np.float32).mean(axis=0) / 255.0
    c = np.round(view.centres_px).astype(int)
    at_spots = grey[c[:, 1], c[:, 0]]
    corners = np.concatenate([grey[:40, :40].ravel(), grey[-40:, -40:].ravel()])
    assert at_spots.mean() < corners.mean() - 0.1


def test_scanpy_read_visium_then_from_anndata_lowres(visium_tiny_dir):
    import scanpy as sc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = sc.read_visium(visium_tiny_dir)
    sdata = ds.io.from_anndata(adata, img_key="lowres")
    view = section_view(sdata)
    lib = next(iter(adata.uns["spatial"]))
    scale = adata.uns["spatial"][lib]["scalefactors"]["tissue_lowres_scalef"]
    np.testing.assert_allclose(view.centres_px, adata.obsm["spatial"] * scale, rtol=1e-6)
    assert view.image.shape == (3, 600, 600)
    spacing_lowres = _lattice_spacing_fullres(visium_tiny_dir) * scale
    assert view.microns_per_pixel * spacing_lowres == pytest.approx(100.0, rel=0.01)
    x = view.expression()
    assert x.shape == (100, 100) and np.allclose(x, np.round(x))
