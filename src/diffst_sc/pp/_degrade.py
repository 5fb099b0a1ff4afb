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
        ``uns["diffst_section"]`` with their geometry, so :func:`diffst_sc._core.section_view`
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
        from ._degrade_transcripts import degrade_transcripts

        return degrade_transcripts(
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
