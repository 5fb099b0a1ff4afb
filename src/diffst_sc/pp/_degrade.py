"""Low-resolution / high-resolution pairs made from real data by summing counts, never inventing.

Spot data (legacy ST, Visium) are aggregated into coarser pseudo-spots (``"square"`` blocks,
``"hex"`` hexagons); subcellular transcripts (Xenium) are binned into a fine grid (the truth)
and counted inside Visium-like discs (the low-resolution input). Everything stays in the source's
coordinate system, so the result overlays the same H&E.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._core._blocks import block_assignment, block_obs, spot_blocks
from .._core._build import spot_circles, spot_table
from .._core._checks import check_counts, warn_if_not_counts
from .._core._docs import shared_parameters
from .._core._grid import Grid
from .._core._lattice import is_hex_lattice, spot_positions

if TYPE_CHECKING:
    from spatialdata import SpatialData

MODES = ("auto", "square", "hex", "transcripts")
#: Xenium codewords that are not genes (controls and unassigned reads).
CONTROL_PREFIXES = ("NegControl", "BLANK", "Unassigned", "antisense", "DeprecatedCodeword")
DEGRADE_UNS_KEY = "diffst_degrade"


@shared_parameters
def degrade(
    sdata: SpatialData,
    *,
    mode: str = "auto",
    factor: int = 2,
    table_key: str | None = None,
    coordinate_system: str | None = None,
    hr_pixel_um: float = 8.0,
    spot_diameter_um: float = 55.0,
    spot_spacing_um: float = 100.0,
    genes: Sequence[str] | None = None,
    image_key: str | None = None,
    points_key: str | None = None,
) -> SpatialData:
    """Make a low-resolution (LR) section and its high-resolution (HR) truth from real data.

    The input is never modified. Counts are only summed: every LR count is a measured count.

    Parameters
    ----------
    sdata
        SpatialData with spots (a table annotating circles, with raw counts) or with
        subcellular transcripts (points with ``x``, ``y`` and a gene column) and an H&E.
    mode
        ``"square"``: a square array (legacy ST): the spot at array position (x, y) goes to block
        (x // factor, y // factor); a table without array positions gets those of the lattice
        its centres form or, off any regular lattice (jittered centres), of square bins of
        the area each spot has to itself, so that blocks group the spots nearest one another.
        ``"hex"``: Visium's hexagonal lattice (``array_row``, ``array_col``): hexagons of
        ``factor - 1`` rings (``factor=2``: a spot and its 6 neighbours). ``"transcripts"``:
        bin transcripts into ``hr_pixel_um`` pixels (truth) and count them in
        ``spot_diameter_um`` discs on a ``spot_spacing_um`` hexagonal lattice centred on the
        grid (discs whose centre is off the grid, or that hold no transcript, are left out;
        transcripts off the grid, which covers the H&E, count for neither).
        ``"auto"``: spots with array positions -> ``"hex"`` when all lie on one parity of
        ``array_row + array_col`` (Visium), else ``"square"``; otherwise transcripts when there
        are points, else spots placed by their centres (``"hex"`` on a hexagonal lattice).
    factor
        Coarsening of the spot modes (see ``mode``).
    {table_key}
    {coordinate_system}
    {image_key}
    hr_pixel_um
        Side of the HR pixels in micrometres (``"transcripts"``).
    spot_diameter_um, spot_spacing_um
        Pseudo-spot geometry for ``"transcripts"`` (Visium: 55 um discs 100 um apart).
    genes
        Genes to keep; all genes (control codewords dropped) by default.
    points_key
        Points element holding transcripts; ``"transcripts"`` or the only one by default.

    Returns
    -------
    SpatialData
        A new object in the source's coordinate system with ``images["he"]`` (the input's H&E),
        ``shapes["spots"]`` + ``tables["table"]`` (the LR pseudo-spots: summed raw counts in
        ``X`` and ``layers["counts"]``, ``obsm["spatial"]`` in H&E pixels,
        ``uns["diffst_section"]`` with their geometry, so :func:`diffst_sc.io.section_view`
        works on it) and the HR truth: ``shapes["hr_spots"]`` + ``tables["hr_table"]``
        (spot modes: the measured spots, ``obs["lr_spot"]`` = row of their pseudo-spot in
        ``table``) or ``images["hr_truth"]`` (genes x H x W counts per pixel) +
        ``shapes["hr_pixels"]`` + ``tables["hr_table"]`` (pixels with counts, ``obs["lr_spot"]`` =
        nearest pseudo-spot). ``table.uns["diffst_degrade"]`` records how it was made. In spot
        modes both tables record each spot's counts over all genes in
        ``obs["diffst_library_size"]``, so that a table of a few ``genes`` keeps the library
        sizes that normalise them.

    Examples
    --------
    >>> import diffst_sc as ds
    >>> lr = ds.pp.degrade(ds.io.read_legacy_st("her2st/C2"))  # doctest: +SKIP
    >>> lr.tables["table"].n_obs, lr.tables["hr_table"].obs["lr_spot"]  # doctest: +SKIP
    """
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}; use one of {MODES}.")
    if mode == "auto":
        mode = _auto_mode(sdata, table_key)
    if mode == "transcripts":
        return _degrade_transcripts(
            sdata, coordinate_system=coordinate_system, hr_pixel_um=hr_pixel_um,
            spot_diameter_um=spot_diameter_um, spot_spacing_um=spot_spacing_um, genes=genes,
            image_key=image_key, points_key=points_key)
    return _degrade_spots(sdata, mode=mode, factor=factor, table_key=table_key,
                          coordinate_system=coordinate_system, genes=genes, image_key=image_key)


# ---------------------------------------------------------------------------------------------
# choosing the mode


def _auto_mode(sdata, table_key) -> str:
    obs = None
    if len(sdata.tables):
        from .._core._elements import pick_table

        try:
            obs = sdata.tables[pick_table(sdata, table_key)].obs
        except ValueError:
            obs = None
    if obs is not None and {"array_row", "array_col"} <= set(obs.columns) and len(obs):
        return "hex" if is_hex_lattice(obs["array_row"], obs["array_col"]) else "square"
    if len(sdata.points):
        return "transcripts"
    if obs is not None and len(obs) > 1:
        from .._core._view import section_view

        view = section_view(sdata, table_key=table_key)
        return "hex" if spot_positions(view)[2] == "hex" else "square"
    raise ValueError(
        "Cannot tell how to degrade this SpatialData: its table has no `array_row`/`array_col` "
        "(spot array positions) and it has no transcripts (points). Add the array positions to "
        "`table.obs`, or pass `mode=` ('square', 'hex' or 'transcripts')."
    )


# ---------------------------------------------------------------------------------------------
# spot data


def _degrade_spots(sdata, *, mode, factor, table_key, coordinate_system, genes, image_key):
    from spatialdata.transformations import get_transformation

    from .._core._elements import centres_and_diameter, pick_table, table_spots
    from .._core._lattice import lattice_spacing_px
    from .._core._view import LIBRARY_KEY, section_view
    from ._genes import select_genes

    factor = int(factor)
    if factor < 2:
        raise ValueError(f"factor must be at least 2 to coarsen the spots, got {factor}.")
    table_key = pick_table(sdata, table_key)
    view = section_view(sdata, table_key=table_key, coordinate_system=coordinate_system,
                        image_key=image_key)
    adata = view.adata
    row, col, layout = spot_positions(view)
    if layout != "recorded" and (layout == "hex") != (mode == "hex"):
        lattice = {"hex": "a hexagonal lattice", "square": "a square lattice",
                   "binned": "no regular lattice (they are grouped by square bins)"}[layout]
        raise ValueError(f"mode={mode!r} but the spots lie on {lattice}; use mode='auto'.")
    genes = list(map(str, adata.var_names)) if genes is None else select_genes(adata, genes=genes)
    gidx = pd.Index(map(str, adata.var_names)).get_indexer(genes)
    x = adata.X if view.layer is None else adata.layers[view.layer]
    x = sp.csr_matrix(x, dtype=np.float32)[:, gidx]
    where = f"table {view.table_key!r}"
    warn_if_not_counts(check_counts(x, where=where), where=where)

    blocks, parent, n_children = spot_blocks(row, col, mode, factor)
    linear = float(np.sqrt(n_children))
    assign, n_per = block_assignment(parent, len(blocks))
    lr_counts = sp.csr_matrix(assign @ x, dtype=np.float32)
    library = view.library_sizes()
    centres_px = (assign @ view.centres_px) / n_per[:, None]

    shapes = table_spots(sdata, view.table_key)
    native_xy, native_diam = centres_and_diameter(shapes)
    native_centres = (assign @ native_xy) / n_per[:, None]
    transformations = {cs: copy.deepcopy(t) for cs, t in
                       get_transformation(shapes, get_all=True).items()}

    meta_in = dict(adata.uns.get("diffst_section", {}))
    spacing_um = meta_in.get("spot_spacing_um")
    if spacing_um is None:
        spacing_um = lattice_spacing_px(adata.obs, view.centres_px) * view.microns_per_pixel
    meta = {
        **{k: v for k, v in meta_in.items() if isinstance(v, str | int | float)},
        "microns_per_pixel": float(view.microns_per_pixel),
        "spot_diameter_um": linear * view.spot_diameter_um,
        "spot_spacing_um": linear * float(spacing_um),
        "spot_diameter_px": linear * view.diameter_px,
    }
    obs = block_obs(view, blocks, assign, n_per, n_children)
    lr_table = _lr_table(lr_counts, genes, adata.var.iloc[gidx], obs, centres_px, meta,
                         {"mode": mode, "factor": factor, "n_hr_spots": int(len(parent)),
                          "positions": layout})
    lr_shapes = spot_circles(native_centres, linear * native_diam / 2, transformations)

    hr_shapes = _reparse_shapes(shapes, transformations)
    hr_table = adata[:, gidx].copy()
    hr_table.obs["lr_spot"] = parent.astype(np.int64)
    hr_table.obs[LIBRARY_KEY] = library
    hr_table = _reparse_table(hr_table, region="hr_spots")
    return _assemble(sdata, view.image_key, lr_shapes, lr_table,
                     shapes={"hr_spots": hr_shapes}, tables={"hr_table": hr_table})


# ---------------------------------------------------------------------------------------------
# transcripts


def _degrade_transcripts(sdata, *, coordinate_system, hr_pixel_um, spot_diameter_um,
                         spot_spacing_um, genes, image_key, points_key):
    from spatialdata.transformations import get_transformation

    from .._core._elements import affine_matrix, image_levels, pick_image

    for name, v in (("hr_pixel_um", hr_pixel_um), ("spot_diameter_um", spot_diameter_um),
                    ("spot_spacing_um", spot_spacing_um)):
        if not np.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must be a positive number of micrometres, got {v!r}.")
    if spot_diameter_um > spot_spacing_um:
        raise ValueError(f"spot_diameter_um ({spot_diameter_um}) must not exceed spot_spacing_um "
                         f"({spot_spacing_um}): pseudo-spots must not overlap, or a transcript "
                         "would be counted twice.")
    points_key = _pick_points(sdata, points_key)
    points = sdata.points[points_key]
    cs = _points_coordinate_system(sdata, points, coordinate_system)
    image_key = pick_image(sdata, cs, image_key)
    a_img = affine_matrix(get_transformation(sdata.images[image_key], to_coordinate_system=cs))
    a_pts = affine_matrix(get_transformation(points, to_coordinate_system=cs))
    um_per_cs = _microns_per_cs_unit(a_pts, points_key)
    he_shape = image_levels(sdata.images[image_key])[0].shape[1:]

    xy_cs, gene_codes, genes, n_controls = _transcripts(points, points_key, a_pts, genes)
    grid = _hr_grid(a_img, he_shape, um_per_cs, hr_pixel_um)
    inside = grid.contains(xy_cs)
    xy_cs, gene_codes = xy_cs[inside], gene_codes[inside]
    hr = grid.bin(xy_cs, gene_codes, len(genes))

    site_rc, site_of, site_xy = _pseudo_spots(grid, xy_cs, um_per_cs, spot_diameter_um,
                                                 spot_spacing_um)
    in_disc = site_of >= 0
    sites, lr_row = np.unique(site_of[in_disc], return_inverse=True)
    if len(sites) == 0:
        raise ValueError("No transcript falls inside any pseudo-spot: the points and the H&E do "
                         "not overlap in coordinate system "
                         f"{cs!r}, or the discs are too small (spot_diameter_um={spot_diameter_um}).")
    lr_counts = sp.csr_matrix(
        (np.ones(int(in_disc.sum()), np.float32), (lr_row.ravel(), gene_codes[in_disc])),
        shape=(len(sites), len(genes)), dtype=np.float32)
    lr_centres_cs = site_xy[sites]

    to_px = np.linalg.inv(a_img)
    he_um = um_per_cs * float(np.sqrt(abs(np.linalg.det(a_img[:2, :2]))))
    diameter_cs = spot_diameter_um / um_per_cs
    meta = {
        "platform": "pseudo_visium",
        "microns_per_pixel": he_um,
        "spot_diameter_um": float(spot_diameter_um),
        "spot_spacing_um": float(spot_spacing_um),
        "spot_diameter_px": float(spot_diameter_um / he_um),
    }
    lattice_rc = _lattice_indices(sites, site_rc)
    obs = pd.DataFrame({"array_row": lattice_rc[:, 0], "array_col": lattice_rc[:, 1]},
                       index=[f"lr_{r}_{c}" for r, c in lattice_rc])
    record = {
        "mode": "transcripts", "points_key": points_key, "hr_pixel_um": float(hr_pixel_um),
        "um_per_cs_unit": float(um_per_cs), "grid_origin_cs": grid.origin.tolist(),
        "grid_pixel_cs": float(grid.pixel), "grid_shape": [int(grid.height), int(grid.width)],
        "n_control_transcripts_dropped": int(n_controls),
        "n_transcripts_in_grid": int(inside.sum()),
        "n_transcripts_outside_grid": int((~inside).sum()),
    }
    from spatialdata.transformations import Identity

    lr_table = _lr_table(lr_counts, genes, None, obs, _apply(to_px, lr_centres_cs), meta, record)
    lr_shapes = spot_circles(lr_centres_cs, np.full(len(sites), diameter_cs / 2), {cs: Identity()})

    hr_image = grid.image(hr, genes, cs)
    hr_shapes, hr_table = _hr_pixels_table(hr, genes, grid, lr_centres_cs, to_px, cs, he_um,
                                           hr_pixel_um, um_per_cs)
    return _assemble(sdata, image_key, lr_shapes, lr_table,
                     shapes={"hr_pixels": hr_shapes}, tables={"hr_table": hr_table},
                     images={"hr_truth": hr_image})


def _pick_points(sdata, points_key):
    keys = list(sdata.points)
    if points_key is not None:
        if points_key not in sdata.points:
            raise KeyError(f"No points {points_key!r}; the SpatialData has points {keys}.")
        return points_key
    if "transcripts" in keys:
        return "transcripts"
    if len(keys) == 1:
        return keys[0]
    raise ValueError(f"mode='transcripts' needs one points element of transcripts; found {keys}. "
                     "Pass `points_key=`.")


def _points_coordinate_system(sdata, points, cs):
    from .._core._elements import pick_coordinate_system

    return pick_coordinate_system(sdata, points, cs, what="transcripts")


def _microns_per_cs_unit(a_pts: np.ndarray, points_key: str) -> float:
    """Size of one coordinate-system unit, from the transcripts (whose x, y are micrometres)."""
    lin = a_pts[:2, :2]
    sv = np.linalg.svd(lin, compute_uv=False)
    if sv.min() <= 0 or sv.max() / sv.min() > 1.001:
        raise ValueError(f"Points {points_key!r} are placed by a transformation that stretches x "
                         f"and y differently (singular values {sv.round(4).tolist()}); a "
                         "micrometre grid needs the same scale on both axes.")
    return 1.0 / float(sv.mean())


def _transcripts(points, points_key, a_pts, genes):
    """Transcript positions in the coordinate system and gene codes; control codewords dropped."""
    feature_key = points.attrs.get("spatialdata_attrs", {}).get("feature_key", "feature_name")
    missing = [c for c in ("x", "y", feature_key) if c not in points.columns]
    if missing:
        raise ValueError(f"Points {points_key!r} lack columns {missing}; transcripts need x, y "
                         "(micrometres) and a gene column (the points' feature_key).")
    df = points[["x", "y", feature_key]].compute()
    names = df[feature_key].astype(str).to_numpy()
    control = np.array([n.startswith(CONTROL_PREFIXES) for n in names], bool)
    n_controls = int(control.sum())
    names = names[~control]
    xy = df[["x", "y"]].to_numpy(float)[~control]
    present = pd.unique(pd.Series(names))
    if genes is None:
        cats = df[feature_key].cat.categories if hasattr(df[feature_key], "cat") else present
        genes = [str(g) for g in cats if not str(g).startswith(CONTROL_PREFIXES)]
    else:
        genes = list(dict.fromkeys(map(str, genes)))
        known = set(str(g) for g in (df[feature_key].cat.categories
                                     if hasattr(df[feature_key], "cat") else present))
        absent = [g for g in genes if g not in known]
        if absent:
            raise KeyError(f"{len(absent)} of the {len(genes)} requested genes are not in the "
                           f"panel of {points_key!r}: {absent[:10]}. Pick genes from its "
                           f"{feature_key!r} column.")
    codes = pd.Index(genes).get_indexer(names)
    keep = codes >= 0
    xy_cs = _apply(a_pts, xy[keep])
    return xy_cs, codes[keep].astype(np.int64), genes, n_controls


def _hr_grid(a_img: np.ndarray, he_shape, um_per_cs: float, hr_pixel_um: float) -> Grid:
    """Whole pixels of ``hr_pixel_um`` centred in the H&E's bounding box in the cs."""
    h, w = he_shape
    corners = _apply(a_img, np.array([[0, 0], [w, 0], [0, h], [w, h]], float))
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    pixel = hr_pixel_um / um_per_cs
    n = np.floor((hi - lo) / pixel).astype(int)
    if (n < 1).any():
        raise ValueError(f"The H&E spans {((hi - lo) * um_per_cs).round(1).tolist()} um, less than "
                         f"one HR pixel of {hr_pixel_um} um: use a smaller `hr_pixel_um`.")
    origin = lo + ((hi - lo) - n * pixel) / 2
    return Grid(float(origin[0]), float(origin[1]), float(pixel), int(n[1]), int(n[0]))


