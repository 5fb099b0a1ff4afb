"""Bad input built from real data: each error names what is wrong."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import diffst_sc as ds
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
    sdata = ds.io.from_anndata(tiny, image=lowres)
    with pytest.raises(ValueError, match=r"spots lie outside the 600 x 600 px image"):
        ds.io.section_view(sdata)


@pytest.mark.parametrize(("value", "problem"), [
    (np.nan, "NaN or infinite"),
    (np.inf, "NaN or infinite"),
    (-3.0, "negative values"),
])
def test_invalid_counts(tiny, value, problem):
    tiny.X[5, 7] = value
    sdata = ds.io.from_anndata(tiny, img_key="lowres")
    with pytest.raises(ValueError, match=problem):
        ds.io.section_view(sdata)
    with pytest.raises(ValueError, match=problem):
        ds.pp.select_genes(tiny, n_top=5)


def test_non_integer_values_warn(tiny):
    tiny.X = tiny.X * 0.37
    with pytest.warns(NotCountsWarning, match="not integer counts"):
        ds.pp.select_genes(tiny, n_top=5)


def test_no_genes_in_common(her2st_c2):
    with pytest.raises(KeyError, match=r"None of the 2 requested genes.*'Gapdh'"):
        ds.pp.select_genes(her2st_c2, genes=["Gapdh", "Actb"])


def test_some_genes_missing(her2st_c2):
    with pytest.raises(KeyError, match=r"1 of the 3 requested genes are not in the table.*NOTAGENE"):
        ds.pp.select_genes(her2st_c2, genes=["ERBB2", "NOTAGENE", "GRB7"])


def test_empty_table(tiny):
    with pytest.raises(ValueError, match=r"empty \(0 spots x 100 genes\)"):
        ds.io.from_anndata(tiny[:0].copy(), img_key="lowres")
    with pytest.raises(ValueError, match=r"empty \(0 spots x 100 genes\)"):
        ds.pp.select_genes(tiny[:0].copy())


def test_image_of_the_wrong_shape(tiny):
    with pytest.raises(ValueError, match=r"shape \(5, 600, 600\).*RGB\(A\)"):
        ds.io.from_anndata(tiny, image=np.zeros((5, 600, 600), np.uint8))
    with pytest.raises(ValueError, match=r"2-D or 3-D"):
        ds.io.from_anndata(tiny, image=np.zeros((2, 3, 600, 600), np.uint8))


def test_image_with_the_wrong_channel_count(xenium_sdata):
    # the DAPI morphology image is no H&E: one channel
    with pytest.raises(ValueError, match=r"'morphology_mip' has 1 channels"):
        ds.io.section_view(xenium_sdata, image_key="morphology_mip")


def test_unknown_coordinate_system(her2st_c2):
    with pytest.raises(ValueError, match=r"Unknown coordinate system 'aligned'.*\['C2'\]"):
        ds.io.section_view(her2st_c2, coordinate_system="aligned")
    with pytest.raises(ValueError, match=r"Unknown coordinate system 'aligned'"):
        ds.pp.degrade(her2st_c2, coordinate_system="aligned")
