"""Quality benchmark on her2st (``../shared/BENCHMARK.md``): degrade 2 x 2, predict, score.

Each section is read with ``ds.io.read_legacy_st``, degraded with ``ds.pp.degrade`` (every 2 x 2
block of the ST array summed into one pseudo-spot), each method predicts the counts of every
measured spot from the pseudo-spots and the H&E, the predictions are rescaled to the blocks'
measured counts and scored (PCC, NRMSE, SSIM, wPCC on log1p counts, averaged over genes). Diff-ST
and its ablations also get the consistency error of the map against the pseudo-spots, the coverage
of their 90% interval at the measured spots, and the seconds of fit + superresolve.

Usage (from the repository root)::

    python benchmarks/her2st_quality.py --sections B4 C2 C3 --methods uniform bicubic tesla \
        --setting single --out benchmarks/results/her2st_quality_single
    python benchmarks/her2st_quality.py --sections B4 C2 C3 --methods diffst diffst-no-graph \
        --setting single --out benchmarks/results/her2st_quality_single --append

writes ``<out>.md`` (tables with the commands, machine and dates, and whether the issue's targets
are reached) and ``<out>.json``; ``--append`` merges the new methods into an existing result.
Data: Andersson et al., Nat Commun 12, 6012 (2021), in ``../shared/data/her2st``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

import diffst_sc as ds

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine  # noqa: E402
from baselines import (  # noqa: E402
    BASELINES,
    HR_TABLE,
    TRAINED_BASELINES,
    degrade_2x2,
    interval_coverage_at_spots,
    lr_input,
    score_predictions,
)

#: The repository as the command reached it: symbolic links (``../shared`` often is one) are
#: not followed, so that paths relative to it never name where they point on this machine.
REPO = Path(os.path.abspath(__file__)).parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "her2st"
SCORES = ("PCC", "NRMSE", "SSIM", "wPCC")
DIFFST_KEY = "diffst"
#: Nominal probability of the uncertainty interval whose coverage is reported.
INTERVAL = 0.9

#: Diff-ST and its ablations: extra keyword arguments of ``ds.tl.fit`` (one part switched off).
DIFFST_VARIANTS: dict[str, dict] = {
    # The defaults: the histology path alone (a ridge fitted through the footprints).
    "diffst": {},
    # The deep network (the cross-modal diffusion model) refining the histology path.
    "diffst-deep": {"deep": True},
    # The network without the path: the model before the histology path existed.
    "diffst-deep-no-path": {"deep": True, "histology_path": False},
    # Same network, no noise: a regression trained on the same pairs (no samples, no spread).
    "diffst-deep-regression": {"deep": True, "deterministic": True},
    "diffst-deep-no-disentangle": {"deep": True, "use_disentangle": False},
    "diffst-deep-no-cells": {"deep": True, "use_cell_attention": False},
    "diffst-deep-no-graph": {"deep": True, "use_gene_graph": False},
}
METHODS = (*BASELINES, *TRAINED_BASELINES, *DIFFST_VARIANTS)

#: The quality issue's targets (means over sections; per-section comparisons with the ridges).
WPCC_TARGET = 0.45
COVERAGE_RANGE = (0.85, 0.95)
RIDGES = ("ridge-colour", "ridge-histology")


def read_genes(path: Path) -> list[str]:
    """Genes of the benchmark panel, one per line."""
    return [g.strip() for g in Path(path).read_text().splitlines() if g.strip()]


def load_section(data_dir: Path, name: str, he_um: float | None = None):
    """The measured section as SpatialData; with ``he_um``, its H&E resampled to that pixel size.

    The coarse copy is what a user with only a hires image has: the H&E written at ``he_um``
    micrometres per pixel (area-averaged), the spots' pixel positions scaled with it and the
    pixel size recorded on reading (``microns_per_pixel=``).
    """
    if he_um is None:
        return ds.io.read_legacy_st(data_dir / name)
    import shutil
    import tempfile

    import pandas as pd
    from PIL import Image

    from diffst_sc.io._legacy_st import pixels_per_array_step

    src = data_dir / name
    spots = pd.read_csv(src / "spots.tsv", sep="\t")
    # The reader's own estimate of the full image's pixel size (200 um ST spacing).
    full_um = 200.0 / pixels_per_array_step(spots[spots["selected"] == 1])
    f = full_um / he_um
    tmp = Path(tempfile.mkdtemp(prefix=f"{name}_{he_um:g}um_"))
    Image.MAX_IMAGE_PIXELS = None
    with Image.open(src / "he.jpg") as im:
        im.convert("RGB").resize((round(im.width * f), round(im.height * f)),
                                 Image.Resampling.BOX).save(tmp / "he.png")
    spots[["pixel_x", "pixel_y"]] = spots[["pixel_x", "pixel_y"]] * f
    spots.to_csv(tmp / "spots.tsv", sep="\t", index=False)
    shutil.copy(src / "counts.tsv.gz", tmp / "counts.tsv.gz")
    return ds.io.read_legacy_st(tmp, name=name, microns_per_pixel=he_um, image_file="he.png")


def hr_footprints(lr_sdata) -> tuple[np.ndarray, float, str]:
    """Centres and diameter of the HR spots in the section's coordinate system."""
    lr = ds.io.section_view(lr_sdata, table_key="table")
    hr = ds.io.section_view(lr_sdata, table_key=HR_TABLE, image_key=lr.image_key,
                            coordinate_system=lr.coordinate_system,
                            microns_per_pixel=lr.microns_per_pixel)
    a = hr.image_to_cs
    centres = hr.centres_px @ a[:2, :2].T + a[:2, 2]
    return centres, hr.diameter_px * float(np.sqrt(abs(np.linalg.det(a[:2, :2])))), \
        hr.coordinate_system


