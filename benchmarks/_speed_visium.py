"""``benchmarks/speed.py --visium``: the default fit and superresolve on Space Ranger folders.

Each slide is read as users read it (``spatialdata_io.visium``), then timed with its peak
resident memory, in a fresh process of ``speed.py``; runs can be appended to one table (e.g. the
code before and after a change) with the load of the machine around each measurement::

    python benchmarks/speed.py --visium visium_tiny=tiny visium_cytassist_mouse_embryo=embryo \
        --out benchmarks/results/speed_visium --label after --append --note "nothing else ran"
"""

from __future__ import annotations

import gc
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from _memory import load_average, peak_rss_mb, reset_peak

from diffst_sc._core import section_view


def measure_visium(folder: Path, dataset_id: str) -> dict:
    """Read a Space Ranger folder as users do, then time the default ``fit`` and ``superresolve``.

    The peaks are read as in ``speed.measure``; the model's genes are ``fit``'s default choice.
    """
    import spatialdata_io

    import diffst_sc as ds

    t0 = time.perf_counter()
    sdata = spatialdata_io.visium(folder, dataset_id=dataset_id)
    view = section_view(sdata)
    read_seconds = time.perf_counter() - t0
    gc.collect()
    load = load_average()
    exact = reset_peak()
    t0 = time.perf_counter()
    model = ds.tl.fit(sdata, progress=False)
    fit_seconds = time.perf_counter() - t0
    fit_peak = peak_rss_mb(exact)
    gc.collect()
    exact = reset_peak() and exact
    t0 = time.perf_counter()
    ds.tl.superresolve(sdata, model=model, progress=False)
    sr_seconds = time.perf_counter() - t0
    sr_peak = peak_rss_mb(exact)
    _, h, w = (int(s) for s in sdata.images["diffst"].shape)
    return {
        "dataset": folder.name, "dataset_id": dataset_id, "n_spots": int(view.n_spots),
        "n_genes": len(model.genes), "image": view.image_key,
        "image_px": [int(n) for n in view.image.shape[1:]],
        "he_microns_per_pixel": float(view.microns_per_pixel),
        "spacing_um": float(view.spacing_um), "read_seconds": read_seconds,
        "fit_seconds": fit_seconds, "fit_peak_mb": fit_peak,
        "superresolve_seconds": sr_seconds, "superresolve_peak_mb": sr_peak,
        "hr_pixels": h * w,
        "hr_pixel_um": float(sdata.tables[view.table_key].uns["diffst"]["pixel_size_um"]),
        "peak_since_call": exact, "torch_imported": "torch" in sys.modules,
        "load_1min_before": load, "load_1min_after": load_average(),
    }


VISIUM_HEAD = ("| run | dataset | spots | genes | H&E px (um/px) | HR pixels (um) | fit s "
               "| fit peak MiB | superresolve s | superresolve peak MiB | fit + superresolve s "
               "| load before / after |")


def _visium_row(r: dict) -> str:
    h, w = r["image_px"]
    return (f"| {r.get('label', '')} | {r['dataset']} | {r['n_spots']} | {r['n_genes']} "
            f"| {w} x {h} ({r['he_microns_per_pixel']:.1f}) "
            f"| {r['hr_pixels']} ({r['hr_pixel_um']:.1f}) | {r['fit_seconds']:.1f} "
            f"| {r['fit_peak_mb']:.0f} | {r['superresolve_seconds']:.1f} "
            f"| {r['superresolve_peak_mb']:.0f} "
            f"| {r['fit_seconds'] + r['superresolve_seconds']:.1f} "
            f"| {r['load_1min_before']:.1f} / {r['load_1min_after']:.1f} |")


def visium_markdown(record: dict) -> str:
    """The Visium speed record (every run kept in it) as a markdown page."""
    runs = record["runs"]
    lines = ["# Speed and memory on Visium slides", ""]
    for run in runs:
        lines += [f"- run {run['label'] or '(unnamed)'}: `{run['command']}`, {run['date']}, "
                  f"{run['machine']}" + (f"; other jobs: {run['note']}" if run["note"] else "")]
    lines += [
        "- each slide read with `spatialdata_io.visium(folder, dataset_id=...)`, then the default "
        "`ds.tl.fit(sdata)` and `ds.tl.superresolve(sdata)` (a HistologyModel, torch not "
        "imported), each measurement in a fresh process; peaks: the process's peak resident "
        "memory during the call; load: the machine's 1-minute load average before and after "
        "(it counts this measurement's own threads, up to 2, and lags by a minute: what else "
        "ran is in each run's note)",
        "",
        VISIUM_HEAD,
        "|" + " --- |" * 12,
        *[_visium_row(r) for r in record["rows"]],
        "",
    ]
    return "\n".join(lines)


def visium_main(a, command: str, machine: str, run_child) -> dict:
    """Measure each ``--visium`` folder in a fresh process (``run_child``); write ``<out>.md``
    and ``<out>.json``, after the runs already there with ``--append``."""
    out = Path(a.out)
    old = json.loads(out.with_suffix(".json").read_text()) if (
        a.append and out.with_suffix(".json").exists()) else {"runs": [], "rows": []}
    run = {"label": a.label, "command": command, "machine": machine, "note": a.note,
           "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    rows = []
    for entry in a.visium:
        folder, _, dataset_id = entry.partition("=")
        r = run_child({"visium_folder": str(Path(a.visium_data) / folder),
                       "dataset_id": dataset_id or folder})
        rows.append({**r, "label": a.label})
        print(f"{folder}: fit {r['fit_seconds']:.1f} s, peak {r['fit_peak_mb']:.0f} MiB; "
              f"superresolve {r['superresolve_seconds']:.1f} s, peak "
              f"{r['superresolve_peak_mb']:.0f} MiB", flush=True)
    record = {"runs": old["runs"] + [run], "rows": old["rows"] + rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    out.with_suffix(".md").write_text(visium_markdown(record))
    return record
