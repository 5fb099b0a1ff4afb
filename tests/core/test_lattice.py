"""Lattice sites: the centre of the cell each spot stands for."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.spatial import cKDTree

import diffst_sc as ds
from diffst_sc._core import (
    Grid,
    cell_weights,
    coverage_matrix,
    lattice_sites,
    normalised_rows,
    section_view,
)


def test_measured_spots_sit_on_their_sites(her2st_c2_or_demo):
    view = section_view(her2st_c2_or_demo)
    off = np.linalg.norm(lattice_sites(view) - view.centres_px, axis=1)
    assert np.median(off) < 0.05 * view.spacing_px
    assert off.max() < 0.25 * view.spacing_px


def test_a_pseudo_spot_cut_by_the_tissue_edge_keeps_its_block_as_cell(her2st_c2_or_demo):
    """A block summing only some of its spots sits at their mean, off its block's centre; its
    site is the block's centre, and every spot lies in the cell of the block it was summed
    into, which the nearest pseudo-spot centre does not always give."""
    out = ds.pp.degrade(her2st_c2_or_demo, mode="square", factor=2)
    lr = section_view(out)
    hr = section_view(out, table_key="hr_table", image_key=lr.image_key,
                            coordinate_system=lr.coordinate_system)
    block = out.tables["hr_table"].obs["lr_spot"].to_numpy()
    sites = lattice_sites(lr)
    partial = lr.adata.obs["diffst_measured_fraction"].to_numpy() < 1
    assert partial.any()
    shift = np.linalg.norm(sites - lr.centres_px, axis=1) / lr.spacing_px
    assert np.median(shift[~partial]) < 0.05
    assert np.median(shift[partial]) > 0.15
    by_site = cKDTree(sites).query(hr.centres_px)[1]
    assert (by_site == block).all()
    # The cells superresolve's correction spreads each pseudo-spot's factor over: around the
    # sites every spot's footprint lies in its own block's cell; around the centres some spots
    # reach into a neighbouring block's, whose factor would bend them.
    grid = Grid.around(lr.centres_px, lr.spacing_px / 8, lr.spacing_px)
    footprints = normalised_rows(coverage_matrix(hr.centres_px, hr.diameter_px, grid).tocsr())

    def own_share(points):
        share = (footprints @ cell_weights(points, lr.spacing_px, grid, 0.15)).toarray()
        return share[np.arange(len(block)), block]

    by_sites, by_centres = own_share(sites) < 0.9, own_share(lr.centres_px) < 0.9
    assert by_sites.mean() <= 0.02  # the slide's jitter only
    assert by_centres.sum() >= 3 * max(by_sites.sum(), 1), (by_centres.sum(), by_sites.sum())


def test_visium_hexagons_have_sites(visium_tiny_dir):
    import spatialdata_io

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdata = spatialdata_io.visium(visium_tiny_dir, dataset_id="tiny")
    view = section_view(sdata, image_key="tiny_lowres_image")
    np.testing.assert_allclose(lattice_sites(view), view.centres_px,
                               atol=0.05 * view.spacing_px)
    lr = section_view(ds.pp.degrade(sdata, image_key="tiny_lowres_image"))
    off = np.linalg.norm(lattice_sites(lr) - lr.centres_px, axis=1)
    assert np.median(off) < 0.1 * lr.spacing_px


@pytest.mark.parametrize("positions", ["none", "scrambled"])
def test_without_a_lattice_the_centres_are_the_sites(her2st_c2_or_demo, positions):
    view = section_view(her2st_c2_or_demo)
    obs = view.adata.obs
    if positions == "none":
        adata = view.adata.copy()
        adata.obs = obs.drop(columns=["array_row", "array_col"])
    else:  # positions that no affine lattice maps onto the centres
        adata = view.adata.copy()
        rng = np.random.default_rng(0)
        adata.obs["array_row"] = rng.permutation(obs["array_row"].to_numpy())
    from dataclasses import replace

    np.testing.assert_array_equal(lattice_sites(replace(view, adata=adata)), view.centres_px)
