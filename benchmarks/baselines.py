"""Baselines of the her2st benchmark and the scoring shared by every method (``BENCHMARK.md``).

Each baseline maps a low-resolution (LR) SpatialData, as ``ds.pp.degrade`` returns it, to
predicted counts at the high-resolution (HR) spots (``shapes["hr_spots"]``, ``tables["hr_table"]``,
rows in the table's order). It sees only the LR pseudo-spots, the H&E, and where the HR spots are
(positions and which pseudo-spot each belongs to), never their counts.

- ``uniform``: each pseudo-spot's counts split equally among its children;
- ``bicubic``: cubic-spline interpolation of the LR array grid in log1p space, normalised by the
  interpolated in-tissue mask (normalised convolution), falling back to ``uniform`` where the mask
  is below 0.2; on a hexagonal (Visium) lattice, which has no square grid to spline, scipy's
  ``griddata`` cubic interpolation of the pseudo-spots' centres, ``uniform`` outside their hull;
- ``tesla``: TESLA's histology-weighted inverse-distance imputation (Hu et al., Cell Systems 2023),
  its defaults (colour window 50 px, power 2, 10 neighbours), with TESLA's own colour features.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

import diffst_sc as ds
from diffst_sc._core import section_view
from diffst_sc.metrics import (
    block_means,
    expression_scores,
    gene_mean,
    interval_coverage,
    renormalisation_factors,
    renormalise_to_blocks,
    uncertainty_gain,
)

HR_TABLE = "hr_table"
LR_TABLE = "table"


@dataclass
class DegradedSection:
    """The LR input and the HR targets of one degraded section, in H&E pixels.

    Attributes
    ----------
    lr
        View of the LR pseudo-spots (``tables["table"]``).
    hr
        View of the HR spots (``tables["hr_table"]``); its counts are the truth, for scoring only.
    block
        ``(n_hr,)`` row of each HR spot's parent pseudo-spot in the LR table.
    rows, cols
        ``(n_hr,)`` array row and column of each HR spot.
    """

    lr: object
    hr: object
    block: np.ndarray
    rows: np.ndarray
    cols: np.ndarray

    @classmethod
    def from_sdata(cls, lr_sdata) -> DegradedSection:
        """Views of what ``ds.pp.degrade`` returns."""
        lr = section_view(lr_sdata, table_key=LR_TABLE)
        hr = section_view(lr_sdata, table_key=HR_TABLE, image_key=lr.image_key,
                                coordinate_system=lr.coordinate_system,
                                microns_per_pixel=lr.microns_per_pixel)
        obs = hr.adata.obs
        return cls(lr=lr, hr=hr, block=obs["lr_spot"].to_numpy().astype(np.int64),
                   rows=obs["array_row"].to_numpy(), cols=obs["array_col"].to_numpy())

    @property
    def n_children(self) -> np.ndarray:
        """``(n_lr,)`` number of HR spots in each pseudo-spot."""
        return np.bincount(self.block, minlength=self.lr.n_spots)

    @property
    def factor(self) -> int:
        """Degradation factor: LR over HR lattice spacing (2 for 2 x 2 blocks)."""
        return max(1, round(self.lr.spacing_px / self.hr.spacing_px))

    def lr_per_child(self, genes: list[str]) -> np.ndarray:
        """``(n_lr, n_genes)`` LR counts divided by the number of children."""
        return self.lr.expression(genes) / np.maximum(self.n_children, 1)[:, None]

    @property
    def is_hex(self) -> bool:
        """Whether the HR spots lie on Visium's hexagonal lattice (one parity of row + col)."""
        from diffst_sc._core._lattice import is_hex_lattice

        return is_hex_lattice(self.rows, self.cols)

    def grid_positions(self) -> tuple[np.ndarray, np.ndarray]:
        """Cell of each HR spot on the 2-D grid SSIM is computed on.

        A square array (legacy ST) is its own grid. Visium's ``array_col`` steps by 2 along a row
        (rows offset by 1), so the array grid would leave every other cell empty; the offset
        layout ``(row, col // 2)`` gives each spot one cell, its two row neighbours the cells
        beside it and its four neighbours in the rows above and below the cell straight
        above/below and one of the cells beside that: the hexagon sheared by half a cell.
        """
        if self.is_hex:
            return self.rows, np.asarray(self.cols) // 2
        return self.rows, self.cols


