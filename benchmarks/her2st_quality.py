"""Quality benchmark on her2st (``../shared/BENCHMARK.md``): degrade 2 x 2, predict, score.

Each section is read with ``ds.io.read_legacy_st``, degraded with ``ds.pp.degrade`` (every 2 x 2
block of the ST array summed into one pseudo-spot), each method predicts the counts of every
measured spot from the pseudo-spots and the H&E, the predictions are rescaled to the blocks'
measured counts and scored (PCC, NRMSE, SSIM, wPCC on log1p counts, averaged over genes). Diff-ST
and its ablations also get the consistency error of the map against the pseudo-spots, the coverage
of their 90% interval at the measured spots, whether their std says where the map is wrong
(unc_gain) and the seconds of fit + superresolve. ``--swap-he`` gives each section the H&E of
the next one in ``--sections`` (the check of ``BENCHMARK.md`` when the histology carries no
information); ``--he-um`` resamples the H&E.

Usage (from the repository root)::

    python benchmarks/her2st_quality.py --sections B4 C2 C3 --methods uniform bicubic tesla \
        --setting single --out benchmarks/results/her2st_quality_single
    python benchmarks/her2st_quality.py --sections B4 C2 C3 --methods diffst diffst-no-graph \
        --setting single --out benchmarks/results/her2st_quality_single --append

writes ``<out>.md`` (tables with the commands, machine and dates, and whether the issue's targets
are reached) and ``<out>.json``; ``--append`` merges the new methods into an existing result.
The tables and targets are made by ``_quality_report.py``.
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
from diffst_sc._core import section_view

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine  # noqa: E402
from _quality_report import (  # noqa: E402, F401 (the tables' functions, used from here too)
    COVERAGE_RANGE,
    RIDGES,
    SCORES,
    WPCC_TARGET,
    markdown,
    merge_records,
    section_means,
    target_rows,
)
from baselines import (  # noqa: E402
    BASELINES,
    HR_TABLE,
    TRAINED_BASELINES,
    degrade_2x2,
    interval_coverage_at_spots,
    lr_input,
    score_predictions,
    uncertainty_gain_at_spots,
)

#: The repository as the command reached it: symbolic links (``../shared`` often is one) are
#: not followed, so that paths relative to it never name where they point on this machine.
REPO = Path(os.path.abspath(__file__)).parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "her2st"
DIFFST_KEY = "diffst"
#: Nominal probability of the uncertainty interval whose coverage is reported.
INTERVAL = 0.9

#: Diff-ST and its ablations: extra keyword arguments of ``ds.tl.fit`` (one part switched off).
DIFFST_VARIANTS: dict[str, dict] = {
    # The defaults: the histology path alone (a ridge fitted through the footprints).
    "diffst": {},
    # The default fitted on the section, starting from a reference fitted on the measured spots
    # of the other sections (leave-one-out: never the scored one); single setting only.
    "diffst-reference": {"reference": "leave-one-out"},
    # The deep network (the cross-modal diffusion model) refining the histology path.
    "diffst-deep": {"deep": True},
    # The same with its whole residual, whatever the held-out tiles say (the gate open).
    "diffst-deep-ungated": {"deep": True, "ungated": True},
    # The network without the path: the model before the histology path existed.
    "diffst-deep-no-path": {"deep": True, "histology_path": False},
    # Same network, no noise: a regression trained on the same pairs (no samples, no spread).
    "diffst-deep-regression": {"deep": True, "deterministic": True},
    "diffst-deep-no-disentangle": {"deep": True, "use_disentangle": False},
    "diffst-deep-no-cells": {"deep": True, "use_cell_attention": False},
    "diffst-deep-no-graph": {"deep": True, "use_gene_graph": False},
}
METHODS = (*BASELINES, *TRAINED_BASELINES, *DIFFST_VARIANTS)


def read_genes(path: Path) -> list[str]:
    """Genes of the benchmark panel, one per line."""
    return [g.strip() for g in Path(path).read_text().splitlines() if g.strip()]


def load_section(data_dir: Path, name: str, he_um: float | None = None,
                 he_from: str | None = None):
    """The measured section as SpatialData, with its H&E resampled or another section's.

    With ``he_um``, the coarse copy is what a user with only a hires image has: the H&E written
    at ``he_um`` micrometres per pixel (area-averaged), the spots' pixel positions scaled with
    it and the pixel size recorded on reading (``microns_per_pixel=``). With ``he_from``, the
    image is section ``he_from``'s H&E resized to this section's own image's shape (then
    resampled as above with ``he_um``); the spots, their pixel positions and the counts stay
    this section's: an image that says nothing true about these spots (``BENCHMARK.md``, "When
    the histology carries no information"). Either way the section is written to a temporary
    folder and read with ``ds.io.read_legacy_st``, as a user's would be.
    """
    if he_um is None and he_from in (None, name):
        return ds.io.read_legacy_st(data_dir / name)
    import shutil
    import tempfile

    import pandas as pd
    from PIL import Image

    from diffst_sc.io._legacy_st import pixels_per_array_step

    src = data_dir / name
    spots = pd.read_csv(src / "spots.tsv", sep="\t")
    f = 1.0
    if he_um is not None:
        # The reader's own estimate of the full image's pixel size (200 um ST spacing).
        f = 200.0 / pixels_per_array_step(spots[spots["selected"] == 1]) / he_um
    tag = (f"_{he_um:g}um" if he_um is not None else "") + (f"_he{he_from}" if he_from else "")
    tmp = Path(tempfile.mkdtemp(prefix=f"{name}{tag}_"))
    Image.MAX_IMAGE_PIXELS = None
    with Image.open(src / "he.jpg") as own:
        size = (round(own.width * f), round(own.height * f))
    with Image.open(data_dir / (he_from or name) / "he.jpg") as im:
        # Area averages when coarsening; Lanczos to reshape another section's image.
        method = Image.Resampling.BOX if he_um is not None else Image.Resampling.LANCZOS
        image = im.convert("RGB").resize(size, method)
    # A full-resolution image goes back to JPEG as it came (PNG takes 15 times longer).
    image_file = "he.png" if he_um is not None else "he.jpg"
    image.save(tmp / image_file, **({} if he_um is not None else {"quality": 95}))
    spots[["pixel_x", "pixel_y"]] = spots[["pixel_x", "pixel_y"]] * f
    spots.to_csv(tmp / "spots.tsv", sep="\t", index=False)
    shutil.copy(src / "counts.tsv.gz", tmp / "counts.tsv.gz")
    return ds.io.read_legacy_st(tmp, name=name, microns_per_pixel=he_um, image_file=image_file)


def swap_sources(sections: list[str]) -> dict[str, str]:
    """Whose H&E each section gets with ``--swap-he``: the next section's, cyclically."""
    if len(set(sections)) < 2:
        raise ValueError("--swap-he gives each section another section's H&E: name at least "
                         "two different sections.")
    return {n: sections[(i + 1) % len(sections)] for i, n in enumerate(sections)}


