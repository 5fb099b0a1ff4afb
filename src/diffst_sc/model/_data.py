"""From section views to the arrays the model trains and samples on."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp

from .._core._grid import Grid, coverage_matrix, gaussian_weights, normalised_rows, spread_values
from .._core._units import to_density, to_model_units
from .._core._view import SectionView

#: Expression is modelled as log1p of counts per 10,000 (section-median total) per unit area.
_PER = 1e4


@dataclass
class ExpressionScaler:
    """Maps one section's spot counts to the model's standardised log-density units and back.

    Density = counts / footprint area, divided by the section's median total density (so that
    sections sequenced at different depths look alike), times 10,000, then ``log1p`` and
    standardised per gene with the mean and sd over the section's input spots.
    """

    section_scale: float
    mu: np.ndarray
    sd: np.ndarray

    @classmethod
    def fit(cls, counts: np.ndarray, totals: np.ndarray, area_um2: float) -> ExpressionScaler:
        """Statistics of the input spots: ``counts`` (n, G) of the modelled genes, ``totals`` (n,)."""
        scale = float(np.median(totals / area_um2))
        if not np.isfinite(scale) or scale <= 0:
            scale = float(np.mean(totals / area_um2)) or 1.0
        log = np.log1p(counts / area_um2 / scale * _PER)
        sd = np.maximum(log.std(0), 0.1)
        return cls(scale, log.mean(0).astype(np.float32), sd.astype(np.float32))

    def density(self, counts: np.ndarray, area_um2: float) -> np.ndarray:
        """Counts per footprint of ``area_um2`` to normalised density (model's linear units)."""
        return (np.asarray(counts, np.float64) / area_um2 / self.section_scale
                * _PER).astype(np.float32)

    def counts_per_unit(self, area_um2: float) -> float:
        """Counts per footprint of ``area_um2`` of one unit of normalised density."""
        return self.section_scale / _PER * area_um2

    def to_model(self, counts: np.ndarray, area_um2: float) -> np.ndarray:
        """Counts per footprint to standardised log-density."""
        return to_model_units(self.density(counts, area_um2), self.mu, self.sd).astype(np.float32)

    def to_counts(self, z: np.ndarray, area_um2: float, gene_axis: int = 0) -> np.ndarray:
        """Model units back to counts per footprint of ``area_um2``; genes along ``gene_axis``."""
        shape = [1] * np.ndim(z)
        shape[gene_axis] = -1
        v = to_density(z, self.mu.reshape(shape), self.sd.reshape(shape))
        return (v * self.counts_per_unit(area_um2)).astype(np.float32)

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        d = asdict(self)
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in d.items()}


def disc_area_um2(view: SectionView) -> float:
    """Footprint area of one spot of ``view`` in square micrometres."""
    return float(np.pi * (view.spot_diameter_um / 2) ** 2)


def scaler_for(view: SectionView, genes: list[str],
               expression: np.ndarray | None = None) -> ExpressionScaler:
    """The expression scaler of a section's input spots.

    ``expression``: their ``view.footprint_expression(genes)``, where the caller has it.
    """
    if expression is None:
        expression = view.footprint_expression(genes)
    return ExpressionScaler.fit(expression, view.footprint_library_sizes(), disc_area_um2(view))


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

    lr, lr_mask, near = _lr_arrays(view, genes, scaler, grid, expression, coverage)
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
        lr = _interpolated(view, genes, scaler, grid)[0]  # the path reads no mask
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


#: Width of the Gaussian that spreads the spots onto the grid (normalised convolution), in spot
#: spacings. At half a spacing the surface is a soft copy of the nearest spot, flat inside each
#: cell; from about 0.7 it runs smoothly from one spot to the next, and the path's within-spot
#: departures start from that slope (her2st B4/C2/C3, single-section mean wPCC: 0.431 at 0.5,
#: 0.436 at 0.7, 0.437 at 0.85, 0.436 at 1.0; 0.432 -> 0.437 across sections at 0.7).
INTERPOLATION_SIGMA = 0.7


def _interpolated(view: SectionView, genes: list[str], scaler: ExpressionScaler, grid: Grid,
                  expression: np.ndarray | None = None):
    """The input spots' expression (model units) spread onto the grid, and the spread's weights."""
    if expression is None:
        expression = view.footprint_expression(genes)
    z = scaler.to_model(expression, disc_area_um2(view))
    w = gaussian_weights(view.centres_px, grid, sigma_px=INTERPOLATION_SIGMA * view.spacing_px)
    return spread_values(z, w, grid)[0], w


def _lr_arrays(view: SectionView, genes: list[str], scaler: ExpressionScaler, grid: Grid,
               expression: np.ndarray | None = None, coverage: sp.spmatrix | None = None):
    """LR expression spread onto the grid, the footprints' coverage, and where spots are near."""
    lr, w = _interpolated(view, genes, scaler, grid, expression)
    if coverage is None:
        coverage = coverage_matrix(view.centres_px, view.diameter_px, grid)
    cov = np.asarray(coverage.sum(0)).ravel()
    lr_mask = np.clip(cov, 0, 1).reshape(1, grid.height, grid.width).astype(np.float32)
    near = np.asarray(w.sum(0)).ravel().reshape(grid.height, grid.width) > 0.05
    return lr, lr_mask, near


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
                      (_lr_arrays(v, genes, scaler, grid) for v in lr_views[1:])]
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


def _block_mean(a: np.ndarray, k: int) -> np.ndarray:
    c, h, w = a.shape
    return a[:, : h // k * k, : w // k * k].reshape(c, h // k, k, w // k, k).mean((2, 4))


def _fit_shape(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Crop or pad (white) ``(3, y, x)`` to ``shape`` (rounding can differ by a pixel)."""
    out = np.ones((a.shape[0], *shape), np.float32)
    h, w = min(shape[0], a.shape[1]), min(shape[1], a.shape[2])
    out[:, :h, :w] = a[:, :h, :w]
    return out
