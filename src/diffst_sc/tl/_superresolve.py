"""``ds.tl.superresolve``: sample fine gene maps tile by tile and write them into the SpatialData."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from .._core._checks import check_new_names
from .._core._docs import shared_parameters
from .._core._grid import Grid, cell_weights, coverage_matrix, normalised_rows
from .._core._lattice import lattice_sites
from .._core._view import SectionView, section_view
from ..model._data import (
    apply_path,
    condition_arrays,
    disc_area_um2,
    scaler_for,
    section_gain,
)
from ..pp._low_counts import LOW_COUNTS_KEY, spots_to_skip
from ._inputs import as_sdata_list, resolve_model

if TYPE_CHECKING:
    import os

    from anndata import AnnData
    from spatialdata import SpatialData

    from ..model import DiffST


@shared_parameters
def superresolve(
    data: SpatialData | AnnData,
    model: DiffST | str | os.PathLike | None = None,
    *,
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
    scratch_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> SpatialData | None:
    """Super-resolve a section with a fitted model and add the maps to it as image layers.

    Writes ``sdata.images[key_added]`` (mean over samples; channels = the model's genes, one
    gene per chunk) and ``sdata.images[key_added + "_std"]`` (per-pixel uncertainty: the
    standard deviation of the samples combined with the model's own error measured on its
    training pairs), both placed exactly over the H&E in the section's coordinate system. Values
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
        A :class:`diffst_sc.DiffST` or the folder of a saved one; by default the one last fitted
        on ``data``, else the saved model the table records (``table.uns["diffst_model"]``,
        written by ``model.save``).
    key_added
        Name of the new image layer (and prefix of the others).
    pixel_size_um
        Output pixel size; by default the model's native resolution (an eighth of the spot
        spacing). Finer grids are interpolated from the native one.
    n_samples
        Samples drawn per tile; their mean and standard deviation are written.
    steps
        Denoising steps per sample.
    sampler
        ``"ddim-eta1"`` (default; stochastic, for calibrated spread), ``"ddim"`` or ``"ddpm"``.
    seed
        Seed of the samples: the same seed and model give the same maps.
    overwrite
        Replace existing layers with the same names.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ...
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
    scratch_dir
        Folder for the zarr store the tiles are written to as they are sampled (the system's
        temporary folder by default). The new layers are lazy dask arrays read from it, so memory
        stays bounded on a large slide; the store is deleted when Python exits, so write the
        SpatialData (``sdata.write`` or ``sdata.write_element(key_added)``) to keep them.
    {progress}

    Returns
    -------
    SpatialData or None
        With AnnData input, a new SpatialData holding the image, spots, table and new layers;
        otherwise ``None`` (the SpatialData is modified in place). ``table.uns[key_added]``
        records the settings, ``consistency_error`` (over the spots used),
        ``n_missing_spots`` (the spots treated as missing) and ``path_gain`` (the factor the
        histology path's departures from the interpolated spots were scaled by, measured on
        the section's own spots summed into pseudo-spots; 1 for the deep network, which
        refines the path as fitted).

    Examples
    --------
    >>> model = ds.tl.fit(sdata)  # doctest: +SKIP
    >>> ds.tl.superresolve(sdata, key_added="diffst")  # doctest: +SKIP
    >>> sdata.pl.render_images("diffst", channel="ERBB2").pl.show()  # doctest: +SKIP
    """
    from ..train import resolve_device

    sdatas, _ = as_sdata_list(data)
    if len(sdatas) != 1:
        raise ValueError("superresolve takes one section at a time; loop over the list.")
    sdata = sdatas[0]
    check_new_names(key_added, sdata)
    model = resolve_model(model, data, sdata)
    if n_samples < 1 or steps < 1:
        raise ValueError(f"n_samples and steps must be >= 1 (got {n_samples}, {steps}).")
    view = section_view(sdata, table_key=table_key, image_key=image_key,
                        coordinate_system=coordinate_system, layer=layer,
                        microns_per_pixel=microns_per_pixel)
    model.check_genes(view.genes)
    names = [key_added, key_added + "_std"] + ([key_added + "_table"] if add_pixel_table else [])
    _check_free(sdata, names, overwrite)

    if pixel_size_um is not None and not pixel_size_um > 0:
        raise ValueError(f"pixel_size_um must be positive, got {pixel_size_um}.")
    _check_outside(outside_tissue)

    from .._core._tiles import scratch_group

    if not model.deep:
        n_samples = 1  # the histology path alone gives one deterministic map
    missing = spots_to_skip(view, missing_key)
    dev = resolve_device(device)
    store = scratch_group(scratch_dir)
    maps = _sample_maps(view, model, store, n_samples=n_samples, steps=steps, sampler=sampler,
                        seed=seed, device=dev, tile_size=tile_size, progress=progress,
                        pixel_px=None if pixel_size_um is None
                        else pixel_size_um / view.microns_per_pixel, missing=missing,
                        outside=float(outside_tissue))
    mean, std, grid, expressed, consistency, gain = maps
    _write_layers(sdata, view, model.genes, mean, std, grid, key_added)
    if add_pixel_table:
        from ._pixel_table import add_pixel_table as _add

        _add(sdata, view, model.genes, mean, expressed, grid, key_added)
    view.adata.uns[key_added] = {
        "genes": list(model.genes), "pixel_size_um": float(grid.pixel * view.microns_per_pixel),
        "n_samples": n_samples, "steps": steps, "sampler": sampler, "seed": seed,
        "consistency_error": float(consistency), "path_gain": float(gain),
        "image_key": view.image_key,
        "coordinate_system": view.coordinate_system,
        "missing_key": missing_key or "", "n_missing_spots": int(missing.sum()),
        "outside_tissue": "nan" if np.isnan(outside_tissue) else "0",
    }
    return None if data is sdata else sdata


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


def _sample_maps(view: SectionView, model, store, *, n_samples, steps, sampler, seed, device,
                 tile_size, progress, pixel_px=None, missing=None, outside=0.0):
    """Sample every tile into ``store``, then correct and finish the maps a few genes at a time.

    ``missing`` (bool per spot) marks spots treated as missing: the conditions, the base map
    and the consistency constraint are those of the other spots, so the map there is filled
    from its neighbours and the H&E. The grid and the tissue cover every spot.

    Returns the mean and std (counts per footprint; ``outside`` outside the tissue) as zarr
    arrays, their grid, the pixels where any gene is expressed, the consistency error and the
    gain the histology path's departures were scaled by.
    """
    import torch
    from tqdm.auto import tqdm

    from .._core._tiles import BandBlender, gene_chunk, new_array, tile_starts, tile_window
    from ..schedulers import make_sampler
    from ..train._patches import pad_to, patch_condition

    genes, spec, net = model.genes, model.grid_spec, model.module
    grid = spec.grid_for(view)
    measured = _without(view, missing)
    # The measured spots' expression and every spot's footprint on the grid, once each: the
    # scaler, the interpolated surface and the constraint all read them.
    expression = measured.footprint_expression(genes)
    cov_all = coverage_matrix(view.centres_px, view.diameter_px, grid).tocsr()
    cov_rows = cov_all if measured is view else cov_all[~np.asarray(missing, bool)]
    scaler = scaler_for(measured, genes, expression)
    arrays = condition_arrays(measured, genes, scaler, grid, spec, cells=model.deep,
                              expression=expression, coverage=cov_rows)
    path = getattr(model, "histology_path", None)
    gain = 1.0
    if path is not None:
        # The network learned its residual on the path's base as fitted: only the path alone
        # is rescaled to the section.
        if not model.deep:
            gain = section_gain(path, measured, genes, spec)
        apply_path(arrays, path, measured, grid, path.radius_um(measured), gain=gain)
    area = disc_area_um2(view)
    target = scaler.density(expression, area)
    cov = cov_rows.tocsc()
    # Each spot's cell is the part of the array it stands for, around its lattice site: a
    # pseudo-spot cut by the tissue's edge sits off its block's centre, and the cell of its
    # centre would take in its neighbours' spots (her2st: a sixth of the spots lay in blocks
    # whose correction bled into them; mean wPCC 0.436 -> 0.444 single, 0.437 -> 0.448 across).
    spread = cell_weights(lattice_sites(measured), view.spacing_px, grid, CORRECTION_SIGMA)

    mult = 2 ** (len(model.net_config.channel_mult) - 1) * 4
    size = max(mult, int(np.ceil(min(tile_size, max(grid.height, grid.width)) / mult)) * mult)
    overlap = size // 4
    win = tile_window(size)
    g, h, w = len(genes), grid.height, grid.width
    raw_mean = new_array(store, "sampled_mean", (g, h, w), (1, size - overlap, w))
    raw_std = new_array(store, "sampled_std", (g, h, w), (1, size - overlap, w))

    def sink(top, m, sd):
        raw_mean[:, top:top + m.shape[1]] = m
        raw_std[:, top:top + m.shape[1]] = sd

    blender = BandBlender(g, h, w, size, sink)
    net = net.to(device).eval()
    for m in net.modules():
        if hasattr(m, "set_active_cells"):
            m.set_active_cells(model.net_config.n_cells)
    smp = make_sampler(sampler, model.diffusion, steps)
    mu, sd = torch.from_numpy(scaler.mu).to(device), torch.from_numpy(scaler.sd).to(device)
    tiles = [(i, j) for i in tile_starts(h, size, overlap)
             for j in tile_starts(w, size, overlap)]
    pseudo = PSEUDO_COUNT / scaler.counts_per_unit(area)  # one count per footprint, as density
    for n, (i, j) in enumerate(tqdm(tiles, desc="super-resolving", unit="tile",
                                    disable=not progress)):
        blender.flush(i)  # rows above this tile's are reached by no later tile
        rng = np.random.default_rng([seed, n])
        proj = _tile_projection(cov, spread, target, grid, i, j, size, mu, sd, device, pseudo)
        with torch.no_grad():
            if not model.deep:  # the histology path alone: its base map, projected
                lr = pad_to(arrays.lr, i, j, size, size).astype(np.float32, copy=False)
                z = proj(torch.from_numpy(lr)[None].to(device))
            else:
                cond = patch_condition(arrays, i, j, size, model.net_config.n_cells,
                                       model.net_config.cell_size, rng)
                cond = {k: torch.from_numpy(np.ascontiguousarray(v))[None].to(device)
                        for k, v in cond.items()}
                base = cond["lr"] if path is not None else torch.zeros_like(cond["lr"])
                proj = _residual(proj, base)
                gen = torch.Generator(device=device).manual_seed(int(rng.integers(2**62)))
                feats = net.encode_condition(cond).repeat(n_samples)

                def fn(x, t, feats=feats):
                    return net(x, t, cond_features=feats)[0].float()

                z = smp.sample(fn, (n_samples, g, size, size), cond, generator=gen,
                               device=device, project=proj) + base
        lin = scaler.to_counts(z.cpu().numpy(), area, gene_axis=1).astype(np.float64)
        blender.add(i, j, lin.mean(0), (lin**2).mean(0), win)
    blender.flush(h)

    keep = arrays.tissue | (np.asarray(cov_all.sum(0)).reshape(h, w) > 0)
    del arrays
    counts_target = target * scaler.counts_per_unit(area)
    out_grid = grid if pixel_px is None else _finer_grid(grid, pixel_px)
    mean = new_array(store, "mean", (g, out_grid.height, out_grid.width),
                     (1, out_grid.height, out_grid.width))
    std = new_array(store, "std", (g, out_grid.height, out_grid.width),
                    (1, out_grid.height, out_grid.width))
    err_sum, target_sum = 0.0, 0.0
    expressed = np.zeros((out_grid.height, out_grid.width), bool)
    c = normalised_rows(cov_rows)
    step = gene_chunk(g, max(h * w, out_grid.height * out_grid.width))
    # What of each output pixel lies on the tissue: the same for every gene, computed once.
    inside = None if pixel_px is None else _interpolate(keep[None].astype(np.float64), out_grid)
    for g0 in range(0, g, step):
        sl = slice(g0, min(g, g0 + step))
        m, s, err = _project_global(raw_mean[sl].astype(np.float64),
                                    raw_std[sl].astype(np.float64), c, spread,
                                    counts_target[:, sl], PSEUDO_COUNT)
        err_sum += err
        target_sum += float(np.abs(counts_target[:, sl]).sum())
        rsd = None if model.residual_sd is None else np.asarray(model.residual_sd)[sl]
        s = _with_model_error(m, s, rsd, scaler.sd[sl], scaler.counts_per_unit(area))
        if pixel_px is not None:
            m = _resize(m, keep, inside, out_grid, outside)
            s = _resize(s, keep, inside, out_grid, outside)
        else:
            m, s = np.where(keep, m, outside), np.where(keep, s, outside)
        expressed |= (m > 0).any(0)  # neither 0 nor NaN outside the tissue is
        mean[sl], std[sl] = m.astype(np.float32), s.astype(np.float32)
    return mean, std, out_grid, expressed, err_sum / max(target_sum, 1e-12), gain


def _without(view: SectionView, missing) -> SectionView:
    """``view`` without the spots marked in ``missing`` (the same view when none is)."""
    from dataclasses import replace

    if missing is None or not np.any(missing):
        return view
    kept = ~np.asarray(missing, bool)
    if kept.sum() < 2:
        raise ValueError(f"Only {int(kept.sum())} of the {view.n_spots} spots of section "
                         f"{view.name!r} are not flagged as missing; super-resolving needs "
                         "measured spots. Check the flags, or pass missing_key=None to use "
                         "every spot.")
    return replace(view, adata=view.adata[kept], centres_px=view.centres_px[kept])


def _residual(projection, base):
    """The projection of full maps as one of residuals over ``base`` (what the network samples)."""
    return lambda r: projection(r + base) - base


def _with_model_error(mean, std, residual_sd, gene_sd, unit):
    """Add the model's own error (measured on its training pairs) to the spread of the samples.

    A residual of ``r`` standardised log units is ``r * sd_g`` in log1p-density; to first order
    that is ``(mean + unit) * r * sd_g`` in counts, with ``unit`` the counts of one density unit.
    """
    if residual_sd is None:
        return std
    extra = (mean + unit) * (np.asarray(residual_sd) * np.asarray(gene_sd))[:, None, None]
    return np.sqrt(std**2 + extra**2)


#: Counts over a footprint added to both sides of the correction's ratios: one count, the
#: measurement's resolution (see ``schedulers.FootprintProjection``). With that, and the spots'
#: factors blended arithmetically at the cells' borders, her2st's mean wPCC is 0.427 single /
#: 0.420 across sections, against 0.423 / 0.414 with a floor of a thousandth of the median spot
#: and factors blended in log space (which let a spot without counts of a gene scale to nothing
#: the parts of its neighbours' footprints that reach into its cell).
PSEUDO_COUNT = 1.0
#: Width of the kernel spreading each spot's correction to pixels, relative to the spot spacing.
#: The weights are normalised over the spots within one spacing of a pixel (a soft Voronoi
#: partition), so a pixel takes its own spot's correction and the correction changes only in a
#: band about ``CORRECTION_SIGMA**2`` spacings wide at the cells' borders: it does not tilt the
#: map within a footprint. Normalising with a floor instead (the correction fading away from
#: each spot's centre) cost 0.02 of wPCC on her2st; a kernel half a spacing wide, without the
#: partition, a quarter of the path's within-spot signal.
CORRECTION_SIGMA = 0.15


def _tile_projection(cov, spread, target, grid, i, j, size, mu, sd, device, pseudo):
    import torch

    from ..schedulers import FootprintProjection

    ii, jj = np.meshgrid(np.arange(i, i + size), np.arange(j, j + size), indexing="ij")
    inside = (ii < grid.height) & (jj < grid.width)
    cols = np.where(inside, ii * grid.width + jj, 0).ravel()
    c = (cov[:, cols] @ sp.diags(inside.ravel().astype(float))).tocsr()
    spots = np.nonzero(np.asarray(c.sum(1)).ravel() > 0)[0]
    c = c[spots].toarray()
    s = spread[cols][:, spots].toarray() * inside.ravel()[:, None]
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(device)  # noqa: E731
    return FootprintProjection(t(c), t(s), t(target[spots]), mu, sd, pseudo=pseudo)


def _project_global(mean, std, coverage, spread, target, pseudo, iters: int = 8):
    """Final correction of the blended mean so each footprint matches its spot.

    :func:`~diffst_sc.schedulers.correction_rounds` on counts, as the samplers'
    ``FootprintProjection`` runs them on each tile's densities. ``mean``, ``std``:
    ``(G, H, W)`` of some genes; ``coverage``: ``(spots, H*W)`` with rows summing to one;
    ``target``: ``(spots, G)`` counts.
    Returns the corrected mean and std and the summed absolute error of the footprints against
    the target.
    """
    from ..schedulers._projection import correction_rounds

    g, h, w = mean.shape
    # A pixel stays above 0, which marks the outside of the tissue in the layers: a millionth
    # of the pseudo-count, which leaves the consistency as it is.
    least = 1e-6 * pseudo
    m = np.maximum(mean.reshape(g, h * w).T, least)  # (HW, G)
    m, s = correction_rounds(m, coverage, spread, np.log(np.maximum(target, 0) + pseudo), pseudo,
                             iters, floor=least, carry=std.reshape(g, h * w).T)
    err = float(np.abs(coverage @ m - target).sum())
    return m.T.reshape(g, h, w), s.T.reshape(g, h, w), err


def _finer_grid(grid: Grid, pixel_px: float) -> Grid:
    """``grid``'s extent with pixels of ``pixel_px``."""
    return Grid(grid.x0, grid.y0, pixel_px, max(1, round(grid.height * grid.pixel / pixel_px)),
                max(1, round(grid.width * grid.pixel / pixel_px)))


