"""Expression per cell: nuclei from the H&E, and a map summed over cells into a table.

On the embedded her2st C2 section (real counts and H&E), fitted and super-resolved once.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import diffst_sc as ds
from diffst_sc._core import affine_matrix, section_view, table_spots


@pytest.fixture(scope="module")
def mapped():
    """The demo section with its map (20 genes), shared: add elements to a :func:`_section`."""
    sdata = ds.datasets.her2st_demo()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.tl.fit(sdata, n_genes=20, progress=False)
        ds.tl.superresolve(sdata, progress=False)
    return sdata


@pytest.fixture(scope="module")
def nuclei(mapped):
    """The section's nuclei, grown by 3 um, from ``ds.tl.segment_nuclei``."""
    sdata = _section(mapped, he=True)
    ds.tl.segment_nuclei(sdata, expand_um=3.0)
    return sdata.labels["diffst_nuclei"]


def _section(mapped, *, he=False, labels=None, shapes=None):
    """A new SpatialData holding the map, the spots and their table (and what is given)."""
    from spatialdata import SpatialData

    images = {k: mapped.images[k] for k in ("diffst", "diffst_std") + (("he",) if he else ())}
    return SpatialData(images=images, labels=labels or {},
                       shapes={"spots": mapped.shapes["spots"], **(shapes or {})},
                       tables={"table": mapped.tables["table"]})


def _map(sdata):
    """The map as numpy ``(G, H, W)``, its affine to the coordinate system, and the system."""
    cs = sdata.tables["table"].uns["diffst"]["coordinate_system"]
    from spatialdata.transformations import get_transformation

    el = sdata.images["diffst"]
    return np.asarray(el.data), affine_matrix(get_transformation(el, cs)), cs


def _pixels_per_footprint(mapped) -> float:
    """Map pixels in one spot disc, from the section's own geometry."""
    view = section_view(mapped)
    _, a, _ = _map(mapped)
    pixel_px = np.sqrt(abs(np.linalg.det((np.linalg.inv(view.image_to_cs) @ a)[:2, :2])))
    return np.pi * (view.diameter_px / 2) ** 2 / pixel_px**2


def _tiles_labels(mapped, cell_px: float, n_cells: int, seed: int = 0, rotate: float = 0.0):
    """Labels partitioning a window wider than the map into ``n_cells`` Voronoi cells.

    Label pixels are ``cell_px`` coordinate-system units wide, shifted off the map's pixel
    edges; ``rotate`` (degrees) turns them about the map's centre.
    """
    from scipy.spatial import cKDTree
    from spatialdata.models import Labels2DModel
    from spatialdata.transformations import Affine

    values, a, cs = _map(mapped)
    h, w = values.shape[1:]
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], float) @ a.T
    lo, hi = corners[:, :2].min(0), corners[:, :2].max(0)
    centre, half = (lo + hi) / 2, (hi - lo).max() * 0.75
    side = int(np.ceil(2 * half / cell_px))
    rng = np.random.default_rng(seed)
    seeds = rng.uniform(0, side, size=(n_cells, 2))
    jj, ii = np.meshgrid(np.arange(side) + 0.5, np.arange(side) + 0.5)
    _, nearest = cKDTree(seeds).query(np.c_[jj.ravel(), ii.ravel()])
    labels = (nearest + 1).reshape(side, side).astype(np.int32)
    t = np.deg2rad(rotate)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) * cell_px
    shift = centre - rot @ np.array([side / 2, side / 2]) + np.array([0.37, -0.29]) * cell_px
    matrix = np.r_[np.c_[rot, shift], [[0, 0, 1]]]
    transform = Affine(matrix, input_axes=("x", "y"), output_axes=("x", "y"))
    return Labels2DModel.parse(labels, dims=("y", "x"), transformations={cs: transform}), matrix


def _boxes_labels_and_shapes(mapped, cell_px: float, rotate: float = 0.0):
    """The same cells as labels and as polygons: rectangles on whole label pixels."""
    import shapely
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import Affine

    labels_el, matrix = _tiles_labels(mapped, cell_px, 1, rotate=rotate)
    side = labels_el.shape[0]
    rng = np.random.default_rng(1)
    labels = np.zeros((side, side), np.int32)
    boxes, ids = [], []
    for k, (x, y) in enumerate(rng.integers(0, side - 12, size=(400, 2)), start=1):
        w, h = rng.integers(3, 12, size=2)
        if labels[y:y + h, x:x + w].any():
            continue
        labels[y:y + h, x:x + w] = k
        boxes.append(shapely.box(x, y, x + w, y + h))
        ids.append(k)
    from spatialdata.models import Labels2DModel

    cs = _map(mapped)[2]
    transform = Affine(matrix, input_axes=("x", "y"), output_axes=("x", "y"))
    import geopandas as gpd

    shapes = ShapesModel.parse(gpd.GeoDataFrame(geometry=boxes, index=np.array(ids)),
                               transformations={cs: transform})
    return Labels2DModel.parse(labels, dims=("y", "x"), transformations={cs: transform}), shapes


