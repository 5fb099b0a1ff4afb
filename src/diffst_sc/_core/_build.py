"""Assemble the canonical SpatialData form: H&E image, spot circles, a table annotating them."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

IMAGE_KEY = "he"
SHAPES_KEY = "spots"
TABLE_KEY = "table"


def image_scale_factors(shape_yx: tuple[int, int], min_side: int = 512) -> list[int]:
    """Factors of 2 for a pyramid whose coarsest level is about ``min_side`` pixels."""
    n = 0
    side = min(shape_yx)
    while side // 2 >= min_side:
        side //= 2
        n += 1
    return [2] * n


def build_sdata(*, counts, genes, obs: pd.DataFrame, centres_px, diameter_px, image_yxc, name,
                uns=None, image_transform=None):
    """Make a SpatialData with image ``"he"``, circles ``"spots"`` and table ``"table"``.

    Everything is placed in coordinate system ``name`` with the image's pixels as units unless
    ``image_transform`` (a spatialdata transformation of the image and spots) says otherwise.
    """
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Identity

    transform = {name: image_transform or Identity()}
    img = np.moveaxis(np.asarray(image_yxc), -1, 0)
    image = Image2DModel.parse(
        img, dims=("c", "y", "x"), c_coords=["r", "g", "b"][: img.shape[0]],
        scale_factors=image_scale_factors(img.shape[1:]), transformations=transform,
        chunks=(img.shape[0], 2048, 2048),
    )
    circles = spot_circles(centres_px, diameter_px / 2.0, transform)
    table = spot_table(counts, genes, obs, centres_px, region=SHAPES_KEY, uns=uns)
    return SpatialData(images={IMAGE_KEY: image}, shapes={SHAPES_KEY: circles},
                       tables={TABLE_KEY: table})



def spot_circles(centres_px, radius, transformations):
    """A ShapesModel of circles at ``centres_px`` (``radius`` one or one per spot), index 0..n-1."""
    from spatialdata.models import ShapesModel

    centres = np.asarray(centres_px, float)
    radius = np.broadcast_to(np.asarray(radius, float), (len(centres),)).copy()
    return ShapesModel.parse(centres, geometry=0, radius=radius, index=np.arange(len(centres)),
                             transformations=transformations)


def spot_table(values, genes, obs: pd.DataFrame, centres_px, *, region: str, uns=None,
               var: pd.DataFrame | None = None, ids=None, instance_key: str = "spot_id",
               counts: bool = True):
    """The table of the spots (or pixels) ``region``, parsed by ``TableModel``.

    With ``counts``, ``values`` are counts: float32 and sparse in ``X`` and in
    ``layers["counts"]``; otherwise ``X`` holds them as given (a map's values). Centres go to
    ``obsm["spatial"]``; ``obs["region"]`` and ``obs[instance_key]`` (``ids``, by default
    0..n-1: the index of the region's shapes) link each row to its shape. ``var`` (default: no
    columns) is indexed by ``genes``, made unique.
    """
    from spatialdata.models import TableModel

    x = sp.csr_matrix(values, dtype=np.float32) if counts else values
    obs = obs.copy()
    obs.index = obs.index.astype(str)
    obs["region"] = pd.Categorical([region] * len(obs))
    obs[instance_key] = np.arange(len(obs)) if ids is None else np.asarray(ids)
    var = pd.DataFrame() if var is None else var.copy()
    var.index = pd.Index(genes, dtype=str)
    adata = ad.AnnData(X=x, obs=obs, var=var)
    if counts:
        adata.layers["counts"] = x.copy()
    adata.obsm["spatial"] = np.asarray(centres_px, float)
    adata.uns.update(uns or {})
    if not adata.var_names.is_unique:
        adata.var_names_make_unique()
    return TableModel.parse(adata, region=region, region_key="region", instance_key=instance_key)
