"""Spot lattices: spacing, array positions, and whether a lattice is hexagonal."""

from __future__ import annotations

import numpy as np


def spot_spacing(centres: np.ndarray) -> float:
    """Median nearest-neighbour distance of points (their lattice spacing)."""
    from scipy.spatial import cKDTree

    if len(centres) < 2:
        raise ValueError("At least two spots are needed to know their spacing; this section has "
                         f"{len(centres)}.")
    d, _ = cKDTree(centres).query(centres, k=2)
    return float(np.median(d[:, 1]))


def lattice_spacing_px(obs, centres: np.ndarray) -> float:
    """Centre-to-centre distance of neighbouring lattice positions, in the units of ``centres``.

    Fitted to all spots' array positions (``obs`` columns ``array_row``, ``array_col``) when
    present, which holds for any subset of the spots; else the median nearest-neighbour
    distance. On Visium's lattice (one parity of row + col) row neighbours are 2 columns apart.
    """
    if obs is not None and {"array_row", "array_col"} <= set(obs.columns) and len(obs) >= 3:
        row = obs["array_row"].to_numpy(float)
        col = obs["array_col"].to_numpy(float)
        coef = lattice_fit(row, col, centres)
        if coef is not None:
            if is_hex_lattice(row, col):
                return float(2 * np.linalg.norm(coef[0]))
            return square_step(coef)
    return spot_spacing(centres)


def lattice_fit(row, col, centres: np.ndarray) -> np.ndarray | None:
    """``(3, 2)`` least-squares affine from array ``(col, row, 1)`` to ``centres`` (x, y).

    ``None`` when the positions do not span a plane (all on one line, or fewer than 3).
    """
    a = np.c_[np.asarray(col, float), np.asarray(row, float), np.ones(len(row))]
    if len(a) < 3 or np.linalg.matrix_rank(a) < 3:
        return None
    coef, *_ = np.linalg.lstsq(a, np.asarray(centres, float)[:, :2], rcond=None)
    return coef


#: Largest median distance of the spots from their lattice sites, in spacings, for the sites to
#: stand for their cells (her2st's measured spots: 0.04; off an affine lattice: far more).
LATTICE_TOLERANCE = 0.1
#: Spacings within which the neighbours' offsets from the affine lattice give a site's local
#: correction (a slide's image is not exactly an affine map of its array).
LOCAL_SPACINGS = 2.0


def lattice_sites(view) -> np.ndarray:
    """``(n, 2)`` the site (x, y pixels) of each spot of ``view`` on its array's lattice.

    The site is the centre of the cell a spot stands for. A measured spot sits on it, up to the
    slide's jitter; a pseudo-spot of :func:`diffst_sc.pp.degrade` cut by the tissue's edge sits at
    the mean of the spots it sums, off its block's centre, while its cell is still its block.
    The sites are the affine lattice (:func:`lattice_fit`) of the table's ``array_row`` and
    ``array_col``, each moved by the median offset of the spots within :data:`LOCAL_SPACINGS`
    spacings of it on the lattice (her2st's spots stray from one affine map by 0.07-0.08
    spacings, from the locally corrected sites by 0.04); the centres themselves where the table
    records no array positions, or where the spots lie off the sites (median distance over
    :data:`LATTICE_TOLERANCE` spacings).
    """
    from scipy.spatial import cKDTree

    centres = np.asarray(view.centres_px, float)
    obs = view.adata.obs
    if not {"array_row", "array_col"} <= set(obs.columns) or len(centres) < 3:
        return centres
    row, col = obs["array_row"].to_numpy(float), obs["array_col"].to_numpy(float)
    coef = lattice_fit(row, col, centres)
    if coef is None:
        return centres
    sites = np.c_[col, row, np.ones(len(row))] @ coef
    offset = centres - sites
    near = cKDTree(sites).query_ball_point(sites, (LOCAL_SPACINGS + 0.01) * view.spacing_px)
    sites = sites + np.array([np.median(offset[i], axis=0) for i in near])
    off = np.median(np.linalg.norm(sites - centres, axis=1))
    return sites if off <= LATTICE_TOLERANCE * view.spacing_px else centres


def square_step(coef: np.ndarray) -> float:
    """The side of one array step of a square lattice fitted by :func:`lattice_fit`."""
    return float(np.sqrt(abs(np.linalg.det(coef[:2, :2]))))


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


def is_hex_lattice(row, col) -> bool:
    """Whether array positions lie on Visium's hexagonal layout: one parity of ``row + col``."""
    parity = (np.asarray(row, int) + np.asarray(col, int)) % 2
    return len(parity) > 1 and bool((parity == parity[0]).all())