def degrade_2x2(sdata, genes: list[str]):
    """LR pseudo-spots (2 x 2 blocks of the array) and the HR truth, for ``genes``."""
    return ds.pp.degrade(sdata, mode="square", factor=2, genes=genes)


def lr_input(lr_sdata):
    """What a method may see: the H&E, the pseudo-spots and their table (no truth)."""
    from spatialdata import SpatialData

    return SpatialData(images={"he": lr_sdata.images["he"]},
                       shapes={"spots": lr_sdata.shapes["spots"]},
                       tables={"table": lr_sdata.tables["table"]})


def uniform(lr_sdata, genes: list[str]) -> np.ndarray:
    """Copy each pseudo-spot's counts, split equally, to its children. ``(n_hr, n_genes)``."""
    sec = DegradedSection.from_sdata(lr_sdata)
    return sec.lr_per_child(genes)[sec.block].astype(np.float64)


def bicubic(lr_sdata, genes: list[str], *, min_mask: float = 0.2) -> np.ndarray:
    """Cubic interpolation of the LR array grid at the HR spots (normalised convolution).

    The LR values (log1p of counts per child) are laid on the LR lattice (block index of the
    children's array positions), zero outside tissue; both the values and the in-tissue mask are
    interpolated with cubic splines and divided. Where the interpolated mask is below
    ``min_mask`` the uniform copy is used.

    Returns
    -------
    numpy.ndarray
        ``(n_hr, n_genes)`` predicted counts.
    """
    from scipy import ndimage

    sec = DegradedSection.from_sdata(lr_sdata)
    if sec.is_hex:
        return _scattered_cubic(sec, genes)
    f = sec.factor
    values = np.log1p(sec.lr_per_child(genes).astype(np.float64))
    # Every child of a block has the same array position // f: that is the block's lattice cell.
    lat_r = np.zeros(sec.lr.n_spots, dtype=np.int64)
    lat_c = np.zeros(sec.lr.n_spots, dtype=np.int64)
    lat_r[sec.block] = np.asarray(sec.rows, dtype=np.int64) // f
    lat_c[sec.block] = np.asarray(sec.cols, dtype=np.int64) // f
    has_child = sec.n_children > 0
    r0, c0 = lat_r[has_child].min(), lat_c[has_child].min()
    shape = (lat_r[has_child].max() - r0 + 1, lat_c[has_child].max() - c0 + 1)
    grid = np.zeros((len(genes), *shape))
    mask = np.zeros(shape)
    grid[:, lat_r[has_child] - r0, lat_c[has_child] - c0] = values[has_child].T
    mask[lat_r[has_child] - r0, lat_c[has_child] - c0] = 1.0
    # HR cell x lies at LR lattice coordinate (x + 0.5) / f - 0.5 (block centres on integers).
    q_r = (np.asarray(sec.rows, float) + 0.5) / f - 0.5 - r0
    q_c = (np.asarray(sec.cols, float) + 0.5) / f - 0.5 - c0
    at = np.vstack([q_r, q_c])
    m = ndimage.map_coordinates(mask, at, order=3, mode="nearest")
    out = np.stack([ndimage.map_coordinates(g, at, order=3, mode="nearest") for g in grid], 1)
    out = out / np.maximum(m, min_mask)[:, None]
    out = np.where(m[:, None] < min_mask, values[sec.block], out)
    return np.expm1(np.clip(out, 0, None))


def _scattered_cubic(sec: DegradedSection, genes: list[str]) -> np.ndarray:
    """``bicubic`` on a hexagonal lattice: cubic interpolation of the pseudo-spots' centres.

    The same log1p values per child as on a square array, interpolated with scipy's
    ``griddata`` (piecewise cubic, Clough-Tocher, on the Delaunay triangles of the pseudo-spot
    centres) at the HR spots' centres; outside the centres' convex hull, where it gives no
    value, the uniform copy.
    """
    from scipy.interpolate import griddata

    values = np.log1p(sec.lr_per_child(genes).astype(np.float64))
    has_child = sec.n_children > 0
    out = griddata(sec.lr.centres_px[has_child], values[has_child], sec.hr.centres_px,
                   method="cubic")
    out = np.where(np.isnan(out), values[sec.block], out)
    return np.expm1(np.clip(out, 0, None))


