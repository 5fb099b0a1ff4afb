"""Diff-ST's variants over seeds: mean +- sd of the quality benchmark's scores.

Reads records of ``her2st_quality.py`` (one setting each, any mix of seeds: the seed of a run is
in its options) and writes, per setting, each variant's wPCC on every section and its mean over
the sections as mean +- sd over the seeds that were run, with the number of seeds, next to the
default model's, and what the part a variant switches off adds to the network: the network's
mean over the sections less the variant's, paired by seed. A variant met with the same seed in
two records counts once (the later record).

Usage (from the repository root)::

    python benchmarks/her2st_quality.py --sections B4 C2 C3 \
        --methods diffst-deep diffst-deep-regression --setting single --seed 1 \
        --out benchmarks/results/her2st_ablation_single_seed1
    python benchmarks/ablation_seeds.py benchmarks/results/her2st_quality_single.json \
        benchmarks/results/her2st_ablation_single_seed1.json --out benchmarks/results/her2st_ablation

writes ``<out>.md`` and ``<out>.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

SCORES = ("PCC", "NRMSE", "SSIM", "wPCC")
#: The network with every part on; the variants named after it switch one part off.
NETWORK = "diffst-deep"


def runs_by_seed(records: list[dict]) -> dict:
    """``{setting: {method: {seed: {section: scores}}}}`` of every Diff-ST run in ``records``."""
    out: dict = {}
    for rec in records:
        for section, per in rec["sections"].items():
            for method, r in per.items():
                if "options" not in r:  # a baseline: not a Diff-ST variant
                    continue
                seed = int(r["options"].get("seed", 0))
                (out.setdefault(rec["setting"], {}).setdefault(method, {})
                 .setdefault(seed, {}))[section] = {s: r[s] for s in SCORES}
    return out


def summary(by_seed: dict, sections: list[str], score: str = "wPCC") -> dict:
    """Per method: ``score`` on each section and its mean over ``sections``, over the seeds.

    Returns ``{method: {"seeds": [...], section or "mean": (mean, sd)}}``; only seeds run on every
    one of ``sections`` count. The sd is over seeds (``nan`` with one).
    """
    out = {}
    for method, seeds in by_seed.items():
        rows = _complete(seeds, sections, score)
        if not rows:
            continue
        table = np.array(list(rows.values()))
        cols = {n: table[:, i] for i, n in enumerate(sections)} | {"mean": table.mean(1)}
        out[method] = {"seeds": list(rows)} | {k: _mean_sd(v) for k, v in cols.items()}
    return out


def _complete(seeds: dict, sections: list[str], score: str) -> dict:
    """``{seed: [score on each of sections]}`` for the seeds run on every one of ``sections``."""
    return {s: [seeds[s][n][score] for n in sections] for s in sorted(seeds)
            if all(n in seeds[s] for n in sections)}


def part_adds(by_seed: dict, sections: list[str], score: str = "wPCC") -> dict:
    """What each part adds to the network: its mean ``score`` over ``sections`` less that of the
    variant without the part, on the seeds both ran on every section.

    Returns ``{variant: {"seeds": [...], "adds": (mean, sd)}}`` for the variants named
    ``NETWORK + "-..."``; the sd is over seeds (``nan`` with one).
    """
    def means(method):
        return {s: np.mean(v) for s, v in _complete(by_seed.get(method, {}), sections,
                                                      score).items()}

    full, out = means(NETWORK), {}
    for method in by_seed:
        if not method.startswith(NETWORK + "-"):
            continue
        own = means(method)
        seeds = sorted(set(own) & set(full))
        if seeds:
            out[method] = {"seeds": seeds,
                           "adds": _mean_sd(np.array([full[s] - own[s] for s in seeds]))}
    return out


def _mean_sd(values: np.ndarray) -> tuple[float, float]:
    sd = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
    return float(values.mean()), sd


def _cell(mean: float, sd: float) -> str:
    return f"{mean:.3f}" if np.isnan(sd) else f"{mean:.3f} +- {sd:.3f}"


def markdown(tables: dict, sections: list[str], commands: list[str],
             adds: dict | None = None) -> str:
    """The summaries of every setting (and what each part adds, :func:`part_adds`) as a page."""
    adds = adds or {}
    lines = ["# Diff-ST's variants over seeds (her2st, mean wPCC)", ""]
    lines += [f"- command: `{c}`" for c in commands]
    lines += ["- each cell: mean +- sd over the seeds run (sd over seeds, ddof 1; one seed: no sd); "
              "the default model, the histology path, is deterministic",
              f"- part adds: {NETWORK}'s mean less the variant's, paired by seed (positive: the "
              "network scores higher with the part the variant switches off; negative: lower)", ""]
    for setting, rows in tables.items():
        lines += [f"## {setting}", "",
                  "| model | seeds | " + " | ".join(sections) + " | mean | part adds |",
                  "|" + " --- |" * (len(sections) + 4)]
        for method, r in rows.items():
            paired = adds.get(setting, {}).get(method)
            lines.append(f"| {method} | {len(r['seeds'])} | "
                         + " | ".join(_cell(*r[n]) for n in (*sections, "mean"))
                         + f" | {_cell(*paired['adds']) if paired else '-'} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> dict:
    """Command line entry point; returns the summaries written to ``<out>.json``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("records", nargs="+", help="her2st_quality.py result files (.json)")
    ap.add_argument("--sections", nargs="+", default=["B4", "C2", "C3"])
    ap.add_argument("--out", default="benchmarks/results/her2st_ablation")
    a = ap.parse_args(argv)
    records = [json.loads(Path(p).read_text()) for p in a.records]
    runs = runs_by_seed(records)
    tables = {setting: summary(by_seed, a.sections) for setting, by_seed in runs.items()}
    adds = {setting: part_adds(by_seed, a.sections) for setting, by_seed in runs.items()}
    command = "python benchmarks/ablation_seeds.py " + " ".join(
        shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(markdown(tables, a.sections, [command], adds))
    out.with_suffix(".json").write_text(json.dumps({"command": command, "sections": a.sections,
                                                    "wPCC": tables, "part_adds": adds}, indent=1))
    return tables


if __name__ == "__main__":
    main()