@dataclass
class DiffSTPrediction:
    """What a Diff-ST run gives at the HR spots.

    Attributes
    ----------
    mean, std
        ``(n_hr, n_genes)`` the mean map and the per-pixel standard deviation over samples, each
        averaged over every HR spot's disc (counts per HR spot, before renormalisation).
    consistency_error
        ``uns["diffst"]["consistency_error"]`` of the LR input: relative error of the map
        integrated over the pseudo-spots against their counts.
    fit_seconds, superresolve_seconds
        Wall time of ``ds.tl.fit`` and ``ds.tl.superresolve``.
    path_gain
        ``uns["diffst"]["path_gain"]``: the factor the histology path's departures were scaled
        by on this section.
    """

    mean: np.ndarray
    std: np.ndarray
    consistency_error: float
    fit_seconds: float
    superresolve_seconds: float
    path_gain: float = 1.0


def run_diffst(lr_sdata, train_sdatas, genes: list[str], *, preset: str = "cpu-small",
               max_steps: int | None = None, n_samples: int = 8, steps: int = 20,
               seed: int = 0, **fit_kw) -> DiffSTPrediction:
    """Fit Diff-ST, super-resolve the LR section and read the maps out at the HR spots.

    Parameters
    ----------
    lr_sdata
        The degraded section (``ds.pp.degrade``); only its LR part is shown to the model.
    train_sdatas
        Sections to fit on: ``[lr_input(lr_sdata)]`` for the single-section setting
        (self-supervised on the LR data), the other sections' measured data across sections.
    genes
        Genes to model and score.
    preset, max_steps, seed
        Passed to ``ds.tl.fit``.
    n_samples, steps
        Samples and denoising steps of ``ds.tl.superresolve``.
    **fit_kw
        Further ``ds.tl.fit`` arguments, e.g. an ablation's ``use_gene_graph=False``.

    Returns
    -------
    DiffSTPrediction
    """
    from diffst_sc._core import layer_footprint_means

    train = train_sdatas[0] if len(train_sdatas) == 1 else list(train_sdatas)
    t0 = time.perf_counter()
    model = ds.tl.fit(train, genes=genes, preset=preset, max_steps=max_steps, seed=seed,
                      progress=False, **fit_kw)
    t1 = time.perf_counter()
    target = lr_input(lr_sdata)
    ds.tl.superresolve(target, model=model, key_added=DIFFST_KEY, n_samples=n_samples,
                       steps=steps, seed=seed, overwrite=True, progress=False)
    t2 = time.perf_counter()
    centres, diameter, cs = hr_footprints(lr_sdata)
    mean = layer_footprint_means(target, DIFFST_KEY, centres, diameter, cs, channels=genes)
    std = layer_footprint_means(target, f"{DIFFST_KEY}_std", centres, diameter, cs,
                                channels=genes)
    uns = target.tables["table"].uns[DIFFST_KEY]
    return DiffSTPrediction(mean, std, float(uns["consistency_error"]), t1 - t0, t2 - t1,
                            float(uns["path_gain"]))