def _pseudo_spots(grid: Grid, xy_cs, um_per_cs, diameter_um, spacing_um):
    """Hexagonal lattice of discs centred on the grid; which disc holds each transcript.

    Returns the lattice site of each transcript (-1 outside every disc) and all sites' centres;
    only sites whose centre lies in the grid are kept (others are marked -1 too).
    """
    centre = grid.origin + grid.pixel * np.array([grid.width, grid.height]) / 2
    spacing = spacing_um / um_per_cs
    dy = spacing * np.sqrt(3) / 2
    half = grid.pixel * np.array([grid.width, grid.height]) / 2
    n_rows = int(np.ceil(half[1] / dy)) + 1
    n_cols = int(np.ceil(half[0] / spacing)) + 1
    rows = np.arange(-n_rows, n_rows + 1)
    cols = np.arange(-n_cols, n_cols + 1)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    # doubled layout as Visium's: odd rows are shifted by half a spacing
    sx = centre[0] + spacing * (cc + 0.5 * (rr % 2))
    sy = centre[1] + dy * rr
    site_xy = np.c_[sx.ravel(), sy.ravel()]
    site_rc = np.c_[rr.ravel(), 2 * cc.ravel() + (rr.ravel() % 2)]
    valid = grid.contains(site_xy)

    # The nearest site is the only disc that can hold a point, as discs do not overlap.
    rel = xy_cs - centre
    r0 = np.round(rel[:, 1] / dy).astype(np.int64)
    best_d = np.full(len(rel), np.inf)
    best = np.full(len(rel), -1, np.int64)
    for dr in (-1, 0, 1):
        r = r0 + dr
        c = np.round(rel[:, 0] / spacing - 0.5 * (r % 2)).astype(np.int64)
        d = np.hypot(rel[:, 0] - spacing * (c + 0.5 * (r % 2)), rel[:, 1] - dy * r)
        ok = (np.abs(r) <= n_rows) & (np.abs(c) <= n_cols)
        better = ok & (d < best_d)
        best_d = np.where(better, d, best_d)
        best = np.where(better, (r + n_rows) * len(cols) + (c + n_cols), best)
    radius = diameter_um / um_per_cs / 2
    site_of = np.where((best >= 0) & (best_d <= radius), best, -1)
    site_of = np.where(site_of >= 0, np.where(valid[np.maximum(site_of, 0)], site_of, -1), -1)
    return site_rc, site_of, site_xy


