"""Speed and memory of ``ds.tl.fit`` and ``ds.tl.superresolve`` against tissue size and genes.

A real section (her2st C2 by default; Andersson et al., Nat Commun 12, 6012, 2021) is grown by
tiling: its H&E, cropped to the spots' array rectangle, is repeated k x k times and its spots
(real counts, array positions and pixel centres shifted by one crop per tile) with it, so a
k x k section has k^2 times the spots and the tissue area of the original. Each measurement runs
in a fresh Python process, which builds the tiled SpatialData (``build_sdata``, not timed), then
times

- ``ds.tl.fit`` for a fixed number of training steps, split into data preparation (everything
  before the training loop: degrading, the gene graph, rasterising spots and H&E) and the time
  per training step (from the trainer's own clock, after its first records), and
- ``ds.tl.superresolve`` (sampling every tile), whose throughput is given in output pixels x genes
  per second,

and reads the process's peak resident memory during each call (Linux: the high-water mark is
reset before the call through ``/proc/self/clear_refs``; elsewhere ``ru_maxrss``, which includes
building the input). ``import diffst_sc`` is timed in fresh processes too.

Usage (from the repository root)::

    python benchmarks/speed.py --sizes 1 2 4 --genes 100 --gene-counts 25 100 400

writes ``<out>.md`` (tables, command, machine, date), ``<out>.json`` and ``<out>.png`` (time and
memory against the number of spots, log-log). The speed of the co-expression graph is measured by
``benchmarks/coexpression_graph.py``.

With ``--visium FOLDER=ID ...`` the default ``fit`` and ``superresolve`` are timed instead on
Space Ranger folders read as users read them (``benchmarks/_speed_visium.py``), e.g. the CytAssist
slide whose only image is a 600 px lowres one; ``--append`` and ``--label`` put runs of the code
before and after a change in one table, ``--note`` says what else ran on the machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from diffst_sc._core import section_view

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "her2st"
sys.path.insert(0, str(HERE))
from _memory import current_rss_mb, load_average, peak_rss_mb, reset_peak  # noqa: E402
from _speed_visium import measure_visium, visium_main  # noqa: E402
from _tiling import tiled_section, write_store  # noqa: E402

# ---------------------------------------------------------------------------------------------
# one measurement (run in a fresh process)


def measure(section_dir: Path, k: int, n_genes: int, *, fit_steps: int, n_samples: int,
            sampling_steps: int, he_downsample: int, preset: str, seed: int = 0,
            in_memory: bool = False, deep: bool = False) -> dict:
    """Build the ``k x k`` section, then time and measure ``fit`` and ``superresolve`` on it.

    Unless ``in_memory``, the section is built and written to a zarr store in a temporary folder
    by another process, and read back here, so that its H&E is read from disk as needed and this
    process holds what a user's holds on reading a stored SpatialData (not the H&E it was tiled
    from, which the allocator would keep in the peaks).
    """
    import sys
    import tempfile

    import diffst_sc as ds
    from diffst_sc._core import SECTION_UNS_KEY

    t0 = time.perf_counter()
    if in_memory:
        base = ds.io.read_legacy_st(section_dir)
        genes = [str(g) for g in ds.pp.select_genes(base, n_top=n_genes)]
        sdata = tiled_section(base, k, he_downsample=he_downsample)
        del base
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        import spatialdata as sd

        # Kept until this function returns: the section is read from it lazily.
        scratch = tempfile.TemporaryDirectory(prefix="diffst-speed-")
        store = Path(scratch.name) / "section.zarr"
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            genes = pool.submit(write_store, section_dir, k, he_downsample, n_genes,
                                store).result()
        sdata = sd.read_zarr(store)
    view = section_view(sdata)
    build_seconds = time.perf_counter() - t0
    gc.collect()

    rss_input = current_rss_mb()
    load = load_average()
    exact = reset_peak()
    t0 = time.perf_counter()
    model = ds.tl.fit(sdata, genes=genes, preset=preset, max_steps=fit_steps, seed=seed,
                      deep=deep, progress=False)
    fit_seconds = time.perf_counter() - t0
    fit_peak = peak_rss_mb(exact)
    hist = getattr(model, "history", [])  # a HistologyModel has no training loop
    train_seconds = hist[-1]["seconds"] if hist else 0.0
    if not hist:  # the histology path alone: no training loop
        per_step = float("nan")
    elif len(hist) >= 2 and hist[-1]["step"] > hist[0]["step"]:
        # After the first record: leaves out the first steps' one-off costs (allocations).
        per_step = (hist[-1]["seconds"] - hist[0]["seconds"]) / (hist[-1]["step"]
                                                                 - hist[0]["step"])
    else:
        per_step = train_seconds / fit_steps
    gc.collect()

    rss_before_sr = current_rss_mb()
    exact = reset_peak() and exact
    t0 = time.perf_counter()
    ds.tl.superresolve(sdata, model=model, n_samples=n_samples, steps=sampling_steps,
                       seed=seed, progress=False)
    sr_seconds = time.perf_counter() - t0
    sr_peak = peak_rss_mb(exact)
    layer = sdata.images["diffst"]
    _, h, w = (int(s) for s in layer.shape)
    tissue = int((np.asarray(layer.data.sum(axis=0)) > 0).sum())
    um = view.microns_per_pixel
    spacing_um = float(view.adata.uns[SECTION_UNS_KEY]["spot_spacing_um"])
    return {
        "k": k, "n_spots": int(view.n_spots), "n_genes": len(genes),
        # Each spot stands for one lattice cell of the platform's spacing (200 um for ST).
        "tissue_mm2": float(view.n_spots * (spacing_um / 1000) ** 2),
        "image_megapixels": float(np.prod(view.image.shape[1:]) / 1e6),
        "he_microns_per_pixel": float(um),
        "build_seconds": build_seconds, "rss_input_mb": rss_input,
        "fit_seconds": fit_seconds, "fit_prep_seconds": fit_seconds - train_seconds,
        "fit_train_seconds": train_seconds, "fit_seconds_per_step": per_step,
        "fit_steps": fit_steps, "fit_peak_mb": fit_peak,
        "superresolve_seconds": sr_seconds, "superresolve_peak_mb": sr_peak,
        "rss_before_superresolve_mb": rss_before_sr,
        "hr_pixels": h * w, "hr_tissue_pixels": tissue, "hr_pixel_um": float(
            sdata.tables["table"].uns["diffst"]["pixel_size_um"]),
        "n_samples": n_samples, "sampling_steps": sampling_steps,
        "pixel_genes_per_second": h * w * len(genes) / sr_seconds,
        "peak_since_call": exact,
        # torch is loaded by a DiffST only: the default model's peaks hold none of it
        "torch_threads": (sys.modules["torch"].get_num_threads() if "torch" in sys.modules
                          else None),
        "input": "in memory" if in_memory else "zarr store on disk",
        "load_1min_before": load, "load_1min_after": load_average(),
    }


def run_child(spec: dict) -> dict:
    """Run :func:`measure` (or :func:`measure_visium`) in a fresh Python process; its result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"The measurement {spec} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def import_seconds(repeats: int = 3) -> dict:
    """Seconds of ``import diffst_sc`` in fresh processes, and whether it imports torch."""
    code = ("import sys, time; t = time.perf_counter(); import diffst_sc; "
            "print(time.perf_counter() - t, 'torch' in sys.modules)")
    times, torch_loaded = [], []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout.split()
        times.append(float(out[0]))
        torch_loaded.append(out[1] == "True")
    return {"seconds": times, "imports_torch": any(torch_loaded)}


