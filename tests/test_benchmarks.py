"""The benchmark scripts (benchmarks/): scoring against the reference, ablations, helpers.

Nothing here trains a model: the scoring path runs with the untrained baselines, and the ablations
are checked up to the call of ``ds.tl.fit``.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import diffst_sc as ds
from diffst_sc._core import section_view

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

#: ``../shared/tools/her2st_reference.py ../shared/data/her2st C2 --genes genes_bench.txt``.
REFERENCE_C2 = {
    "uniform": {"PCC": 0.7525689595388934, "NRMSE": 0.13986455375177528,
                "SSIM": 0.67540575732708, "wPCC": 0.0},
    "bicubic": {"PCC": 0.7787922843241064, "NRMSE": 0.1323732231888971,
                "SSIM": 0.72025836119367, "wPCC": 0.3174308775478853},
}


def _module(name: str):
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def hq():
    return _module("her2st_quality")


@pytest.fixture(scope="module")
def c2_results(hq, her2st_c2, bench_genes):
    return hq.run(["C2"], ["uniform", "bicubic"], "single", bench_genes, Path("unused"), {},
                  loaded={"C2": her2st_c2})


def _record(hq, results, genes, setting="single"):
    return {"commands": ["test"], "dates": ["today"], "machine": "test", "setting": setting,
            "genes_file": "genes_bench.txt", "genes": genes, **copy.deepcopy(results)}


def test_modules_import():
    for name in ("baselines", "her2st_quality", "speed", "xenium", "profiling", "ablation_seeds",
                 "visium_quality"):
        assert callable(_module(name).main if name != "baselines" else _module(name).uniform)


def test_scores_match_the_reference_implementation(c2_results):
    for method, ref in REFERENCE_C2.items():
        got = c2_results["sections"]["C2"][method]
        assert got["n_genes"] == 100
        for score, value in ref.items():
            assert got[score] == pytest.approx(value, abs=1e-9), (method, score)
        assert "coverage" not in got and "consistency_error" not in got
    assert c2_results["mean"]["uniform"]["sections"] == ["C2"]


def test_append_merges_methods_and_refuses_other_settings(hq, c2_results, bench_genes):
    full = _record(hq, c2_results, bench_genes)
    first, second = copy.deepcopy(full), copy.deepcopy(full)
    del first["sections"]["C2"]["bicubic"]
    del second["sections"]["C2"]["uniform"]
    first["mean"], second["mean"] = (hq.section_means(first["sections"]),
                                     hq.section_means(second["sections"]))
    merged = hq.merge_records(first, second)
    assert list(merged["sections"]["C2"]) == ["uniform", "bicubic"]
    assert merged["mean"]["bicubic"]["wPCC"] == pytest.approx(REFERENCE_C2["bicubic"]["wPCC"])
    assert merged["commands"] == ["test", "test"]
    page = hq.markdown(merged)
    assert "| C2 | bicubic | 0.779 | 0.132 | 0.720 | 0.317 | - | - | - | 100 |" in page
    assert "H&E swapped: no" in page
    assert "No Diff-ST result" in page
    with pytest.raises(ValueError, match="setting"):
        hq.merge_records(first, _record(hq, c2_results, bench_genes, setting="across"))


def test_targets_are_computed_from_the_numbers(hq, c2_results, bench_genes):
    record = _record(hq, c2_results, bench_genes)
    sec = record["sections"]["C2"]
    bic = sec["bicubic"]
    ridge = {**bic, "wPCC": 0.40, "PCC": bic["PCC"] + 0.02}
    sec["ridge-colour"] = ridge
    sec["ridge-histology"] = {**ridge, "wPCC": 0.42}
    good = {**ridge, "wPCC": 0.46, "coverage": 0.9, "unc_gain": 0.08, "consistency_error": 0.01,
            "options": {}}
    bad = {**ridge, "PCC": ridge["PCC"] - 0.01, "wPCC": 0.41, "coverage": 0.5, "unc_gain": 0.049,
           "consistency_error": 0.01, "options": {}}
    sec.update({"diffst": good, "diffst-deep": bad})
    record["mean"] = hq.section_means(record["sections"])
    targets = hq.target_rows(record)
    rows = {}
    for line in targets:  # the first table: against the ridges
        if line.startswith("| diffst"):
            rows.setdefault(line.split(" | ")[0].strip("| "), line)
    assert rows["diffst"].count("reached") == 4 and "missed" not in rows["diffst"]
    cells = rows["diffst-deep"].strip("| ").split(" | ")
    # wPCC 0.41 is under 0.45 and under ridge-histology's 0.42; its PCC is below the ridges'.
    assert [c.split(" ")[0] for c in cells[2:]] == ["missed", "missed", "missed", "missed"]
    assert "C2 PCC" in cells[4]
    # the uncertainty table: unc_gain >= 0.05 and coverage in [0.85, 0.95] on every section
    unc = [line.strip("| ").split(" | ") for line in targets
           if line.startswith("| diffst") and "unc_gain" not in line and "C2 0.0" in line]
    assert unc == [["diffst", "C2", "reached (C2 0.080)", "reached (C2 0.900)"],
                   ["diffst-deep", "C2", "missed (C2 0.049)", "missed (C2 0.500)"]]
    assert not any("another section's H&E" in line for line in targets)


def test_seeds_summary_is_mean_and_sd_over_seeds_run_on_every_section(hq, c2_results,
                                                                       bench_genes):
    """Records of different seeds pool into mean +- sd; a seed missing a section is left out,
    and a seed met twice counts once."""
    seeds_mod = _module("ablation_seeds")
    records = []
    for seed, (c2, c3) in enumerate([(0.30, 0.20), (0.34, 0.26), (0.32, None)]):
        rec = _record(hq, c2_results, bench_genes)
        bic = rec["sections"]["C2"]["bicubic"]
        rec["sections"]["C2"]["diffst-deep"] = {**bic, "wPCC": c2, "options": {"seed": seed}}
        if c3 is not None:
            rec["sections"]["C3"] = {"diffst-deep": {**bic, "wPCC": c3, "options": {"seed": seed}}}
        records.append(rec)
    records.append(copy.deepcopy(records[0]))  # seed 0 again
    by_seed = seeds_mod.runs_by_seed(records)["single"]
    assert sorted(by_seed["diffst-deep"]) == [0, 1, 2]
    table = seeds_mod.summary(by_seed, ["C2", "C3"])["diffst-deep"]
    assert table["seeds"] == [0, 1]
    assert table["C2"] == pytest.approx((0.32, np.std([0.30, 0.34], ddof=1)))
    assert table["mean"] == pytest.approx((0.275, np.std([0.25, 0.30], ddof=1)))
    only_c2 = seeds_mod.summary(by_seed, ["C2"])["diffst-deep"]
    assert only_c2["seeds"] == [0, 1, 2] and only_c2["C2"][0] == pytest.approx(0.32)
    assert "| diffst-deep | 2 | 0.320 +- 0.028 |" in seeds_mod.markdown(
        {"single": {"diffst-deep": table}}, ["C2", "C3"], ["test"])


def test_what_a_part_adds_is_paired_by_seed(hq, c2_results, bench_genes):
    """A part's share is the network's mean less the variant's on the same seed: a seed the
    variant lacks does not count, and the spread between seeds does not enter the difference."""
    seeds_mod = _module("ablation_seeds")
    bic = _record(hq, c2_results, bench_genes)["sections"]["C2"]["bicubic"]
    records = []
    for seed, (full, without) in enumerate([(0.30, 0.25), (0.40, 0.33), (0.50, None)]):
        rec = _record(hq, c2_results, bench_genes)
        per = rec["sections"]["C2"]
        per["diffst-deep"] = {**bic, "wPCC": full, "options": {"seed": seed}}
        if without is not None:
            per["diffst-deep-no-graph"] = {**bic, "wPCC": without, "options": {"seed": seed}}
        per["diffst"] = {**bic, "wPCC": 0.45, "options": {"seed": seed}}
        records.append(rec)
    by_seed = seeds_mod.runs_by_seed(records)["single"]
    adds = seeds_mod.part_adds(by_seed, ["C2"])
    assert list(adds) == ["diffst-deep-no-graph"]  # the path alone is not a network's part
    assert adds["diffst-deep-no-graph"]["seeds"] == [0, 1]
    assert adds["diffst-deep-no-graph"]["adds"] == pytest.approx((0.06, np.std([0.05, 0.07],
                                                                               ddof=1)))
    table = seeds_mod.summary(by_seed, ["C2"])
    page = seeds_mod.markdown({"single": table}, ["C2"], ["test"], {"single": adds})
    assert "| diffst-deep-no-graph | 2 | 0.290 +- 0.057 | 0.290 +- 0.057 | 0.060 +- 0.014 |" in page
    assert "| diffst-deep | 3 | 0.400 +- 0.100 | 0.400 +- 0.100 | - |" in page


def test_ablations_switch_off_one_part_each(hq, her2st_c2, bench_genes, monkeypatch):
    from diffst_sc.module import NetConfig
    from diffst_sc.schedulers import DiffusionConfig

    fields = {f.name for f in dataclasses.fields(NetConfig)} | {
        f.name for f in dataclasses.fields(DiffusionConfig)}
    fields |= {"deep", "histology_path", "reference"}  # ds.tl.fit's own switches
    fields |= {"ungated"}  # the benchmark's own: residual_scale set to 1 after the fit
    deep = {"deep": True}
    expected = {"diffst": {}, "diffst-reference": {"reference": "leave-one-out"},
                "diffst-deep": deep,
                "diffst-deep-ungated": {**deep, "ungated": True},
                "diffst-deep-no-path": {**deep, "histology_path": False},
                "diffst-deep-regression": {**deep, "deterministic": True},
                "diffst-deep-no-disentangle": {**deep, "use_disentangle": False},
                "diffst-deep-no-cells": {**deep, "use_cell_attention": False},
                "diffst-deep-no-graph": {**deep, "use_gene_graph": False}}
    assert hq.DIFFST_VARIANTS == expected
    assert all(set(v) <= fields for v in expected.values())

    class Called(Exception):
        pass

    seen = {}

    def fake_fit(data, **kw):
        seen.update(kw)
        raise Called

    monkeypatch.setattr(hq.ds.tl, "fit", fake_fit)
    lr = hq.degrade_2x2(her2st_c2, bench_genes[:5])
    base = {"preset": "cpu-small", "max_steps": 3, "n_samples": 4, "steps": 2, "seed": 1}
    switches = {"deterministic", "use_disentangle", "use_cell_attention", "use_gene_graph",
                "deep", "histology_path"}
    for name, overrides in expected.items():
        if name == "diffst-reference":  # fits its reference on the other sections first
            continue
        seen.clear()
        with pytest.raises(Called):
            hq.predict(name, lr, bench_genes[:5], setting="single", others=list,
                       diffst_kw=base)
        # "ungated" is not fit's: run_diffst opens the gate after the fit
        assert {k: v for k, v in seen.items() if k in switches} == {
            k: v for k, v in overrides.items() if k != "ungated"}
        assert seen["max_steps"] == 3 and seen["seed"] == 1 and seen["genes"] == bench_genes[:5]
        n_samples = hq.diffst_options(name, base)["n_samples"]
        assert n_samples == (4 if overrides.get("deep") and not overrides.get("deterministic")
                             else 1)


def test_tiled_section_repeats_spots_and_blocks(her2st_c2):
    speed = _module("speed")
    one = section_view(her2st_c2)
    tiled = speed.tiled_section(her2st_c2, 2, he_downsample=8)
    view = section_view(tiled)
    assert view.n_spots == 4 * one.n_spots
    assert view.microns_per_pixel == pytest.approx(8 * one.microns_per_pixel)
    assert view.spacing_um == pytest.approx(one.spacing_um, rel=0.01)
    obs = view.adata.obs
    assert not obs.duplicated(["array_row", "array_col"]).any()
    # the second tile's spots sit one crop to the right, on the same tissue
    n = one.n_spots
    shift = view.centres_px[n:2 * n] - view.centres_px[:n]
    assert np.ptp(shift, axis=0) == pytest.approx([0, 0], abs=1e-6)
    img = np.asarray(tiled.images["he"]["scale0"]["image"].data)
    xy = np.round(view.centres_px).astype(int)
    np.testing.assert_array_equal(img[:, xy[:n, 1], xy[:n, 0]],
                                  img[:, xy[n:2 * n, 1], xy[n:2 * n, 0]])
    # each tile keeps the section's own 2 x 2 blocks
    genes = ["ERBB2"]
    lr_one = ds.pp.degrade(her2st_c2, mode="square", genes=genes)
    lr_tiled = ds.pp.degrade(tiled, mode="square", genes=genes)
    assert lr_tiled.tables["table"].n_obs == 4 * lr_one.tables["table"].n_obs


def test_xenium_baselines_score_through_evaluate(xenium_sdata):
    xen = _module("xenium")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pair = ds.pp.degrade(xenium_sdata, mode="transcripts", hr_pixel_um=4.0,
                             spot_diameter_um=20.0, spot_spacing_um=30.0)
    genes = ds.pp.select_genes(pair, n_top=10, table_key="table")
    scores = {}
    for method in ("nearest", "cubic"):
        xen.add_layer(pair, method, xen.baseline_layer(pair, genes, method), genes)
        scores[method] = xen.score(pair, method, genes)
    # a copy of the pseudo-spots adds nothing within them and integrates back to them
    assert scores["nearest"]["wPCC"] == pytest.approx(0.0, abs=1e-12)
    assert scores["nearest"]["consistency_error"] < 0.01
    assert scores["nearest"]["coverage"] is None
    assert scores["cubic"]["wPCC"] > 0.02


def test_profile_stages_name_the_functions_that_run(her2st_c2):
    """Every stage of the profile is found in a real (tiny) fit and superresolve."""
    from conftest import FIT_BUDGET, FIT_GENES, SAMPLING

    prof = _module("profiling")
    sdata = copy.deepcopy(her2st_c2)
    model, fit_s, fit_stats = prof.profiled(ds.tl.fit, sdata, genes=FIT_GENES, **FIT_BUDGET)
    model.residual_scale = 1.0  # a tiny fit's gate is closed; profile the network's map
    _, sr_s, sr_stats = prof.profiled(ds.tl.superresolve, sdata, model, **SAMPLING)
    for stats, stages, total in ((fit_stats, prof.FIT_STAGES, fit_s),
                                 (sr_stats, prof.SUPERRESOLVE_STAGES, sr_s)):
        rows = prof.stage_times(stats, stages)
        missing = [r["stage"] for r in rows if r["calls"] == 0]
        assert not missing, missing
        assert all(0 < r["seconds"] <= total * 1.05 for r in rows)
        top = prof.top_functions(stats, n=5)
        assert len(top) == 5 and top[0]["own_seconds"] >= top[-1]["own_seconds"]


def test_histology_ridges_reproduce_the_issue_figures_on_c2(hq, her2st_c2, bench_genes):
    """The quality issue's ridges (single section, C2): 0.431 with colour statistics, 0.457
    with the multi-scale and nuclear descriptors; both far above bicubic's 0.317."""
    baselines = _module("baselines")
    lr = hq.degrade_2x2(her2st_c2, bench_genes)
    for method, want in (("ridge-colour", 0.431), ("ridge-histology", 0.457)):
        pred = baselines.TRAINED_BASELINES[method](lr, bench_genes)
        got = baselines.score_predictions(lr, pred, bench_genes)["wPCC"]
        assert got == pytest.approx(want, abs=0.02), method


