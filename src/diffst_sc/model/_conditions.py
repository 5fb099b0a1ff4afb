"""A section on the model's grid: the interpolated spots, the H&E and its tissue, the path's base map."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .._core._grid import Grid, coverage_matrix, gaussian_weights, spread_values
from .._core._view import SectionView
from ._scaler import ExpressionScaler, disc_area_um2


@dataclass(frozen=True)
class GridSpec:
    """How a section is rasterised for the model (all relative to the input spot spacing)."""

    pixel_fraction: float = 0.125
    he_factor: int = 4
    cell_um: float = 1.0
    margin_spacings: float = 1.0

    def grid_for(self, view: SectionView) -> Grid:
        """The grid over ``view``'s spots, its pixel ``pixel_fraction`` x the spot spacing."""
        pixel_px = self.pixel_fraction * view.spacing_px
        return Grid.around(view.centres_px, pixel_px, self.margin_spacings * view.spacing_px)


def condition_arrays(view: SectionView, genes: list[str], scaler: ExpressionScaler, grid: Grid,
                     spec: GridSpec, cells: bool = True, *, expression: np.ndarray | None = None,
                     coverage: sp.spmatrix | None = None):
    """Conditioning arrays (a ``train.SectionArrays``) of a section on ``grid`` (input spots as LR).

    ``cells=False`` leaves out the cell-scale H&E (``cells_image`` is ``None``), which only the
    deep network's cell attention reads. ``expression`` (``view.footprint_expression(genes)``)
    and ``coverage`` (the spots' ``coverage_matrix`` on ``grid``) are computed unless given.
    """
    from .._core._conditions import SectionArrays
    from .._core._image import tissue_mask

    lr, lr_mask, near = lr_arrays(view, genes, scaler, grid, expression, coverage)
    he = he_on_grid(view, grid, spec)
    bbox = (grid.x0, grid.y0, grid.x0 + grid.width * grid.pixel, grid.y0 + grid.height * grid.pixel)
    image = view.image_at(spec.cell_um, bbox, dtype=np.uint8) if cells else None
    tissue = tissue_mask(_block_mean(he, spec.he_factor))
    return SectionArrays(lr=lr, lr_mask=lr_mask, he=he, cells_image=image, tissue=tissue & near)


#: Fewest of a section's spots that must lie on tissue in its H&E for the image to be taken as
#: the section's: spots are reported under tissue, and a registered image shows most of them
#: on it (her2st: 93 to 100%; each section with another section's H&E: 16 to 46%).
MIN_SPOTS_ON_TISSUE = 0.5


def check_image_matches(view: SectionView, grid: Grid, tissue: np.ndarray) -> None:
    """Refuse an H&E on whose tissue (``tissue`` on ``grid``) most of the spots do not lie.

    Such an image cannot be this section's, or is not registered to its spots: its histology
    would paint another tissue onto the spots.
    """
    ij = np.floor((np.asarray(view.centres_px) - [grid.x0, grid.y0]) / grid.pixel).astype(int)
    rows = np.clip(ij[:, 1], 0, grid.height - 1)
    cols = np.clip(ij[:, 0], 0, grid.width - 1)
    share = float(np.asarray(tissue)[rows, cols].mean()) if len(ij) else 1.0
    if share < MIN_SPOTS_ON_TISSUE:
        raise ValueError(
            f"Only {share:.0%} of the {len(ij)} spots of section {view.name!r} lie on tissue in "
            f"the image {view.image_key!r}: it is not this section's H&E, or it is not "
            "registered to the spots. Check that the image belongs to this section, its scale "
            "factors (a hires or lowres image needs its own scale factor) and the coordinate "
            "system the spots and the image share (coordinate_system=, image_key=).")


def he_on_grid(view: SectionView, grid: Grid, spec: GridSpec) -> np.ndarray:
    """``(3, k*H, k*W)`` the H&E over ``grid`` at ``k = spec.he_factor`` pixels per grid pixel."""
    bbox = (grid.x0, grid.y0, grid.x0 + grid.width * grid.pixel, grid.y0 + grid.height * grid.pixel)
    he = view.image_at(grid.pixel * view.microns_per_pixel / spec.he_factor, bbox)
    return _fit_shape(he, (grid.height * spec.he_factor, grid.width * spec.he_factor))


