"""``ds.tl.superresolve``: sample fine gene maps tile by tile and write them into the SpatialData."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._core._checks import check_new_names
from .._core._docs import shared_parameters
from .._core._grid import Grid
from .._core._view import SectionView, section_view
from ..pp import LOW_COUNTS_KEY, spots_to_skip
from ._inputs import as_sdata_list, resolve_model

if TYPE_CHECKING:
    import os

    from anndata import AnnData
    from spatialdata import SpatialData

    from ..model import DiffST, HistologyModel


@shared_parameters
def superresolve(
    data: SpatialData | AnnData,
    model: HistologyModel | DiffST | str | os.PathLike | None = None,
    *,
    image: np.ndarray | None = None,
    img_key: str | None = None,
    key_added: str = "diffst",
    pixel_size_um: float | None = None,
    n_samples: int = 8,
    steps: int = 20,
    sampler: str = "ddim-eta1",
    seed: int = 0,
    overwrite: bool = False,
    device: str = "auto",
    table_key: str | None = None,
    image_key: str | None = None,
    coordinate_system: str | None = None,
    layer: str | None = None,
    microns_per_pixel: float | None = None,
    missing_key: str | None = LOW_COUNTS_KEY,
    outside_tissue: float = 0.0,
    add_pixel_table: bool = False,
    tile_size: int = 64,
    progress: bool = True,
) -> SpatialData | None:
    """Super-resolve a section with a fitted model and add the maps to it as image layers.

    Writes ``sdata.images[key_added]`` (mean over samples; channels = the model's genes, one
    gene per chunk) and ``sdata.images[key_added + "_std"]`` (the uncertainty: the spread a
    measurement of the footprint the map resolves would show about the map given its spot's
    counts, from the counting noise and each gene's dispersion on the section's held-out spots;
    with a Diff-ST network also the spread of its samples; see ``docs/method.md``), both
    in-memory arrays placed exactly over the H&E in the section's coordinate system. Values
    are in the table's units per spot footprint: averaging the layer over a measured spot gives
    that spot's expression (every sampling step is projected onto that constraint; the remaining
    relative error is stored in ``table.uns[key_added]["consistency_error"]``). A pseudo-spot of
    :func:`diffst_sc.pp.degrade` that sums only some of its block's spots (at the tissue's edge)
    measured that share of its disc (``obs["diffst_measured_fraction"]``): the layer holds its
    counts over the whole disc, its expression divided by that share. Pixels outside
    the tissue (neither on the H&E's tissue near a spot nor inside a spot's footprint) take
    ``outside_tissue`` in both layers: 0 by default (every pixel on the tissue is positive, so
    0 marks the outside), or NaN, which matplotlib, napari and xarray draw as transparent. The
    correction towards the measured spots is made before; ``ds.tl.evaluate`` and ``ds.pl``
    read either, and the footprint readouts of ``diffst_sc._core._raster`` leave NaN pixels out
    (``nan_as=0.0`` reads them as no counts).

    Spots flagged in ``obs[missing_key]`` (failed captures, see
    :func:`diffst_sc.pp.flag_low_count_spots`) are treated as missing: the map there is the
    model's base map from the neighbouring spots and the H&E, and the consistency constraint
    leaves them out.

    Parameters
    ----------
    data
        A SpatialData (or an AnnData in scanpy's layout, see ``ds.tl.fit``).
    model
        A fitted :class:`~diffst_sc.model.HistologyModel` or :class:`~diffst_sc.model.DiffST`,
        or the folder of a saved one; by default the histology model that ``ds.tl.fit`` stored
        in the table's ``uns["diffst_histology"]`` (it travels with the data, through
        ``sdata.write`` and ``spatialdata.read_zarr``). A Diff-ST network is used only when
        passed here.
    image, img_key
        With AnnData input: the H&E, as for :func:`fit`.
    key_added
        Name of the new image layer (and prefix of the others).
    pixel_size_um
        Output pixel size; by default the model's native resolution (an eighth of the spot
        spacing). Finer grids are interpolated from the native one.
    n_samples
        With a DiffST: samples drawn per tile; their mean and standard deviation are written.
    steps
        With a DiffST: denoising steps per sample.
    sampler
        With a DiffST: ``"ddim-eta1"`` (default; stochastic, for calibrated spread), ``"ddim"``
        or ``"ddpm"``.
    seed
        With a DiffST: seed of the samples (the histology model's map is deterministic).
    overwrite
        Replace existing layers with the same names.
    device
        With a DiffST: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
    {table_key}
    {image_key}
    {coordinate_system}
    {layer}
    {microns_per_pixel}
        Pass the value given to ``fit``.
    missing_key
        Boolean ``obs`` column of the spots to treat as missing. When the column is absent it is
        computed with :func:`diffst_sc.pp.flag_low_count_spots` and written to the table (with
        its record in ``uns[missing_key]``). ``None`` uses every spot.
    outside_tissue
        Value of the pixels outside the tissue: ``0.0`` or ``numpy.nan``. NaN leaves the H&E
        visible under a matplotlib overlay, but spatialdata-plot (0.4) refuses images with NaN
        pixels in ``render_images``; 0 works everywhere.
    add_pixel_table
        Also add a table ``key_added + "_table"`` of the tissue pixels (AnnData with
        ``obsm['spatial']`` and the H&E in ``uns['spatial']``) for scanpy/squidpy.
    tile_size
        Tile side in grid pixels (tiles overlap by a quarter and are blended).
    {progress}

    Returns
    -------
    SpatialData or None
        With AnnData input, a new SpatialData holding the image, spots, table and new layers;
        otherwise ``None`` (the SpatialData is modified in place). ``table.uns[key_added]``
        records the settings, ``consistency_error`` (over the spots used),
        ``n_missing_spots`` (the spots treated as missing), ``model`` (the class that made
        the maps) and ``path_gain`` (the factor the histology model's departures from the
        interpolated spots were scaled by, measured on the section's own spots summed into
        pseudo-spots; a DiffST's base map is scaled the same) and ``histology_weight`` (per
        gene, in the order of ``genes``: how much of the histology's departure from the
        interpolated spots the section's own spots, summed into pseudo-spots, support; 0
        where the map is the interpolation, which
        :class:`~diffst_sc.io.HistologyUninformativeWarning` reports); for a DiffST also
        ``residual_scale`` (how much of the network's residual the map took, set by the
        fit's held-out tiles; 0: the map is its histology model's).

    Examples
    --------
    >>> import diffst_sc as ds
    >>> sdata = ds.datasets.her2st_demo()  # the embedded her2st section
    >>> model = ds.tl.fit(sdata, n_genes=20, progress=False)
    >>> ds.tl.superresolve(sdata, progress=False)
    >>> sdata.images["diffst"].sizes["c"]
    20
    >>> sdata.tables["table"].uns["diffst"]["model"]
    'HistologyModel'
    """
    sdatas, _ = as_sdata_list(data, image, img_key)
    if len(sdatas) != 1:
        raise ValueError("superresolve takes one section at a time; loop over the list.")
    sdata = sdatas[0]
    check_new_names(key_added, sdata)
    if n_samples < 1 or steps < 1:
        raise ValueError(f"n_samples and steps must be >= 1 (got {n_samples}, {steps}).")
    if pixel_size_um is not None and not pixel_size_um > 0:
        raise ValueError(f"pixel_size_um must be positive, got {pixel_size_um}.")
    _check_outside(outside_tissue)
    view = section_view(sdata, table_key=table_key, image_key=image_key,
                        coordinate_system=coordinate_system, layer=layer,
                        microns_per_pixel=microns_per_pixel)
    model = resolve_model(model, sdata, view.table_key)
    model.check_genes(view.genes)
    names = [key_added, key_added + "_std"] + ([key_added + "_table"] if add_pixel_table else [])
    _check_free(sdata, names, overwrite)

    missing = spots_to_skip(view, missing_key)
    pixel_px = None if pixel_size_um is None else pixel_size_um / view.microns_per_pixel
    common = {"missing": missing, "pixel_px": pixel_px, "outside": float(outside_tissue),
              "tile_size": tile_size, "progress": progress}
    deep = not _is_histology(model)
    if deep:
        maps = model.predict(view, n_samples=n_samples, steps=steps, sampler=sampler,
                             seed=seed, device=device, **common)
    else:
        n_samples, steps = 1, 0  # the histology model's map is one deterministic map
        maps = model.predict(view, **common)
    _write_layers(sdata, view, model.genes, maps, key_added)
    if add_pixel_table:
        from .._core import add_pixel_table as _add

        _add(sdata, view, model.genes, maps.mean, maps.expressed, maps.grid, key_added)
    view.adata.uns[key_added] = {
        "genes": list(model.genes), "model": type(model).__name__,
        "pixel_size_um": float(maps.grid.pixel * view.microns_per_pixel),
        "n_samples": n_samples, "steps": steps, "sampler": sampler if deep else "",
        "seed": seed, "consistency_error": float(maps.consistency_error),
        "path_gain": float(maps.path_gain), "image_key": view.image_key,
        "histology_weight": (np.ones(len(model.genes)) if maps.histology_weight is None
                             else np.asarray(maps.histology_weight, np.float64)),
        "coordinate_system": view.coordinate_system,
        "missing_key": missing_key or "", "n_missing_spots": int(missing.sum()),
        "outside_tissue": "nan" if np.isnan(outside_tissue) else "0",
    }
    if deep:  # how much of the network's residual the map took (0: the histology model's map)
        view.adata.uns[key_added]["residual_scale"] = float(model.residual_scale)
    return None if data is sdata else sdata


def _is_histology(model) -> bool:
    from ..model import HistologyModel

    return isinstance(model, HistologyModel)


def _check_outside(value) -> None:
    """``value`` must be 0 or NaN: a marker that no value on the tissue takes."""
    try:
        ok = float(value) == 0 or np.isnan(float(value))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"outside_tissue must be 0.0 or numpy.nan (what the pixels outside the "
                         f"tissue hold), not {value!r}.")


def _check_free(sdata, names, overwrite):
    taken = [n for n in names if n in sdata.images or n in sdata.tables or n in sdata.shapes]
    if taken and not overwrite:
        raise ValueError(f"{taken} already exist in the SpatialData; pass overwrite=True to "
                         "replace them or choose another `key_added=`.")


def layer_transform(sdata, view: SectionView, grid: Grid):
    """The transformation placing a grid raster over the H&E in the view's coordinate system."""
    from spatialdata.transformations import Scale, Sequence, Translation, get_transformation

    to_cs = get_transformation(sdata.images[view.image_key],
                               to_coordinate_system=view.coordinate_system)
    return Sequence([Scale([grid.pixel, grid.pixel], axes=("y", "x")),
                     Translation([grid.y0, grid.x0], axes=("y", "x")), to_cs])


def _write_layers(sdata, view, genes, maps, key):
    """Add the mean and std as image layers over the H&E, one gene per chunk.

    The layers are the maps' own memory: ``dask.array.from_array`` (which ``Image2DModel.parse``
    calls on a numpy array) copies its input, so each layer is given as a dask array whose
    chunks are views of the map, one gene each.
    """
    from spatialdata.models import Image2DModel

    t = {view.coordinate_system: layer_transform(sdata, view, maps.grid)}
    for name, arr in ((key, maps.mean), (key + "_std", maps.std)):
        sdata.images[name] = Image2DModel.parse(_gene_chunks(arr, name), dims=("c", "y", "x"),
                                                c_coords=list(genes), transformations=t)


def _gene_chunks(arr: np.ndarray, name: str):
    """``arr`` ``(G, H, W)`` as a dask array of one chunk per gene, without a copy."""
    import uuid

    import dask.array as da

    g, h, w = arr.shape
    token = f"{name}-{uuid.uuid4().hex}"
    graph = {(token, i, 0, 0): arr[i:i + 1] for i in range(g)}
    return da.Array(graph, token, chunks=((1,) * g, (h,), (w,)), dtype=arr.dtype)
