"""``ds.tl.superresolve``: sample fine gene maps tile by tile and write them into the SpatialData."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..io._view import SectionView, section_view
from ..pp._grid import Grid, coverage_matrix, gaussian_weights, normalised_rows
from ._data import condition_arrays, disc_area_um2, scaler_for
from ._inputs import as_sdata_list, recall_model


def superresolve(
    data,
    model=None,
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
    add_pixel_table: bool = False,
    tile_size: int = 64,
    progress: bool = True,
):
    """Super-resolve a section with a fitted model and add the maps to it as image layers.

    Writes ``sdata.images[key_added]`` (mean over samples; channels = the model's genes, one
    gene per chunk) and ``sdata.images[key_added + "_std"]`` (per-pixel uncertainty: the
    standard deviation of the samples combined with the model's own error measured on its
    training pairs), both placed exactly over the H&E in the section's coordinate system. Values
    are in the table's units per spot footprint: averaging the layer over a measured spot gives
    that spot's expression (every sampling step is projected onto that constraint; the remaining
    relative error is stored in ``table.uns[key_added]["consistency_error"]``).

    Parameters
    ----------
    data
        A SpatialData (or an AnnData in scanpy's layout, see ``ds.tl.fit``).
    model
        A :class:`diffst_sc.DiffST`; by default the one last fitted on ``data``.
    key_added
        Name of the new image layer (and prefix of the others).
    pixel_size_um
        Output pixel size; by default the model's native resolution (a quarter of the spot
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
    table_key, image_key, coordinate_system
        Which table, image and coordinate system (see ``ds.io.section_view``).
    add_pixel_table
        Also add a table ``key_added + "_table"`` of the tissue pixels (AnnData with
        ``obsm['spatial']`` and the H&E in ``uns['spatial']``) for scanpy/squidpy.
    tile_size
        Tile side in grid pixels (tiles overlap by a quarter and are blended).
    progress
        Show a progress bar over tiles.

    Returns
    -------
    SpatialData or None
        With AnnData input, a new SpatialData holding the image, spots, table and new layers;
        otherwise ``None`` (the SpatialData is modified in place).

    Examples
    --------
    >>> model = ds.tl.fit(sdata)  # doctest: +SKIP
    >>> ds.tl.superresolve(sdata, key_added="diffst")  # doctest: +SKIP
    >>> sdata.pl.render_images("diffst", channel="ERBB2").pl.show()  # doctest: +SKIP
    """
    from ..model import resolve_device

    sdatas, _ = as_sdata_list(data)
    if len(sdatas) != 1:
        raise ValueError("superresolve takes one section at a time; loop over the list.")
    sdata = sdatas[0]
    model = model or recall_model(data) or recall_model(sdata)
    if model is None:
        raise ValueError("No model given and none fitted on these data: run "
                         "`model = ds.tl.fit(data)` first, or pass `model=`.")
    if n_samples < 1 or steps < 1:
        raise ValueError(f"n_samples and steps must be >= 1 (got {n_samples}, {steps}).")
    view = section_view(sdata, table_key=table_key, image_key=image_key,
                        coordinate_system=coordinate_system)
    model.check_genes(view.genes)
    names = [key_added, key_added + "_std"] + ([key_added + "_table"] if add_pixel_table else [])
    _check_free(sdata, names, overwrite)

    dev = resolve_device(device)
    maps = _sample_maps(view, model, n_samples=n_samples, steps=steps, sampler=sampler,
                        seed=seed, device=dev, tile_size=tile_size, progress=progress)
    mean, std, grid, consistency = maps
    if pixel_size_um is not None:
        mean, std, grid = _regrid(mean, std, grid, pixel_size_um / view.microns_per_pixel)
    _write_layers(sdata, view, model.genes, mean, std, grid, key_added, add_pixel_table)
    view.adata.uns[key_added] = {
        "genes": list(model.genes), "pixel_size_um": float(grid.pixel * view.microns_per_pixel),
        "n_samples": n_samples, "steps": steps, "sampler": sampler, "seed": seed,
        "consistency_error": float(consistency), "image_key": view.image_key,
        "coordinate_system": view.coordinate_system,
    }
    return None if data is sdata else sdata


def _check_free(sdata, names, overwrite):
    taken = [n for n in names if n in sdata.images or n in sdata.tables or n in sdata.shapes]
    if taken and not overwrite:
        raise ValueError(f"{taken} already exist in the SpatialData; pass overwrite=True to "
                         "replace them or choose another `key_added=`.")


def _tiles(n: int, size: int, overlap: int) -> list[int]:
    if n <= size:
        return [0]
    step = size - overlap
    starts = list(range(0, n - size, step)) + [n - size]
    return sorted(set(starts))


def _window(size: int) -> np.ndarray:
    w = np.sin(np.pi * (np.arange(size) + 0.5) / size) ** 2
    return np.maximum(np.outer(w, w), 1e-3).astype(np.float32)


def _sample_maps(view: SectionView, model, *, n_samples, steps, sampler, seed, device,
                 tile_size, progress):
    """Sample every tile; return mean and std (counts per footprint), the grid, the error."""
    import torch
    from tqdm.auto import tqdm

    from ..model import make_sampler
    from ..model._patches import patch_condition

    genes, spec, net = model.genes, model.grid_spec, model.module
    scaler = scaler_for(view, genes)
    grid = spec.grid_for(view)
    arrays = condition_arrays(view, genes, scaler, grid, spec)
    area = disc_area_um2(view)
    target = scaler.density(view.expression(genes), area)
    cov = coverage_matrix(view.centres_px, view.diameter_px, grid).tocsc()
    spread = _spread(view, grid)

    mult = 2 ** (len(model.net_config.channel_mult) - 1) * 4
    size = max(mult, int(np.ceil(min(tile_size, max(grid.height, grid.width)) / mult)) * mult)
    overlap = size // 4
    win = _window(size)
    g, h, w = len(genes), grid.height, grid.width
    acc = np.zeros((g, h, w), np.float64)
    acc2 = np.zeros((g, h, w), np.float64)
    wsum = np.zeros((h, w), np.float64)
    net = net.to(device).eval()
    for m in net.modules():
        if hasattr(m, "set_active_cells"):
            m.set_active_cells(model.net_config.n_cells)
    smp = make_sampler(sampler, model.diffusion, steps)
    mu, sd = torch.from_numpy(scaler.mu).to(device), torch.from_numpy(scaler.sd).to(device)
    tiles = [(i, j) for i in _tiles(h, size, overlap) for j in _tiles(w, size, overlap)]
    for n, (i, j) in enumerate(tqdm(tiles, desc="super-resolving", unit="tile",
                                    disable=not progress)):
        rng = np.random.default_rng([seed, n])
        cond = patch_condition(arrays, i, j, size, model.net_config.n_cells,
                               model.net_config.cell_size, rng)
        cond = {k: torch.from_numpy(np.ascontiguousarray(v))[None].to(device)
                for k, v in cond.items()}
        proj = _tile_projection(cov, spread, target, grid, i, j, size, mu, sd, device)
        gen = torch.Generator(device=device).manual_seed(int(rng.integers(2**62)))
        with torch.no_grad():
            feats = net.encode_condition(cond).repeat(n_samples)

            def fn(x, t, feats=feats):
                return net(x, t, cond_features=feats)[0].float()

            z = smp.sample(fn, (n_samples, g, size, size), cond, generator=gen, device=device,
                           project=proj)
        lin = scaler.to_counts(z.cpu().numpy(), area, gene_axis=1)
        hi, wj = min(size, h - i), min(size, w - j)
        ww = win[:hi, :wj]
        acc[:, i:i + hi, j:j + wj] += ww * lin[:, :, :hi, :wj].mean(0)
        acc2[:, i:i + hi, j:j + wj] += ww * (lin[:, :, :hi, :wj] ** 2).mean(0)
        wsum[i:i + hi, j:j + wj] += ww
    mean = acc / wsum
    std = np.sqrt(np.clip(acc2 / wsum - mean**2, 0, None))
    mean, std, err = _project_global(mean, std, cov, spread, target * scaler.section_scale
                                     / 1e4 * area)
    std = _with_model_error(mean, std, model.residual_sd, scaler, area)
    keep = arrays.tissue | (np.asarray(cov.sum(0)).reshape(h, w) > 0)
    mean *= keep
    std *= keep
    return mean.astype(np.float32), std.astype(np.float32), grid, err


def _with_model_error(mean, std, residual_sd, scaler, area):
    """Add the model's own error (measured on its training pairs) to the spread of the samples.

    A residual of ``r`` standardised log units is ``r * sd_g`` in log1p-density; to first order
    that is ``(mean + c) * r * sd_g`` in counts, with ``c`` the counts of one density unit.
    """
    if residual_sd is None:
        return std
    c = scaler.section_scale / 1e4 * area
    extra = (mean + c) * (np.asarray(residual_sd) * scaler.sd)[:, None, None]
    return np.sqrt(std**2 + extra**2)


def _spread(view: SectionView, grid: Grid) -> sp.csr_matrix:
    """``(H*W, n_spots)`` weights spreading per-spot corrections to pixels, smooth in space."""
    w = gaussian_weights(view.centres_px, grid, sigma_px=view.spacing_px / 2).T.tocsr()
    s = np.asarray(w.sum(1)).ravel()
    return sp.diags(1.0 / (s + 1e-2)) @ w


def _tile_projection(cov, spread, target, grid, i, j, size, mu, sd, device):
    import torch

    from ..model import FootprintProjection

    ii, jj = np.meshgrid(np.arange(i, i + size), np.arange(j, j + size), indexing="ij")
    inside = (ii < grid.height) & (jj < grid.width)
    cols = np.where(inside, ii * grid.width + jj, 0).ravel()
    c = cov[:, cols].toarray() * inside.ravel()[None]
    spots = np.nonzero(c.sum(1) > 0)[0]
    s = spread[cols][:, spots].toarray() * inside.ravel()[:, None]
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(device)  # noqa: E731
    return FootprintProjection(t(c[spots]), t(s), t(target[spots]), mu, sd)


def _project_global(mean, std, cov, spread, target, iters: int = 8):
    """Final multiplicative correction of the blended mean so each footprint matches its spot."""
    g, h, w = mean.shape
    m = mean.reshape(g, h * w).T  # (HW, G)
    s = std.reshape(g, h * w).T
    from ..model._consistency import MAX_LOG_STEP

    c = normalised_rows(cov.tocsr())
    floor = 1e-3 * max(float(np.median(target[target > 0])) if (target > 0).any() else 1.0, 1e-12)
    m = np.maximum(m, floor)
    for _ in range(iters):
        fp = c @ m
        ratio = np.clip(np.log(target + floor) - np.log(fp + floor), -MAX_LOG_STEP, MAX_LOG_STEP)
        f = np.exp(np.clip(spread @ ratio, -MAX_LOG_STEP, MAX_LOG_STEP))
        m, s = m * f, s * f
    fp = c @ m
    err = float(np.abs(fp - target).sum() / max(np.abs(target).sum(), 1e-12))
    return m.T.reshape(g, h, w), s.T.reshape(g, h, w), err


def _regrid(mean, std, grid: Grid, pixel_px: float):
    from skimage.transform import resize

    new = Grid(grid.x0, grid.y0, pixel_px, max(1, round(grid.height * grid.pixel / pixel_px)),
               max(1, round(grid.width * grid.pixel / pixel_px)))
    shape = (mean.shape[0], new.height, new.width)
    r = lambda a: resize(a, shape, order=1, preserve_range=True, anti_aliasing=True)  # noqa: E731
    return r(mean).astype(np.float32), r(std).astype(np.float32), new


def layer_transform(sdata, view: SectionView, grid: Grid):
    """The transformation placing a grid raster over the H&E in the view's coordinate system."""
    from spatialdata.transformations import Scale, Sequence, Translation, get_transformation

    to_cs = get_transformation(sdata.images[view.image_key],
                               to_coordinate_system=view.coordinate_system)
    return Sequence([Scale([grid.pixel, grid.pixel], axes=("y", "x")),
                     Translation([grid.y0, grid.x0], axes=("y", "x")), to_cs])


def _write_layers(sdata, view, genes, mean, std, grid, key, add_pixel_table):
    from spatialdata.models import Image2DModel

    t = {view.coordinate_system: layer_transform(sdata, view, grid)}
    for name, arr in ((key, mean), (key + "_std", std)):
        sdata.images[name] = Image2DModel.parse(
            arr, dims=("c", "y", "x"), c_coords=list(genes), transformations=t,
            chunks=(1, arr.shape[1], arr.shape[2]))
    if add_pixel_table:
        from ._pixel_table import add_pixel_table as _add

        _add(sdata, view, genes, mean, grid, key)
