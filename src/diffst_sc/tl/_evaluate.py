"""Score a super-resolved layer against high-resolution truth (the protocol of ``BENCHMARK.md``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._core._elements import image_levels, table_region, table_spots
from .._core._raster import channel_index, element_raster, footprint_means, resample_to_grid
from ..metrics import (
    consistency_error,
    expression_scores,
    gene_mean,
    interval_coverage,
    renormalisation_factors,
    renormalise_to_blocks,
    uncertainty_gain,
)

if TYPE_CHECKING:
    from spatialdata import SpatialData

#: Image holding high-resolution truth on a pixel grid (transcript data, see ``ds.pp.degrade``).
GRID_TRUTH_KEY = "hr_truth"
#: Column of the truth table giving each observation's low-resolution spot (row of ``table``).
LR_SPOT_KEY = "lr_spot"
#: Columns of the result, in order.
SCORE_COLUMNS = ["PCC", "NRMSE", "SSIM", "wPCC", "coverage", "unc_gain", "consistency_error"]


def evaluate(
    sdata: SpatialData,
    key: str = "diffst",
    *,
    truth: str = "hr_table",
    table_key: str = "table",
    coordinate_system: str | None = None,
    genes: list[str] | None = None,
    interval: float = 0.9,
) -> pd.DataFrame:
    """Score a super-resolved layer against the high-resolution truth kept by ``ds.pp.degrade``.

    With spot truth (``shapes["hr_spots"]`` annotated by ``tables[truth]``), the layer is
    averaged over each measured spot's disc, the result is rescaled so that the children of each
    low-resolution (LR) spot sum to its measured counts, and scored in ``log1p`` space: PCC,
    NRMSE, SSIM on the array grid (``obs["array_row"]``, ``obs["array_col"]``) and wPCC (the
    correlation within LR blocks, ``obs["lr_spot"]``; 0 for a copy of the LR values). With grid
    truth (``images["hr_truth"]``), the layer is resampled onto the truth's pixels through both
    transformations, converted to counts per pixel, and scored the same way (blocks: the pixels
    nearest each pseudo-spot, SSIM on the truth grid).

    Three further columns: ``coverage``, the fraction of observations whose truth lies in the
    central ``interval`` of a Gaussian with the layer's mean and ``images[key + "_std"]``
    (read out like the mean: averaged over the disc, which bounds the spread of the disc's mean
    from above, and rescaled by the same factor; ``NaN`` without that layer); ``unc_gain``,
    whether that std says where the errors are (:func:`diffst_sc.metrics.uncertainty_gain` on
    counts, with the same mean and std; ``NaN`` without the layer); and ``consistency_error``,
    the relative error of the layer averaged over the LR spots' discs against their measured
    counts (per gene ``||m - y|| / ||y||`` over the LR spots; 0 when the map integrates back
    exactly). NaN pixels of the layers (outside the tissue) count as 0.

    Parameters
    ----------
    sdata
        What ``ds.pp.degrade`` returns, after ``ds.tl.superresolve`` wrote ``images[key]`` (genes
        as channels ``c``, values in LR-spot units: expected counts of an LR spot centred there).
    key
        Name of the super-resolved layer.
    truth
        Table of the high-resolution truth, with ``obs["lr_spot"]`` (integer row of the parent
        LR spot in ``tables[table_key]``) and ``obs[["array_row", "array_col"]]``.
    table_key
        Table of the LR spots the layer was computed from (raw counts in ``layers["counts"]``
        or ``X``).
    coordinate_system
        Coordinate system in which layer and spots are compared; by default the one they share.
    genes
        Genes to score; all channels of the layer by default.
    interval
        Nominal probability of the uncertainty interval whose coverage is reported.

    Returns
    -------
    pandas.DataFrame
        One row per gene plus a ``"mean"`` row (mean over the genes each score applies to;
        genes with constant truth are skipped), columns ``PCC, NRMSE, SSIM, wPCC, coverage,
        unc_gain, consistency_error``. The means, the number of genes and the settings are also
        stored in ``sdata.tables[table_key].uns[f"{key}_evaluation"]``.

    Examples
    --------
    >>> import diffst_sc as ds
    >>> sdata = ds.io.read_legacy_st("../shared/data/her2st/C2")  # doctest: +SKIP
    >>> lr = ds.pp.degrade(sdata)  # doctest: +SKIP
    >>> model = ds.tl.fit(lr)  # doctest: +SKIP
    >>> ds.tl.superresolve(lr, model=model)  # doctest: +SKIP
    >>> scores = ds.tl.evaluate(lr)  # doctest: +SKIP
    >>> scores.loc["mean", ["PCC", "wPCC"]]  # doctest: +SKIP
    """
    from scipy.stats import norm

    from .._core._view import measured_fraction

    if not 0 < interval < 1:
        raise ValueError(f"`interval` is a probability in (0, 1), not {interval!r}.")
    if key not in sdata.images:
        raise KeyError(f"No super-resolved layer {key!r} in the SpatialData (images: "
                       f"{list(sdata.images)}). Run `ds.tl.superresolve(sdata, "
                       f"key_added={key!r})` first, or pass the layer's name as `key=`.")
    for name in (table_key, truth):
        if name not in sdata.tables:
            raise KeyError(f"No table {name!r} (tables: {list(sdata.tables)}). `evaluate` needs "
                           "the LR table and the high-resolution truth that `ds.pp.degrade` "
                           "keeps; run it on data with known truth.")
    cs = _coordinate_system(sdata, key, table_key, coordinate_system)
    genes = _genes(sdata, key, truth, table_key, genes)
    z = float(norm.ppf(0.5 + interval / 2))
    std_key = f"{key}_std"
    has_std = std_key in sdata.images

    lr_centres, lr_diameter, lr = _spots_in_cs(sdata, table_key, cs)
    lr_counts = _expression(lr, genes)
    layer, layer_to_cs = _computed_layer(sdata, key, cs, genes)
    lr_means = footprint_means(layer, layer_to_cs, lr_centres, lr_diameter)
    # The layer holds counts over whole footprints: a block cut by the tissue's edge measured
    # only part of its own (``SectionView.footprint_expression``).
    consistency = consistency_error(lr_means, lr_counts / measured_fraction(lr)[:, None])

    hr = sdata.tables[truth]
    if LR_SPOT_KEY not in hr.obs:
        raise KeyError(f"Table {truth!r} has no obs[{LR_SPOT_KEY!r}] saying which LR spot each "
                       "observation belongs to; make it with `ds.pp.degrade`.")
    block = _lr_spot_rows(hr, lr.n_obs)
    rows, cols = _grid_positions(hr, truth)
    truth_counts = _expression(hr, genes)

    if GRID_TRUTH_KEY in sdata.images:
        std_raster = _computed_layer(sdata, std_key, cs, genes) if has_std else None
        pred, std = _grid_prediction(sdata, cs, (layer, layer_to_cs), std_raster, rows, cols,
                                     lr_diameter)
        lower = upper = None
        if std is not None:
            lower, upper = np.clip(pred - z * std, 0, None), pred + z * std
        kind = "grid"
    else:
        hr_centres, hr_diameter, _ = _spots_in_cs(sdata, truth, cs)
        mean = _covered(footprint_means(layer, layer_to_cs, hr_centres, hr_diameter), key,
                        truth)
        pred = renormalise_to_blocks(mean, block, lr_counts)
        lower = upper = std = None
        if has_std:
            std_layer, std_to_cs = _computed_layer(sdata, std_key, cs, genes)
            std = _covered(footprint_means(std_layer, std_to_cs, hr_centres, hr_diameter),
                           std_key, truth)
            factor, _ = renormalisation_factors(mean, block, lr_counts)
            # Blocks predicted as all-zero get the equal split and no spread.
            f = np.nan_to_num(factor)
            std = np.where(np.isnan(factor), 0.0, std * f)
            lower, upper = np.clip(pred - z * std, 0, None), pred + z * std
        kind = "spots"

    per_gene = expression_scores(np.log1p(truth_counts), np.log1p(pred), block=block,
                                 rows=rows, cols=cols)
    n_genes = len(genes)
    per_gene["coverage"] = (interval_coverage(truth_counts, lower, upper) if lower is not None
                            else np.full(n_genes, np.nan))
    per_gene["unc_gain"] = (uncertainty_gain(truth_counts, pred, std) if std is not None
                            else np.full(n_genes, np.nan))
    per_gene["consistency_error"] = consistency
    table = pd.DataFrame({c: per_gene[c] for c in SCORE_COLUMNS}, index=pd.Index(genes,
                                                                                   name="gene"))
    means = {c: gene_mean(per_gene[c]) for c in SCORE_COLUMNS}
    table.loc["mean"] = pd.Series(means)
    sdata.tables[table_key].uns[f"{key}_evaluation"] = {
        **{c: means[c] for c in SCORE_COLUMNS},
        "n_genes": int(np.isfinite(per_gene["PCC"]).sum()),
        "n_observations": int(truth_counts.shape[0]),
        "truth": truth,
        "truth_kind": kind,
        "interval": float(interval),
        "coordinate_system": cs,
    }
    return table


def _computed_layer(sdata, key: str, cs: str, genes: list[str]):
    """The layer's ``genes`` as one numpy ``(g, y, x)`` array, read once, and its affine to cs.

    NaN pixels (outside the tissue, see ``ds.tl.superresolve``) read as 0: where there is no
    tissue, the layer predicts no counts, so truth there is scored against 0 and a disc that
    straddles the tissue edge averages 0 over its part outside, as a spot there measures.
    Discs and truth pixels off the layer's extent still read NaN (and are refused).
    """
    raster, to_cs = element_raster(sdata, key, cs)
    data, _ = channel_index(raster, genes)
    data = data.compute() if hasattr(data, "compute") else data
    return np.nan_to_num(np.asarray(data), nan=0.0), to_cs


def _coordinate_system(sdata, key: str, table_key: str, cs: str | None) -> str:
    from spatialdata.transformations import get_transformation

    layer_cs = list(get_transformation(sdata.images[key], get_all=True))
    if cs is not None:
        if cs not in layer_cs:
            raise ValueError(f"Layer {key!r} is not placed in coordinate system {cs!r}; it is in "
                             f"{layer_cs}. Pass one of them as `coordinate_system=`.")
        return cs
    region = table_region(sdata, table_key)
    shared = [c for c in layer_cs
              if c in get_transformation(sdata.shapes[region], get_all=True)]
    if len(shared) == 1:
        return shared[0]
    if not shared:
        raise ValueError(f"Layer {key!r} (in {layer_cs}) and the spots {region!r} share no "
                         "coordinate system; superresolve the section this table belongs to.")
    raise ValueError(f"Layer {key!r} and the spots share several coordinate systems {shared}; "
                     "pass `coordinate_system=`.")


def _genes(sdata, key: str, truth: str, table_key: str, genes) -> list[str]:
    from .._core._raster import channel_names

    layer = image_levels(sdata.images[key])[0]
    channels = channel_names(layer) or []
    if genes is None:
        genes = channels
    genes = [str(g) for g in genes]
    if not genes:
        raise ValueError(f"Layer {key!r} names no channels; pass `genes=`.")
    where = {f"layer {key!r}": channels,
             f"table {truth!r}": list(map(str, sdata.tables[truth].var_names)),
             f"table {table_key!r}": list(map(str, sdata.tables[table_key].var_names))}
    for name, names in where.items():
        missing = sorted(set(genes) - set(names))
        if missing:
            raise KeyError(f"{len(missing)} of the {len(genes)} genes to score are not in "
                           f"{name}, e.g. {missing[:5]}. Pass `genes=` with genes that the layer "
                           "and both tables have (the layer has the genes `superresolve` was "
                           "asked for).")
    return genes


def _spots_in_cs(sdata, table_key: str, cs: str):
    """Centres (in ``cs``), diameter (in ``cs`` units) and table of the spots a table annotates."""
    from spatialdata.transformations import get_transformation

    from .._core._elements import affine_matrix, centres_and_diameter

    region = table_region(sdata, table_key)
    adata = sdata.tables[table_key]
    transforms = get_transformation(sdata.shapes[region], get_all=True)
    if cs not in transforms:
        raise ValueError(f"Spots {region!r} are not placed in coordinate system {cs!r}; they are "
                         f"in {list(transforms)}.")
    shapes = table_spots(sdata, table_key)
    xy, diameter = centres_and_diameter(shapes)
    a = affine_matrix(transforms[cs])
    centres = xy @ a[:2, :2].T + a[:2, 2]
    return centres, float(diameter * np.sqrt(abs(np.linalg.det(a[:2, :2])))), adata


def _expression(adata, genes: list[str]) -> np.ndarray:
    sub = adata[:, genes]
    x = sub.layers["counts"] if "counts" in sub.layers else sub.X
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    return x.astype(np.float64)


def _lr_spot_rows(hr, n_lr: int) -> np.ndarray:
    block = hr.obs[LR_SPOT_KEY].to_numpy()
    if not np.issubdtype(block.dtype, np.integer):
        raise ValueError(f"obs[{LR_SPOT_KEY!r}] must hold integer rows of the LR table; it has "
                         f"dtype {block.dtype}.")
    if block.min() < 0 or block.max() >= n_lr:
        raise ValueError(f"obs[{LR_SPOT_KEY!r}] points to rows {block.min()}..{block.max()} but "
                         f"the LR table has {n_lr} rows; evaluate the pair `ds.pp.degrade` made.")
    return block.astype(np.int64)


def _grid_positions(hr, truth: str) -> tuple[np.ndarray, np.ndarray]:
    missing = [c for c in ("array_row", "array_col") if c not in hr.obs]
    if missing:
        raise KeyError(f"Table {truth!r} lacks obs {missing}: SSIM needs each observation's grid "
                       "position (array row and column, or pixel row and column of hr_truth).")
    return hr.obs["array_row"].to_numpy(), hr.obs["array_col"].to_numpy()


def _covered(means: np.ndarray, key: str, truth: str) -> np.ndarray:
    bad = ~np.isfinite(means).all(1)
    if bad.any():
        raise ValueError(f"Layer {key!r} does not cover {int(bad.sum())} of the spots of "
                         f"{truth!r}; super-resolve the whole section before evaluating.")
    return means


def _grid_prediction(sdata, cs, layer, std_layer, rows, cols, lr_diameter):
    """Layer (and its std) on the truth grid, in counts per truth pixel, at the scored pixels.

    ``layer`` and ``std_layer`` are ``(array, affine to cs)`` pairs (``std_layer`` may be None).
    """
    truth_raster, truth_to_cs = element_raster(sdata, GRID_TRUTH_KEY, cs)
    shape = tuple(int(s) for s in truth_raster.shape[1:])
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    if rows.min() < 0 or cols.min() < 0 or rows.max() >= shape[0] or cols.max() >= shape[1]:
        raise ValueError(f"The truth table's array_row/array_col fall outside "
                         f"{GRID_TRUTH_KEY!r} ({shape[0]} x {shape[1]} pixels).")
    # LR-spot units (counts of a disc of the LR spots' size) to counts of one truth pixel.
    to_pixel = abs(np.linalg.det(truth_to_cs[:2, :2])) / (np.pi * (lr_diameter / 2) ** 2)
    out = []
    for name, pair in (("the layer", layer), ("its std", std_layer)):
        if pair is None:
            out.append(None)
            continue
        grid = resample_to_grid(pair[0], pair[1], shape, truth_to_cs)
        out.append(_covered(grid[:, rows, cols].T, name, GRID_TRUTH_KEY) * to_pixel)
    pred, std = out
    return np.clip(pred, 0, None), std
