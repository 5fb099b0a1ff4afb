"""Low-resolution / high-resolution pairs made from real data by summing counts, never inventing.

Spot data (legacy ST, Visium) are aggregated into coarser pseudo-spots (``"square"`` blocks,
``"hex"`` hexagons); subcellular transcripts (Xenium) are binned into a fine grid (the truth)
and counted inside Visium-like discs (the low-resolution input). Everything stays in the source's
coordinate system, so the result overlays the same H&E.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..io._checks import check_counts, warn_if_not_counts

MODES = ("auto", "square", "hex", "transcripts")
#: Xenium codewords that are not genes (controls and unassigned reads).
CONTROL_PREFIXES = ("NegControl", "BLANK", "Unassigned", "antisense", "DeprecatedCodeword")
DEGRADE_UNS_KEY = "diffst_degrade"


def degrade(
    sdata,
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
):
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
    table_key, coordinate_system, image_key
        Which table, coordinate system and H&E to use; inferred when there is one choice.
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
        from ..io._view import _pick_table

        try:
            obs = sdata.tables[_pick_table(sdata, table_key)].obs
        except ValueError:
            obs = None
    if obs is not None and {"array_row", "array_col"} <= set(obs.columns) and len(obs):
        return "hex" if _is_hex_lattice(obs["array_row"], obs["array_col"]) else "square"
    if len(sdata.points):
        return "transcripts"
    if obs is not None and len(obs) > 1:
        from ..io._view import section_view

        view = section_view(sdata, table_key=table_key)
        return "hex" if spot_positions(view)[2] == "hex" else "square"
    raise ValueError(
        "Cannot tell how to degrade this SpatialData: its table has no `array_row`/`array_col` "
        "(spot array positions) and it has no transcripts (points). Add the array positions to "
        "`table.obs`, or pass `mode=` ('square', 'hex' or 'transcripts')."
    )


#: Largest spot diameter, relative to the spacing of the spots, that spots without a lattice may
#: have to be grouped into pseudo-spots: spots do not overlap their neighbours (Visium 0.55,
#: legacy ST 0.5), segmented cells' circles do.
MAX_GROUPED_DIAMETER = 1.05


def spot_positions(view) -> tuple[np.ndarray, np.ndarray, str]:
    """Integer (row, col) of each spot of ``view`` that pseudo-spots are grouped by.

    The table's ``array_row``/``array_col`` when it records them; else the lattice that
    :func:`infer_array_positions` finds; else, for spots off any regular lattice (jittered
    centres, a table built from ``obsm["spatial"]`` alone), square bins one spacing wide on the
    image axes, each as large as the area a spot has to itself (:func:`area_per_spot`), so that
    2 x 2 bins group the four or so spots nearest one another, as a block of a square array does.

    Returns
    -------
    row, col
        Integer positions (``"binned"`` ones may repeat).
    layout
        ``"recorded"``, ``"square"``, ``"hex"`` or ``"binned"``.
    """
    from ..io._view import spot_spacing

    obs = view.adata.obs
    if {"array_row", "array_col"} <= set(obs.columns):
        return obs["array_row"].to_numpy(int), obs["array_col"].to_numpy(int), "recorded"
    centres = np.asarray(view.centres_px, float)
    spacing = spot_spacing(centres)
    if _is_regular(centres, spacing):
        row, col, is_hex = infer_array_positions(centres)
        return row, col, "hex" if is_hex else "square"
    if view.diameter_px > MAX_GROUPED_DIAMETER * spacing:
        raise ValueError(f"The table has no array positions (array_row/array_col) and its "
                         f"{len(centres)} observations are not spots: they lie off any regular "
                         f"lattice and their discs ({view.diameter_px:.3g} px wide) overlap "
                         f"their neighbours ({spacing:.3g} px apart), as segmented cells do. "
                         "Pseudo-spots group spots; for subcellular data use "
                         "mode='transcripts', or add the array positions to table.obs.")
    side = np.sqrt(area_per_spot(centres))
    col, row = np.floor((centres - centres.min(0)) / side).astype(int).T
    return row, col, "binned"


def area_per_spot(centres: np.ndarray) -> float:
    """The area each spot has to itself: the median area of the spots' Voronoi cells.

    Only the cells enclosed by other spots count, so the tissue's edge does not inflate it; it
    is the lattice's cell on any regular lattice, and the mean spacing squared on jittered ones.
    """
    from scipy.spatial import QhullError, Voronoi

    from ..io._view import spot_spacing

    try:
        vor = Voronoi(centres)
    except QhullError:  # e.g. all centres on one line: the nearest-neighbour spacing squared
        return spot_spacing(centres) ** 2
    areas = []
    for region in (vor.regions[i] for i in vor.point_region):
        if region and -1 not in region:
            x, y = vor.vertices[region].T
            areas.append(0.5 * abs(x @ np.roll(y, 1) - y @ np.roll(x, 1)))
    if not areas:  # too few spots to enclose any
        return spot_spacing(centres) ** 2
    return float(np.median(areas))


def _is_regular(centres_px: np.ndarray, spacing: float) -> bool:
    """Whether most spots have their nearest neighbour one lattice spacing away (within 15%)."""
    from scipy.spatial import cKDTree

    d, _ = cKDTree(centres_px).query(centres_px, k=2)
    return bool(np.mean(np.abs(d[:, 1] / spacing - 1) < 0.15) >= 0.8)


def infer_array_positions(centres_px: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Array (row, col) of spots on a regular lattice from their centres.

    For tables that do not record them; :func:`spot_positions` checks that the lattice is
    regular before it calls this. The lattice is taken as aligned with the image axes (as
    legacy ST and Visium slides are). A hexagonal lattice (six neighbours) gets Visium's
    doubled column layout, so that ``(row + col)`` has one parity; a square one gets plain
    indices.

    Returns
    -------
    row, col
        Integer positions.
    is_hex
        Whether the lattice is hexagonal.
    """
    from scipy.spatial import cKDTree

    from ..io._view import spot_spacing

    spacing = spot_spacing(centres_px)
    tree = cKDTree(centres_px)
    n_nb = np.array([len(p) - 1 for p in tree.query_ball_point(centres_px, 1.2 * spacing)])
    is_hex = bool(np.median(n_nb[n_nb > 0]) > 4) if (n_nb > 0).any() else False
    xy = centres_px - centres_px.min(0)
    if not is_hex:
        col, row = np.round(xy / spacing).astype(int).T
        return row, col, False
    best = None
    for a, b in ((1, 0), (0, 1)):  # rows along y (Visium's usual layout) or along x
        r = xy[:, a] / (spacing * np.sqrt(3) / 2)
        c = xy[:, b] / (spacing / 2)
        rr = np.round(r).astype(int)
        cc = np.round(c).astype(int)
        cc += (rr + cc - (rr[0] + cc[0])) % 2  # one parity, as on Visium's array
        resid = np.abs(r - rr).mean()
        if best is None or resid < best[0]:
            best = (resid, rr, cc)
    return best[1], best[2], True


