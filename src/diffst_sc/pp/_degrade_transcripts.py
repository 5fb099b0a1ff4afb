"""Xenium transcripts to a degraded pair: a fine grid of counts and Visium-like discs.

The transcripts are binned into a fine grid (the truth) and counted inside Visium-like discs
(the low-resolution input), in the transcripts' coordinate system.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._core._build import spot_circles, spot_table
from .._core._grid import Grid
from ._degrade import CONTROL_PREFIXES, _assemble, _lr_table


def degrade_transcripts(sdata, *, coordinate_system, hr_pixel_um, spot_diameter_um,
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
