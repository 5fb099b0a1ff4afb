"""Expression per cell on the tiny Xenium breast crop: predicted from pseudo-spots vs measured.

The crop's transcripts are counted in Visium-like pseudo-spots (``ds.pp.degrade(mode=
"transcripts")``); the default model (``ds.tl.fit``, the histology model) is fitted on them and
the H&E alone, ``ds.tl.superresolve`` draws the map, and ``ds.tl.cell_expression`` sums it over
each Xenium cell (the crop's ``cell_boundaries`` polygons). The prediction is scored against the
transcripts Xenium assigned to each cell (the crop's table) by the per-gene Pearson correlation
across cells, averaged over genes. Baselines, from the same pseudo-spots:

- ``nearest``: each cell takes its nearest pseudo-spot's counts times cell area / disc area;
- ``cubic``: the pseudo-spots' densities (counts / disc area) interpolated at the cell's centroid
  (``scipy.interpolate.griddata``, cubic; nearest outside the pseudo-spots' hull) times the
  cell's area;
- ``area_only``: every cell the section's mean density times its area (what cell size alone
  explains: per-gene PCC of counts rewards any method that scales with area).

The crop covers about 190 x 160 um (122 cells in the table). With Visium's geometry (55 um discs
100 um apart) it holds one pseudo-spot, so the lattice is shrunk as in ``xenium.py`` (20 um discs
30 um apart by default). So few spots and cells make this a check with wide error bars, not a
measure of the method on a slide.

Usage (from the repository root)::

    python benchmarks/xenium_cells.py --out benchmarks/results/xenium_cells

Data: 10x Genomics' Xenium FFPE Human Breast Cancer Rep1, as cropped in the test data of the
MIT-licensed SegTraQ repository, in ``../shared/data/xenium_breast_crop``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

import diffst_sc as ds
from diffst_sc._core import section_view

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_STORE = REPO.parent / "shared" / "data" / "xenium_breast_crop" / "xenium_sp_subset.zarr"
METHODS = ("area_only", "nearest", "cubic", "diffst")
CELLS = "cell_boundaries"
#: Xenium's control codewords, not genes.
CONTROL_PREFIXES = ("NegControl", "BLANK", "antisense", "Unassigned", "Deprecated", "Intergenic")


def read_store(path: Path):
    """The Xenium SpatialData store (its zarr v2 warnings silenced)."""
    import spatialdata as sd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sd.read_zarr(path)


def measured_cells(xenium, genes: list[str], min_qv: float):
    """The cells of the crop's table that lie inside the crop, and their measured counts.

    A cell's counts are the transcripts Xenium assigned to it (``cell_id``) with quality
    ``qv >= min_qv``. Cells cut by the crop's edge are left out: their transcripts beyond it are
    in no pseudo-spot and not in the crop. With Xenium's ``min_qv`` of 20 the counts of the cells
    kept are the table's (which names no genes: its columns are the gene names in the order of
    the transcripts' categories); the share of equal entries is returned as a check.

    Returns
    -------
    tuple
        ``(ids, counts (cells, genes), polygons, n_table_cells, share_equal_to_table)``.
    """
    import pandas as pd
    import scipy.sparse as sp

    table = xenium.tables["table"]
    attrs = table.uns["spatialdata_attrs"]
    if attrs["region"] != CELLS:
        raise ValueError(f"Expected the table to annotate {CELLS!r}, not {attrs['region']!r}.")
    points = xenium.points["transcripts"]
    df = points[["x", "y", "feature_name", "cell_id", "qv"]].compute()
    # The transcripts and the cells' polygons share their units (both micrometres, scaled
    # alike to the coordinate system).
    lo, hi = df[["x", "y"]].min().to_numpy(), df[["x", "y"]].max().to_numpy()
    bounds = xenium.shapes[CELLS].geometry.bounds
    inside = ((bounds["minx"] >= lo[0]) & (bounds["miny"] >= lo[1]) & (bounds["maxx"] <= hi[0])
              & (bounds["maxy"] <= hi[1]))
    all_ids = table.obs[attrs["instance_key"]].to_numpy()
    keep = np.isin(all_ids, bounds.index[inside])
    ids = all_ids[keep]
    panel = [str(n) for n in df["feature_name"].cat.categories
             if not str(n).startswith(CONTROL_PREFIXES)]
    df = df[(df["qv"] >= min_qv) & df["cell_id"].isin(ids)]
    names = df["feature_name"].astype(str)
    full = pd.crosstab(df["cell_id"], names).reindex(index=ids, fill_value=0)
    x = table[keep].X
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    same = np.nan
    if x.shape[1] == len(panel):
        same = float((full.reindex(columns=panel, fill_value=0).to_numpy() == x).mean())
    counts = full.reindex(columns=genes, fill_value=0).to_numpy(np.float64)
    return ids, counts, xenium.shapes[CELLS].loc[ids], len(all_ids), same


def with_cells(target, xenium):
    """``target`` (pseudo-spots, H&E, map) plus the Xenium cell polygons, no table of theirs."""
    from spatialdata import SpatialData

    return SpatialData(images=dict(target.images), shapes={**target.shapes,
                                                           CELLS: xenium.shapes[CELLS]},
                       tables={"table": target.tables["table"]})


def spot_geometry(target, cs: str):
    """Pseudo-spot centres (x, y) and disc area in ``cs`` units, and their counts (table order)."""
    from spatialdata.transformations import get_transformation

    from diffst_sc._core import affine_matrix, centres_and_diameter, table_spots

    shapes = table_spots(target, "table")
    xy, diameter = centres_and_diameter(shapes)
    a = affine_matrix(get_transformation(target.shapes["spots"], cs))
    xy = xy @ a[:2, :2].T + a[:2, 2]
    area = np.pi * diameter**2 / 4 * abs(np.linalg.det(a[:2, :2]))
    view = section_view(target)
    return xy, float(area), view


def cell_geometry(polygons, cs: str):
    """Cell centroids (x, y) and areas in ``cs`` units."""
    from spatialdata.transformations import get_transformation

    from diffst_sc._core import affine_matrix

    a = affine_matrix(get_transformation(polygons, cs))
    xy = np.c_[polygons.geometry.centroid.x, polygons.geometry.centroid.y]
    return xy @ a[:2, :2].T + a[:2, 2], polygons.geometry.area.to_numpy() * abs(
        np.linalg.det(a[:2, :2]))


def baseline(method: str, spots_xy, spot_area, spot_counts, cells_xy, cells_area):
    """``(cells, genes)`` expected counts of a baseline (see the module's docstring)."""
    from scipy.interpolate import griddata
    from scipy.spatial import cKDTree

    density = spot_counts / spot_area
    if method == "area_only":
        return np.outer(cells_area, density.mean(0))
    _, nearest = cKDTree(spots_xy).query(cells_xy)
    near = density[nearest]
    if method == "nearest":
        return near * cells_area[:, None]
    if method == "cubic":
        cubic = griddata(spots_xy, density, cells_xy, method="cubic")
        return np.where(np.isfinite(cubic), np.clip(cubic, 0, None), near) * cells_area[:, None]
    raise ValueError(f"Unknown baseline {method!r}.")


def per_gene_pcc(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Pearson correlation across cells of each gene; NaN where either side is constant."""
    p = pred - pred.mean(0)
    t = truth - truth.mean(0)
    den = np.sqrt((p**2).sum(0) * (t**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (p * t).sum(0) / den, np.nan)


def scores(pred: np.ndarray, truth: np.ndarray, area: np.ndarray) -> dict:
    """Per-gene PCC of counts and of density (counts / area), their means, total ratio."""
    pcc = per_gene_pcc(pred, truth)
    pcc_density = per_gene_pcc(pred / area[:, None], truth / area[:, None])
    return {"pcc": _mean(pcc), "pcc_density": _mean(pcc_density),
            "total_ratio": float(pred.sum() / truth.sum()),
            "per_gene_pcc": [_num(v) for v in pcc],
            "per_gene_pcc_density": [_num(v) for v in pcc_density]}


def paired_wins(results: dict, method: str, other: str) -> dict:
    """Genes where ``method``'s PCC beats ``other``'s, and a sign test's two-sided p-value."""
    from scipy.stats import binomtest

    a = np.array(results[method]["per_gene_pcc"], dtype=float)
    b = np.array(results[other]["per_gene_pcc"], dtype=float)
    ok = np.isfinite(a) & np.isfinite(b) & (a != b)
    wins = int((a[ok] > b[ok]).sum())
    p = float(binomtest(wins, int(ok.sum())).pvalue) if ok.any() else float("nan")
    return {"wins": wins, "genes": int(ok.sum()), "sign_test_p": p}


def _mean(v) -> float | None:
    v = np.asarray(v, float)
    return float(np.nanmean(v)) if np.isfinite(v).any() else None


def _num(v) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def markdown(record: dict) -> str:
    """The record as a markdown page."""
    g, d = record["geometry"], record["data"]
    lines = [
        "# Expression per cell on a tiny Xenium crop",
        "",
        f"- command: `{record['command']}`",
        f"- machine: {record['machine']}",
        f"- date: {record['date']}",
        f"- data: {record['store']} (10x Xenium FFPE Human Breast Cancer Rep1, crop from the "
        "SegTraQ test data, MIT)",
        f"- pseudo-spots: {g['spot_diameter_um']:g} um discs {g['spot_spacing_um']:g} um apart "
        f"on a hexagonal lattice ({d['n_pseudo_spots']} with transcripts; Visium's 55/100 um "
        "would leave one on this crop), counted from the transcripts by "
        "`ds.pp.degrade(mode=\"transcripts\")`",
        f"- diffst: `ds.tl.fit` (default histology model, {len(record['genes'])} genes most "
        "expressed in the pseudo-spots) -> `ds.tl.superresolve` (map at "
        f"{d['map_pixel_um']:.2f} um per pixel) -> `ds.tl.cell_expression` over the crop's "
        f"`{CELLS}` polygons",
        f"- cells: the {d['n_cells']} of the crop table's {d['n_table_cells']} that lie wholly "
        "inside the crop (the others lost transcripts at its edge), scored against the "
        f"transcripts Xenium assigned to them with qv >= {d['min_qv']:g} (equal to the table's "
        f"counts in {_pct(d['share_equal_to_table'])} of entries); median share of a cell under "
        f"the map {d['median_map_fraction']:.3f}",
        "- nearest: nearest pseudo-spot's counts x cell area / disc area; cubic: "
        "`scipy.interpolate.griddata(method=\"cubic\")` of pseudo-spot densities at the cell "
        f"centroid x cell area ({d['cells_outside_hull']} cells outside the pseudo-spots' "
        "hull take the nearest); area_only: the mean density x cell area",
        "- PCC: per-gene Pearson correlation across cells of predicted and measured counts, "
        "mean over genes; PCC density: the same of counts / cell area (size taken out); "
        "total: predicted over measured counts summed over cells and genes (the pseudo-spots "
        "also count transcripts outside cells)",
        "",
        "| method | PCC (counts) | PCC (density) | total | seconds |",
        "| --- | --- | --- | --- | --- |",
    ]
    for method, r in record["results"].items():
        lines.append(f"| {method} | {_fmt(r['pcc'])} | {_fmt(r['pcc_density'])} | "
                     f"{r['total_ratio']:.3f} | {r['seconds']:.1f} |")
    lines += ["", "Genes where diffst's PCC (counts) is above the baseline's (two-sided sign "
              "test):", ""]
    for other, w in record["paired"].items():
        lines.append(f"- vs {other}: {w['wins']} of {w['genes']} genes (p = "
                     f"{w['sign_test_p']:.3g})")
    lines += ["", f"Verdict: {record['verdict']}"]
    return "\n".join(lines) + "\n"


def verdict(results: dict, paired: dict) -> str:
    """One sentence on the target: diffst's mean PCC above the nearest-spot copy's."""
    d, n = results["diffst"]["pcc"], results["nearest"]["pcc"]
    w = paired["nearest"]
    where = "above" if d > n else "not above"
    return (f"diffst's mean per-gene PCC ({d:.3f}) is {where} the nearest-spot copy's "
            f"({n:.3f}); it is higher in {w['wins']} of {w['genes']} genes "
            f"(sign test p = {w['sign_test_p']:.2g}). {len(results['diffst']['per_gene_pcc'])} "
            "genes and so few cells and pseudo-spots leave wide error bars.")


def main(argv=None) -> dict:
    """Command line entry point; returns the record written to ``<out>.json``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", default=str(DEFAULT_STORE), help="the Xenium SpatialData zarr")
    ap.add_argument("--spot-diameter-um", type=float, default=20.0)
    ap.add_argument("--spot-spacing-um", type=float, default=30.0)
    ap.add_argument("--n-genes", type=int, default=30)
    ap.add_argument("--min-qv", type=float, default=20.0,
                    help="transcripts of this quality or more count as measured in a cell")
    ap.add_argument("--out", default="benchmarks/results/xenium_cells",
                    help="output path without extension (.md and .json are written)")
    a = ap.parse_args(argv)
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    xenium = read_store(Path(a.store))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pair = ds.pp.degrade(xenium, mode="transcripts", spot_diameter_um=a.spot_diameter_um,
                             spot_spacing_um=a.spot_spacing_um)
    from spatialdata import SpatialData

    target = SpatialData(images={"he": pair.images["he"]}, shapes={"spots": pair.shapes["spots"]},
                         tables={"table": pair.tables["table"]})
    genes = [str(g) for g in ds.pp.select_genes(target, n_top=a.n_genes, table_key="table")]
    ids, truth, polygons, n_table, same = measured_cells(xenium, genes, a.min_qv)

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.tl.fit(target, genes=genes, progress=False)
        ds.tl.superresolve(target, progress=False)
    sdata = with_cells(target, xenium)
    ds.tl.cell_expression(sdata, CELLS)
    cells = sdata.tables[f"diffst_{CELLS}"][[str(i) for i in ids]]
    seconds_diffst = time.perf_counter() - t0
    cs = cells.uns[f"diffst_{CELLS}"]["coordinate_system"]

    spots_xy, spot_area, view = spot_geometry(target, cs)
    spot_counts = view.footprint_expression(genes).astype(np.float64)
    cells_xy, cells_area = cell_geometry(polygons, cs)
    predicted = {"diffst": np.asarray(cells[:, genes].X, np.float64)}
    seconds = {"diffst": seconds_diffst}
    for method in METHODS[:-1]:
        t = time.perf_counter()
        predicted[method] = baseline(method, spots_xy, spot_area, spot_counts, cells_xy,
                                     cells_area)
        seconds[method] = time.perf_counter() - t
    results = {m: {**scores(predicted[m], truth, cells_area), "seconds": seconds[m]}
               for m in METHODS}
    paired = {o: paired_wins(results, "diffst", o) for o in METHODS[:-1]}
    for m, r in results.items():
        print(f"{m:10s} PCC {_fmt(r['pcc'])} PCC density {_fmt(r['pcc_density'])} "
              f"total {r['total_ratio']:.3f}", flush=True)

    from scipy.spatial import Delaunay

    outside = int((Delaunay(spots_xy).find_simplex(cells_xy) < 0).sum())
    command = "python benchmarks/xenium_cells.py " + " ".join(
        shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    record = {
        "command": command.strip(), "machine": machine(), "date": started,
        "store": os.path.relpath(Path(a.store).resolve(), REPO),
        "geometry": {"spot_diameter_um": a.spot_diameter_um,
                     "spot_spacing_um": a.spot_spacing_um},
        "data": {"n_pseudo_spots": int(target.tables["table"].n_obs), "n_cells": len(ids),
                 "map_pixel_um": float(target.tables["table"].uns["diffst"]["pixel_size_um"]),
                 "median_map_fraction": float(np.median(cells.obs["map_fraction"])),
                 "n_table_cells": n_table, "cells_outside_hull": outside,
                 "min_qv": a.min_qv, "share_equal_to_table": _num(same)},
        "genes": genes, "results": results, "paired": paired,
        "verdict": verdict(results, paired),
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(markdown(record))
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    return record


if __name__ == "__main__":
    main()
