"""Pairs of a section's own spots: pseudo-spots as inputs, spots as targets, for fitting and calibrating."""

from __future__ import annotations

import numpy as np

from .._core._grid import Grid, coverage_matrix, gaussian_weights, normalised_rows, spread_values
from .._core._view import SectionView
from ._conditions import GridSpec, apply_path, condition_arrays, interpolated_spots, lr_arrays
from ._scaler import ExpressionScaler, disc_area_um2, scaler_for


def pair_grid(lr_view: SectionView, hr_view: SectionView, spec: GridSpec) -> Grid:
    """The grid of a training pair: over the target spots, pixels set by the input's spacing."""
    pixel = spec.pixel_fraction * lr_view.spacing_px
    return Grid.around(hr_view.centres_px, pixel, spec.margin_spacings * lr_view.spacing_px)


def path_rows(lr_views: list[SectionView], hr_view: SectionView, genes: list[str],
              spec: GridSpec) -> list:
    """The histology path's training rows (``FootprintRows``), one set per LR view.

    Only footprint averages are kept, so memory is that of one pair's maps on any slide.
    """
    from ._histology_path import FootprintRows, cells_of, descriptor_maps

    first = lr_views[0]
    scaler = scaler_for(first, genes)
    grid = pair_grid(first, hr_view, spec)
    descriptors = descriptor_maps(first, grid, hr_view.spot_diameter_um / 2)
    footprints = normalised_rows(coverage_matrix(hr_view.centres_px, hr_view.diameter_px,
                                                 grid).tocsr())
    counts = hr_view.footprint_expression(genes)
    z_hr = scaler.to_model(counts, disc_area_um2(hr_view))
    rows = []
    for view in lr_views:
        lr = interpolated_spots(view, genes, scaler, grid)[0]  # the path reads no mask
        rows.append(FootprintRows.from_maps(descriptors, lr, cells_of(view, grid), footprints,
                                            z_hr, _nearest(view, hr_view), counts,
                                            (scaler.mu, scaler.sd)))
    return rows


#: Fewest spots a section needs for :func:`section_calibration` to be measured on its own pairs.
MIN_GAIN_SPOTS = 32


def section_calibration(path, view: SectionView, genes: list[str], spec: GridSpec):
    """How far the histology path's departures hold on ``view``'s own pairs (a ``Calibration``).

    The section's spots, summed into pseudo-spots as ``fit`` would learn from them, are the
    targets of what the path predicts from those pseudo-spots and the H&E: what the spots to be
    super-resolved say about their departures, at the next coarser scale
    (``HistologyPath.calibrate``). On the section the path was fitted on alone, the weights its
    held-out tiles gave and gain 1. Weights 1 and gain 1 when the section has fewer than
    ``MIN_GAIN_SPOTS`` spots.
    """
    from ..pp import self_supervised_pairs
    from ._calibration import Calibration

    if view.n_spots < MIN_GAIN_SPOTS:
        return Calibration()
    lr_views, hr = self_supervised_pairs(view, genes=genes)
    if path.fitted_on is not None and path.fitted_on == pairs_fingerprint(hr, genes):
        weight, disp = path.held_out_weight, path.dispersion
        return Calibration(1.0, None if weight is None else np.asarray(weight, np.float64),
                           None if disp is None else np.asarray(disp, np.float64),
                           float(path.spread_scale))
    return path.calibrate(path_rows(lr_views, hr, genes, spec))


def pairs_fingerprint(hr_view: SectionView, genes: list[str]) -> str:
    """A digest of a pair's target spots: their positions and their counts of ``genes``.

    Reading the H&E for :func:`section_calibration` takes as long as for the map (on a slide of
    thousands of spots, minutes); on the section a path was fitted on alone the gain is 1, and
    the digest recognises it.
    """
    import hashlib

    h = hashlib.sha256(np.ascontiguousarray(hr_view.centres_px, np.float64).tobytes())
    h.update(np.ascontiguousarray(hr_view.footprint_expression(genes), np.float32).tobytes())
    return h.hexdigest()


def training_arrays(lr_views: list[SectionView], hr_view: SectionView, genes: list[str],
                    spec: GridSpec, path=None, *, calibration=None,
                    spots: np.ndarray | None = None) -> list:
    """The deep network's training pairs: each LR view as input, the HR spots as the target.

    The LR views are e.g. pseudo-spot lattices at different phases; the pairs share the H&E
    arrays and the target. With a fitted histology ``path``, each pair's ``lr`` is the path's
    base map (its departures weighed by ``calibration``, as the section's map weighs them) and
    its ``target`` the residual the network learns. ``spots`` (bool over the HR spots) makes
    the target of those spots alone (e.g. without held-out ones); all by default.
    """
    from dataclasses import replace

    first = lr_views[0]
    scaler = scaler_for(first, genes)
    grid = pair_grid(first, hr_view, spec)
    base = condition_arrays(first, genes, scaler, grid, spec)
    base.target, base.weight = target_arrays(hr_view, genes, scaler, grid, spots)
    pairs = [base] + [replace(base, lr=lr, lr_mask=lr_mask) for lr, lr_mask, _ in
                      (lr_arrays(v, genes, scaler, grid) for v in lr_views[1:])]
    if path is not None:
        descriptors = None
        for pair, view in zip(pairs, lr_views, strict=True):
            descriptors = apply_path(pair, path, view, grid, hr_view.spot_diameter_um / 2,
                                     descriptors, calibration)
    return pairs


def target_arrays(hr_view: SectionView, genes: list[str], scaler: ExpressionScaler, grid: Grid,
                  spots: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(G, H, W)`` the HR spots' expression (model units) on ``grid``, ``(1, H, W)`` its weight.

    The target is known inside the HR footprints; a narrow kernel fills their pixels. Only the
    spots marked in ``spots`` (bool) count, all by default.
    """
    z_hr = scaler.to_model(hr_view.footprint_expression(genes), disc_area_um2(hr_view))
    centres = hr_view.centres_px
    if spots is not None:
        z_hr, centres = z_hr[np.asarray(spots, bool)], centres[np.asarray(spots, bool)]
    if not len(centres):
        shape = (grid.height, grid.width)
        return np.zeros((len(genes), *shape), np.float32), np.zeros((1, *shape), np.float32)
    sigma = max(hr_view.diameter_px / 2, grid.pixel / 2)
    target, support = spread_values(z_hr, gaussian_weights(centres, grid, sigma_px=sigma), grid)
    return target, np.clip(support, 0, 1)[None].astype(np.float32)


def _nearest(lr_view: SectionView, hr_view: SectionView) -> np.ndarray:
    """``(n_hr,)`` the LR spot nearest to each HR spot (its parent on any lattice)."""
    from scipy.spatial import cKDTree

    return cKDTree(lr_view.centres_px).query(hr_view.centres_px)[1]