# ---------------------------------------------------------------------------------------------
# reporting


def growth_exponent(x, y) -> float:
    """Slope of ``log y`` against ``log x`` (1: linear growth); ``nan`` with fewer than 2 points."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = (x > 0) & (y > 0) & np.isfinite(y)
    if ok.sum() < 2 or np.ptp(np.log(x[ok])) == 0:
        return float("nan")
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


ROW_HEAD = ("| tiles | spots | tissue mm2 | genes | fit prep s | fit s/step | fit peak MiB "
            "| superresolve s | superresolve peak MiB | HR pixels | pixels x genes / s |")


def _row(r: dict) -> str:
    return (f"| {r['k']} x {r['k']} | {r['n_spots']} | {r['tissue_mm2']:.1f} | {r['n_genes']} "
            f"| {r['fit_prep_seconds']:.1f} | {r['fit_seconds_per_step']:.3f} "
            f"| {r['fit_peak_mb']:.0f} | {r['superresolve_seconds']:.1f} "
            f"| {r['superresolve_peak_mb']:.0f} | {r['hr_pixels']} "
            f"| {r['pixel_genes_per_second']:.3g} |")


def markdown(record: dict) -> str:
    """The speed record as a markdown page."""
    s = record["settings"]
    imp = record["import"]
    by_size, by_genes = record["by_size"], record["by_genes"]
    lines = [
        "# Speed and memory",
        "",
        f"- command: `{record['command']}`",
        f"- machine: {record['machine']}",
        f"- date: {record['date']}",
        f"- section: {s['section']} (her2st, Andersson et al., Nat Commun 12, 6012, 2021), "
        f"tiled k x k (H&E crop and spots repeated), H&E at {s['he_microns_per_pixel']:.2f} "
        + (f"um/px; preset {s['preset']}; fit: deep=True, {s['fit_steps']} training steps; "
           f"superresolve: {s['n_samples']} samples x {s['sampling_steps']} denoising steps"
           if s.get("deep", True) else
           "um/px; the default model (`ds.tl.fit` and `ds.tl.superresolve` with their defaults: "
           "a HistologyModel, no training loop, one map, torch not imported; fit s/step does "
           "not apply)"),
        f"- input: {s.get('input', 'in memory')}"
        + (" (the tiled section is written to a zarr store and read back, so its H&E is read "
           "from disk as needed, as with a stored SpatialData)"
           if s.get("input") == "zarr store on disk" else ""),
        "- fit prep: everything in `ds.tl.fit` before the training loop (degrading to "
        "pseudo-spots, the histology model; with deep=True the co-expression graph and "
        "rasterising spots and H&E); fit s/step: the "
        "training loop's time per step after its first record; peaks: the process's peak "
        "resident memory during the call"
        + ("" if record["peak_since_call"] else " (ru_maxrss: includes building the input)")
        + "; HR pixels: the output grid; each measurement in a fresh process",
        *([f"- other jobs on the machine: {record['note']}"] if record.get("note") else []),
        f"- `import diffst_sc`: {min(imp['seconds']):.2f} s (fresh processes, "
        f"{', '.join(f'{t:.2f}' for t in imp['seconds'])} s); imports torch: "
        f"{'yes' if imp['imports_torch'] else 'no'}",
        "- the co-expression graph's speed: `benchmarks/coexpression_graph.py` "
        "(`results/coexpression_graph.md`)",
        "- plot: `speed.png` next to this file (time and memory against spots, log-log)",
        "",
        "## Against tissue size",
        "",
        ROW_HEAD,
        "|" + " --- |" * 11,
        *[_row(r) for r in by_size],
        "",
    ]
    if len(by_size) >= 2:
        n = [r["n_spots"] for r in by_size]
        lines += [
            "Growth with the number of spots (slope of log time or memory against log spots; "
            "1 is linear): "
            + "; ".join(f"{name} {growth_exponent(n, [r[key] for r in by_size]):.2f}"
                        for name, key in (("fit prep", "fit_prep_seconds"),
                                          ("fit s/step", "fit_seconds_per_step"),
                                          ("fit peak", "fit_peak_mb"),
                                          ("superresolve", "superresolve_seconds"),
                                          ("superresolve peak", "superresolve_peak_mb"))) + ".",
            "",
        ]
    if by_genes:
        lines += ["## Against the number of genes", "", ROW_HEAD, "|" + " --- |" * 11,
                  *[_row(r) for r in by_genes], ""]
    return "\n".join(lines)


def plot(record: dict, path: Path) -> None:
    """Time and peak memory of fit and superresolve against the number of spots (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = record["by_size"]
    n = [r["n_spots"] for r in rows]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    steps = record["settings"]["fit_steps"]
    for key, label in (("fit_prep_seconds", "fit: data preparation"),
                       ("fit_train_seconds", f"fit: {steps} training steps"),
                       ("superresolve_seconds", "superresolve")):
        ax_t.plot(n, [r[key] for r in rows], "o-", label=label)
    for key, label in (("fit_peak_mb", "fit"), ("superresolve_peak_mb", "superresolve"),
                       ("rss_input_mb", "input SpatialData (before fit)")):
        ax_m.plot(n, [r[key] for r in rows], "o-", label=label)
    ax_t.set(xscale="log", yscale="log", xlabel="spots", ylabel="seconds", title="Time")
    ax_m.set(xscale="log", yscale="log", xlabel="spots", ylabel="peak resident memory (MiB)",
             title="Memory")
    for ax in (ax_t, ax_m):
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"{record['settings']['section']} tiled k x k; {record['machine'][:60]}",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    """Command line entry point; returns the record written to ``<out>.json``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="folder of the her2st sections")
    ap.add_argument("--section", default="C2")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4],
                    help="tiles per side (k x k copies of the section)")
    ap.add_argument("--genes", type=int, default=100, help="genes of the size sweep")
    ap.add_argument("--gene-counts", type=int, nargs="*", default=[25, 100, 400],
                    help="genes of the gene sweep (empty: no gene sweep)")
    ap.add_argument("--gene-size", type=int, default=1, help="tiles per side of the gene sweep")
    ap.add_argument("--fit-steps", type=int, default=20, help="training steps timed")
    ap.add_argument("--n-samples", type=int, default=2)
    ap.add_argument("--sampling-steps", type=int, default=5)
    ap.add_argument("--he-downsample", type=int, default=1,
                    help="average the H&E over n x n pixels before tiling (1: full resolution)")
    ap.add_argument("--preset", default="cpu-small")
    ap.add_argument("--deep", action="store_true",
                    help="fit with deep=True (train the network --fit-steps steps); by default "
                         "the default model, the histology path alone")
    ap.add_argument("--out", default="benchmarks/results/speed",
                    help="output path without extension (.md, .json and .png are written)")
    ap.add_argument("--in-memory", action="store_true",
                    help="keep the tiled section in memory instead of reading it from a zarr "
                         "store (then the peaks include the whole H&E)")
    ap.add_argument("--visium", nargs="+", metavar="FOLDER=ID",
                    help="Space Ranger folders under --visium-data and their dataset ids: time "
                         "the default fit and superresolve on each (instead of the tiled section)")
    ap.add_argument("--visium-data", default=str(REPO.parent / "shared" / "data"),
                    help="folder of the --visium folders")
    ap.add_argument("--label", default="", help="name of this run in the table (--visium)")
    ap.add_argument("--append", action="store_true",
                    help="keep the rows already in <out>.json (--visium)")
    ap.add_argument("--note", default="", help="what else ran on the machine, for the table")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        spec = json.loads(a.child)
        if "visium_folder" in spec:
            result = measure_visium(Path(spec["visium_folder"]), spec["dataset_id"])
        else:
            result = measure(Path(spec.pop("section_dir")), **spec)
        print(json.dumps(result), flush=True)
        return {}

    from her2st_quality import _relative, machine

    command = "python benchmarks/speed.py " + " ".join(
        shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    if a.visium:
        return visium_main(a, command, machine(), run_child)

    section_dir = Path(a.data) / a.section
    common = {"section_dir": str(section_dir), "fit_steps": a.fit_steps,
              "n_samples": a.n_samples, "sampling_steps": a.sampling_steps,
              "he_downsample": a.he_downsample, "preset": a.preset,
              "in_memory": a.in_memory, "deep": a.deep}
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    imp = import_seconds()
    print(f"import diffst_sc: {min(imp['seconds']):.2f} s", flush=True)
    done: dict[tuple[int, int], dict] = {}

    def measured(k, g):
        if (k, g) not in done:
            done[(k, g)] = run_child({**common, "k": k, "n_genes": g})
            r = done[(k, g)]
            print(f"{k} x {k}: {r['n_spots']} spots, {r['n_genes']} genes: fit prep "
                  f"{r['fit_prep_seconds']:.1f} s, {r['fit_seconds_per_step']:.3f} s/step, peak "
                  f"{r['fit_peak_mb']:.0f} MiB; superresolve {r['superresolve_seconds']:.1f} s, "
                  f"peak {r['superresolve_peak_mb']:.0f} MiB", flush=True)
        return done[(k, g)]

    by_size = [measured(k, a.genes) for k in a.sizes]
    by_genes = [measured(a.gene_size, g) for g in a.gene_counts]
    import torch  # noqa: F401  (machine() then names torch's threads)

    record = {
        "command": command, "machine": machine(), "date": started,
        "settings": {"section": a.section, "data": _relative(Path(a.data)),
                     "fit_steps": a.fit_steps, "n_samples": a.n_samples,
                     "sampling_steps": a.sampling_steps, "he_downsample": a.he_downsample,
                     "deep": a.deep,
                     "he_microns_per_pixel": by_size[0]["he_microns_per_pixel"] if by_size
                     else float("nan"), "preset": a.preset,
                     "input": "in memory" if a.in_memory else "zarr store on disk"},
        "import": imp, "by_size": by_size, "by_genes": by_genes,
        "peak_since_call": all(r["peak_since_call"] for r in done.values()),
        "note": a.note,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    out.with_suffix(".md").write_text(markdown(record))
    if by_size:
        plot(record, out.with_suffix(".png"))
    return record


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