def diffst_options(method: str, diffst_kw: dict) -> dict:
    """``run_diffst`` keyword arguments of a Diff-ST variant (the ablation's fit overrides added).

    The regression ablation draws one sample: without noise every sample is the same map.
    """
    if method not in DIFFST_VARIANTS:
        raise ValueError(f"{method!r} is not a Diff-ST variant; use one of "
                         f"{list(DIFFST_VARIANTS)}.")
    kw = {**diffst_kw, **DIFFST_VARIANTS[method]}
    if kw.get("deterministic") or not kw.get("deep"):
        kw["n_samples"] = 1  # a regression, or the histology path alone: one map, no samples
    return kw


def predict(method: str, lr_sdata, genes, *, setting, others, diffst_kw):
    """Predictions of one method on one degraded section.

    Returns
    -------
    numpy.ndarray or DiffSTPrediction
        A baseline's ``(n_hr, n_genes)`` counts, or what a Diff-ST variant gives.
    """
    if method in BASELINES:
        # Baselines read the HR spots' positions and parents from lr_sdata, never their counts.
        return BASELINES[method](lr_sdata, genes)
    if method in TRAINED_BASELINES:
        train = None if setting == "single" else others()
        return TRAINED_BASELINES[method](lr_sdata, genes, train=train)
    if method in DIFFST_VARIANTS:
        train = [lr_input(lr_sdata)] if setting == "single" else others()
        return run_diffst(lr_sdata, train, genes, **diffst_options(method, diffst_kw))
    raise ValueError(f"Unknown method {method!r}; use one of {list(METHODS)}.")


def score_method(method: str, lr_sdata, genes, *, setting, others, diffst_kw) -> dict:
    """Predict with one method and score it: the protocol's scores, seconds and, for Diff-ST,
    consistency error, coverage of the 90% interval and the run's options."""
    t0 = time.perf_counter()
    pred = predict(method, lr_sdata, genes, setting=setting, others=others, diffst_kw=diffst_kw)
    seconds = time.perf_counter() - t0
    if isinstance(pred, DiffSTPrediction):
        r = score_predictions(lr_sdata, pred.mean, genes)
        cov = interval_coverage_at_spots(lr_sdata, pred.mean, pred.std, genes, INTERVAL)
        r["coverage"] = float(np.nanmean(cov))
        r["per_gene"]["coverage"] = [float(c) for c in cov]
        r["consistency_error"] = pred.consistency_error
        r["path_gain"] = pred.path_gain
        r["fit_seconds"] = pred.fit_seconds
        r["superresolve_seconds"] = pred.superresolve_seconds
        r["seconds"] = pred.fit_seconds + pred.superresolve_seconds
        r["options"] = {k: v for k, v in diffst_options(method, diffst_kw).items()}
    else:
        r = score_predictions(lr_sdata, pred, genes)
        r["seconds"] = seconds
    return r


# ---------------------------------------------------------------------------------------------
# results: means, merging, markdown


def section_means(sections: dict) -> dict:
    """Per method: the mean of every score over the sections that have it (and which those are)."""
    methods = list(dict.fromkeys(m for per in sections.values() for m in per))
    out = {}
    for method in methods:
        names = [n for n, per in sections.items() if method in per]
        rs = [sections[n][method] for n in names]
        m = {s: float(np.mean([r[s] for r in rs])) for s in SCORES}
        for extra in ("coverage", "consistency_error", "seconds"):
            if all(extra in r for r in rs):
                m[extra] = float(np.mean([r[extra] for r in rs]))
        m["sections"] = names
        out[method] = m
    return out


def merge_records(old: dict, new: dict) -> dict:
    """``new``'s methods added to (or replacing those of) ``old``: one table from several runs.

    Raises
    ------
    ValueError
        When the two were made in different settings or with different gene panels.
    """
    for key in ("setting", "genes", "he_um"):
        if old.get(key) != new.get(key):
            raise ValueError(f"Cannot append: the existing result has {key} "
                             f"{_short(old.get(key))} and this run {_short(new.get(key))}. "
                             "Write to another --out, or rerun with the same setting and genes.")
    sections = {n: dict(per) for n, per in old["sections"].items()}
    for n, per in new["sections"].items():
        sections.setdefault(n, {}).update(per)
    merged = dict(old)
    merged["commands"] = _as_list(old, "commands", "command") + _as_list(new, "commands",
                                                                        "command")
    merged["dates"] = _as_list(old, "dates", "date") + _as_list(new, "dates", "date")
    merged.pop("command", None)
    merged.pop("date", None)
    merged["machine"] = new["machine"]
    merged["sections"] = sections
    merged["mean"] = section_means(sections)
    return merged