def tesla(lr_sdata, genes: list[str], *, res: int = 50, k: int = 2,
          num_nbs: int = 10) -> np.ndarray:
    """TESLA's histology-weighted inverse-distance imputation at the HR spots.

    Uses TESLA's ``extract_color`` (the mean colour of a ``res``-pixel window, RGB channels
    weighted by their variance at the query points, grey at the known points, as in TESLA's
    ``imputation``), scaled to the spread of the query positions as a third coordinate; each HR
    spot averages the log1p LR values (per child) of its ``num_nbs`` nearest pseudo-spots in
    that space with weights ``1 / d**k`` (``d`` relative to the nearest, +0.1 px).

    Returns
    -------
    numpy.ndarray
        ``(n_hr, n_genes)`` predicted counts.

    Raises
    ------
    ImportError
        Without ``TESLAforST`` (``pip install --no-deps TESLAforST opencv-python-headless``).
    """
    try:
        from TESLA.calculate_dis import extract_color
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("The TESLA baseline needs TESLA's code: `pip install --no-deps "
                          "TESLAforST opencv-python-headless`.") from e

    sec = DegradedSection.from_sdata(lr_sdata)
    known = np.log1p(sec.lr_per_child(genes).astype(np.float64))
    img = np.asarray(sec.lr.image.data.compute() if hasattr(sec.lr.image.data, "compute")
                     else sec.lr.image.data)
    img = np.moveaxis(img[:3], 0, -1)
    # TESLA indexes image[x, y] with x the row: the pixel row is its "x".
    kx, ky = sec.lr.centres_px[:, 1].astype(int), sec.lr.centres_px[:, 0].astype(int)
    qx, qy = sec.hr.centres_px[:, 1].astype(int), sec.hr.centres_px[:, 0].astype(int)
    q_colour = np.asarray(extract_color(x_pixel=list(qx), y_pixel=list(qy), image=img, beta=res,
                                        RGB=True))
    k_colour = np.asarray(extract_color(x_pixel=list(kx), y_pixel=list(ky), image=img, beta=res,
                                        RGB=False))
    z_scale = max(np.std(qx), np.std(qy))
    qz = (q_colour - q_colour.mean()) / q_colour.std() * z_scale
    kz = (k_colour - k_colour.mean()) / k_colour.std() * z_scale
    d = np.sqrt((qx[:, None] - kx[None]) ** 2 + (qy[:, None] - ky[None]) ** 2
                + (qz[:, None] - kz[None]) ** 2)
    nbs = np.argsort(d, axis=1, kind="stable")[:, :num_nbs]
    dn = np.take_along_axis(d, nbs, axis=1) + 0.1
    dn = dn / dn.min(1, keepdims=True)
    w = 1.0 / dn**k
    w = w / w.sum(1, keepdims=True)
    return np.expm1(np.einsum("qn,qng->qg", w, known[nbs]))


#: Ridge penalty on standardised inputs (the quality issue's setting).
RIDGE_ALPHA = 300.0
#: The two histology ridges: which descriptors, over discs of which radii (relative to a spot's).
RIDGE_FEATURES = {
    "ridge-colour": {"scales": (1.0,), "colour_only": True},
    "ridge-histology": {"scales": (0.5, 1.0, 1.5), "colour_only": False},
}


def _quantities_for(sec: DegradedSection):
    """The H&E's per-pixel quantities over the section's spots (``ds.pp``'s descriptors)."""
    from diffst_sc.pp import section_quantities
    from diffst_sc.pp._descriptors import working_pixel_um

    radius_um = sec.hr.spot_diameter_um / 2
    margin = 1.5 * sec.lr.diameter_px / 2 + 8
    c = sec.lr.centres_px
    bbox = (c[:, 0].min() - margin, c[:, 1].min() - margin, c[:, 0].max() + margin,
            c[:, 1].max() + margin)
    return section_quantities(sec.lr, bbox, working_pixel_um(radius_um))


def _ridge_inputs(q, view, centres_px, block, genes, interpolated_counts, features) -> np.ndarray:
    """Within-block deviations of the histology descriptors and of the interpolated genes."""
    from diffst_sc.pp import DESCRIPTOR_NAMES, histology_descriptors

    d = histology_descriptors(q, centres_px, view.spot_diameter_um / 2, features["scales"])
    if features["colour_only"]:
        per = len(DESCRIPTOR_NAMES)
        keep = [s * per + i for s in range(len(features["scales"]))
                for i, n in enumerate(DESCRIPTOR_NAMES) if "nucle" not in n]
        d = d[:, keep]
    x = np.c_[d, np.log1p(interpolated_counts)]
    return x - block_means(x, block)