def _lattice_indices(sites, site_rc) -> np.ndarray:
    """(array_row, array_col) of the kept sites in Visium's doubled layout, smallest at 0."""
    rc = np.asarray(site_rc)[sites]
    return rc - rc.min(axis=0)


def _hr_pixels_table(hr, genes, grid: Grid, lr_centres_cs, to_px, cs, he_um, hr_pixel_um,
                     um_per_cs):
    import geopandas as gpd
    from scipy.spatial import cKDTree
    from shapely.geometry import box
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import Identity

    total = hr.sum(axis=0)
    iy, ix = np.nonzero(total > 0)
    centres_cs = grid.centres(iy, ix)
    _, nearest = cKDTree(lr_centres_cs).query(centres_cs)
    half = grid.pixel / 2
    polys = [box(x - half, y - half, x + half, y + half) for x, y in centres_cs]
    ids = np.arange(len(iy))
    shapes = ShapesModel.parse(gpd.GeoDataFrame(geometry=polys, index=ids),
                               transformations={cs: Identity()})
    obs = pd.DataFrame({"array_row": iy, "array_col": ix, "lr_spot": nearest.astype(np.int64)},
                       index=[f"px_{r}_{c}" for r, c in zip(iy, ix, strict=True)])
    table = spot_table(hr[:, iy, ix].T, genes, obs, _apply(to_px, centres_cs),
                       region="hr_pixels", uns={"diffst_section": {
                           "platform": "hr_grid",
                           "microns_per_pixel": he_um,
                           "pixel_um": float(hr_pixel_um),
                           # equal-area diameter, how section_view measures polygons
                           "spot_diameter_um": float(2 * np.sqrt(hr_pixel_um**2 / np.pi)),
                           "spot_diameter_px": float(2 * np.sqrt(hr_pixel_um**2 / np.pi) / he_um),
                           "spot_spacing_um": float(hr_pixel_um),
                       }})
    return shapes, table


