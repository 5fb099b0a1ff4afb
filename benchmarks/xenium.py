"""The Xenium protocol (``../shared/BENCHMARK.md``) on the tiny Xenium breast crop: a pipeline check.

Transcripts are binned into a fine grid (the high-resolution truth) and counted in pseudo-spots
(the low-resolution input) by ``ds.pp.degrade(mode="transcripts")``; Diff-ST is fitted on the
pseudo-spots and the H&E alone, super-resolves them, and ``ds.tl.evaluate`` scores the map
against the truth (PCC, NRMSE, SSIM, wPCC, coverage of the 90% interval, consistency error).
Two baselines go through the same scoring: ``nearest`` (every truth pixel takes its nearest
pseudo-spot's counts: a copy of the input) and ``cubic`` (piecewise cubic Clough-Tocher
interpolation of log1p pseudo-spot counts between the pseudo-spots' centres, nearest outside
their hull).

The crop covers about 190 x 160 um (122 cells). With Visium's geometry (55 um discs 100 um apart)
it holds a single pseudo-spot, so the default here shrinks the lattice to 20 um discs 30 um apart
(45 pseudo-spots, the model then trains on their 7-spot hexagons) and bins the truth at 4 um.
So few spots are far too little to learn from: this checks that the pipeline runs end to end on
real subcellular data, coordinate transformations included; it does not measure the model.

Usage (from the repository root)::

    python benchmarks/xenium.py --out benchmarks/results/xenium

Data: 10x Genomics' Xenium FFPE Human Breast Cancer Rep1, as cropped in the test data of the
MIT-licensed SegTraQ repository, in ``../shared/data/xenium_breast_crop``.
"""

from __future__ import annotations

import argparse
import json
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
from her2st_quality import _relative, machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_STORE = REPO.parent / "shared" / "data" / "xenium_breast_crop" / "xenium_sp_subset.zarr"
COLUMNS = ("PCC", "NRMSE", "SSIM", "wPCC", "coverage", "consistency_error")
METHODS = ("nearest", "cubic", "diffst")


def read_store(path: Path):
    """The Xenium SpatialData store (its zarr v2 warnings silenced)."""
    import spatialdata as sd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sd.read_zarr(path)


def lr_only(pair):
    """What a method may see: the H&E, the pseudo-spots and their table (no truth)."""
    from spatialdata import SpatialData

    return SpatialData(images={"he": pair.images["he"]}, shapes={"spots": pair.shapes["spots"]},
                       tables={"table": pair.tables["table"]})


def truth_pixel_centres(pair) -> tuple[np.ndarray, tuple[int, int], dict]:
    """Centres (x, y) in the coordinate system of every pixel of ``images["hr_truth"]``.

    Returns
    -------
    tuple
        ``(h * w, 2)`` centres in row-major order, ``(h, w)``, and the truth's transformations.
    """
    from spatialdata.transformations import get_transformation

    truth = pair.images["hr_truth"]
    transforms = get_transformation(truth, get_all=True)
    a = np.asarray(next(iter(transforms.values())).to_affine_matrix(
        input_axes=("x", "y"), output_axes=("x", "y")), float)
    h, w = (int(s) for s in truth.shape[1:])
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    px = np.c_[jj.ravel() + 0.5, ii.ravel() + 0.5]
    return px @ a[:2, :2].T + a[:2, 2], (h, w), transforms


