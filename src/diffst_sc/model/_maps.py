"""From a model's predictions to the maps written for a section: tiles, the spots' totals, output.

Both models make their map the same way around what they predict. The section's grid is cut
into overlapping tiles; each tile's prediction (the histology model's base map, or the
network's samples around it) is corrected so that its mean over each spot footprint matches
the spot, and the tiles are blended. The blended map is corrected once more over the whole
section, the model's own error is added to the spread, and the result is put on the output grid.
Everything here is numpy: :class:`MapSection` hands the network the same arrays on its device.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from .._core._conditions import pad_to
from .._core._correction import FootprintProjection, correction_rounds
from .._core._grid import Grid, cell_weights, coverage_matrix, normalised_rows
from .._core._lattice import lattice_sites
from .._core._tiles import BandBlender, gene_chunk, tile_starts, tile_window
from .._core._view import SectionView
from ._conditions import GridSpec, check_image_matches, condition_arrays
from ._scaler import disc_area_um2, scaler_for

#: Counts over a footprint added to both sides of the correction's ratios: one count, the
#: measurement's resolution (see ``FootprintProjection``): a spot that measured none of a gene
#: scales its cell down by one count in three, not to nothing, which would also wipe out the
#: parts of its neighbours' footprints that reach into the cell.
PSEUDO_COUNT = 1.0
#: Width of the kernel spreading each spot's correction to pixels, relative to the spot spacing.
#: The weights are normalised over the spots within one spacing of a pixel (a soft Voronoi
#: partition), so a pixel takes its own spot's correction and the correction changes only in a
#: band about ``CORRECTION_SIGMA**2`` spacings wide at the cells' borders: it does not tilt the
#: map within a footprint.
CORRECTION_SIGMA = 0.15
#: Rounds of the correction on each tile and over the whole section.
TILE_ROUNDS, FINAL_ROUNDS = 2, 8


@dataclass
class SectionMaps:
    """A section's maps, in counts per spot footprint.

    Attributes
    ----------
    mean, std
        ``(G, H, W)`` float32 on :attr:`grid`; the value given as ``outside`` off the tissue.
    grid
        Where the pixels lie, in the H&E's full-resolution pixels.
    expressed
        ``(H, W)`` pixels where any gene is positive (the tissue the map covers).
    consistency_error
        Summed absolute difference of the footprint means from the spots over their sum.
    path_gain
        The factor the histology path's departures were scaled by on this section.
    histology_weight
        ``(G,)`` the weight each gene's histology departure kept on this section (0: the map
        is the interpolated spots; see ``HistologyModel.calibrate``); ``None``: all 1.
    """

    mean: np.ndarray
    std: np.ndarray
    grid: Grid
    expressed: np.ndarray
    consistency_error: float
    path_gain: float = 1.0
    histology_weight: np.ndarray | None = None


@dataclass
class MapSection:
    """What both models need to map a section: its grid, conditions and the spots' constraint.

    Made by :meth:`prepare`; ``arrays.lr`` is the interpolated spots (model units) until the
    histology model adds its departures.
    """

    view: SectionView
    genes: list[str]
    grid: Grid
    scaler: object
    arrays: object
    area: float
    target: np.ndarray
    coverage: sp.csc_matrix
    spread: sp.csr_matrix
    keep: np.ndarray

    @classmethod
    def prepare(cls, view: SectionView, genes: list[str], spec: GridSpec, missing=None,
                cells: bool = False) -> MapSection:
        """Grid, conditions and constraint of ``view``, without the spots marked ``missing``.

        ``cells`` also reads the cell-scale H&E that the network's cell attention needs.
        """
        grid = spec.grid_for(view)
        measured = without(view, missing)
        expression = measured.footprint_expression(genes)
        cov_all = coverage_matrix(view.centres_px, view.diameter_px, grid).tocsr()
        cov_rows = cov_all if measured is view else cov_all[~np.asarray(missing, bool)]
        scaler = scaler_for(measured, genes, expression)
        arrays = condition_arrays(measured, genes, scaler, grid, spec, cells=cells,
                                  expression=expression, coverage=cov_rows)
        check_image_matches(measured, grid, arrays.tissue)
        area = disc_area_um2(view)
        # Each spot's cell is the part of the array it stands for, around its lattice site: a
        # pseudo-spot cut by the tissue's edge sits off its block's centre, and the cell of its
        # centre would take in its neighbours' spots.
        spread = cell_weights(lattice_sites(measured), view.spacing_px, grid, CORRECTION_SIGMA)
        # The map covers the tissue the H&E shows near spots, and each spot's own cell (within
        # half a spacing of it: the part of the array it stands for, where it measured tissue
        # whatever the H&E's mask says about faint staining there).
        from scipy.spatial import cKDTree

        dist, _ = cKDTree(view.centres_px).query(grid.pixel_centres())
        own_cell = (dist <= view.spacing_px / 2).reshape(grid.height, grid.width)
        keep = (arrays.tissue | own_cell
                | (np.asarray(cov_all.sum(0)).reshape(grid.height, grid.width) > 0))
        return cls(measured, list(genes), grid, scaler, arrays, area,
                   scaler.density(expression, area), cov_rows.tocsc(), spread, keep)

    def tile_size(self, tile_size: int, multiple: int = 1) -> int:
        """The tile side: ``tile_size`` rounded up to ``multiple``, at most the grid's."""
        g = self.grid
        return max(multiple, int(np.ceil(min(tile_size, max(g.height, g.width)) / multiple))
                   * multiple)

    def tiles(self, size: int) -> list[tuple[int, int]]:
        """Top-left corners of the overlapping tiles of side ``size``, row by row."""
        overlap = size // 4
        return [(i, j) for i in tile_starts(self.grid.height, size, overlap)
                for j in tile_starts(self.grid.width, size, overlap)]

    def tile_projection(self, i: int, j: int, size: int, to=np.asarray) -> FootprintProjection:
        """The correction of the tile at ``(i, j)`` onto its spots, on the arrays ``to`` makes.

        ``to`` turns each numpy array into what the caller computes with (a torch tensor on its
        device, for the network); numpy by default.
        """
        grid = self.grid
        ii, jj = np.meshgrid(np.arange(i, i + size), np.arange(j, j + size), indexing="ij")
        inside = (ii < grid.height) & (jj < grid.width)
        cols = np.where(inside, ii * grid.width + jj, 0).ravel()
        c = (self.coverage[:, cols] @ sp.diags(inside.ravel().astype(float))).tocsr()
        spots = np.nonzero(np.asarray(c.sum(1)).ravel() > 0)[0]
        c = c[spots].toarray()
        s = self.spread[cols][:, spots].toarray() * inside.ravel()[:, None]
        f32 = lambda a: to(np.ascontiguousarray(a, np.float32))  # noqa: E731
        pseudo = PSEUDO_COUNT / self.scaler.counts_per_unit(self.area)
        return FootprintProjection(f32(c), f32(s), f32(self.target[spots]), f32(self.scaler.mu),
                                   f32(self.scaler.sd), iters=TILE_ROUNDS, pseudo=pseudo)

    def base_tile(self, i: int, j: int, size: int) -> np.ndarray:
        """``(G, size, size)`` the conditioning map (model units) of the tile at ``(i, j)``."""
        return pad_to(self.arrays.lr, i, j, size, size).astype(np.float32, copy=False)

    def blend(self, predict, size: int, progress: bool = True, desc: str = "mapping",
              spread: bool = True):
        """Blend ``predict(n, i, j)``'s ``(samples, G, size, size)`` counts over every tile.

        Returns the blended mean and standard deviation over samples, ``(G, H, W)`` float32
        (the standard deviation ``None`` without ``spread``).
        """
        from tqdm.auto import tqdm

        g, h, w = len(self.genes), self.grid.height, self.grid.width
        mean = np.zeros((g, h, w), np.float32)
        std = np.zeros((g, h, w), np.float32) if spread else None

        def sink(top, m, sd):
            mean[:, top:top + m.shape[1]] = m
            if std is not None:
                std[:, top:top + m.shape[1]] = sd

        blender = BandBlender(g, h, w, size, sink, spread=spread)
        win = tile_window(size)
        for n, (i, j) in enumerate(tqdm(self.tiles(size), desc=desc, unit="tile",
                                        disable=not progress)):
            blender.flush(i)  # rows above this tile's are reached by no later tile
            lin = np.asarray(predict(n, i, j), np.float64)
            blender.add(i, j, lin.mean(0), (lin**2).mean(0) if spread else None, win)
        blender.flush(h)
        return mean, std

    def corrected_base(self, tile_size: int, progress: bool = True) -> np.ndarray:
        """``(G, H, W)`` float32: the base map corrected onto the spots tile by tile, blended.

        One map and no samples: what the overlapping tiles' corrections leave between them is
        no spread of the map. The base map (``arrays.lr``) is dropped once blended; nothing
        reads it again.
        """
        size = self.tile_size(tile_size)

        def predict(n, i, j):
            z = self.tile_projection(i, j, size)(self.base_tile(i, j, size)[None])
            return self.scaler.to_counts(z, self.area, gene_axis=1)

        mean, _ = self.blend(predict, size, progress, desc="mapping", spread=False)
        self.arrays.lr = None
        return mean

    def spot_share(self, footprint_means: np.ndarray, counts: np.ndarray,
                   resolved_ratio: float | None) -> np.ndarray:
        """``(G, H, W)`` the share of its spot's measured counts each pixel's footprint holds.

        ``footprint_means`` ``(G, H, W)`` is the map over the footprint the map resolves
        (radius ``resolved_ratio`` times the spots'), in counts per spot footprint, and
        ``counts`` ``(spots, G)`` the spots' counts over their whole footprints. The footprint
        holds ``resolved_ratio**2`` times its mean; the spot measured its counts over the part
        of its footprint it measured, blended between neighbouring spots as the correction
        blends them. About ``resolved_ratio**2`` inside the tissue, up to 1 where the footprint
        holds the whole of what its spot measured (a spot mostly off tissue); 0 far from
        every spot, where the map is not held by one.
        """
        ratio = float(resolved_ratio or 1.0)
        measured = counts * self.view.measured_fraction[:, None]
        g, h, w = footprint_means.shape
        spot = np.asarray(self.spread @ measured).T.reshape(g, h, w)
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(spot > 0, ratio**2 * footprint_means / spot, 0.0)
        return np.clip(share, 0.0, 1.0)

    def finish(self, raw_mean: np.ndarray, raw_std: np.ndarray | None, model_error, *,
               pixel_px: float | None = None, outside: float = 0.0,
               calibration=None, resolved_ratio: float | None = None) -> SectionMaps:
        """Correct the blended maps over the whole section and put them on the output grid.

        ``raw_std`` is the spread over samples (``None``: one map); ``model_error`` ``(G,)`` the
        model's own error (standardised log units) added to the spread; ``resolved_ratio`` the
        radius of the footprint the map resolves over the spots' (its counting noise is added;
        none when ``None``); ``pixel_px`` the output pixel (the grid's by default). On the
        grid's own pixels the mean is written over ``raw_mean``, gene block by gene block, so
        that the section's maps are held once.
        """
        g, h, w = raw_mean.shape
        unit = self.scaler.counts_per_unit(self.area)
        counts_target = self.target * unit
        out_grid = self.grid if pixel_px is None else finer_grid(self.grid, pixel_px)
        mean = (raw_mean if pixel_px is None and raw_mean.dtype == np.float32
                else np.empty((g, out_grid.height, out_grid.width), np.float32))
        std = np.empty((g, out_grid.height, out_grid.width), np.float32)
        err_sum, target_sum = 0.0, 0.0
        expressed = np.zeros((out_grid.height, out_grid.width), bool)
        c = normalised_rows(self.coverage)
        step = gene_chunk(g, max(h * w, out_grid.height * out_grid.width))
        keep = self.keep
        inside = None if pixel_px is None else interpolate(keep[None].astype(np.float64),
                                                           out_grid)
        error = np.asarray(model_error, np.float64)
        dispersion = None if calibration is None else calibration.dispersion
        for g0 in range(0, g, step):
            sl = slice(g0, min(g, g0 + step))
            cap = None
            if resolved_ratio:
                # no footprint the map resolves holds more than its cell's spot measured
                cap = self.spread @ (counts_target[:, sl] / float(resolved_ratio) ** 2)
            spread = None if raw_std is None else raw_std[sl].astype(np.float64)
            m, s, err = project_global(raw_mean[sl].astype(np.float64), spread, c, self.spread,
                                       counts_target[:, sl], PSEUDO_COUNT, cap=cap)
            err_sum += err
            target_sum += float(np.abs(counts_target[:, sl]).sum())
            if dispersion is None:
                s = with_model_error(m, s, error[sl], self.scaler.sd[sl], unit, resolved_ratio)
            else:
                radius = (resolved_ratio or 1.0) * self.view.diameter_px / 2 / self.grid.pixel
                fm = footprint_mean(m, keep, radius)
                s = with_count_spread(fm, s, dispersion[sl], resolved_ratio,
                                      self.spot_share(fm, counts_target[:, sl], resolved_ratio),
                                      calibration.spread_scale)
                # a footprint holding all its spot measured is known; its spread stays above
                # 0, which marks the outside of the tissue, as the mean does
                s = np.maximum(s, 1e-6 * PSEUDO_COUNT)
            if pixel_px is not None:
                m = resize(m, keep, inside, out_grid, outside)
                s = resize(s, keep, inside, out_grid, outside)
            else:
                m, s = np.where(keep, m, outside), np.where(keep, s, outside)
            expressed |= (m > 0).any(0)  # neither 0 nor NaN outside the tissue is
            mean[sl], std[sl] = m, s
        cal = calibration
        return SectionMaps(mean, std, out_grid, expressed, err_sum / max(target_sum, 1e-12),
                           1.0 if cal is None else float(cal.gain),
                           None if cal is None or cal.weight is None else np.asarray(cal.weight))