# ---------------------------------------------------------------------------------------------
# assembling the result


def _apply(affine: np.ndarray, xy: np.ndarray) -> np.ndarray:
    xy = np.asarray(xy, float).reshape(-1, 2)
    return (np.c_[xy, np.ones(len(xy))] @ affine.T)[:, :2]


def _lr_table(counts, genes, var, obs, centres_px, meta, record):
    return spot_table(counts, genes, obs, centres_px, region="spots", var=var,
                      uns={"diffst_section": meta, DEGRADE_UNS_KEY: record})


def _reparse_table(table, *, region: str):
    from spatialdata.models import TableModel

    attrs = dict(table.uns.get("spatialdata_attrs", {}))
    region_key = attrs.get("region_key") or "region"
    instance_key = attrs.get("instance_key") or "spot_id"
    if instance_key not in table.obs:
        table.obs[instance_key] = np.arange(table.n_obs)
    table.obs[region_key] = pd.Categorical([region] * table.n_obs)
    table.uns.pop("spatialdata_attrs", None)
    return TableModel.parse(table, region=region, region_key=region_key,
                            instance_key=instance_key)


def _reparse_shapes(shapes, transformations):
    """A new shapes element with the geometry (and radius) of ``shapes``, ids kept."""
    import geopandas as gpd
    from spatialdata.models import ShapesModel

    gdf = gpd.GeoDataFrame(
        {c: shapes[c].to_numpy() for c in shapes.columns if c != "geometry"},
        geometry=shapes.geometry.to_numpy(), index=shapes.index.copy())
    return ShapesModel.parse(gdf, transformations=transformations)


def _copy_image(el):
    """A new image element sharing the pixels, with its own transformations."""
    out = el.copy(deep=False)
    if hasattr(out, "children") and len(out.children):
        for name in out.children:
            da = out[name]["image"]
            da.attrs["transform"] = copy.deepcopy(da.attrs.get("transform", {}))
    else:
        out.attrs = copy.deepcopy(dict(el.attrs))
    return out


def _assemble(sdata, image_key, lr_shapes, lr_table, *, shapes, tables, images=None):
    from spatialdata import SpatialData

    return SpatialData(
        images={"he": _copy_image(sdata.images[image_key]), **(images or {})},
        shapes={"spots": lr_shapes, **shapes},
        tables={"table": lr_table, **tables},
    )