def lr_centres_and_counts(pair, genes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-spot centres in the truth's coordinate system and their counts of ``genes``."""
    view = section_view(lr_only(pair))
    a = view.image_to_cs
    return view.centres_px @ a[:2, :2].T + a[:2, 2], view.expression(genes).astype(np.float64)


def baseline_layer(pair, genes: list[str], method: str) -> np.ndarray:
    """A baseline map on the truth grid, ``(genes, h, w)``, in pseudo-spot units (counts per
    pseudo-spot disc centred there), as ``ds.tl.superresolve`` writes its layers.

    ``nearest``: every pixel takes the counts of its pseudo-spot (the nearest one; for the scored
    pixels the one ``ds.pp.degrade`` recorded in ``hr_table.obs["lr_spot"]``, which ``evaluate``
    uses as the block). ``cubic``: Clough-Tocher interpolation of log1p counts, ``nearest``
    outside the pseudo-spots' hull.
    """
    from scipy.interpolate import CloughTocher2DInterpolator
    from scipy.spatial import cKDTree

    centres, (h, w), _ = truth_pixel_centres(pair)
    lr_xy, lr_counts = lr_centres_and_counts(pair, genes)
    _, nearest = cKDTree(lr_xy).query(centres)
    # Scored pixels take the pseudo-spot `evaluate` puts them in (ties broken as `degrade` did).
    hr = pair.tables["hr_table"].obs
    nearest.reshape(h, w)[hr["array_row"].to_numpy(int), hr["array_col"].to_numpy(int)] = \
        hr["lr_spot"].to_numpy(int)
    out = lr_counts[nearest]
    if method == "cubic":
        if len(lr_xy) < 3:
            raise ValueError(f"Cubic interpolation needs 3 or more pseudo-spots; there are "
                             f"{len(lr_xy)}. Use a denser lattice (--spot-spacing-um).")
        interp = CloughTocher2DInterpolator(lr_xy, np.log1p(lr_counts))(centres)
        out = np.where(np.isfinite(interp), np.expm1(np.clip(interp, 0, None)), out)
    elif method != "nearest":
        raise ValueError(f"Unknown baseline {method!r}; use 'nearest' or 'cubic'.")
    return out.T.reshape(len(genes), h, w).astype(np.float32)


def add_layer(pair, key: str, values: np.ndarray, genes: list[str]) -> None:
    """Write a ``(genes, h, w)`` map on the truth grid as image layer ``key``."""
    from spatialdata.models import Image2DModel

    _, _, transforms = truth_pixel_centres(pair)
    pair.images[key] = Image2DModel.parse(values, dims=("c", "y", "x"), c_coords=list(genes),
                                          transformations=transforms)


def run_diffst(pair, genes: list[str], *, preset: str, max_steps: int, n_samples: int,
               steps: int, seed: int) -> dict:
    """Fit on the pseudo-spots, super-resolve them, and put the layers into ``pair``."""
    target = lr_only(pair)
    t0 = time.perf_counter()
    model = ds.tl.fit(target, genes=genes, preset=preset, max_steps=max_steps, seed=seed,
                      progress=False)
    t1 = time.perf_counter()
    ds.tl.superresolve(target, model=model, key_added="diffst", n_samples=n_samples,
                       steps=steps, seed=seed, overwrite=True, progress=False)
    t2 = time.perf_counter()
    pair.images["diffst"] = target.images["diffst"]
    pair.images["diffst_std"] = target.images["diffst_std"]
    uns = target.tables["table"].uns["diffst"]
    return {"fit_seconds": t1 - t0, "superresolve_seconds": t2 - t1,
            "map_consistency_error": float(uns["consistency_error"]),
            "map_pixel_um": float(uns["pixel_size_um"])}


def score(pair, key: str, genes: list[str]) -> dict:
    """``ds.tl.evaluate`` of layer ``key``: mean scores and per-gene values."""
    table = ds.tl.evaluate(pair, key=key, genes=genes)
    mean = table.loc["mean"]
    per_gene = table.drop(index="mean")
    return {**{c: _num(mean[c]) for c in COLUMNS},
            "n_genes": int(pair.tables["table"].uns[f"{key}_evaluation"]["n_genes"]),
            "per_gene": {c: [_num(v) for v in per_gene[c]] for c in COLUMNS}}


def _num(v) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def markdown(record: dict) -> str:
    """The record as a markdown page."""
    g, d = record["geometry"], record["data"]
    lines = [
        "# Xenium protocol on a tiny crop (pipeline check)",
        "",
        "**This crop checks the pipeline, not the model.** It is about 190 x 160 um of tissue "
        f"(122 cells); its {d['n_pseudo_spots']} pseudo-spots are far too few to learn from, "
        "so these scores say nothing about what Diff-ST achieves on a whole slide. The her2st "
        "benchmark (`her2st_quality.py`) measures quality.",
        "",
        f"- command: `{record['command']}`",
        f"- machine: {record['machine']}",
        f"- date: {record['date']}",
        f"- data: {record['store']} (10x Xenium FFPE Human Breast Cancer Rep1, crop from the "
        "SegTraQ test data, MIT); protocol: ../shared/BENCHMARK.md (Xenium)",
        f"- geometry: pseudo-spots are {g['spot_diameter_um']:g} um discs "
        f"{g['spot_spacing_um']:g} um apart on a hexagonal lattice, truth binned at "
        f"{g['hr_pixel_um']:g} um. Visium's 55 um discs 100 um apart would give a single "
        "pseudo-spot on this crop; the smaller lattice gives enough spots for `ds.tl.fit` to "
        "sum them once more into 7-spot hexagons and train",
        f"- {d['n_pseudo_spots']} pseudo-spots; truth grid {d['grid_shape'][0]} x "
        f"{d['grid_shape'][1]} pixels, {d['n_truth_pixels']} with transcripts (scored); "
        f"{d['n_transcripts_in_grid']} transcripts in the grid; {len(record['genes'])} genes "
        "(most expressed in the pseudo-spots)",
        f"- Diff-ST: preset {record['options']['preset']}, {record['options']['max_steps']} "
        f"training steps, {record['options']['n_samples']} samples x "
        f"{record['options']['steps']} denoising steps",
        "- nearest: each truth pixel takes its nearest pseudo-spot's counts (a copy of the "
        "input: wPCC 0); cubic: Clough-Tocher cubic interpolation of log1p counts between the "
        "pseudo-spots' centres (nearest outside their hull)",
        "- scores of `ds.tl.evaluate` on the truth pixels (log1p counts per pixel); coverage: "
        "the 90% interval mean +- 1.645 std (Diff-ST only); consistency: the map averaged over "
        "each pseudo-spot's disc against its counts (edge pixels make it nonzero even for the "
        "truth itself)",
        "",
        "| method | PCC | NRMSE | SSIM | wPCC | coverage90 | consistency | genes | seconds |",
        "|" + " --- |" * 9,
    ]
    for method, r in record["results"].items():
        lines.append(f"| {method} | " + " | ".join(_fmt(r[c]) for c in COLUMNS)
                     + f" | {r['n_genes']} | {r['seconds']:.1f} |")
    if "diffst" in record["results"]:
        r = record["results"]["diffst"]
        lines += ["", f"Diff-ST: fit {r['fit_seconds']:.1f} s, superresolve "
                  f"{r['superresolve_seconds']:.1f} s; map at {r['map_pixel_um']:.1f} um per "
                  "pixel; `superresolve`'s own consistency error "
                  f"{r['map_consistency_error']:.4f}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    """Command line entry point; returns the record written to ``<out>.json``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", default=str(DEFAULT_STORE), help="the Xenium SpatialData zarr")
    ap.add_argument("--spot-diameter-um", type=float, default=20.0)
    ap.add_argument("--spot-spacing-um", type=float, default=30.0)
    ap.add_argument("--hr-pixel-um", type=float, default=4.0)
    ap.add_argument("--n-genes", type=int, default=30)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--preset", default="cpu-small")
    ap.add_argument("--max-steps", type=int, default=300)
    ap.add_argument("--n-samples", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/xenium",
                    help="output path without extension (.md and .json are written)")
    a = ap.parse_args(argv)
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    xenium = read_store(Path(a.store))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pair = ds.pp.degrade(xenium, mode="transcripts", hr_pixel_um=a.hr_pixel_um,
                             spot_diameter_um=a.spot_diameter_um,
                             spot_spacing_um=a.spot_spacing_um)
    genes = [str(g) for g in ds.pp.select_genes(pair, n_top=a.n_genes, table_key="table")]
    made = pair.tables["table"].uns["diffst_degrade"]
    options = {"preset": a.preset, "max_steps": a.max_steps, "n_samples": a.n_samples,
               "steps": a.steps, "seed": a.seed}
    results = {}
    for method in a.methods:
        t0 = time.perf_counter()
        extra = {}
        if method == "diffst":
            extra = run_diffst(pair, genes, **options)
        else:
            add_layer(pair, method, baseline_layer(pair, genes, method), genes)
        seconds = time.perf_counter() - t0
        results[method] = {**score(pair, method, genes), "seconds": seconds, **extra}
        r = results[method]
        print(f"{method:8s} " + " ".join(f"{c} {_fmt(r[c])}" for c in COLUMNS)
              + f" ({seconds:.1f} s)", flush=True)
    command = "python benchmarks/xenium.py " + " ".join(
        shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    record = {
        "command": command, "machine": machine(), "date": started,
        "store": _relative(Path(a.store)),
        "geometry": {"spot_diameter_um": a.spot_diameter_um,
                     "spot_spacing_um": a.spot_spacing_um, "hr_pixel_um": a.hr_pixel_um},
        "data": {"n_pseudo_spots": int(pair.tables["table"].n_obs),
                 "n_truth_pixels": int(pair.tables["hr_table"].n_obs),
                 "grid_shape": [int(s) for s in made["grid_shape"]],
                 "n_transcripts_in_grid": int(made["n_transcripts_in_grid"])},
        "genes": genes, "options": options, "results": results,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(markdown(record))
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    return record


if __name__ == "__main__":
    main()
