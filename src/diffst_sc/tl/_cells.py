"""``ds.tl.cell_expression``: a super-resolved map summed over each cell, as a table of cells."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._core._elements import affine_matrix, centres_and_diameter, image_levels, table_region

if TYPE_CHECKING:
    from spatialdata import SpatialData

#: Bytes of the map read at once (a few genes at a time).
_MAP_BYTES = 256 * 2**20
#: Segments per quarter circle of a circle turned into a polygon (its area is kept exact).
_QUAD_SEGS = 16


def cell_expression(
    sdata: SpatialData,
    cells: str,
    *,
    maps_key: str = "diffst",
    key_added: str | None = None,
    table_key: str | None = None,
    coordinate_system: str | None = None,
    region_key: str = "region",
    instance_key: str = "cell_id",
    overwrite: bool = False,
) -> None:
    """Expected counts of each cell, from a super-resolved map, as a table annotating the cells.

    The map of :func:`superresolve` holds, at each pixel, counts per spot footprint: the counts
    a spot's disc would hold if the whole disc were like that pixel. A cell's expected counts
    are therefore the map summed over the cell, each pixel weighted by the area of the cell that
    it covers, divided by the area of one spot footprint. The overlap of every cell with every
    map pixel is computed exactly for polygons and circles, and for a label image whose pixels
    are aligned with the map's (see below), through the elements' transformations to a
    coordinate system they share; pixels outside the tissue count as no counts. (This is what
    ``spatialdata.aggregate(values=<map>, by=<cells>, agg_func="sum", fractions=True)`` would
    give, but it does not aggregate images by shapes, and aggregates images by labels only on a
    shared pixel grid.)

    Adds ``sdata.tables[key_added]``, an AnnData parsed by spatialdata's ``TableModel`` that
    annotates ``cells`` (``region=cells``, ``obs[region_key]``, ``obs[instance_key]``: the
    label values or the shapes' index), one row per cell:

    - ``X``: expected counts per cell (float32, cells x genes of the map), in the units of the
      table the map was made from (counts, when that table holds raw counts);
    - ``layers["std"]``: their uncertainty, from ``images[maps_key + "_std"]``, summed over the
      cell like the mean. This assumes the map's errors are fully correlated within a cell:
      a cell spans one or a few map pixels, whose errors come from the same spots and the same
      histology model, so they move together; the sum is the upper end (independent errors
      would give the square root of the sum of squares, smaller). It is the uncertainty of the
      expected counts, not the Poisson noise of counting them;
    - ``obs["area_um2"]``: the cell's area, ``obs["map_fraction"]``: the share of it that the
      map covers (cells off the map get 0 counts and a fraction of 0);
    - ``obsm["spatial"]``: the cells' centroids (x, y) in the coordinate system used;
    - ``uns[key_added]``: the settings.

    Parameters
    ----------
    sdata
        A SpatialData holding the map (``images[maps_key]``, from :func:`superresolve`), its
        spots' table (whose ``uns[maps_key]`` records the map) and the cells.
    cells
        Name of the cells' element: a labels element (0 = background; e.g. from
        :func:`segment_nuclei`, cellpose, or a Xenium reader's ``cell_labels``) or a shapes
        element of polygons, multipolygons or circles (e.g. from sopa, or a Xenium reader's
        ``cell_boundaries``).
    maps_key
        Name of the map's image layer, the ``key_added`` of :func:`superresolve`.
    key_added
        Name of the new table; ``f"{maps_key}_{cells}"`` by default.
    table_key
        The spots' table recording the map in ``uns[maps_key]``; found by default.
    coordinate_system
        Coordinate system relating the map and the cells; by default the map's (the one
        recorded in ``uns[maps_key]``) when the cells are placed in it, else one they share.
    region_key, instance_key
        Names of the new table's ``obs`` columns of the annotated element and of the cells' ids.
    overwrite
        Replace an existing table ``key_added``.

    Returns
    -------
    None
        The table is added to ``sdata``.

    Raises
    ------
    KeyError
        When the map, its table or the cells' element is missing (the message lists what there
        is).
    ValueError
        When the map and the cells share no coordinate system, no cell overlaps the map, or
        ``key_added`` exists without ``overwrite=True``.

    Examples
    --------
    >>> import diffst_sc as ds
    >>> import scanpy as sc
    >>> sdata = ds.datasets.her2st_demo()
    >>> model = ds.tl.fit(sdata, n_genes=20, progress=False)
    >>> ds.tl.superresolve(sdata, progress=False)
    >>> ds.tl.segment_nuclei(sdata)                   # labels "diffst_nuclei"
    >>> ds.tl.cell_expression(sdata, "diffst_nuclei")  # table "diffst_diffst_nuclei"
    >>> cells = sdata.tables["diffst_diffst_nuclei"]
    >>> cells.n_vars, cells.uns["spatialdata_attrs"]["region"]
    (20, 'diffst_nuclei')
    >>> sc.pp.normalize_total(cells)
    >>> sc.pp.log1p(cells)
    """
    import pandas as pd
    from anndata import AnnData
    from spatialdata.models import TableModel
    from spatialdata.transformations import get_transformation

    if key_added is None:
        key_added = f"{maps_key}_{cells}"
    mean_el, std_el = _map_layers(sdata, maps_key)
    table_key = _maps_table(sdata, maps_key, table_key)
    cells_el, kind = _cells_element(sdata, cells)
    _check_free(sdata, key_added, overwrite, {region_key, instance_key})
    record = dict(sdata.tables[table_key].uns[maps_key])
    cs = _shared_system(mean_el, cells_el, maps_key, cells, coordinate_system,
                        record.get("coordinate_system"))

    map_to_cs = affine_matrix(get_transformation(mean_el, to_coordinate_system=cs))
    cells_to_cs = affine_matrix(get_transformation(cells_el, to_coordinate_system=cs))
    to_map = np.linalg.inv(map_to_cs) @ cells_to_cs
    mean = image_levels(mean_el)[0]
    raster_hw = tuple(int(s) for s in mean.shape[1:])
    overlaps = _overlaps(cells_el, kind, raster_hw, to_map, cells)
    if overlaps.weights.nnz == 0:
        raise ValueError(
            f"No cell of {cells!r} overlaps the map {maps_key!r} in coordinate system {cs!r} "
            f"({len(overlaps.ids)} cells; the map covers {_extent(map_to_cs, raster_hw)}, the "
            f"cells {_cells_extent(overlaps, cells_to_cs)}). Check that the cells belong to "
            "this section and that their transformation to the coordinate system is right "
            "(spatialdata.transformations.get_transformation / set_transformation).")

    per_footprint = _pixels_per_footprint(sdata, table_key, record.get("coordinate_system", cs),
                                          mean_el)
    counts = _summed(overlaps.weights, mean) / per_footprint
    std = _summed(overlaps.weights, image_levels(std_el)[0]) / per_footprint
    pixel_um2 = float(record["pixel_size_um"]) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.asarray(overlaps.weights.sum(1)).ravel() / overlaps.area
    genes = [str(g) for g in mean.coords["c"].values]
    ids = overlaps.ids
    if np.issubdtype(ids.dtype, np.integer):
        ids = ids.astype(np.int64)  # the integer types spatialdata takes as instance ids

    obs = pd.DataFrame({
        region_key: pd.Categorical([cells] * len(ids)),
        instance_key: ids,
        "area_um2": overlaps.area * pixel_um2,
        "map_fraction": np.nan_to_num(fraction),
    }, index=pd.Index([str(i) for i in ids]))
    centroids = overlaps.centroids @ cells_to_cs[:2, :2].T + cells_to_cs[:2, 2]
    adata = AnnData(X=counts.astype(np.float32), obs=obs, var=pd.DataFrame(index=genes),
                    layers={"std": std.astype(np.float32)},
                    obsm={"spatial": centroids.astype(np.float64)})
    adata.uns[key_added] = {
        "maps_key": maps_key, "cells": cells, "cells_kind": kind, "table_key": table_key,
        "coordinate_system": cs, "units": "expected counts per cell",
        "std": "the map's std summed over the cell (errors fully correlated within a cell)",
        "map_pixels_per_footprint": float(per_footprint),
        "map_pixel_size_um": float(record["pixel_size_um"]),
    }
    sdata.tables[key_added] = TableModel.parse(adata, region=cells, region_key=region_key,
                                               instance_key=instance_key)


def _map_layers(sdata, maps_key: str):
    """The map's mean and std image elements."""
    missing = [k for k in (maps_key, maps_key + "_std") if k not in sdata.images]
    if missing:
        raise KeyError(f"No image layer {missing[0]!r}; the SpatialData has images "
                       f"{list(sdata.images)}. Make the map first with "
                       f"`ds.tl.superresolve(sdata, key_added={maps_key!r})`, or pass the name "
                       "of the map as `maps_key=`.")
    return sdata.images[maps_key], sdata.images[maps_key + "_std"]