def _is_hex_lattice(row, col) -> bool:
    parity = (np.asarray(row, int) + np.asarray(col, int)) % 2
    return len(parity) > 1 and bool((parity == parity[0]).all())


# ---------------------------------------------------------------------------------------------
# spot data


def _degrade_spots(sdata, *, mode, factor, table_key, coordinate_system, genes, image_key):
    from spatialdata.transformations import get_transformation

    from ..io._view import (
        LIBRARY_KEY,
        MEASURED_KEY,
        _centres_and_diameter,
        _order_like_table,
        _pick_table,
        lattice_spacing_px,
        section_view,
    )
    from ._genes import select_genes

    factor = int(factor)
    if factor < 2:
        raise ValueError(f"factor must be at least 2 to coarsen the spots, got {factor}.")
    table_key = _pick_table(sdata, table_key)
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

    if mode == "square":
        parent_rc = np.c_[row // factor, col // factor]
        n_children = factor * factor
    elif mode == "hex":
        parent_rc = _hex_parents(row, col, factor - 1)
        n_children = 3 * (factor - 1) ** 2 + 3 * (factor - 1) + 1
    else:
        raise ValueError(f"Unknown spot mode {mode!r}.")
    linear = float(np.sqrt(n_children))

    blocks, parent = np.unique(parent_rc, axis=0, return_inverse=True)
    parent = parent.ravel()
    n_lr = len(blocks)
    assign = sp.csr_matrix((np.ones(len(parent), np.float32), (parent, np.arange(len(parent)))),
                           shape=(n_lr, len(parent)))
    n_per = np.asarray(assign.sum(axis=1)).ravel()
    lr_counts = sp.csr_matrix(assign @ x, dtype=np.float32)
    library = view.library_sizes()
    centres_px = (assign @ view.centres_px) / n_per[:, None]

    shapes = _order_like_table(sdata.shapes[view.shapes_key], adata,
                               adata.uns["spatialdata_attrs"].get("instance_key"),
                               adata.uns["spatialdata_attrs"].get("region_key"), view.shapes_key)
    native_xy, native_diam = _centres_and_diameter(shapes)
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
    obs = pd.DataFrame(
        {"array_row": blocks[:, 0], "array_col": blocks[:, 1], "n_spots": n_per.astype(int),
         LIBRARY_KEY: assign @ library,
         MEASURED_KEY: (assign @ view.measured_fraction) / n_children},
        index=[f"lr_{r}_{c}" for r, c in blocks],
    )
    lr_table = _lr_table(lr_counts, genes, adata.var.iloc[gidx], obs, centres_px, meta,
                         {"mode": mode, "factor": factor, "n_hr_spots": int(len(parent)),
                          "positions": layout})
    lr_shapes = _circles(native_centres, linear * native_diam / 2, transformations)

    hr_shapes = _reparse_shapes(shapes, transformations)
    hr_table = adata[:, gidx].copy()
    hr_table.obs["lr_spot"] = parent.astype(np.int64)
    hr_table.obs[LIBRARY_KEY] = library
    hr_table = _reparse_table(hr_table, region="hr_spots")
    return _assemble(sdata, view.image_key, lr_shapes, lr_table,
                     shapes={"hr_spots": hr_shapes}, tables={"hr_table": hr_table})


def _hex_parents(row: np.ndarray, col: np.ndarray, rings: int) -> np.ndarray:
    """Hexagon (of ``rings`` rings around a centre) holding each spot of a Visium-like lattice.

    Visium's ``array_col`` steps by 2 along a row and neighbouring rows are offset by 1, so the
    axial coordinates of the hexagonal lattice are ``q = (col - row - parity) / 2``, ``r = row``.
    Hexagons of ``rings`` rings tile the lattice with centres on the sub-lattice spanned by
    ``A = (rings + 1, rings)`` and ``B = (-rings, 2 rings + 1)`` (B is A turned by 60 degrees).

    Returns
    -------
    numpy.ndarray
        ``(n, 2)`` (array_row, array_col) of each spot's hexagon on the coarse lattice, in the
        same doubled layout as Visium's (so the result can be degraded again).
    """
    row = np.asarray(row, np.int64)
    col = np.asarray(col, np.int64)
    if not _is_hex_lattice(row, col):
        raise ValueError("mode='hex' needs a Visium-like lattice: array_row + array_col must have "
                         "one parity for all spots (array_col steps by 2 along a row). Use "
                         "mode='square' for a square array (legacy ST).")
    parity = (row[0] + col[0]) % 2
    q = (col - row - parity) // 2
    r = row
    k = rings
    basis = np.array([[k + 1, -k], [k, 2 * k + 1]], dtype=float)  # columns: A, B
    mn = np.linalg.solve(basis, np.vstack([q, r]).astype(float))
    base = np.floor(mn).astype(np.int64)
    best_d = np.full(len(q), np.iinfo(np.int64).max)
    best = np.zeros((2, len(q)), np.int64)
    for dm in (-1, 0, 1, 2):
        for dn in (-1, 0, 1, 2):
            cand = base + np.array([[dm], [dn]])
            cq = (k + 1) * cand[0] - k * cand[1]
            cr = k * cand[0] + (2 * k + 1) * cand[1]
            dq, dr = q - cq, r - cr
            d = (np.abs(dq) + np.abs(dr) + np.abs(dq + dr)) // 2
            better = d < best_d
            best_d = np.where(better, d, best_d)
            best[:, better] = cand[:, better]
    assert (best_d <= k).all(), "hexagons of `rings` rings must tile the lattice"
    m, n = best
    return np.c_[n, 2 * m + n]


# ---------------------------------------------------------------------------------------------
# transcripts


def _degrade_transcripts(sdata, *, coordinate_system, hr_pixel_um, spot_diameter_um,
                         spot_spacing_um, genes, image_key, points_key):
    from spatialdata.transformations import get_transformation

    from ..io._view import _affine, _image_scales, _pick_image

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
    image_key = _pick_image(sdata, cs, image_key)
    a_img = _affine(get_transformation(sdata.images[image_key], to_coordinate_system=cs))
    a_pts = _affine(get_transformation(points, to_coordinate_system=cs))
    um_per_cs = _microns_per_cs_unit(a_pts, points_key)
    he_shape = _image_scales(sdata.images[image_key])[0].shape[1:]

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
        "grid_pixel_cs": float(grid.pixel), "grid_shape": [int(grid.ny), int(grid.nx)],
        "n_control_transcripts_dropped": int(n_controls),
        "n_transcripts_in_grid": int(inside.sum()),
        "n_transcripts_outside_grid": int((~inside).sum()),
    }
    from spatialdata.transformations import Identity

    lr_table = _lr_table(lr_counts, genes, None, obs, _apply(to_px, lr_centres_cs), meta, record)
    lr_shapes = _circles(lr_centres_cs, np.full(len(sites), diameter_cs / 2), {cs: Identity()})

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
    from ..io._view import _pick_coordinate_system

    return _pick_coordinate_system(sdata, points, cs, what="transcripts")


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