def _as_list(record: dict, plural: str, singular: str) -> list:
    if plural in record:
        return list(record[plural])
    return [record[singular]] if singular in record else []


def _short(value) -> str:
    if isinstance(value, list) and len(value) > 4:
        return f"[{', '.join(map(str, value[:3]))}, ... ({len(value)})]"
    return repr(value)


def _fmt(r: dict, key: str) -> str:
    v = r.get(key)
    return "-" if v is None or not np.isfinite(v) else f"{v:.3f}"


def target_rows(record: dict, single: dict | None = None) -> list[str]:
    """The quality issue's targets for every Diff-ST variant of ``record``, reached or missed.

    Per variant: mean wPCC at least :data:`WPCC_TARGET`; wPCC above both histology ridges on
    every section; PCC, NRMSE and SSIM no worse than either ridge's on every section; the mean
    coverage of the 90% interval in :data:`COVERAGE_RANGE`. Values rounded to three decimals
    as shown. (``single`` is accepted for the command line's ``--single-results`` and unused.)
    """
    sections = record["sections"]
    variants = [m for m in record["mean"] if m in DIFFST_VARIANTS]
    lines = [
        "## Targets",
        "",
        f"From the quality issue (setting: {record['setting']}): mean wPCC >= {WPCC_TARGET}; "
        f"wPCC above both ridges ({', '.join(RIDGES)}) on every section; PCC, NRMSE and SSIM "
        "no worse than either ridge's on every section; the 90% interval covering "
        f"{COVERAGE_RANGE[0]:.0%}-{COVERAGE_RANGE[1]:.0%} of the measured spots (mean over "
        "sections). Values rounded to three decimals as shown; a section without both ridges "
        "is not judged.",
        "",
    ]
    if not variants:
        return lines + ["No Diff-ST result in this file yet: nothing to check.", ""]
    head = ["method", "sections", f"mean wPCC >= {WPCC_TARGET}", "wPCC > ridges, every section",
            "PCC/NRMSE/SSIM no worse than ridges, every section",
            f"coverage in [{COVERAGE_RANGE[0]:.2f}, {COVERAGE_RANGE[1]:.2f}]"]
    lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for method in variants:
        common = [n for n, per in sections.items()
                  if method in per and all(r in per for r in RIDGES)]
        if not common:
            lines.append(f"| {method} | - | " + " | ".join(
                ["n/a: no ridges on its sections (add them with `--methods "
                 + " ".join(RIDGES) + " --append`)"] + ["n/a"] * (len(head) - 3)) + " |")
            continue
        r3 = lambda n, m, k: round(float(sections[n][m][k]), 3)  # noqa: E731
        mean_w = round(float(np.mean([sections[n][method]["wPCC"] for n in common])), 3)
        lost_w = [n for n in common if any(r3(n, method, "wPCC") <= r3(n, r, "wPCC")
                                           for r in RIDGES)]
        lost_o = [f"{n} {k}" for n in common for k in ("PCC", "NRMSE", "SSIM")
                  if any((r3(n, method, k) > r3(n, r, k)) if k == "NRMSE"
                         else (r3(n, method, k) < r3(n, r, k)) for r in RIDGES)]
        covs = [sections[n][method].get("coverage") for n in common]
        cov = round(float(np.mean(covs)), 3) if all(c is not None for c in covs) else None
        cells = [
            _verdict(mean_w >= WPCC_TARGET, f"{mean_w:.3f}"),
            _verdict(not lost_w, "all" if not lost_w else "not on " + ", ".join(lost_w)),
            _verdict(not lost_o, "all" if not lost_o else "worse: " + ", ".join(lost_o)),
            "n/a (no spread)" if cov is None else
            _verdict(COVERAGE_RANGE[0] <= cov <= COVERAGE_RANGE[1], f"{cov:.3f}"),
        ]
        lines.append(f"| {method} | {', '.join(common)} | " + " | ".join(cells) + " |")
    return lines + [""]


def _verdict(ok: bool, detail: str) -> str:
    return f"{'reached' if ok else 'missed'} ({detail})"


