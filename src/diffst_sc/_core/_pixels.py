"""A table of a map's pixels (pixels x genes), laid out as scanpy and squidpy expect."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._tiles import gene_chunk


def add_pixel_table(sdata, view, genes, mean, keep, grid, key: str,
                    image_px: int = 2000) -> None:
    """Add ``tables[key + "_table"]`` (tissue pixels x genes) annotating ``shapes[key + "_pixels"]``.

    ``mean`` is the ``(G, H, W)`` map (read a few genes at a time) and
    ``keep`` the ``(H, W)`` pixels to include (``superresolve`` passes the pixels where a gene is
    positive, so none outside the tissue, whether it holds 0 or NaN there).

    The AnnData is laid out for scanpy and squidpy with their defaults: ``X`` dense float32 (not
    a scipy sparse *array*, which scanpy 1.11 does not take everywhere), ``obsm['spatial']``
    (pixel centres in full-resolution H&E pixels) and the H&E in ``uns['spatial'][key]``
    (``images['hires']``, float32 in [0, 1], with ``scalefactors['tissue_hires_scalef']`` and
    ``['spot_diameter_fullres']``), the layout of ``sc.pl.spatial`` and
    ``sq.pl.spatial_scatter``.

    Notes
    -----
    With scanpy 1.11.5, pynndescent 0.7 and scipy 1.17, ``sc.pp.neighbors`` with its defaults
    fails on 8,192 pixels or more (``'csr_array' object has no attribute 'getnnz'``): from that
    size scanpy switches to pynndescent, whose distances are a ``csr_array`` that scanpy reads
    with a method scipy removed. That happens whatever ``X`` is; there,
    ``sc.pp.neighbors(table, transformer="sklearn")`` gives the exact neighbours.
    """
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import get_transformation

    keep = np.asarray(keep, bool)
    ids = np.nonzero(keep.ravel())[0]
    to_cs = get_transformation(sdata.images[view.image_key],
                               to_coordinate_system=view.coordinate_system)
    shapes_key, table_key = key + "_pixels", key + "_table"
    sdata.shapes[shapes_key] = ShapesModel.parse(
        grid.pixel_centres()[ids], geometry=0, radius=np.full(len(ids), grid.pixel / 2),
        index=ids, transformations={view.coordinate_system: to_cs})
    sdata.tables[table_key] = pixel_table(view, genes, mean, keep, grid, library_id=key,
                                          region=shapes_key, image_px=image_px)


def pixel_table(view, genes, mean, keep, grid, *, library_id: str, region: str,
                image_px: int = 2000):
    """The AnnData of :func:`add_pixel_table` (annotating shapes ``region``), not yet added.

    Parameters
    ----------
    view
        The section's :class:`~diffst_sc._core.SectionView` (its H&E goes to ``uns``).
    genes
        Names of the map's ``G`` genes.
    mean
        ``(G, H, W)`` map on ``grid``.
    keep
        ``(H, W)`` bool, the pixels that become rows.
    grid
        The map's :class:`~diffst_sc._core.Grid`, in H&E pixels.
    library_id
        Key of the H&E in ``uns['spatial']``.
    region
        The shapes element the table annotates (one circle per kept pixel, index = pixel id).
    image_px
        Longest side of the H&E stored in ``uns`` (it is downscaled to it, never enlarged).

    Returns
    -------
    anndata.AnnData
        Parsed by spatialdata's ``TableModel``; ``obs`` holds ``grid_row``, ``grid_col``.
    """
    from ._build import spot_table

    g, h, w = mean.shape
    keep = np.asarray(keep, bool).ravel()
    step = gene_chunk(g, h * w, copies=2)
    x = np.empty((int(keep.sum()), g), np.float32)
    for g0 in range(0, g, step):
        x[:, g0:g0 + step] = np.asarray(mean[g0:g0 + step], np.float32).reshape(-1, h * w)[:, keep].T
    ids = np.nonzero(keep)[0]
    obs = pd.DataFrame({"grid_row": ids // w, "grid_col": ids % w}, index=ids.astype(str))
    scale = min(1.0, image_px / max(view.image.shape[1:]))
    he = np.moveaxis(view.image_at(view.microns_per_pixel / scale), 0, -1)
    lib = {"images": {"hires": np.ascontiguousarray(he)},
           "scalefactors": {"tissue_hires_scalef": float(scale),
                            "spot_diameter_fullres": float(grid.pixel)}}
    return spot_table(x, genes, obs, grid.pixel_centres()[keep], region=region, ids=ids,
                      instance_key="pixel_id", counts=False, uns={"spatial": {library_id: lib}})