def _interpolate(a: np.ndarray, grid: Grid) -> np.ndarray:
    """``(C, h, w)`` interpolated onto ``grid`` (bilinear, anti-aliased when shrinking)."""
    from skimage.transform import resize

    return resize(a, (a.shape[0], grid.height, grid.width), order=1, preserve_range=True,
                  anti_aliasing=True)


def _resize(maps: np.ndarray, keep: np.ndarray, inside: np.ndarray, grid: Grid,
            outside: float) -> np.ndarray:
    """``(G, h, w)`` maps interpolated onto ``grid`` from the pixels in ``keep``.

    Normalised by ``inside``, ``keep`` interpolated onto ``grid``, so that the tissue edge is
    not darkened by the pixels outside it; an output pixel is ``outside`` where less than half
    of what it is interpolated from lies in ``keep``.
    """
    values = _interpolate(np.where(keep, maps, 0.0), grid)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(inside >= 0.5, values / inside, outside)


def layer_transform(sdata, view: SectionView, grid: Grid):
    """The transformation placing a grid raster over the H&E in the view's coordinate system."""
    from spatialdata.transformations import Scale, Sequence, Translation, get_transformation

    to_cs = get_transformation(sdata.images[view.image_key],
                               to_coordinate_system=view.coordinate_system)
    return Sequence([Scale([grid.pixel, grid.pixel], axes=("y", "x")),
                     Translation([grid.y0, grid.x0], axes=("y", "x")), to_cs])


def _write_layers(sdata, view, genes, mean, std, grid, key):
    import dask.array as da
    from spatialdata.models import Image2DModel

    t = {view.coordinate_system: layer_transform(sdata, view, grid)}
    for name, arr in ((key, mean), (key + "_std", std)):
        sdata.images[name] = Image2DModel.parse(
            da.from_zarr(arr), dims=("c", "y", "x"), c_coords=list(genes), transformations=t)
