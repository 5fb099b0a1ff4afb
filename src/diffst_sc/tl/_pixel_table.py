"""A table of super-resolved pixels, so that scanpy and squidpy analyses run on them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._core._tiles import gene_chunk


def add_pixel_table(sdata, view, genes, mean, keep, grid, key: str,
                    image_px: int = 2000) -> None:
    """Add ``tables[key + "_table"]`` (tissue pixels x genes) annotating ``shapes[key + "_pixels"]``.

    ``mean`` is the ``(G, H, W)`` map (a numpy or zarr array, read a few genes at a time) and
    ``keep`` the ``(H, W)`` pixels to include (``superresolve`` passes the pixels where a gene is
    positive, so none outside the tissue, whether it holds 0 or NaN there).

    The AnnData has ``obsm['spatial']`` (pixel centres in full-resolution H&E pixels) and the H&E
    in ``uns['spatial'][key]`` (``images['hires']`` with its scale factor), the layout of
    ``sc.pl.spatial`` and ``sq.pl.spatial_scatter``.
    """
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import get_transformation

    from .._core._build import spot_table

    g, h, w = mean.shape
    keep = np.asarray(keep, bool).ravel()
    step = gene_chunk(g, h * w, copies=2)
    x = np.empty((int(keep.sum()), g), np.float32)
    for g0 in range(0, g, step):
        x[:, g0:g0 + step] = np.asarray(mean[g0:g0 + step], np.float32).reshape(-1, h * w)[:, keep].T
    centres = grid.pixel_centres()[keep]
    ids = np.nonzero(keep)[0]
    to_cs = get_transformation(sdata.images[view.image_key],
                               to_coordinate_system=view.coordinate_system)
    shapes_key, table_key = key + "_pixels", key + "_table"
    sdata.shapes[shapes_key] = ShapesModel.parse(
        centres, geometry=0, radius=np.full(len(ids), grid.pixel / 2), index=ids,
        transformations={view.coordinate_system: to_cs})
    obs = pd.DataFrame({"grid_row": ids // w, "grid_col": ids % w}, index=ids.astype(str))
    scale = min(1.0, image_px / max(view.image.shape[1:]))
    he = view.image_at(view.microns_per_pixel / scale)
    sdata.tables[table_key] = spot_table(x, genes, obs, centres, region=shapes_key, ids=ids,
                                         instance_key="pixel_id", counts=False, uns={"spatial": {
                                             key: {"images": {"hires": np.moveaxis(he, 0, -1)},
                                                   "scalefactors": {
                                                       "tissue_hires_scalef": scale,
                                                       "spot_diameter_fullres": grid.pixel}}}})