class _Grid:
    """Axis-aligned grid of square pixels in the coordinate system."""

    def __init__(self, origin: np.ndarray, pixel: float, nx: int, ny: int):
        self.origin = np.asarray(origin, float)  # (x, y) of the grid's corner
        self.pixel = float(pixel)  # side in coordinate-system units
        self.nx, self.ny = int(nx), int(ny)

    @property
    def extent(self) -> np.ndarray:
        return self.origin + self.pixel * np.array([self.nx, self.ny])

    def contains(self, xy: np.ndarray) -> np.ndarray:
        lo, hi = self.origin, self.extent
        return (xy[:, 0] >= lo[0]) & (xy[:, 0] < hi[0]) & (xy[:, 1] >= lo[1]) & (xy[:, 1] < hi[1])

    def pixel_of(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ij = np.floor((xy - self.origin) / self.pixel).astype(np.int64)
        return np.clip(ij[:, 1], 0, self.ny - 1), np.clip(ij[:, 0], 0, self.nx - 1)

    def centres(self, iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
        return self.origin + self.pixel * (np.c_[ix, iy] + 0.5)

    def bin(self, xy: np.ndarray, codes: np.ndarray, n_genes: int) -> np.ndarray:
        iy, ix = self.pixel_of(xy)
        flat = (codes * self.ny + iy) * self.nx + ix
        out = np.bincount(flat, minlength=n_genes * self.ny * self.nx)
        return out.reshape(n_genes, self.ny, self.nx).astype(np.float32)

    def image(self, hr: np.ndarray, genes: list[str], cs: str):
        from spatialdata.models import Image2DModel
        from spatialdata.transformations import Scale, Sequence, Translation

        transform = Sequence([Scale([self.pixel, self.pixel], axes=("y", "x")),
                              Translation([self.origin[1], self.origin[0]], axes=("y", "x"))])
        return Image2DModel.parse(hr, dims=("c", "y", "x"), c_coords=list(genes),
                                  transformations={cs: transform},
                                  chunks=(1, self.ny, self.nx))


def _hr_grid(a_img: np.ndarray, he_shape, um_per_cs: float, hr_pixel_um: float) -> _Grid:
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
    return _Grid(origin, pixel, n[0], n[1])


def _pseudo_spots(grid: _Grid, xy_cs, um_per_cs, diameter_um, spacing_um):
    """Hexagonal lattice of discs centred on the grid; which disc holds each transcript.

    Returns the lattice site of each transcript (-1 outside every disc) and all sites' centres;
    only sites whose centre lies in the grid are kept (others are marked -1 too).
    """
    centre = grid.origin + grid.pixel * np.array([grid.nx, grid.ny]) / 2
    spacing = spacing_um / um_per_cs
    dy = spacing * np.sqrt(3) / 2
    half = grid.pixel * np.array([grid.nx, grid.ny]) / 2
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


def _hr_pixels_table(hr, genes, grid: _Grid, lr_centres_cs, to_px, cs, he_um, hr_pixel_um,
                     um_per_cs):
    import anndata as ad
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
    x = sp.csr_matrix(hr[:, iy, ix].T)
    obs = pd.DataFrame({"array_row": iy, "array_col": ix, "lr_spot": nearest.astype(np.int64)},
                       index=[f"px_{r}_{c}" for r, c in zip(iy, ix, strict=True)])
    table = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=pd.Index(genes, dtype=str)))
    table.layers["counts"] = x.copy()
    table.obsm["spatial"] = _apply(to_px, centres_cs)
    table.uns["diffst_section"] = {
        "platform": "hr_grid",
        "microns_per_pixel": he_um,
        "pixel_um": float(hr_pixel_um),
        # equal-area diameter, how section_view measures polygons
        "spot_diameter_um": float(2 * np.sqrt(hr_pixel_um**2 / np.pi)),
        "spot_diameter_px": float(2 * np.sqrt(hr_pixel_um**2 / np.pi) / he_um),
        "spot_spacing_um": float(hr_pixel_um),
    }
    table.obs["region"] = pd.Categorical(["hr_pixels"] * len(ids))
    table.obs["spot_id"] = ids
    from spatialdata.models import TableModel

    table = TableModel.parse(table, region="hr_pixels", region_key="region",
                             instance_key="spot_id")
    return shapes, table