def _maps_table(sdata, maps_key: str, table_key: str | None) -> str:
    """The table whose ``uns[maps_key]`` records the map (``superresolve`` writes it there)."""
    if table_key is not None:
        if table_key not in sdata.tables:
            raise KeyError(f"No table {table_key!r}; the SpatialData has tables "
                           f"{list(sdata.tables)}.")
        if maps_key not in sdata.tables[table_key].uns:
            raise KeyError(f"Table {table_key!r} holds no uns[{maps_key!r}], the record "
                           f"`ds.tl.superresolve(..., key_added={maps_key!r})` writes with the "
                           "map; pass the table of the spots the map was made from.")
        return table_key
    found = [k for k, t in sdata.tables.items()
             if isinstance(t.uns.get(maps_key), dict) and "pixel_size_um" in t.uns[maps_key]]
    if not found:
        raise KeyError(f"No table records the map {maps_key!r} (uns[{maps_key!r}], written by "
                       f"`ds.tl.superresolve`); tables: {list(sdata.tables)}. Pass the spots' "
                       "table as `table_key=`, or make the map with `ds.tl.superresolve`.")
    if len(found) > 1:
        raise ValueError(f"Tables {found} all record a map {maps_key!r}; pass `table_key=`.")
    return found[0]


def _cells_element(sdata, cells: str):
    """The cells' element and its kind, ``"labels"``, ``"polygons"`` or ``"circles"``."""
    if not isinstance(cells, str):
        raise TypeError(f"`cells` must name a labels or shapes element of the SpatialData, "
                        f"not a {type(cells).__name__}; add it first, e.g. "
                        "`sdata.labels['cells'] = Labels2DModel.parse(...)`.")
    if cells in sdata.labels:
        el = sdata.labels[cells]
        if len(image_levels(el)[0].dims) != 2:
            raise ValueError(f"Labels {cells!r} are not 2D (y, x); 3D labels are not supported.")
        return el, "labels"
    if cells in sdata.shapes:
        el = sdata.shapes[cells]
        types = set(el.geometry.geom_type)
        if types <= {"Point"}:
            if "radius" not in el.columns:
                raise ValueError(f"Shapes {cells!r} are points without a `radius` column; cells "
                                 "must have an area (polygons, or circles with a radius).")
            return el, "circles"
        if types <= {"Polygon", "MultiPolygon"}:
            return el, "polygons"
        raise ValueError(f"Shapes {cells!r} hold {sorted(types)}; cells must be polygons, "
                         "multipolygons or circles.")
    raise KeyError(f"No labels or shapes element {cells!r}; the SpatialData has labels "
                   f"{list(sdata.labels)} and shapes {list(sdata.shapes)}. Segment nuclei with "
                   "`ds.tl.segment_nuclei(sdata)`, or add your segmentation as a labels or "
                   "shapes element.")


