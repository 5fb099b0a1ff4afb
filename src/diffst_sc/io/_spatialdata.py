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
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity

    transform = {name: image_transform or Identity()}
    img = np.moveaxis(np.asarray(image_yxc), -1, 0)
    image = Image2DModel.parse(
        img, dims=("c", "y", "x"), c_coords=["r", "g", "b"][: img.shape[0]],
        scale_factors=image_scale_factors(img.shape[1:]), transformations=transform,
        chunks=(img.shape[0], 2048, 2048),
    )
    ids = np.arange(len(obs))
    circles = ShapesModel.parse(
        np.asarray(centres_px, float), geometry=0,
        radius=np.full(len(obs), diameter_px / 2.0), index=ids, transformations=transform,
    )
    x = sp.csr_matrix(np.asarray(counts, dtype=np.float32))
    obs = obs.copy()
    obs["region"] = pd.Categorical([SHAPES_KEY] * len(obs))
    obs["spot_id"] = ids
    adata = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=pd.Index(genes, dtype=str)))
    adata.layers["counts"] = x.copy()
    adata.obsm["spatial"] = np.asarray(centres_px, float)
    adata.uns.update(uns or {})
    if not adata.var_names.is_unique:
        adata.var_names_make_unique()
    table = TableModel.parse(adata, region=SHAPES_KEY, region_key="region",
                             instance_key="spot_id")
    return SpatialData(images={IMAGE_KEY: image}, shapes={SHAPES_KEY: circles},
                       tables={TABLE_KEY: table})