# --------------------------------------------------------------------------------------------
# uncertainty, another section's H&E, Visium CytAssist


def _fake_diffst(hq, baselines, std_of):
    """A stand-in for ``run_diffst``: bicubic's map as the mean, ``std_of(lr, mean, genes)``."""

    def fake(lr_sdata, train, genes, **kw):
        mean = baselines.bicubic(lr_sdata, genes)
        return hq.DiffSTPrediction(mean, std_of(lr_sdata, mean, genes), 0.0, 1.0, 1.0)

    return fake


def _oracle_std(lr_sdata, mean, genes):
    """A std that, once rescaled to the blocks, is the size of each spot's actual error."""
    from diffst_sc.metrics import renormalisation_factors

    sec = _module("baselines").DegradedSection.from_sdata(lr_sdata)
    lr_counts = sec.lr.expression(genes)
    factor, _ = renormalisation_factors(mean, sec.block, lr_counts)
    f = np.nan_to_num(factor, nan=1.0)
    err = np.abs(sec.hr.expression(genes) - mean * f)
    return (err + 0.3) / np.where(f > 0, f, 1.0)


def test_unc_gain_is_recorded_for_diffst_rows(hq, her2st_c2, bench_genes, monkeypatch):
    """Every Diff-ST row records unc_gain (mean and per gene) next to coverage; a std that is
    the real size of the errors reaches the target, one proportional to the mean does not."""
    baselines = _module("baselines")
    genes = bench_genes[:6]
    figures = {}
    for name, std_of in (("proportional", lambda lr, m, g: 0.5 * m), ("oracle", _oracle_std)):
        monkeypatch.setattr(hq, "run_diffst", _fake_diffst(hq, baselines, std_of))
        res = hq.run(["C2"], ["bicubic", "diffst"], "single", genes, Path("unused"), {},
                     loaded={"C2": her2st_c2})
        row = res["sections"]["C2"]["diffst"]
        assert len(row["per_gene"]["unc_gain"]) == len(genes)
        assert row["unc_gain"] == pytest.approx(np.mean(row["per_gene"]["unc_gain"]))
        assert res["mean"]["diffst"]["unc_gain"] == pytest.approx(row["unc_gain"])
        assert "unc_gain" not in res["sections"]["C2"]["bicubic"]
        figures[name] = (res, row["unc_gain"])
    assert figures["proportional"][1] <= 1e-9 < 0.05 < figures["oracle"][1]
    res, gain = figures["oracle"]
    page = hq.markdown(_record(hq, res, genes))
    assert "| coverage90 | unc_gain | genes |" in page
    assert f"| {gain:.3f} | 6 |" in page
    assert f"| diffst | C2 | reached (C2 {gain:.3f}) |" in page