def hr_footprints(lr_sdata) -> tuple[np.ndarray, float, str]:
    """Centres and diameter of the HR spots in the section's coordinate system."""
    lr = section_view(lr_sdata, table_key="table")
    hr = section_view(lr_sdata, table_key=HR_TABLE, image_key=lr.image_key,
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
    hotspot_share: float = 0.0


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
        Further ``ds.tl.fit`` arguments, e.g. an ablation's ``use_gene_graph=False``; and
        ``ungated=True``, which gives a DiffST its network's whole residual
        (``residual_scale = 1``) whatever its held-out tiles said.

    Returns
    -------
    DiffSTPrediction
    """
    from diffst_sc._core import layer_footprint_means

    train = train_sdatas[0] if len(train_sdatas) == 1 else list(train_sdatas)
    ungated = fit_kw.pop("ungated", False)
    t0 = time.perf_counter()
    model = ds.tl.fit(train, genes=genes, preset=preset, max_steps=max_steps, seed=seed,
                      progress=False, **fit_kw)
    if ungated:  # the network's whole residual, as before the held-out gate
        model.residual_scale = 1.0
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
                            float(uns["path_gain"]), hotspot_share(target, genes))


def hotspot_share(sdata, genes: list[str]) -> float:
    """Share of the map's tissue pixels above twice the gene's highest input spot, over genes.

    The map is in counts per input spot footprint, the unit of the spots' own counts: a pixel
    far above every spot the section measured is a departure the spots do not support.
    """
    view = section_view(sdata)
    highest = view.footprint_expression(genes).max(0)
    layer = sdata.images[DIFFST_KEY]
    maps = np.asarray(layer["scale0"].image if hasattr(layer, "children") else layer)
    inside = np.isfinite(maps).all(0) & (np.nan_to_num(maps) > 0).any(0)
    if not inside.any():
        return 0.0
    return float(np.mean([(np.nan_to_num(maps[i][inside]) > 2 * highest[i]).mean()
                          for i in range(len(genes))]))


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
        kw = diffst_options(method, diffst_kw)
        if kw.get("reference") == "leave-one-out":
            if setting != "single":
                raise ValueError("diffst-reference is the single-section setting's: across "
                                 "sections the model is fitted on the others already.")
            others_ = others()
            if not others_:
                raise ValueError("diffst-reference fits its reference on the other sections: "
                                 "give at least two sections.")
            kw["reference"] = ds.tl.fit(others_ if len(others_) > 1 else others_[0],
                                        genes=genes, progress=False)
        return run_diffst(lr_sdata, train, genes, **kw)
    raise ValueError(f"Unknown method {method!r}; use one of {list(METHODS)}.")


def score_method(method: str, lr_sdata, genes, *, setting, others, diffst_kw,
                 keep: dict | None = None) -> dict:
    """Predict with one method and score it: the protocol's scores, seconds and, for Diff-ST,
    consistency error, coverage of the 90% interval, unc_gain and the run's options
    (``keep``, a dict, also receives the prediction under the method's name)."""
    t0 = time.perf_counter()
    pred = predict(method, lr_sdata, genes, setting=setting, others=others, diffst_kw=diffst_kw)
    seconds = time.perf_counter() - t0
    if keep is not None:
        keep[method] = pred
    if isinstance(pred, DiffSTPrediction):
        r = score_predictions(lr_sdata, pred.mean, genes)
        cov = interval_coverage_at_spots(lr_sdata, pred.mean, pred.std, genes, INTERVAL)
        r["coverage"] = float(np.nanmean(cov))
        r["per_gene"]["coverage"] = [float(c) for c in cov]
        gain = uncertainty_gain_at_spots(lr_sdata, pred.mean, pred.std, genes)
        r["unc_gain"] = float(np.nanmean(gain)) if np.isfinite(gain).any() else None
        r["per_gene"]["unc_gain"] = [float(g) if np.isfinite(g) else None for g in gain]
        r["consistency_error"] = pred.consistency_error
        r["path_gain"] = pred.path_gain
        r["hotspot_share"] = pred.hotspot_share
        r["fit_seconds"] = pred.fit_seconds
        r["superresolve_seconds"] = pred.superresolve_seconds
        r["seconds"] = pred.fit_seconds + pred.superresolve_seconds
        r["options"] = {k: v for k, v in diffst_options(method, diffst_kw).items()}
    else:
        r = score_predictions(lr_sdata, pred, genes)
        r["seconds"] = seconds
    return r


def run(sections, methods, setting, genes, data_dir: Path, diffst_kw, *,
        loaded: dict | None = None, he_um: float | None = None,
        swap_he: bool = False) -> dict:
    """Run the protocol; per section and method: scores, seconds and (Diff-ST) uncertainty.

    Parameters
    ----------
    loaded
        Sections already read (name -> SpatialData, not modified), used as given (with
        ``he_um`` or ``swap_he``, pass them already resampled or swapped); others are read from
        ``data_dir``.
    he_um
        Resample every H&E to this pixel size (``load_section``).
    swap_he
        Give each section the H&E of the next one in ``sections`` (cyclically), the training
        sections of the across setting included; ``results["he_swap"]`` says whose.
    """
    measured = dict(loaded or {})
    swap = swap_sources(list(sections)) if swap_he else None

    def section(name):
        if name not in measured:
            measured[name] = load_section(data_dir, name, he_um,
                                          he_from=swap[name] if swap else None)
        return measured[name]

    results = {"sections": {}, "n_genes_panel": len(genes), "he_swap": swap}
    for name in sections:
        lr = degrade_2x2(section(name), genes)
        genes_s = [g for g in genes if g in set(map(str, lr.tables["table"].var_names))]
        for method in methods:
            try:
                r = score_method(method, lr, genes_s, setting=setting,
                                 others=lambda n=name: [section(o) for o in sections if o != n],
                                 diffst_kw=diffst_kw)
            except ValueError as err:
                if "lie on tissue" not in str(err):
                    raise
                # the tool refusing the image is an outcome the protocol allows: recorded
                results.setdefault("refused", {}).setdefault(name, {})[method] = str(err)
                print(f"{name:4s} {method:22s} refused: {err}", flush=True)
                continue
            results["sections"].setdefault(name, {})[method] = r
            extra = "".join(f" {k} {r[k]:.3f}" for k in ("consistency_error", "coverage",
                                                          "unc_gain", "path_gain",
                                                          "hotspot_share")
                            if r.get(k) is not None)
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
    ap.add_argument("--swap-he", action="store_true",
                    help="give each section the H&E of the next one in --sections (cyclically; "
                         "resized to its own image's shape), the training sections too: the "
                         "check that no score falls below bicubic's when the image says nothing")
    a = ap.parse_args(argv)
    if a.swap_he and len(set(a.sections)) < 2:
        ap.error("--swap-he gives each section another section's H&E: name at least two.")
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
    results = run(a.sections, a.methods, a.setting, genes, data_dir, diffst_kw, he_um=a.he_um,
                  swap_he=a.swap_he)
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