def _check_free(sdata, key_added: str, overwrite: bool, columns: set) -> None:
    """Refuse a table name that exists (unless ``overwrite``) or that names another element."""
    from spatialdata import sanitize_name

    if not isinstance(key_added, str) or not key_added or sanitize_name(key_added) != key_added:
        raise ValueError(f"key_added={key_added!r} cannot name a SpatialData element; use "
                         "letters, digits, '_', '-' and '.' only.")
    if len(columns) != 2:
        raise ValueError("region_key and instance_key must differ.")
    for kind, name, _ in sdata.gen_elements():
        if name.lower() != key_added.lower():
            continue
        if kind == "tables" and name == key_added:
            if not overwrite:
                raise ValueError(f"Table {key_added!r} already exists; pass overwrite=True to "
                                 "replace it, or choose another `key_added=`.")
            continue
        raise ValueError(f"key_added={key_added!r} would add table {key_added!r}, but the "
                         f"SpatialData has {kind} element {name!r}; spatialdata refuses names "
                         "shared by two elements. Choose another `key_added=`.")


def _shared_system(mean_el, cells_el, maps_key, cells, given, recorded) -> str:
    """The coordinate system placing both the map and the cells."""
    from spatialdata.transformations import get_transformation

    map_cs = list(get_transformation(mean_el, get_all=True))
    cells_cs = list(get_transformation(cells_el, get_all=True))
    shared = [c for c in map_cs if c in cells_cs]
    if given is not None:
        if given not in shared:
            raise ValueError(f"Coordinate system {given!r} does not place both the map "
                             f"{maps_key!r} (in {map_cs}) and the cells {cells!r} (in "
                             f"{cells_cs}); pass one of {shared} as `coordinate_system=`.")
        return given
    if not shared:
        raise ValueError(f"The map {maps_key!r} (in coordinate systems {map_cs}) and the cells "
                         f"{cells!r} (in {cells_cs}) share no coordinate system; place the cells "
                         "in the map's with `spatialdata.transformations.set_transformation`.")
    return recorded if recorded in shared else shared[0]


