"""Result records of the her2st quality benchmark: means, merging, the markdown page, targets.

``her2st_quality.py`` runs the protocol and writes a record (one setting, any sections and
methods); this module turns records into tables and checks the quality issue's targets on them.
Diff-ST rows are the methods whose name starts with ``"diffst"`` (the model and its ablations).
"""

from __future__ import annotations

import numpy as np

SCORES = ("PCC", "NRMSE", "SSIM", "wPCC")
#: Scores where lower is better (the others: higher is better).
LOWER_IS_BETTER = ("NRMSE",)
#: The quality issue's targets (means over sections; per-section comparisons with the ridges).
WPCC_TARGET = 0.45
COVERAGE_RANGE = (0.85, 0.95)
#: unc_gain (``BENCHMARK.md``, Uncertainty) every section must reach, in nats per spot.
UNC_GAIN_TARGET = 0.05
RIDGES = ("ridge-colour", "ridge-histology")
#: The baseline that a Diff-ST row must not fall below with another section's H&E.
SWAP_BASELINE = "bicubic"
#: Besides the scores: what a record's rows may carry, averaged over sections where all have it.
EXTRAS = ("coverage", "unc_gain", "consistency_error", "hotspot_share", "seconds")
#: The tables' columns (after the section and method) and the record's keys they show.
COLUMNS = (*SCORES, "consistency", "coverage90", "unc_gain")
KEYS = (*SCORES, "consistency_error", "coverage", "unc_gain")


def is_diffst(method: str) -> bool:
    """Whether a row is Diff-ST or one of its ablations."""
    return method.startswith("diffst")



