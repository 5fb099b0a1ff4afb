"""Quality benchmark on her2st (``../shared/BENCHMARK.md``): degrade 2 x 2, predict, score.

Each section is read with ``ds.io.read_legacy_st``, degraded with ``ds.pp.degrade`` (every 2 x 2
block of the ST array summed into one pseudo-spot), each method predicts the counts of every
measured spot from the pseudo-spots and the H&E, the predictions are rescaled to the blocks'
measured counts and scored (PCC, NRMSE, SSIM, wPCC on log1p counts, averaged over genes).

Usage (from the repository root)::

    python benchmarks/her2st_quality.py --sections B4 C2 C3 --methods uniform bicubic tesla \
        --setting single --out benchmarks/results/her2st_quality

writes ``<out>.md`` (a table with the command, machine and date) and ``<out>.json``.
Data: Andersson et al., Nat Commun 12, 6012 (2021), in ``../shared/data/her2st``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

import diffst_sc as ds

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines import BASELINES, HR_TABLE, score_predictions  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "her2st"
SCORES = ("PCC", "NRMSE", "SSIM", "wPCC")
DIFFST_KEY = "diffst"


def read_genes(path: Path) -> list[str]:
    """Genes of the benchmark panel, one per line."""
    return [g.strip() for g in Path(path).read_text().splitlines() if g.strip()]


def load_section(data_dir: Path, name: str):
    """The measured section as SpatialData."""
    return ds.io.read_legacy_st(data_dir / name)


def degrade_section(sdata, genes: list[str]):
    """LR pseudo-spots (2 x 2 blocks of the array) and the HR truth, for ``genes``."""
    return ds.pp.degrade(sdata, mode="square", factor=2, genes=genes)


def lr_input(lr_sdata):
    """What a method may see: the H&E, the pseudo-spots and their table (no truth)."""
    from spatialdata import SpatialData

    return SpatialData(images={"he": lr_sdata.images["he"]},
                       shapes={"spots": lr_sdata.shapes["spots"]},
                       tables={"table": lr_sdata.tables["table"]})


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


def run_diffst(lr_sdata, train_sdatas, genes: list[str], setting: str, *,
               preset: str = "cpu-small", max_steps: int | None = None, n_samples: int = 8,
               seed: int = 0, **fit_kw) -> np.ndarray:
    """Fit Diff-ST, super-resolve the LR section and read the map out at the HR spots.

    Parameters
    ----------
    lr_sdata
        The degraded section (``ds.pp.degrade``); only its LR part is shown to the model.
    train_sdatas
        Sections to fit on: ``[lr_input(lr_sdata)]`` for ``setting="single"`` (self-supervised
        on the LR data), the other sections' measured data for ``"across"``.
    genes
        Genes to model and score.
    setting
        ``"single"`` or ``"across"`` (recorded only; ``train_sdatas`` says what is fitted on).
    preset, max_steps, n_samples, seed, **fit_kw
        Passed to ``ds.tl.fit`` / ``ds.tl.superresolve``.

    Returns
    -------
    numpy.ndarray
        ``(n_hr, n_genes)`` predicted counts (mean map averaged over each HR spot's disc).
    """
    from diffst_sc.tl._readout import layer_footprint_means

    train = train_sdatas[0] if len(train_sdatas) == 1 else list(train_sdatas)
    model = ds.tl.fit(train, genes=genes, preset=preset, max_steps=max_steps, seed=seed,
                      **fit_kw)
    target = lr_input(lr_sdata)
    ds.tl.superresolve(target, model=model, key_added=DIFFST_KEY, n_samples=n_samples,
                       seed=seed, overwrite=True)
    centres, diameter, cs = hr_footprints(lr_sdata)
    return layer_footprint_means(target, DIFFST_KEY, centres, diameter, cs, channels=genes)


def predict(method: str, lr_sdata, genes, *, setting, others, diffst_kw) -> np.ndarray:
    """Predicted HR counts of one method on one degraded section."""
    if method in BASELINES:
        # Baselines read the HR spots' positions and parents from lr_sdata, never their counts.
        return BASELINES[method](lr_sdata, genes)
    if method == "diffst":
        train = [lr_input(lr_sdata)] if setting == "single" else others()
        return run_diffst(lr_sdata, train, genes, setting, **diffst_kw)
    raise ValueError(f"Unknown method {method!r}; use {sorted(BASELINES)} or 'diffst'.")


def machine() -> str:
    """A one-line description of the hardware."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    desc = f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            desc += f", GPU {torch.cuda.get_device_name(0)}"
    return desc


def markdown(results: dict, *, command: str, setting: str, genes_file: str, started: str) -> str:
    """The results as a markdown page."""
    lines = [
        "# her2st quality benchmark",
        "",
        f"- command: `{command}`",
        f"- machine: {machine()}",
        f"- date: {started}",
        f"- setting: {setting}; genes: {genes_file} "
        f"({results['n_genes_panel']} genes); protocol: ../shared/BENCHMARK.md",
        "- data: her2st, Andersson et al., Nat Commun 12, 6012 (2021)",
        "- baselines (uniform, bicubic, tesla) are not trained: they score the same in both "
        "settings",
        "",
        "| section | method | PCC | NRMSE | SSIM | wPCC | genes | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for section, per in results["sections"].items():
        for method, r in per.items():
            lines.append(f"| {section} | {method} | " + " | ".join(f"{r[s]:.3f}" for s in SCORES)
                         + f" | {r['n_genes']} | {r['seconds']:.1f} |")
    lines += ["", "Mean over sections:", "", "| method | PCC | NRMSE | SSIM | wPCC |",
              "| --- | --- | --- | --- | --- |"]
    for method, r in results["mean"].items():
        lines.append(f"| {method} | " + " | ".join(f"{r[s]:.3f}" for s in SCORES) + " |")
    return "\n".join(lines) + "\n"


def run(sections, methods, setting, genes, data_dir: Path, diffst_kw) -> dict:
    """Run the protocol; per section and method: scores and seconds."""
    measured = {}

    def section(name):
        if name not in measured:
            measured[name] = load_section(data_dir, name)
        return measured[name]

    results = {"sections": {}, "mean": {}, "n_genes_panel": len(genes)}
    for name in sections:
        lr = degrade_section(section(name), genes)
        genes_s = [g for g in genes if g in set(map(str, lr.tables["table"].var_names))]
        for method in methods:
            t0 = time.perf_counter()
            pred = predict(method, lr, genes_s, setting=setting,
                           others=lambda n=name: [section(o) for o in sections if o != n],
                           diffst_kw=diffst_kw)
            r = score_predictions(lr, pred, genes_s)
            r["seconds"] = time.perf_counter() - t0
            results["sections"].setdefault(name, {})[method] = r
            print(f"{name:4s} {method:10s} " + " ".join(f"{s} {r[s]:.3f}" for s in SCORES)
                  + f" genes {r['n_genes']} ({r['seconds']:.1f} s)", flush=True)
    for method in methods:
        results["mean"][method] = {
            s: float(np.mean([results["sections"][n][method][s] for n in sections]))
            for s in SCORES}
    return results


def main(argv=None) -> dict:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sections", nargs="+", default=["B4", "C2", "C3"])
    ap.add_argument("--methods", nargs="+", default=["uniform", "bicubic", "tesla"],
                    choices=[*BASELINES, "diffst"])
    ap.add_argument("--setting", choices=["single", "across"], default="single")
    ap.add_argument("--out", default="benchmarks/results/her2st_quality",
                    help="output path without extension (.md and .json are written)")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="folder of the her2st sections")
    ap.add_argument("--genes", default=None, help="gene panel file (default: genes_bench.txt)")
    ap.add_argument("--preset", default="cpu-small")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--n-samples", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.setting == "across" and "diffst" in a.methods and len(a.sections) < 2:
        ap.error("--setting across trains on the other sections: give at least two.")
    data_dir = Path(a.data)
    genes_file = Path(a.genes) if a.genes else data_dir / "genes_bench.txt"
    genes = read_genes(genes_file)
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    diffst_kw = {"preset": a.preset, "max_steps": a.max_steps, "n_samples": a.n_samples,
                 "seed": a.seed}
    results = run(a.sections, a.methods, a.setting, genes, data_dir, diffst_kw)
    for method, m in results["mean"].items():
        print(f"MEAN {method:10s} " + " ".join(f"{s} {m[s]:.3f}" for s in SCORES))
    command = "python benchmarks/her2st_quality.py " + " ".join(
        shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shown_genes = _relative(genes_file)
    out.with_suffix(".md").write_text(markdown(results, command=command, setting=a.setting,
                                               genes_file=shown_genes, started=started))
    record = {"command": command, "machine": machine(), "date": started, "setting": a.setting,
              "genes_file": shown_genes, "genes": genes, **results}
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    return results


def _relative(path: Path) -> str:
    """A path as seen from the repository root, never an absolute path of this machine."""
    try:
        return os.path.relpath(Path(path).resolve(), REPO)
    except ValueError:
        return Path(path).name


if __name__ == "__main__":
    main()