def test_swap_sources_are_the_next_section_cyclically(hq):
    assert hq.swap_sources(["B4", "C2", "C3"]) == {"B4": "C2", "C2": "C3", "C3": "B4"}
    assert hq.swap_sources(["C2", "C3"]) == {"C2": "C3", "C3": "C2"}
    with pytest.raises(ValueError, match="two different sections"):
        hq.swap_sources(["C2"])
    with pytest.raises(SystemExit):
        hq.main(["--sections", "C2", "--swap-he", "--out", "unused"])


def test_swapped_section_has_the_other_image_resized_and_its_own_spots(hq, her2st_dir,
                                                                       her2st_c2):
    from PIL import Image

    swapped = hq.load_section(her2st_dir, "C2", he_from="C3")
    own, view = section_view(her2st_c2), section_view(swapped)
    assert view.image.shape == own.image.shape  # C3's image, resized to C2's 9911 x 9274
    with Image.open(her2st_dir / "C3" / "he.jpg") as c3:
        assert c3.size != own.image.shape[:0:-1]
    np.testing.assert_array_equal(view.centres_px, own.centres_px)
    assert view.microns_per_pixel == pytest.approx(own.microns_per_pixel)
    assert view.coordinate_system == own.coordinate_system
    x_own, x_swapped = own.adata.X, view.adata.X
    assert (abs(x_own - x_swapped)).sum() == 0
    # the pixels are C3's: compare the coarsest level of the pyramid with thumbnails of both
    levels = list(swapped.images["he"].keys())
    thumb = np.asarray(swapped.images["he"][levels[-1]]["image"].data, dtype=float)

    def thumbnail(section):
        with Image.open(her2st_dir / section / "he.jpg") as im:
            im.draft("RGB", (im.width // 8, im.height // 8))  # a fast reduced JPEG decode
            small = im.convert("RGB").resize(thumb.shape[:0:-1], Image.Resampling.BOX)
        return np.moveaxis(np.asarray(small, dtype=float), -1, 0)

    assert np.abs(thumb - thumbnail("C3")).mean() < 8  # about 3 grey levels
    assert np.abs(thumb - thumbnail("C2")).mean() > 20  # about 33


def test_swap_he_reads_every_section_with_the_next_ones_image(hq, her2st_c2, bench_genes,
                                                               monkeypatch):
    """Scored and training sections alike are read with the next section's H&E, once each."""
    baselines = _module("baselines")
    calls, trained_on = [], []

    def fake_load(data_dir, name, he_um=None, he_from=None):
        calls.append((name, he_from))
        return her2st_c2  # any real section: only who was asked for what matters here

    def fake_diffst(lr_sdata, train, genes, **kw):
        trained_on.append(train)
        return _fake_diffst(hq, baselines, lambda lr, m, g: np.sqrt(m))(lr_sdata, train, genes)

    monkeypatch.setattr(hq, "load_section", fake_load)
    monkeypatch.setattr(hq, "run_diffst", fake_diffst)
    genes = bench_genes[:4]
    res = hq.run(["C2", "C3"], ["bicubic", "diffst"], "across", genes, Path("unused"), {},
                 swap_he=True)
    assert sorted(calls) == [("C2", "C3"), ("C3", "C2")]
    assert res["he_swap"] == {"C2": "C3", "C3": "C2"}
    assert [len(t) for t in trained_on] == [1, 1] and trained_on[0][0] is her2st_c2
    record = _record(hq, res, genes, setting="across")
    page = hq.markdown(record)
    assert "H&E swapped: C2 with C3's, C3 with C2's" in page
    # bicubic's own map as the mean: no score is worse than bicubic's
    assert "| diffst | C2, C3 | reached (all) | reached (all) | reached (all) | reached (all) | " \
           "reached (0 of 8 worse) |" in page
    own_images = {**_record(hq, res, genes, setting="across"), "he_swap": None}
    with pytest.raises(ValueError, match="he_swap"):
        hq.merge_records(own_images, record)


def test_swap_targets_compare_every_score_with_bicubic(hq, c2_results, bench_genes):
    record = _record(hq, c2_results, bench_genes)
    record["he_swap"] = {"C2": "C3"}
    bic = record["sections"]["C2"]["bicubic"]
    # NRMSE higher is worse; wPCC lower is worse; equal after rounding is not worse
    record["sections"]["C2"]["diffst"] = {**bic, "NRMSE": bic["NRMSE"] + 0.002,
                                          "wPCC": bic["wPCC"] - 0.01, "PCC": bic["PCC"] + 1e-5,
                                          "options": {}}
    record["mean"] = hq.section_means(record["sections"])
    lines = [line for line in hq.target_rows(record) if line.startswith("| diffst")]
    cells = lines[-1].strip("| ").split(" | ")
    assert [c.split(" ")[0] for c in cells[2:]] == ["reached", "missed", "reached", "missed",
                                                    "missed"]
    assert "C2 0.134 vs 0.132" in cells[3] and "(2 of 4 worse)" in cells[6]


@pytest.fixture(scope="module")
def cytassist(shared_data):
    path = shared_data / "visium_cytassist_mouse_embryo"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return _module("visium_quality").read_slide(path)


def test_visium_hexagons_baselines_and_record(hq, cytassist, monkeypatch):
    """7-spot hexagons, SSIM on the offset layout, bicubic by griddata, unc_gain recorded."""
    vq = _module("visium_quality")
    baselines = _module("baselines")
    genes, note = vq.choose_genes(cytassist, n_genes=5, pool=100)
    assert len(genes) == 5 and "most variable" in note
    lr = vq.degrade_hex(cytassist, genes)
    sec = baselines.DegradedSection.from_sdata(lr)
    assert sec.is_hex and sec.n_children.max() == 7
    rows, cols = sec.grid_positions()
    assert len(set(zip(rows, cols, strict=True))) == sec.hr.n_spots  # one cell per spot
    monkeypatch.setattr(hq, "run_diffst", _fake_diffst(hq, baselines, lambda lr, m, g: m + 1))
    res = vq.run(cytassist, genes, ["uniform", "bicubic", "diffst"], {})
    got = res["sections"]["embryo"]
    assert res["data"]["spots_per_pseudo_spot"]["7"] > 0.6 * res["data"]["n_pseudo_spots"]
    assert got["uniform"]["wPCC"] == pytest.approx(0.0, abs=1e-12)
    assert got["bicubic"]["wPCC"] > 0.1 and got["bicubic"]["PCC"] > got["uniform"]["PCC"]
    assert np.isfinite(got["diffst"]["unc_gain"]) and 0 < got["diffst"]["coverage"] <= 1
    assert set(got["diffst"]["unc_gain_reference"]) == set(vq.REFERENCE_SPREADS)
    page = vq.markdown({"command": "test", "date": "today", "machine": "test",
                        "data_dir": "data", "gene_choice": note, "genes": genes, **res})
    assert "| embryo | diffst |" in page and "reached (0 of 4 worse)" in page
    assert "unc_gain >= 0.05, every section" in page