def _overlaps(el, kind: str, raster_hw, to_map, cells: str):
    from ._overlap import geometry_overlaps, label_overlaps

    if kind == "labels":
        return label_overlaps(image_levels(el)[0], raster_hw, to_map)
    if not el.index.is_unique:
        raise ValueError(f"Shapes {cells!r} have repeated index values; each cell needs its "
                         "own id (`shapes.reset_index(drop=True)`).")
    geoms = el.geometry.to_numpy()
    if kind == "circles":
        geoms = _circles(geoms, el["radius"].to_numpy(float))
    return geometry_overlaps(geoms, el.index.to_numpy(), raster_hw, to_map)


def _circles(points, radius: np.ndarray):
    """Polygons of the circles, their radii set so that each polygon's area is the circle's."""
    import shapely

    n = 4 * _QUAD_SEGS
    polygon_over_circle = n * np.sin(2 * np.pi / n) / (2 * np.pi)
    return shapely.buffer(points, radius / np.sqrt(polygon_over_circle), quad_segs=_QUAD_SEGS)


def _pixels_per_footprint(sdata, table_key: str, cs: str, mean_el) -> float:
    """How many map pixels make one spot footprint (the map's values are per footprint).

    Measured in coordinate system ``cs``, which places the map over its spots.
    """
    from spatialdata.transformations import get_transformation

    spots_key = table_region(sdata, table_key)
    spots = sdata.shapes[spots_key]
    systems = get_transformation(spots, get_all=True)
    map_systems = get_transformation(mean_el, get_all=True)
    if cs not in systems or cs not in map_systems:
        raise ValueError(f"The spots {spots_key!r} (in {list(systems)}) and the map (in "
                         f"{list(map_systems)}) share no coordinate system {cs!r}; the map "
                         "must be placed over the spots it was made from.")
    _, diameter = centres_and_diameter(spots)
    spots_to_cs, map_to_cs = affine_matrix(systems[cs]), affine_matrix(map_systems[cs])
    footprint = np.pi * diameter**2 / 4 * abs(np.linalg.det(spots_to_cs[:2, :2]))
    return float(footprint / abs(np.linalg.det(map_to_cs[:2, :2])))


def _summed(weights, raster) -> np.ndarray:
    """``(cells, channels)`` the raster summed over each cell's weights, NaN read as 0."""
    n_c, h, w = (int(s) for s in raster.shape)
    data = getattr(raster, "data", raster)
    step = max(1, _MAP_BYTES // (8 * h * w))
    out = np.empty((weights.shape[0], n_c))
    for c0 in range(0, n_c, step):
        block = data[c0:c0 + step]
        block = np.asarray(block.compute() if hasattr(block, "compute") else block, np.float64)
        out[:, c0:c0 + step] = weights @ np.nan_to_num(block.reshape(len(block), h * w).T)
    return out


def _extent(to_cs, raster_hw) -> str:
    h, w = raster_hw
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], float) @ to_cs.T
    lo, hi = corners[:, :2].min(0), corners[:, :2].max(0)
    return f"x {lo[0]:.1f} to {hi[0]:.1f}, y {lo[1]:.1f} to {hi[1]:.1f}"


def _cells_extent(overlaps, to_cs) -> str:
    if not len(overlaps.centroids):
        return "nothing (the element is empty)"
    xy = overlaps.centroids @ to_cs[:2, :2].T + to_cs[:2, 2]
    lo, hi = xy.min(0), xy.max(0)
    return f"x {lo[0]:.1f} to {hi[0]:.1f}, y {lo[1]:.1f} to {hi[1]:.1f} (centroids)"