def without(view: SectionView, missing) -> SectionView:
    """``view`` without the spots marked in ``missing`` (the same view when none is)."""
    if missing is None or not np.any(missing):
        return view
    kept = ~np.asarray(missing, bool)
    if kept.sum() < 2:
        raise ValueError(f"Only {int(kept.sum())} of the {view.n_spots} spots of section "
                         f"{view.name!r} are not flagged as missing; super-resolving needs "
                         "measured spots. Check the flags, or pass missing_key=None to use "
                         "every spot.")
    return replace(view, adata=view.adata[kept], centres_px=view.centres_px[kept])


def with_model_error(mean, std, error, gene_sd, unit, resolved_ratio=None):
    """Add the model's own error, and the counting noise, to the spread of the samples.

    ``std`` is that spread (``None``: one map, no samples).

    An error of ``r`` standardised log units is ``r * sd_g`` in log1p-density; to first order
    that is ``(mean + unit) * r * sd_g`` in counts, with ``unit`` the counts of one density unit.
    The counting noise is that of a measurement of the footprint the map resolves (radius
    ``resolved_ratio`` times the spots'): Poisson, its variance the ``mean * ratio**2`` counts
    expected there, which is ``mean / ratio**2`` in counts per spot footprint. It is what sets
    the spread of low counts, where a multiple of the mean would claim near certainty.
    """
    scale = np.asarray(error, np.float64) * np.asarray(gene_sd, np.float64)
    var = ((mean + unit) * scale[:, None, None]) ** 2
    if std is not None:
        var = var + std**2
    if resolved_ratio:
        var = var + np.maximum(mean, 0.0) / float(resolved_ratio) ** 2
    return np.sqrt(var)