def _ridge_pair(pair_sdata, genes, q, features):
    """Inputs and within-block targets of one degraded pair (children: ``hr_table``)."""
    sec = DegradedSection.from_sdata(pair_sdata)
    x = _ridge_inputs(q, sec.hr, sec.hr.centres_px, sec.block, genes, bicubic(pair_sdata, genes),
                      features)
    y = np.log1p(sec.hr.expression(genes).astype(np.float64))
    y = y - block_means(y, sec.block)
    return x, y


def histology_ridge(lr_sdata, genes: list[str], *, train=None, method: str = "ridge-histology",
                    alpha: float = RIDGE_ALPHA) -> np.ndarray:
    """A ridge on H&E descriptors and interpolated genes, predicting within-block deviations.

    Single section (``train=None``): self-supervised on the LR pseudo-spots alone, which are
    summed once more into 2 x 2 blocks; the discs are each spot's own (the LR radius in training,
    the HR radius when applied). Across sections: trained on ``train``'s measured spots, summed
    into 2 x 2 blocks. The prediction is the pseudo-spot's counts per child, times the exponent
    of the predicted deviation of log1p counts.

    Parameters
    ----------
    lr_sdata
        The degraded section (``ds.pp.degrade``).
    genes
        Genes to predict (all of them are also inputs, through their bicubic interpolation).
    train
        Measured sections to train on (across sections), or ``None``.
    method
        ``"ridge-colour"``: colour and stain statistics over the spot's disc;
        ``"ridge-histology"``: those and nuclear counts over discs of 0.5, 1 and 1.5 radii.
    alpha
        Ridge penalty on the standardised inputs.

    Returns
    -------
    numpy.ndarray
        ``(n_hr, n_genes)`` predicted counts.
    """
    from diffst_sc.model import Ridge

    features = RIDGE_FEATURES[method]
    sec = DegradedSection.from_sdata(lr_sdata)
    q = _quantities_for(sec)
    if train is None:
        pairs = [(degrade_2x2(lr_input(lr_sdata), genes), q)]
    else:
        pairs = []
        for s in train:
            pair = degrade_2x2(s, genes)
            pairs.append((pair, _quantities_for(DegradedSection.from_sdata(pair))))
    xy = [_ridge_pair(p, genes, qq, features) for p, qq in pairs]
    model = Ridge.fit(np.concatenate([a for a, _ in xy]), np.concatenate([b for _, b in xy]),
                      alpha)
    x = _ridge_inputs(q, sec.hr, sec.hr.centres_px, sec.block, genes, bicubic(lr_sdata, genes),
                      features)
    dev = model.predict(x) - model.intercept  # deviations: no offset within a block
    return sec.lr_per_child(genes)[sec.block] * np.exp(dev)


BASELINES = {"uniform": uniform, "bicubic": bicubic, "tesla": tesla}
#: Baselines that learn: ``f(lr_sdata, genes, train=None | measured sections)``.
TRAINED_BASELINES = {name: partial(histology_ridge, method=name) for name in RIDGE_FEATURES}


def score_predictions(lr_sdata, pred_counts: np.ndarray, genes: list[str]) -> dict:
    """Protocol scores of predicted HR counts: renormalise to the LR blocks, log1p, score.

    Parameters
    ----------
    lr_sdata
        What ``ds.pp.degrade`` returns (LR table and HR truth).
    pred_counts
        ``(n_hr, n_genes)`` predicted counts at the HR spots, in ``hr_table``'s order.
    genes
        The genes of ``pred_counts``' columns.

    Returns
    -------
    dict
        Means over genes of ``PCC, NRMSE, SSIM, wPCC``, ``n_genes`` scored, and ``per_gene``
        (score -> list over ``genes``, ``None`` for a gene a score skips).
    """
    sec = DegradedSection.from_sdata(lr_sdata)
    pred_counts = np.asarray(pred_counts, dtype=np.float64)
    if pred_counts.shape != (sec.hr.n_spots, len(genes)):
        raise ValueError(f"Predictions have shape {pred_counts.shape}; expected "
                         f"({sec.hr.n_spots} HR spots, {len(genes)} genes).")
    pred = renormalise_to_blocks(pred_counts, sec.block, sec.lr.expression(genes))
    truth = sec.hr.expression(genes).astype(np.float64)
    rows, cols = sec.grid_positions()
    per_gene = expression_scores(np.log1p(truth), np.log1p(pred), block=sec.block,
                                 rows=rows, cols=cols)
    out = {name: gene_mean(v) for name, v in per_gene.items()}
    out["n_genes"] = int(np.isfinite(per_gene["PCC"]).sum())
    out["per_gene"] = {name: [None if not np.isfinite(x) else float(x) for x in v]
                       for name, v in per_gene.items()}
    return out