def test_cells_tiling_the_map_hold_its_total(mapped):
    """Cells that cover the whole map (label pixels off its pixel edges) sum to its total."""
    labels, _ = _tiles_labels(mapped, cell_px=7.0, n_cells=300)
    sdata = _section(mapped, labels={"tiles": labels})
    ds.tl.cell_expression(sdata, "tiles")
    table = sdata.tables["diffst_tiles"]
    values, _, _ = _map(mapped)
    per_footprint = _pixels_per_footprint(mapped)
    assert table.uns["diffst_tiles"]["map_pixels_per_footprint"] == pytest.approx(per_footprint)
    expected = np.nansum(values, axis=(1, 2)) / per_footprint
    np.testing.assert_allclose(table.X.sum(0), expected, rtol=1e-5)
    std = np.nansum(np.asarray(mapped.images["diffst_std"].data), axis=(1, 2)) / per_footprint
    np.testing.assert_allclose(table.layers["std"].sum(0), std, rtol=1e-5)
    assert list(table.var_names) == list(map(str, mapped.images["diffst"].coords["c"].values))


def test_a_cell_that_is_a_spot_gets_that_spots_counts(mapped):
    """The map's unit: a circle on a measured spot's footprint holds that spot's counts."""
    sdata = _section(mapped)
    ds.tl.cell_expression(sdata, "spots")
    table = sdata.tables["diffst_spots"]
    spots_table = mapped.tables["table"]
    order = table_spots(mapped, "table").index
    predicted = table[[str(i) for i in order]].X
    measured = section_view(mapped).footprint_expression(list(table.var_names))
    used = ~spots_table.obs["diffst_low_counts"].to_numpy(bool)
    ratio = predicted[used].sum(1) / measured[used].sum(1)
    assert np.median(np.abs(ratio - 1)) < 0.02
    assert abs(predicted[used].sum() / measured[used].sum() - 1) < 0.01


