"""A table of super-resolved pixels, so that scanpy and squidpy analyses run on them."""

from __future__ import annotations

from .._core._pixels import add_pixel_table as _add_pixel_table


def add_pixel_table(sdata, view, genes, mean, keep, grid, key: str,
                    image_px: int = 2000) -> None:
    """Add ``tables[key + "_table"]`` (tissue pixels x genes) annotating ``shapes[key + "_pixels"]``.

    ``mean`` is the ``(G, H, W)`` map (a numpy or zarr array, read a few genes at a time) and
    ``keep`` the ``(H, W)`` pixels to include (``superresolve`` passes the pixels where a gene is
    positive, so none outside the tissue, whether it holds 0 or NaN there).

    The AnnData has ``X`` dense float32, ``obsm['spatial']`` (pixel centres in full-resolution
    H&E pixels) and the H&E in ``uns['spatial'][key]`` (``images['hires']`` with its scale
    factor), the layout of ``sc.pl.spatial`` and ``sq.pl.spatial_scatter``; see
    :func:`diffst_sc._core.add_pixel_table` (which this is) for what scanpy's defaults need.
    """
    _add_pixel_table(sdata, view, genes, mean, keep, grid, key, image_px=image_px)