def tissue_on_grid(view: SectionView, grid: Grid, spec: GridSpec) -> np.ndarray:
    """``(H, W)`` where ``grid``'s pixels show tissue in ``view``'s H&E."""
    from .._core._image import tissue_mask

    return tissue_mask(_block_mean(he_on_grid(view, grid, spec), spec.he_factor))


def apply_path(arrays, path, view: SectionView, grid: Grid, radius_um: float,
               descriptors: np.ndarray | None = None, calibration=None) -> np.ndarray:
    """Make ``arrays.lr`` the histology path's base map (and ``arrays.target`` its residual).

    The descriptors are of discs of ``radius_um`` around each grid pixel (computed unless given,
    for the other LR lattices of a pair). ``calibration`` (:func:`section_calibration`) weighs
    and scales the path's departures on this section. Returns the descriptors.
    """
    from ._calibration import Calibration
    from ._histology_path import cells_of, descriptor_maps

    if descriptors is None:
        descriptors = descriptor_maps(view, grid, radius_um)
    cal = calibration or Calibration()
    dev = path.weighted(cal.weight).deviation(descriptors, arrays.lr, cells_of(view, grid),
                                              cal.gain)
    dev += arrays.lr  # the base map, made in the deviation's memory
    arrays.lr = dev
    if arrays.target is not None:
        arrays.target = arrays.target - arrays.lr
    return descriptors


#: Width of the Gaussian that spreads the spots onto the grid (normalised convolution), in spot
#: spacings. At half a spacing the surface is a soft copy of the nearest spot, flat inside each
#: cell; from about 0.7 it runs smoothly from one spot to the next, and the path's within-spot
#: departures start from that slope (her2st B4/C2/C3, single-section mean wPCC: 0.431 at 0.5,
#: 0.436 at 0.7, 0.437 at 0.85, 0.436 at 1.0; 0.432 -> 0.437 across sections at 0.7).
INTERPOLATION_SIGMA = 0.7


def interpolated_spots(view: SectionView, genes: list[str], scaler: ExpressionScaler, grid: Grid,
                  expression: np.ndarray | None = None):
    """The input spots' expression (model units) spread onto the grid, and the spread's weights."""
    if expression is None:
        expression = view.footprint_expression(genes)
    z = scaler.to_model(expression, disc_area_um2(view))
    w = gaussian_weights(view.centres_px, grid, sigma_px=INTERPOLATION_SIGMA * view.spacing_px)
    return spread_values(z, w, grid)[0], w


def lr_arrays(view: SectionView, genes: list[str], scaler: ExpressionScaler, grid: Grid,
               expression: np.ndarray | None = None, coverage: sp.spmatrix | None = None):
    """LR expression spread onto the grid, the footprints' coverage, and where spots are near."""
    lr, w = interpolated_spots(view, genes, scaler, grid, expression)
    if coverage is None:
        coverage = coverage_matrix(view.centres_px, view.diameter_px, grid)
    cov = np.asarray(coverage.sum(0)).ravel()
    lr_mask = np.clip(cov, 0, 1).reshape(1, grid.height, grid.width).astype(np.float32)
    near = np.asarray(w.sum(0)).ravel().reshape(grid.height, grid.width) > 0.05
    return lr, lr_mask, near


def _block_mean(a: np.ndarray, k: int) -> np.ndarray:
    c, h, w = a.shape
    return a[:, : h // k * k, : w // k * k].reshape(c, h // k, k, w // k, k).mean((2, 4))


def _fit_shape(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Crop or pad (white) ``(3, y, x)`` to ``shape`` (rounding can differ by a pixel)."""
    out = np.ones((a.shape[0], *shape), np.float32)
    h, w = min(shape[0], a.shape[1]), min(shape[1], a.shape[2])
    out[:, :h, :w] = a[:, :h, :w]
    return out
