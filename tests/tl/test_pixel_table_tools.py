"""The table of a map's pixels runs scanpy's (and squidpy's) tools with their defaults.

The map is built from the embedded her2st C2 section's real counts: each tissue pixel holds the
expression of its nearest spot (a Voronoi map, what a super-resolved map looks like at the
spots' scale), on grids of two sizes, either side of the 8,192 rows where scanpy's
``sc.pp.neighbors`` changes its neighbour search.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import diffst_sc as ds
from diffst_sc._core import Grid, add_pixel_table, section_view

N_GENES = 60  # over 50: scanpy's defaults run a PCA first


def _section_with_pixel_table(pixels_per_spacing: int, key: str):
    from scipy.spatial import cKDTree

    sdata = ds.datasets.her2st_demo()
    view = section_view(sdata)
    genes = view.genes[:N_GENES]
    grid = Grid.around(view.centres_px, view.spacing_px / pixels_per_spacing, view.spacing_px)
    dist, nearest = cKDTree(view.centres_px).query(grid.pixel_centres())
    keep = (dist <= view.spacing_px / 2).reshape(grid.height, grid.width)
    mean = view.expression(genes)[nearest].T.reshape(len(genes), grid.height, grid.width)
    add_pixel_table(sdata, view, genes, mean, keep, grid, key)
    return sdata, sdata.tables[key + "_table"]


@pytest.fixture(scope="module")
def small():
    """About 7,000 tissue pixels."""
    return _section_with_pixel_table(6, "px")


@pytest.fixture(scope="module")
def large():
    """About 12,000 tissue pixels."""
    return _section_with_pixel_table(8, "px")


def test_the_table_is_laid_out_as_scanpy_expects(small):
    _, t = small
    assert 4000 < t.n_obs < 8192 and t.n_vars == N_GENES
    # X as scanpy 1.11 takes it everywhere: not a scipy sparse *array*
    assert isinstance(t.X, np.ndarray) and t.X.dtype == np.float32 and t.X.flags.c_contiguous
    assert not isinstance(t.X, sp.sparray)
    lib = t.uns["spatial"]["px"]
    he, sf = lib["images"]["hires"], lib["scalefactors"]
    assert he.ndim == 3 and he.shape[-1] == 3 and he.dtype == np.float32
    assert 0 <= he.min() and he.max() <= 1
    # the pixel centres, scaled by the image's factor, fall on that image
    xy = t.obsm["spatial"] * sf["tissue_hires_scalef"]
    assert (xy >= 0).all() and (xy[:, 0] < he.shape[1]).all() and (xy[:, 1] < he.shape[0]).all()
    assert sf["spot_diameter_fullres"] > 0


def test_neighbors_leiden_and_spatial_plot_run_with_defaults(small):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scanpy as sc

    _, t = small
    t = t.copy()
    sc.pp.neighbors(t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scanpy's note on leiden's next default
        sc.tl.leiden(t)
    assert t.obsp["connectivities"].shape == (t.n_obs, t.n_obs)
    n_clusters = t.obs["leiden"].nunique()
    assert 2 <= n_clusters < t.n_obs / 10  # pixels of one spot share its expression
    axes = sc.pl.spatial(t, color=[t.var_names[0], "leiden"], show=False)
    assert len(axes) == 2
    plt.close("all")


def test_the_table_written_and_read_back_still_runs_neighbors(small, tmp_path):
    import scanpy as sc
    import spatialdata as sd

    sdata, _ = small
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdata.write(tmp_path / "px.zarr")
        t = sd.read_zarr(tmp_path / "px.zarr").tables["px_table"]
    assert not isinstance(t.X, sp.sparray)
    assert t.uns["spatial"]["px"]["images"]["hires"].shape[-1] == 3
    sc.pp.neighbors(t)
    assert t.obsp["distances"].shape == (t.n_obs, t.n_obs)


def test_neighbors_with_defaults_on_8192_pixels_or_more(large):
    import scanpy as sc

    _, t = large
    t = t.copy()
    assert t.n_obs >= 8192
    try:
        sc.pp.neighbors(t)
    except AttributeError as err:
        # scanpy 1.11.5 + pynndescent 0.7 + scipy 1.17: pynndescent's distances are a csr_array,
        # which scanpy reads with `getnnz`, gone from scipy's sparse arrays. Whatever X is.
        if "getnnz" not in str(err):
            raise
        pytest.xfail("scanpy's pynndescent path (>= 8,192 rows) fails upstream on this stack")
    assert t.obsp["connectivities"].shape == (t.n_obs, t.n_obs)


def test_exact_neighbors_run_on_8192_pixels_or_more(large):
    import scanpy as sc

    _, t = large
    t = t.copy()
    sc.pp.neighbors(t, transformer="sklearn")  # the workaround the docstring names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        sc.tl.leiden(t)
    assert t.obs["leiden"].nunique() >= 2


def test_squidpy_spatial_graph_and_autocorrelation_with_defaults(small):
    sq = pytest.importorskip("squidpy")

    _, t = small
    t = t.copy()
    sq.gr.spatial_neighbors(t)
    assert t.obsp["spatial_connectivities"].shape == (t.n_obs, t.n_obs)
    sq.gr.spatial_autocorr(t)
    morans = t.uns["moranI"]
    assert len(morans) == N_GENES and np.isfinite(morans["I"]).all()