def rescaled_at_spots(lr_sdata, mean_counts: np.ndarray, std_counts: np.ndarray,
                      genes: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Truth, mean and std at the HR spots, the mean and std rescaled as the protocol's step 5.

    Both are multiplied by the factor that makes each block's children sum to the block's
    counts (as in ``score_predictions``); a block predicted as all-zero gets the equal split
    and no spread. This is how ``ds.tl.evaluate`` reads an uncertainty on spot truth.

    Parameters
    ----------
    lr_sdata
        What ``ds.pp.degrade`` returns (LR table and HR truth).
    mean_counts, std_counts
        ``(n_hr, n_genes)`` mean and standard deviation at the HR spots (e.g. the super-resolved
        layers averaged over each spot's disc), in ``hr_table``'s order.
    genes
        The genes of the columns.

    Returns
    -------
    truth, mean, std
        ``(n_hr, n_genes)`` counts.
    """
    sec = DegradedSection.from_sdata(lr_sdata)
    mean = np.asarray(mean_counts, dtype=np.float64)
    std = np.asarray(std_counts, dtype=np.float64)
    shape = (sec.hr.n_spots, len(genes))
    if mean.shape != shape or std.shape != shape:
        raise ValueError(f"mean {mean.shape} and std {std.shape} must both be ({shape[0]} HR "
                         f"spots, {shape[1]} genes).")
    if (std < 0).any() or not np.isfinite(std).all():
        raise ValueError("`std_counts` must be finite and non-negative.")
    lr_counts = sec.lr.expression(genes)
    pred = renormalise_to_blocks(mean, sec.block, lr_counts)
    factor, _ = renormalisation_factors(mean, sec.block, lr_counts)
    std = np.where(np.isnan(factor), 0.0, std * np.nan_to_num(factor))
    return sec.hr.expression(genes).astype(np.float64), pred, std


def interval_coverage_at_spots(lr_sdata, mean_counts: np.ndarray, std_counts: np.ndarray,
                               genes: list[str], interval: float = 0.9) -> np.ndarray:
    """Coverage of a Gaussian interval at the HR spots, after the protocol's renormalisation.

    The interval is ``mean +- z * std`` (``z = 1.645`` for 90%), both rescaled as in
    :func:`rescaled_at_spots`, the lower bound clipped at 0. This is ``ds.tl.evaluate``'s
    coverage on spot truth.

    Parameters
    ----------
    lr_sdata, mean_counts, std_counts, genes
        As for :func:`rescaled_at_spots`.
    interval
        Nominal probability of the interval.

    Returns
    -------
    numpy.ndarray
        ``(n_genes,)`` fraction of HR spots whose measured counts lie in the interval.
    """
    from scipy.stats import norm

    truth, pred, std = rescaled_at_spots(lr_sdata, mean_counts, std_counts, genes)
    spread = float(norm.ppf(0.5 + interval / 2)) * std
    return interval_coverage(truth, np.clip(pred - spread, 0, None), pred + spread)


def uncertainty_gain_at_spots(lr_sdata, mean_counts: np.ndarray, std_counts: np.ndarray,
                              genes: list[str]) -> np.ndarray:
    """unc_gain (``BENCHMARK.md``, Uncertainty) at the HR spots, per gene.

    ``diffst_sc.metrics.uncertainty_gain`` of the measured counts under the mean and std
    rescaled as in :func:`rescaled_at_spots` (spots whose mean is 0 are left out). This is
    ``ds.tl.evaluate``'s ``unc_gain`` on spot truth.

    Returns
    -------
    numpy.ndarray
        ``(n_genes,)`` nats per spot; above 0 when the std follows the size of the errors
        better than a std proportional to the mean or to its square root.
    """
    return uncertainty_gain(*rescaled_at_spots(lr_sdata, mean_counts, std_counts, genes))