def markdown(record: dict, single: dict | None = None) -> str:
    """A result record as a markdown page: commands, per-section and mean tables, targets."""
    commands = _as_list(record, "commands", "command")
    dates = _as_list(record, "dates", "date")
    lines = ["# her2st quality benchmark", ""]
    lines += [f"- command: `{c}` ({d})" for c, d in zip(commands, dates, strict=False)]
    lines += [
        f"- machine: {record['machine']}",
        f"- setting: {record['setting']}; genes: {record['genes_file']} "
        f"({record['n_genes_panel']} genes); protocol: ../shared/BENCHMARK.md",
        "- data: her2st, Andersson et al., Nat Commun 12, 6012 (2021); H&E: "
        + ("full resolution (about 0.69 um/px)" if record.get("he_um") is None else
           f"resampled to {record['he_um']:g} um/px, the pixel size recorded"),
        "- baselines uniform, bicubic and tesla are not trained: they score the same in both "
        "settings; the ridges (`ridge-colour`: colour and stain statistics over each spot's "
        "disc; `ridge-histology`: those over discs of 0.5, 1 and 1.5 radii plus nuclear "
        "densities) learn within-block deviations on the section's pseudo-spots summed once "
        "more (single) or on the other sections' measured spots (across)",
        "- consistency: the map averaged over each pseudo-spot against its counts over the "
        "whole disc (a block cut by the tissue's edge: its counts over the share of a full "
        "block's spots it sums, `obs['diffst_measured_fraction']`) "
        "(`uns['diffst']['consistency_error']`, 0 is exact); coverage: fraction of measured "
        "spots whose counts lie in mean +- 1.645 std, both read out over the spot's disc and "
        "rescaled like the mean (0.9 is calibrated); `diffst-regression` draws one "
        "sample, so its std is the model's own error on its training pairs alone; seconds: fit + superresolve for Diff-ST, prediction for baselines",
        "",
    ]
    variants = {m: r["options"] for per in record["sections"].values() for m, r in per.items()
                if "options" in r}
    if variants:
        lines += ["Diff-ST runs (options passed to `ds.tl.fit` / `ds.tl.superresolve`):", ""]
        lines += [f"- {m}: " + ", ".join(f"{k}={v}" for k, v in o.items())
                  for m, o in variants.items()]
        gains = {m: [f"{n} {per[m]['path_gain']:.2f}" for n, per in record["sections"].items()
                     if "path_gain" in per.get(m, {})] for m in variants}
        lines += ["", "Gain of the histology path's departures on each section "
                  "(`uns['diffst']['path_gain']`; 1 on the section it was fitted on):", ""]
        lines += [f"- {m}: " + ", ".join(g) for m, g in gains.items() if g]
        lines.append("")
    lines += ["| section | method | PCC | NRMSE | SSIM | wPCC | consistency | coverage90 | genes "
              "| seconds |", "|" + " --- |" * 10]
    for section, per in record["sections"].items():
        for method, r in per.items():
            lines.append(f"| {section} | {method} | "
                         + " | ".join(_fmt(r, s) for s in (*SCORES, "consistency_error",
                                                           "coverage"))
                         + f" | {r['n_genes']} | {r['seconds']:.1f} |")
    lines += ["", "Mean over sections:", "",
              "| method | sections | PCC | NRMSE | SSIM | wPCC | consistency | coverage90 | "
              "seconds |", "|" + " --- |" * 9]
    for method, r in record["mean"].items():
        seconds = f"{r['seconds']:.1f}" if "seconds" in r else "-"
        lines.append(f"| {method} | {len(r['sections'])} | "
                     + " | ".join(_fmt(r, s) for s in (*SCORES, "consistency_error", "coverage"))
                     + f" | {seconds} |")
    lines += [""] + target_rows(record, single)
    return "\n".join(lines)


def run(sections, methods, setting, genes, data_dir: Path, diffst_kw, *,
        loaded: dict | None = None, he_um: float | None = None) -> dict:
    """Run the protocol; per section and method: scores, seconds and (Diff-ST) uncertainty.

    Parameters
    ----------
    loaded
        Sections already read (name -> SpatialData, not modified); others are read from
        ``data_dir``.
    """
    measured = dict(loaded or {})

    def section(name):
        if name not in measured:
            measured[name] = load_section(data_dir, name, he_um)
        return measured[name]

    results = {"sections": {}, "n_genes_panel": len(genes)}
    for name in sections:
        lr = degrade_2x2(section(name), genes)
        genes_s = [g for g in genes if g in set(map(str, lr.tables["table"].var_names))]
        for method in methods:
            r = score_method(method, lr, genes_s, setting=setting,
                             others=lambda n=name: [section(o) for o in sections if o != n],
                             diffst_kw=diffst_kw)
            results["sections"].setdefault(name, {})[method] = r
            extra = "".join(f" {k} {r[k]:.3f}" for k in ("consistency_error", "coverage",
                                                          "path_gain") if k in r)
            print(f"{name:4s} {method:22s} " + " ".join(f"{s} {r[s]:.3f}" for s in SCORES)
                  + extra + f" genes {r['n_genes']} ({r['seconds']:.1f} s)", flush=True)
    results["mean"] = section_means(results["sections"])
    return results