def section_means(sections: dict) -> dict:
    """Per method: the mean of every score over the sections that have it (and which those are)."""
    methods = list(dict.fromkeys(m for per in sections.values() for m in per))
    out = {}
    for method in methods:
        names = [n for n, per in sections.items() if method in per]
        rs = [sections[n][method] for n in names]
        m = {s: float(np.mean([r[s] for r in rs])) for s in SCORES}
        for extra in EXTRAS:
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
        When the two were made in different settings, with different gene panels or with
        different H&E images (resampled, or another section's).
    """
    for key in ("setting", "genes", "he_um", "he_swap"):
        if old.get(key) != new.get(key):
            raise ValueError(f"Cannot append: the existing result has {key} "
                             f"{_short(old.get(key))} and this run {_short(new.get(key))}. "
                             "Write to another --out, or rerun with the same setting, genes and "
                             "H&E options.")
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
    coverage of the 90% interval in :data:`COVERAGE_RANGE`; then :func:`uncertainty_rows` and,
    for a record made with another section's H&E, :func:`swap_rows`. Values rounded to three
    decimals as shown. (``single`` is accepted for the command line's ``--single-results`` and
    unused.)
    """
    sections = record["sections"]
    variants = [m for m in record["mean"] if is_diffst(m)]
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
    return (_ridge_rows(record, variants, lines) + uncertainty_rows(sections, variants)
            + swap_rows(record, variants))


def _ridge_rows(record: dict, variants: list[str], lines: list[str]) -> list[str]:
    """The issue's table against the ridges (wPCC, the other scores, mean coverage)."""
    sections = record["sections"]
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


def uncertainty_rows(sections: dict, variants: list[str]) -> list[str]:
    """Whether each variant's uncertainty is useful and calibrated on every section it ran on.

    unc_gain at least :data:`UNC_GAIN_TARGET` and the 90% interval's coverage in
    :data:`COVERAGE_RANGE`, both on every section (values rounded to three decimals as shown).

    Parameters
    ----------
    sections
        Section name -> method -> result row.
    variants
        The Diff-ST rows to judge.
    """
    lo, hi = COVERAGE_RANGE
    head = ["method", "sections", f"unc_gain >= {UNC_GAIN_TARGET}, every section",
            f"coverage in [{lo:.2f}, {hi:.2f}], every section"]
    lines = ["Uncertainty (`BENCHMARK.md`, Uncertainty): the std must say where the map is "
             f"wrong (unc_gain >= {UNC_GAIN_TARGET} nats per spot on every section) and the 90% "
             f"interval be calibrated (coverage {lo:.2f}-{hi:.2f} on every section).", "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for method in variants:
        names = [n for n, per in sections.items() if method in per]
        cells = []
        for key, ok in (("unc_gain", lambda v: v >= UNC_GAIN_TARGET),
                        ("coverage", lambda v: lo <= v <= hi)):
            vals = {n: sections[n][method].get(key) for n in names}
            if any(v is None or not np.isfinite(v) for v in vals.values()):
                cells.append("n/a (no spread)")
                continue
            vals = {n: round(float(v), 3) for n, v in vals.items()}
            cells.append(_verdict(all(ok(v) for v in vals.values()),
                                  ", ".join(f"{n} {v:.3f}" for n, v in vals.items())))
        lines.append(f"| {method} | {', '.join(names)} | " + " | ".join(cells) + " |")
    return lines + [""]


def worse_than(row: dict, base: dict, score: str) -> bool:
    """Whether ``row`` scores worse than ``base`` on ``score``, both rounded to three decimals."""
    a, b = round(float(row[score]), 3), round(float(base[score]), 3)
    return a > b if score in LOWER_IS_BETTER else a < b


def swap_rows(record: dict, variants: list[str]) -> list[str]:
    """With another section's H&E: every score of every variant against bicubic's, per section.

    ``BENCHMARK.md`` ("When the histology carries no information"): no score may be worse than
    :data:`SWAP_BASELINE`'s on the same section. Empty for a record made with each section's
    own H&E.
    """
    swap = record.get("he_swap")
    if not swap:
        return []
    return not_worse_rows(record["sections"], variants,
                          f"With another section's H&E ({swap_note(swap)}): no score of a "
                          f"Diff-ST row may be worse than {SWAP_BASELINE}'s on the same section")


def not_worse_rows(sections: dict, variants: list[str], intro: str,
                   base: str = SWAP_BASELINE) -> list[str]:
    """A table of every score of every variant against ``base``'s, on each section that has both.

    Parameters
    ----------
    sections
        Section name -> method -> result row.
    variants
        The rows to judge.
    intro
        The sentence that says why the table is there.
    base
        The method no score may fall below (NRMSE: lower is better; values rounded to three
        decimals as shown).
    """
    lines = [f"{intro} (NRMSE: lower is better; values rounded to three decimals; a section "
             f"without {base} is not judged).", "",
             "| method | sections | " + " | ".join(SCORES) + " | every score |",
             "|" + " --- |" * (len(SCORES) + 3)]
    for method in variants:
        names = [n for n, per in sections.items() if method in per and base in per]
        if not names:
            lines.append(f"| {method} | - | " + " | ".join(["n/a"] * len(SCORES))
                         + f" | n/a (add `--methods {base} --append`) |")
            continue
        cells, lost = [], []
        for score in SCORES:
            worse = [f"{n} {sections[n][method][score]:.3f} vs "
                     f"{sections[n][base][score]:.3f}" for n in names
                     if worse_than(sections[n][method], sections[n][base], score)]
            lost += worse
            cells.append(_verdict(not worse, "all" if not worse else "worse: "
                                  + ", ".join(worse)))
        cells.append(_verdict(not lost, f"{len(lost)} of {len(names) * len(SCORES)} worse"))
        lines.append(f"| {method} | {', '.join(names)} | " + " | ".join(cells) + " |")
    return lines + [""]


def swap_note(swap: dict) -> str:
    """``C2 with C3's, C3 with C2's``: which section's H&E each section was given."""
    return ", ".join(f"{n} with {src}'s" for n, src in swap.items())


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
        "- H&E swapped: " + (swap_note(record["he_swap"]) + " (each resized to the section's "
                             "own image; spots, pixel positions and counts the section's own; "
                             "across sections the training sections' images swapped too)"
                             if record.get("he_swap") else "no (each section's own H&E)"),
        *[f"- refused: {name} {method}: {msg}" for name, per in record.get("refused", {}).items()
          for method, msg in per.items()],
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
        "rescaled like the mean (0.9 is calibrated); unc_gain: whether the std says where the "
        "errors are, the same mean and std on counts (`ds.metrics.uncertainty_gain`, nats per "
        "spot; 0 for a std proportional to the mean, above 0 when it follows the errors); "
        "`diffst-deep-regression` draws one sample, so its std is the model's own error on its "
        "training pairs alone; seconds: fit + superresolve for Diff-ST, prediction for "
        "baselines",
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
        hot = {m: [f"{n} {100 * per[m]['hotspot_share']:.3f}%"
                   for n, per in record["sections"].items()
                   if "hotspot_share" in per.get(m, {})] for m in variants}
        if any(hot.values()):
            lines += ["", "Hotspots: share of the map's tissue pixels above twice the gene's "
                      "highest input spot, mean over genes:", ""]
            lines += [f"- {m}: " + ", ".join(h) for m, h in hot.items() if h]
        lines.append("")
    lines += section_table(record["sections"])
    lines += ["", "Mean over sections:", "",
              "| method | sections | " + " | ".join(COLUMNS) + " | seconds |",
              "|" + " --- |" * (len(COLUMNS) + 3)]
    for method, r in record["mean"].items():
        seconds = f"{r['seconds']:.1f}" if "seconds" in r else "-"
        lines.append(f"| {method} | {len(r['sections'])} | "
                     + " | ".join(_fmt(r, s) for s in KEYS) + f" | {seconds} |")
    lines += [""] + target_rows(record, single)
    return "\n".join(lines)


def section_table(sections: dict) -> list[str]:
    """One row per section and method: the scores, the uncertainty, genes scored and seconds."""
    lines = ["| section | method | " + " | ".join(COLUMNS) + " | genes | seconds |",
             "|" + " --- |" * (len(COLUMNS) + 4)]
    for section, per in sections.items():
        for method, r in per.items():
            lines.append(f"| {section} | {method} | " + " | ".join(_fmt(r, s) for s in KEYS)
                         + f" | {r['n_genes']} | {r['seconds']:.1f} |")
    return lines
