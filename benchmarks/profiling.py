"""Where the time of ``ds.tl.fit`` and ``ds.tl.superresolve`` goes, on a real her2st section.

Runs both calls under :mod:`cProfile` on one section (her2st C2 by default; Andersson et al.,
Nat Commun 12, 6012, 2021) with the default preset (training steps can be reduced with
``--max-steps``; the per-step cost does not depend on the number of steps) and writes, for each
call, its wall time split into stages (the functions of ``diffst_sc`` that make it up, with their
cumulative time) and the functions with the most time of their own.

Usage (from the repository root)::

    python benchmarks/profiling.py --out benchmarks/results/profiling

writes ``<out>.md`` (tables, command, machine, date) and ``<out>.json``.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from diffst_sc._core import section_view

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "her2st"

#: The stages of each call: (label, file suffix, function name) of the function that does it.
FIT_STAGES = [
    ("co-expression graph", "tl/_fit.py", "_gene_graph"),
    ("training views (degrade the spots into pseudo-spots)", "tl/_fit.py", "_training_views"),
    ("histology path (descriptors, footprint rows, ridge)", "model/_pairs.py", "path_rows"),
    ("deep network's pairs (rasterise spots and H&E)", "model/_pairs.py", "training_arrays"),
    ("training loop", "train/_trainer.py", "fit_model"),
    ("  of which: drawing patches", "train/_patches.py", "__call__"),
    ("  of which: one training step (patches, forward, backward, optimiser, EMA)",
     "train/_trainer.py", "_train_step"),
    ("  of which: backward", "torch/_tensor.py", "backward"),
    ("model error on the training pairs", "model/_diffst_training.py", "_residual_sd"),
]
SUPERRESOLVE_STAGES = [
    ("conditioning arrays (rasterise spots and H&E)", "model/_conditions.py", "condition_arrays"),
    ("sampling (denoising steps of every tile)", "schedulers/_samplers.py", "sample"),
    ("  of which: projections onto the spots", "_core/_correction.py", "__call__"),
    ("  of which: network evaluations (denoiser and condition encoders)",
     "module/_network.py", "forward"),
    ("condition encoding per tile", "module/_network.py", "encode_condition"),
    ("per-tile projection set-up", "model/_maps.py", "tile_projection"),
    ("global correction and writing", "model/_maps.py", "project_global"),
    ("writing layers into the SpatialData", "tl/_superresolve.py", "_write_layers"),
]


def stage_times(stats: pstats.Stats, stages) -> list[dict]:
    """Cumulative seconds and calls of each stage's function in ``stats``.

    Where several functions match (methods of one name in one file), the one with the most
    cumulative time is taken: the others are called inside it, or are negligible.
    """
    rows = []
    for label, suffix, name in stages:
        cum, calls = 0.0, 0
        for (file, _, func), (_, ncalls, _, ct, _) in stats.stats.items():
            if func == name and file.replace("\\", "/").endswith(suffix) and ct > cum:
                cum, calls = ct, ncalls
        rows.append({"stage": label, "seconds": cum, "calls": calls})
    return rows


def top_functions(stats: pstats.Stats, n: int = 15) -> list[dict]:
    """The ``n`` functions with the most time of their own (excluding what they call)."""
    items = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:n]
    out = []
    for (file, line, func), (_, ncalls, tt, ct, _) in items:
        where = file.split("site-packages/")[-1].split("src/")[-1]
        out.append({"function": f"{where}:{line}({func})", "own_seconds": tt,
                    "cumulative_seconds": ct, "calls": ncalls})
    return out


def profiled(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` under cProfile: its result, wall seconds and the statistics."""
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    try:
        result = fn(*args, **kwargs)
    finally:
        prof.disable()
    return result, time.perf_counter() - t0, pstats.Stats(prof)


def _table(rows: list[dict], total: float) -> list[str]:
    lines = ["| stage | seconds | share | calls |", "| --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['seconds']:.1f} | {100 * r['seconds'] / total:.0f}% "
                     f"| {r['calls']} |")
    return lines


def _top(rows: list[dict]) -> list[str]:
    lines = ["| function | own s | cumulative s | calls |", "| --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| `{r['function']}` | {r['own_seconds']:.1f} | "
                     f"{r['cumulative_seconds']:.1f} | {r['calls']} |")
    return lines


def markdown(record: dict) -> str:
    """The profile record as a markdown page."""
    s = record["settings"]
    lines = [
        "# Where the time goes",
        "",
        f"- command: `{record['command']}`",
        f"- machine: {record['machine']}",
        f"- date: {record['date']}",
        f"- section: {s['section']} ({s['n_spots']} spots), {s['n_genes']} genes; preset "
        f"{s['preset']}, {s['max_steps']} training steps; superresolve {s['n_samples']} samples x "
        f"{s['steps']} denoising steps",
        "- times under cProfile (which adds some overhead to Python-heavy code); stages are "
        "cumulative times of the functions named, so nested stages are part of the one above",
        "",
        f"## fit: {record['fit']['seconds']:.1f} s",
        "",
        *_table(record["fit"]["stages"], record["fit"]["seconds"]),
        "",
        "Functions with the most time of their own:",
        "",
        *_top(record["fit"]["top"]),
        "",
        f"## superresolve: {record['superresolve']['seconds']:.1f} s",
        "",
        *_table(record["superresolve"]["stages"], record["superresolve"]["seconds"]),
        "",
        "Functions with the most time of their own:",
        "",
        *_top(record["superresolve"]["top"]),
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> dict:
    """Profile fit and superresolve; write ``<out>.md`` and ``<out>.json``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="folder of the her2st sections")
    ap.add_argument("--section", default="C2")
    ap.add_argument("--genes", type=int, default=100, help="most expressed genes modelled")
    ap.add_argument("--preset", default="cpu-small")
    ap.add_argument("--max-steps", type=int, default=None,
                    help="training steps (the preset's by default)")
    ap.add_argument("--n-samples", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", default="benchmarks/results/profiling",
                    help="output path without extension (.md and .json are written)")
    a = ap.parse_args(argv)

    import diffst_sc as ds

    sys.path.insert(0, str(HERE))
    from her2st_quality import machine

    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    sdata = ds.io.read_legacy_st(Path(a.data) / a.section)
    genes = [str(g) for g in ds.pp.select_genes(sdata, n_top=a.genes)]
    model, fit_s, fit_stats = profiled(ds.tl.fit, sdata, genes=genes, preset=a.preset,
                                       max_steps=a.max_steps, progress=False)
    _, sr_s, sr_stats = profiled(ds.tl.superresolve, sdata, model, n_samples=a.n_samples,
                                 steps=a.steps, progress=False)
    command = "python benchmarks/profiling.py " + " ".join(
        shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    record = {
        "command": command, "machine": machine(), "date": started,
        "settings": {"section": a.section, "n_spots": int(section_view(sdata).n_spots),
                     "n_genes": len(genes), "preset": a.preset,
                     "max_steps": int(model.training["max_steps"]),
                     "n_samples": a.n_samples, "steps": a.steps},
        "fit": {"seconds": fit_s, "stages": stage_times(fit_stats, FIT_STAGES),
                "top": top_functions(fit_stats)},
        "superresolve": {"seconds": sr_s, "stages": stage_times(sr_stats, SUPERRESOLVE_STAGES),
                         "top": top_functions(sr_stats)},
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    out.with_suffix(".md").write_text(markdown(record))
    print(markdown(record))
    return record


if __name__ == "__main__":
    main()