def main(argv=None) -> dict:
    """Command line entry point; returns the record written to ``<out>.json``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sections", nargs="+", default=["B4", "C2", "C3"])
    ap.add_argument("--methods", nargs="+", default=["uniform", "bicubic", "tesla"],
                    choices=list(METHODS))
    ap.add_argument("--setting", choices=["single", "across"], default="single")
    ap.add_argument("--out", default="benchmarks/results/her2st_quality",
                    help="output path without extension (.md and .json are written)")
    ap.add_argument("--append", action="store_true",
                    help="merge these methods into an existing <out>.json (same setting, genes)")
    ap.add_argument("--single-results", default=None,
                    help="with --setting across: a single-section <out>.json whose wPCC the "
                         "across figures must beat (the targets' last column)")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="folder of the her2st sections")
    ap.add_argument("--genes", default=None, help="gene panel file (default: genes_bench.txt)")
    ap.add_argument("--preset", default="cpu-small")
    ap.add_argument("--max-steps", type=int, default=None, help="training steps of ds.tl.fit")
    ap.add_argument("--n-samples", type=int, default=8, help="samples of ds.tl.superresolve")
    ap.add_argument("--steps", type=int, default=20,
                    help="denoising steps per sample of ds.tl.superresolve")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--he-um", type=float, default=None,
                    help="resample the H&E to this many um per pixel first (e.g. 2 or 4, as a "
                         "hires-only Visium image); default: the full-resolution H&E")
    a = ap.parse_args(argv)
    trains = any(m in DIFFST_VARIANTS for m in a.methods)
    if a.setting == "across" and trains and len(a.sections) < 2:
        ap.error("--setting across trains on the other sections: give at least two.")
    out = Path(a.out)
    data_dir = Path(a.data)
    genes_file = Path(a.genes) if a.genes else data_dir / "genes_bench.txt"
    genes = read_genes(genes_file)
    existing = None
    if a.append:
        if not out.with_suffix(".json").exists():
            ap.error(f"--append: {out.with_suffix('.json')} does not exist yet; run once "
                     "without --append first.")
        existing = json.loads(out.with_suffix(".json").read_text())
        if existing.get("setting") != a.setting:
            ap.error(f"--append: {out.with_suffix('.json')} holds setting "
                     f"{existing.get('setting')!r}, this run {a.setting!r}; one table holds "
                     "one setting: write to another --out.")
        if existing.get("genes") != genes:
            ap.error(f"--append: {out.with_suffix('.json')} was scored on another gene panel "
                     f"({existing.get('genes_file')}); pass the same --genes or another --out.")
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    diffst_kw = {"preset": a.preset, "max_steps": a.max_steps, "n_samples": a.n_samples,
                 "steps": a.steps, "seed": a.seed}
    results = run(a.sections, a.methods, a.setting, genes, data_dir, diffst_kw, he_um=a.he_um)
    for method, m in results["mean"].items():
        print(f"MEAN {method:22s} " + " ".join(f"{s} {m[s]:.3f}" for s in SCORES))
    command = "python benchmarks/her2st_quality.py " + " ".join(
        shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    record = {"commands": [command], "machine": machine(), "dates": [started],
              "setting": a.setting, "genes_file": _relative(genes_file), "genes": genes,
              "he_um": a.he_um, **results}
    if existing is not None:
        record = merge_records(existing, record)
    single = json.loads(Path(a.single_results).read_text()) if a.single_results else None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(markdown(record, single))
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    return record


def _relative(path: Path) -> str:
    """A path as seen from the repository root, never an absolute path of this machine."""
    try:
        return os.path.relpath(os.path.abspath(path), REPO)
    except ValueError:
        return Path(path).name


if __name__ == "__main__":
    main()