def test_labels_and_polygons_of_the_same_cells_agree(mapped):
    labels, shapes = _boxes_labels_and_shapes(mapped, cell_px=5.0)
    sdata = _section(mapped, labels={"box_labels": labels}, shapes={"box_shapes": shapes})
    ds.tl.cell_expression(sdata, "box_labels")
    ds.tl.cell_expression(sdata, "box_shapes")
    a, b = sdata.tables["diffst_box_labels"], sdata.tables["diffst_box_shapes"]
    b = b[a.obs_names]
    assert a.n_obs > 300 and (a.X.sum(1) > 0).sum() > 50
    np.testing.assert_allclose(a.X, b.X, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.layers["std"], b.layers["std"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.obs["area_um2"], b.obs["area_um2"], rtol=1e-9)
    np.testing.assert_allclose(a.obsm["spatial"], b.obsm["spatial"], rtol=1e-9)


def test_rotated_labels_agree_with_their_polygons(mapped):
    """Labels turned against the map (read on sub-pixels) match the exact polygon overlaps."""
    labels, shapes = _boxes_labels_and_shapes(mapped, cell_px=5.0, rotate=30.0)
    sdata = _section(mapped, labels={"box_labels": labels}, shapes={"box_shapes": shapes})
    ds.tl.cell_expression(sdata, "box_labels")
    ds.tl.cell_expression(sdata, "box_shapes")
    a, b = sdata.tables["diffst_box_labels"], sdata.tables["diffst_box_shapes"]
    b = b[a.obs_names]
    np.testing.assert_allclose(a.obs["area_um2"], b.obs["area_um2"], rtol=1e-9)
    x, y = a.X.sum(1), b.X.sum(1)
    assert np.corrcoef(x, y)[0, 1] > 0.999
    assert abs(x.sum() / y.sum() - 1) < 0.01


def test_circles_are_cells_too(mapped):
    """Circles count their exact area: a circle inside one map pixel takes that pixel's share."""
    import geopandas as gpd
    from shapely import Point
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import get_transformation

    values, a, cs = _map(mapped)
    g = int(np.argmax(np.nansum(values, axis=(1, 2))))
    i, j = np.unravel_index(np.argmax(values[g]), values[g].shape)
    pixel = np.sqrt(abs(np.linalg.det(a[:2, :2])))
    centre = a[:2, :2] @ [j + 0.5, i + 0.5] + a[:2, 2]
    radius = pixel / 4
    circles = ShapesModel.parse(gpd.GeoDataFrame({"radius": [radius]},
                                                 geometry=[Point(*centre)], index=[7]),
                                transformations={cs: get_transformation(mapped.shapes["spots"],
                                                                         cs)})
    sdata = _section(mapped, shapes={"circles": circles})
    ds.tl.cell_expression(sdata, "circles")
    table = sdata.tables["diffst_circles"]
    share = np.pi * radius**2 / pixel**2
    expected = values[:, i, j] * share / _pixels_per_footprint(mapped)
    np.testing.assert_allclose(table.X[0], expected, rtol=1e-5)
    assert table.obs["map_fraction"].iloc[0] == pytest.approx(1.0)
    assert table.obs_names[0] == "7" and table.obs["cell_id"].iloc[0] == 7


def test_nuclei_of_the_he(mapped, nuclei):
    """Nuclei are labels over the H&E, of nuclear size, many of them, on the tissue."""
    from spatialdata.models import Labels2DModel, get_model
    from spatialdata.transformations import get_transformation

    assert get_model(nuclei) is Labels2DModel
    cs = mapped.tables["table"].uns["diffst"]["coordinate_system"]
    he = mapped.images["he"]
    a = affine_matrix(get_transformation(nuclei, cs))
    he_shape = section_view(mapped).image.shape[1:]
    corner = a @ [nuclei.shape[1], nuclei.shape[0], 1]
    np.testing.assert_allclose(corner[:2], [he_shape[1], he_shape[0]], rtol=1e-9)
    assert cs in get_transformation(he, get_all=True)
    labels = np.asarray(nuclei.data)
    n = int(labels.max())
    assert 5_000 < n < 100_000
    um2 = abs(np.linalg.det(a[:2, :2])) * section_view(mapped).microns_per_pixel ** 2
    areas = np.bincount(labels.ravel())[1:] * um2
    assert 20 < np.median(areas) < 200  # nuclei grown by 3 um


def test_nuclei_table_annotates_the_labels_and_survives_writing(mapped, nuclei, tmp_path):
    from spatialdata import read_zarr
    from spatialdata.models import TableModel

    sdata = _section(mapped, labels={"diffst_nuclei": nuclei})
    ds.tl.cell_expression(sdata, "diffst_nuclei")
    table = sdata.tables["diffst_diffst_nuclei"]
    TableModel().validate(table)
    sdata.validate_table_in_spatialdata(table)
    attrs = table.uns["spatialdata_attrs"]
    assert attrs["region"] == "diffst_nuclei" and attrs["instance_key"] == "cell_id"
    ids = np.unique(np.asarray(nuclei.data))
    assert np.array_equal(np.sort(table.obs["cell_id"].to_numpy()), ids[ids > 0])
    assert (table.obs["map_fraction"] > 0.99).mean() > 0.95
    assert np.all(table.layers["std"] >= 0) and np.isfinite(table.X).all()
    # centroids lie in the coordinate system, over the H&E
    view = section_view(mapped)
    xy = table.obsm["spatial"]
    assert (xy.min(0) >= 0).all() and (xy.max(0) <= view.image.shape[1:][::-1]).all()
    # spatialdata's join finds each cell's row
    from spatialdata import join_spatialelement_table

    _, joined = join_spatialelement_table(sdata, spatial_element_names="diffst_nuclei",
                                          table_name="diffst_diffst_nuclei", how="left")
    assert joined.n_obs == table.n_obs
    path = tmp_path / "cells.zarr"
    sdata.write(path)
    back = read_zarr(path).tables["diffst_diffst_nuclei"]
    np.testing.assert_array_equal(back.X, table.X)
    np.testing.assert_array_equal(back.layers["std"], table.layers["std"])
    np.testing.assert_array_equal(back.obsm["spatial"], table.obsm["spatial"])
    assert back.uns["spatialdata_attrs"]["region"] == "diffst_nuclei"


def test_scanpy_clusters_the_cells(mapped, nuclei):
    sc = pytest.importorskip("scanpy")
    pytest.importorskip("leidenalg")
    sdata = _section(mapped, labels={"diffst_nuclei": nuclei})
    ds.tl.cell_expression(sdata, "diffst_nuclei")
    cells = sdata.tables["diffst_diffst_nuclei"]
    cells = cells[cells.X.sum(1) > 0].copy()
    sc.pp.normalize_total(cells)
    sc.pp.log1p(cells)
    sc.pp.pca(cells, n_comps=10)
    sc.pp.neighbors(cells, transformer="sklearn")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scanpy's note on the leiden flavour
        sc.tl.leiden(cells, resolution=0.5, flavor="igraph", n_iterations=2)
    assert cells.obs["leiden"].nunique() > 1


def test_nan_outside_the_tissue_reads_as_no_counts(mapped):
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import get_transformation

    labels, _ = _tiles_labels(mapped, cell_px=9.0, n_cells=50)
    sdata = _section(mapped, labels={"tiles": labels})
    ds.tl.cell_expression(sdata, "tiles")
    for key in ("diffst", "diffst_std"):
        el = sdata.images[key]
        values = np.asarray(el.data)
        values = np.where(values.sum(0, keepdims=True) > 0, values, np.nan)
        sdata.images[key] = Image2DModel.parse(values, dims=("c", "y", "x"),
                                               c_coords=list(el.coords["c"].values),
                                               transformations=get_transformation(el,
                                                                                  get_all=True))
    ds.tl.cell_expression(sdata, "tiles", key_added="with_nan")
    np.testing.assert_allclose(sdata.tables["with_nan"].X, sdata.tables["diffst_tiles"].X)


def test_bad_inputs_are_refused_with_the_fix(mapped, nuclei):
    from spatialdata.transformations import Translation, set_transformation

    sdata = _section(mapped, labels={"diffst_nuclei": nuclei})
    with pytest.raises(KeyError, match=r"No image layer 'other'.*superresolve"):
        ds.tl.cell_expression(sdata, "diffst_nuclei", maps_key="other")
    with pytest.raises(KeyError, match=r"No labels or shapes element 'cells'.*diffst_nuclei"):
        ds.tl.cell_expression(sdata, "cells")
    with pytest.raises(KeyError, match=r"No table 'nope'"):
        ds.tl.cell_expression(sdata, "diffst_nuclei", table_key="nope")
    far, _ = _tiles_labels(mapped, cell_px=7.0, n_cells=5)
    cs = mapped.tables["table"].uns["diffst"]["coordinate_system"]
    set_transformation(far, Translation([1e6, 1e6], axes=("x", "y")), to_coordinate_system=cs)
    sdata.labels["far"] = far
    with pytest.raises(ValueError, match=r"No cell of 'far' overlaps the map"):
        ds.tl.cell_expression(sdata, "far")
    assert "diffst_far" not in sdata.tables
    with pytest.raises(ValueError, match=r"share no coordinate system"):
        _elsewhere(sdata, "far")
    with pytest.raises(ValueError, match="cannot name"):
        ds.tl.cell_expression(sdata, "diffst_nuclei", key_added="a/b")
    with pytest.raises(ValueError, match="labels element 'diffst_nuclei'"):
        ds.tl.cell_expression(sdata, "diffst_nuclei", key_added="diffst_nuclei")


def _elsewhere(sdata, key):
    """``cell_expression`` of labels ``key`` placed only in a coordinate system of their own."""
    from spatialdata.transformations import Identity, set_transformation

    set_transformation(sdata.labels[key], {"elsewhere": Identity()}, set_all=True)
    ds.tl.cell_expression(sdata, key)


def test_nothing_is_overwritten_unless_asked(mapped, nuclei):
    sdata = _section(mapped, he=True, labels={"diffst_nuclei": nuclei})
    ds.tl.cell_expression(sdata, "diffst_nuclei", key_added="cells")
    before = sdata.tables["cells"]
    with pytest.raises(ValueError, match=r"Table 'cells' already exists; pass overwrite=True"):
        ds.tl.cell_expression(sdata, "spots", key_added="cells")
    assert sdata.tables["cells"] is before
    ds.tl.cell_expression(sdata, "spots", key_added="cells", overwrite=True)
    assert sdata.tables["cells"].uns["spatialdata_attrs"]["region"] == "spots"
    with pytest.raises(ValueError, match=r"Labels 'diffst_nuclei' already exists; pass "
                                         r"overwrite=True"):
        ds.tl.segment_nuclei(sdata)
    assert sdata.labels["diffst_nuclei"] is nuclei
    with pytest.raises(ValueError, match="A tables element 'cells' already exists"):
        ds.tl.segment_nuclei(sdata, key_added="cells")
    with pytest.raises(ValueError, match="expand_um must be a positive"):
        ds.tl.segment_nuclei(sdata, key_added="more", expand_um=-1.0)
    with pytest.raises(ValueError, match=r"Nuclei cannot be segmented at 6 um per pixel"):
        ds.tl.segment_nuclei(sdata, key_added="more", pixel_size_um=6.0)