# ---------------------------------------------------------------------------------------------
# assembling the result


def _apply(affine: np.ndarray, xy: np.ndarray) -> np.ndarray:
    xy = np.asarray(xy, float).reshape(-1, 2)
    return (np.c_[xy, np.ones(len(xy))] @ affine.T)[:, :2]


def _circles(centres, radius, transformations):
    from spatialdata.models import ShapesModel

    radius = np.broadcast_to(np.asarray(radius, float), (len(centres),)).copy()
    return ShapesModel.parse(np.asarray(centres, float), geometry=0, radius=radius,
                             index=np.arange(len(centres)), transformations=transformations)


def _lr_table(counts, genes, var, obs, centres_px, meta, record):
    import anndata as ad
    from spatialdata.models import TableModel

    var = pd.DataFrame(index=pd.Index(genes, dtype=str)) if var is None else var.copy()
    var.index = pd.Index(genes, dtype=str)
    obs = obs.copy()
    obs.index = obs.index.astype(str)
    obs["region"] = pd.Categorical(["spots"] * len(obs))
    obs["spot_id"] = np.arange(len(obs))
    x = sp.csr_matrix(counts, dtype=np.float32)
    table = ad.AnnData(X=x, obs=obs, var=var)
    table.layers["counts"] = x.copy()
    table.obsm["spatial"] = np.asarray(centres_px, float)
    table.uns["diffst_section"] = meta
    table.uns[DEGRADE_UNS_KEY] = record
    return TableModel.parse(table, region="spots", region_key="region", instance_key="spot_id")


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