def footprint_mean(maps: np.ndarray, keep: np.ndarray, radius: float) -> np.ndarray:
    """``(G, H, W)`` each map's mean over the disc of ``radius`` pixels around every pixel.

    Only the pixels in ``keep`` count (normalised convolution), so the tissue's edge is not
    pulled toward the zeros outside it: what a measurement of that footprint would average.
    """
    from scipy.ndimage import correlate

    r = max(float(radius), 0.5)
    k = int(np.ceil(r))
    yy, xx = np.mgrid[-k:k + 1, -k:k + 1]
    disc = ((yy**2 + xx**2) <= r * r).astype(np.float64)
    w = correlate(keep.astype(np.float64), disc, mode="constant")
    out = np.empty_like(maps)
    for i, a in enumerate(maps):
        out[i] = correlate(np.where(keep, a, 0.0), disc, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(w > 0, out / w, maps)


def with_count_spread(mean, std, dispersion, resolved_ratio=None, share=None, scale=1.0):
    """Add the spread of counts measured at the map's resolution to the spread of the samples.

    ``std`` is that spread (``None``: one map, no samples).

    ``mean`` is the map averaged over the footprint around each pixel (:func:`footprint_mean`).
    A measurement of the footprint the map resolves (radius ``resolved_ratio`` times the
    spots'; 1 when ``None``) expects ``mean * ratio**2`` counts and spreads about them with
    variance ``mean + c * mean**2`` in its own counts (Poisson, and the dispersion ``c`` the
    section's own held-out pairs measured: ``HistologyPath``'s ``count_dispersion``), which is
    ``mean / ratio**2 + c * mean**2`` in counts per spot footprint. Where the map is high the
    second term, the model's relative error, dominates; where it is low, the counting noise.

    The map is held to its spots' counts: a footprint holding the share ``share`` of its spot's
    measured counts (:meth:`MapSection.spot_share`) varies by ``1 - share`` of that, as one of
    the parts a known total is split into does (none when ``None``). ``scale`` multiplies
    the variance (``Calibration.spread_scale``: where the section's held-out counts fall).
    """
    ratio = float(resolved_ratio or 1.0)
    m = np.maximum(mean, 0.0)
    c = np.asarray(dispersion, np.float64)[:, None, None]
    var = m / ratio**2 + c * m**2
    if share is not None:
        var = var * (1.0 - share)
    var = float(scale) * var
    return np.sqrt(var if std is None else std**2 + var)


def project_global(mean, std, coverage, spread, target, pseudo, iters: int = FINAL_ROUNDS,
                   cap=None):
    """Final correction of the blended mean so each footprint matches its spot.

    ``cap`` ``(H * W, G)``, when given, bounds the corrected map (the spread is scaled with
    it): a footprint of the resolution the map resolves cannot hold more counts than the
    spot it lies in measured, whatever the histology says.

    :func:`~diffst_sc._core._correction.correction_rounds` on counts. ``mean``, ``std``:
    ``(G, H, W)`` of some genes (``std`` ``None`` for one map, and ``None`` back);
    ``coverage``: ``(spots, H*W)`` with rows summing to one; ``target``: ``(spots, G)`` counts. Returns the corrected mean and std and the summed
    absolute error of the footprints against the target.
    """
    g, h, w = mean.shape
    # A pixel stays above 0, which marks the outside of the tissue in the layers: a millionth
    # of the pseudo-count, which leaves the consistency as it is.
    least = 1e-6 * pseudo
    m = np.maximum(mean.reshape(g, h * w).T, least)  # (HW, G)
    carry = None if std is None else std.reshape(g, h * w).T
    m, s = correction_rounds(m, coverage, spread, np.log(np.maximum(target, 0) + pseudo), pseudo,
                             iters, floor=least, carry=carry)
    if cap is not None:
        bounded = np.minimum(m, np.maximum(cap, least))
        s = None if s is None else s * bounded / m
        m = bounded
    err = float(np.abs(coverage @ m - target).sum())
    return m.T.reshape(g, h, w), None if s is None else s.T.reshape(g, h, w), err


def finer_grid(grid: Grid, pixel_px: float) -> Grid:
    """``grid``'s extent with pixels of ``pixel_px``."""
    return Grid(grid.x0, grid.y0, pixel_px, max(1, round(grid.height * grid.pixel / pixel_px)),
                max(1, round(grid.width * grid.pixel / pixel_px)))


def interpolate(a: np.ndarray, grid: Grid) -> np.ndarray:
    """``(C, h, w)`` interpolated onto ``grid`` (bilinear, anti-aliased when shrinking)."""
    from skimage.transform import resize as _sk_resize

    return _sk_resize(a, (a.shape[0], grid.height, grid.width), order=1, preserve_range=True,
                      anti_aliasing=True)


def resize(maps: np.ndarray, keep: np.ndarray, inside: np.ndarray, grid: Grid,
           outside: float) -> np.ndarray:
    """``(G, h, w)`` maps interpolated onto ``grid`` from the pixels in ``keep``.

    Normalised by ``inside``, ``keep`` interpolated onto ``grid``, so that the tissue edge is
    not darkened by the pixels outside it; an output pixel is ``outside`` where less than half
    of what it is interpolated from lies in ``keep``.
    """
    values = interpolate(np.where(keep, maps, 0.0), grid)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(inside >= 0.5, values / inside, outside)
