"""analysis: tables, figures and the HTML report on run folders made by hand (no Ray, no training)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import (
    DIFF,
    IMAGES,
    TEST_B1,
    TEST_GAIN,
    journal,
    make_run,
    per_image_rows,
    scored_on_test,
    trial,
    trial_rows,
)
from scipy import stats

import analysis
from analysis import figures, tables
from analysis.report import export_tables, main, write_report


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def study(run):
    return analysis.load(run)


# ---------------------------------------------------------------- tables


def test_confidence_interval_by_hand(study):
    summary = tables.method_summary(study).set_index("variant")
    base = summary.loc["baseline"]
    assert base["chosen_trial"] == "b1" and base["ci_from"] == "per_image" and base["seeds"] == 3
    assert base["miou_img"] == pytest.approx(0.6)
    assert base["miou_img_ci"] == pytest.approx(stats.t.ppf(0.975, 2) * 0.1 / math.sqrt(3))
    assert base["hp_acc"] == pytest.approx(1 / 12)  # only 0.8 of seed 2 is above 0.75
    assert base["var"] == pytest.approx(0.005)  # population variance per seed, equal on every seed
    assert base["var_ci"] == pytest.approx(0.0, abs=1e-12)
    # miou comes from the trials table: the stored sd is the population sd over the 3 seeds
    assert base["miou"] == pytest.approx(0.62)
    assert base["miou_ci"] == pytest.approx(stats.t.ppf(0.975, 2) * 0.05 * math.sqrt(3 / 2) / math.sqrt(3))
    assert base["params"] == 1_000_000 and base["gflops"] == pytest.approx(2.5)
    assert (base["trials"], base["completed"], base["failed"]) == (2, 2, 0)
    assert summary.loc["sd", "failed"] == 1 and summary.loc["sd", "chosen_trial"] == "s1"
    assert "feature_lr=0.003" in summary.loc["sd", "hyperparameters"]
    assert ", r=" not in summary.loc["sd", "hyperparameters"]  # NaN: sd has no r


def test_mean_ci_edge_cases():
    assert tables.mean_ci([0.5, 0.6, 0.7])[1] == pytest.approx(stats.t.ppf(0.975, 2) * 0.1 / math.sqrt(3))
    mean, half = tables.mean_ci([0.4])
    assert mean == 0.4 and math.isnan(half)
    assert all(math.isnan(v) for v in tables.mean_ci([]))


def test_chosen_trial_is_direction_aware(run):
    study = analysis.load(run)
    assert dict(tables.chosen_trials(study, "val")[["method", "trial_id"]].values) == {
        "baseline": "b1",
        "sd": "s1",
        "esd": "e1",
    }  # all esd have miou_img 0.5: the first
    study.config["objectives"] = ["var", "miou_img"]  # var is minimised
    assert dict(tables.chosen_trials(study, "val")[["method", "trial_id"]].values) == {
        "baseline": "b2",
        "sd": "s1",
        "esd": "e3",
    }


def test_wilcoxon_and_rank_biserial_by_hand():
    d = [1.0, 2.0, -3.0, 4.0, 0.0]
    p, effect = tables.wilcoxon_rank_biserial(d)
    assert p == pytest.approx(stats.wilcoxon(d).pvalue)
    assert effect == pytest.approx((7 - 3) / 10)  # ranks of |d| without the zero: 1, 2, 3, 4; R- = 3
    assert tables.wilcoxon_rank_biserial([0.0, 0.0, 0.0]) == (1.0, 0.0)
    tied = [0.5, -0.5, 1.0, 2.0, 2.0, -1.5, 0.25, 0.75, -2.0, 3.0, 0.1, 0.2]  # ties: the permutation test
    assert tables.wilcoxon_rank_biserial(tied)[0] == stats.wilcoxon(tied).pvalue


def test_paired_comparison(study):
    paired = tables.paired_comparison(study).set_index("variant")
    assert "baseline" not in paired.index
    sd = paired.loc["sd"]
    merged = study.per_image[study.per_image.trial_id == "s1"].merge(
        study.per_image[study.per_image.trial_id == "b1"], on=["seed", "image_id"]
    )
    d = (merged["miou_x"] - merged["miou_y"]).to_numpy()
    assert sd["split"] == "val"  # nothing scored on test: the validation rows, labelled
    assert sd["n_pairs"] == 12 and sd["baseline_trial"] == "b1"
    assert sd["image_mean_diff"] == pytest.approx(np.mean(DIFF))
    assert sd["image_p_value"] == pytest.approx(stats.wilcoxon(d).pvalue)
    nonzero = d[np.abs(d) > 1e-12]
    ranks = stats.rankdata(np.abs(nonzero))
    assert sd["effect_size"] == pytest.approx(
        (ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum()) / ranks.sum()
    )
    # one miou_img per seed, paired by seed: the means of DIFF's seed-major chunks of four
    per_seed = np.asarray(DIFF).reshape(3, 4).mean(axis=1)
    assert sd["n_seeds"] == 3
    assert sd["mean_diff"] == pytest.approx(per_seed.mean())
    assert sd["sd_diff"] == pytest.approx(per_seed.std(ddof=1))
    assert sd["p_value"] == pytest.approx(stats.ttest_rel(per_seed + 0.6, np.full(3, 0.6)).pvalue)
    assert sd["better"] == "sd"


def test_paired_comparison_adjusts_across_variants_and_counts_seeds(study):
    paired = tables.paired_comparison(study).set_index("variant")
    assert set(paired.index) == {"sd", "esd"}
    p = paired["p_value"].to_numpy()
    low, high = np.argsort(p)
    # Holm by hand: the smallest p times 2, the next times 1, never below the previous
    assert paired["p_adjusted"].iloc[low] == pytest.approx(min(1, 2 * p[low]))
    assert paired["p_adjusted"].iloc[high] == pytest.approx(max(min(1, 2 * p[low]), p[high]))
    assert list(paired["significant"]) == [bool(v < 0.05) for v in paired["p_adjusted"]]
    # the seeds needed: a paired t-test of that many seeds has at least 80 % power, one fewer has less
    per_seed = np.asarray(DIFF).reshape(3, 4).mean(axis=1)
    n, effect = int(paired.loc["sd", "seeds_needed"]), per_seed.mean() / per_seed.std(ddof=1)

    def power(k):
        t = stats.t.ppf(0.975, k - 1)
        return stats.nct.sf(t, k - 1, effect * math.sqrt(k)) + stats.nct.cdf(-t, k - 1, effect * math.sqrt(k))

    assert power(n) >= 0.8 and (n == 2 or power(n - 1) < 0.8)


def test_seed_level_edge_cases():
    assert math.isnan(tables.paired_t([0.1]))
    assert tables.paired_t([0.0, 0.0, 0.0]) == 1.0 and tables.paired_t([0.1, 0.1]) == 0.0
    assert math.isnan(tables.seeds_needed([0.1])) and math.isnan(tables.seeds_needed([0.1, -0.1]))
    assert tables.seeds_needed([0.1, 0.1, 0.1]) == 2
    assert tables.seeds_needed([0.001, -0.1, 0.1, -0.2, 0.2001]) == math.inf  # beyond MAX_SEEDS
    adjusted = tables.holm([0.01, math.nan, 0.04])
    assert (
        adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.04)
    )


def test_paired_comparison_without_baseline(tmp_path):
    rows = [r for r in trial_rows() if r["method"] != "baseline"]
    study = analysis.load(make_run(tmp_path, rows=rows, with_journal=False))
    paired = tables.paired_comparison(study)
    assert paired.empty and list(paired.columns) == tables.PAIRED_COLUMNS
    assert "baseline" in paired.attrs["note"]


def grid_run(root: Path) -> Path:
    """ESD at three r in one grid, as the driver wrote tables before every row named its variant."""
    rows = [trial("b1", "baseline", miou_img=0.6), trial("s1", "sd", miou_img=0.7)]
    rows += [
        trial(
            t,
            "esd",
            r=r,
            variant=f"esd r={r:g}",
            miou_img=m,
            hp_acc=h,
            var=v,
            predictions=f"predictions/{t}.npz",
        )
        for t, r, m, h, v in (
            ("e1", 3.0, 0.65, 0.2, 0.006),
            ("e2", 0.0, 0.5, 0.1, 0.009),
            ("e3", 1.0, 0.75, 0.25, 0.004),
        )
    ]
    config = {
        "sampler": "grid",
        "teacher": "deeplabv3_efficientnet_lite0",
        "space": {"esd": {"r": {"choices": [3.0, 0.0, 1.0]}}},
    }
    return make_run(root, rows=rows, config=config, with_journal=False)


def test_a_grid_summarises_each_variant_on_its_own(tmp_path):
    """One summary row, one comparison, one colour and one entry in every figure per grid point."""
    study = analysis.load(grid_run(tmp_path))
    variants = ["baseline", "sd", "esd r=3", "esd r=0", "esd r=1"]
    assert tables.ordered_variants(study) == variants
    summary = tables.method_summary(study).set_index("variant")
    assert list(summary.index) == variants and summary.loc["esd r=0", "method"] == "esd"
    assert summary.loc["esd r=0", "chosen_trial"] == "e2" and summary.loc["esd r=0", "trials"] == 1
    assert (
        summary.loc["esd r=0", "hyperparameters"] == "split_point=stage5, r=0"
    )  # where it ran is no hyperparameter
    assert summary.loc["esd r=1", "miou_img"] == pytest.approx(np.mean([s for s in per_image_scores("e3")]))
    paired = tables.paired_comparison(study)
    assert sorted(paired["variant"]) == ["esd r=0", "esd r=1", "esd r=3", "sd"]
    assert len(set(figures.variant_colors(study)[n] for n in variants)) == 5
    assert [t.name for t in figures.hp_acc_vs_var(study).data] == [f"{v} (val)" for v in variants]
    hist = [t.name for t in figures.per_image_histograms(study).data]
    assert hist == ["baseline (b1)", "sd (s1)", "esd r=3 (e1)", "esd r=0 (e2)", "esd r=1 (e3)"]
    for build in (figures.miou_vs_gflops, figures.pareto_front, figures.esd_ratio):
        names = {re.sub(r" \((Pareto front|val)\)$", "", trace.name) for trace in build(study).data}
        assert {"esd r=0", "esd r=1", "esd r=3"} <= names and "esd" not in names, build.__name__


def test_tables_with_a_variant_on_every_row_read_as_before(tmp_path):
    """The driver now names every row's variant (the method off a grid): the same summaries as from the
    older tables that named grid points only, or had no variant column at all."""
    for k, make in enumerate((grid_run, lambda root: make_run(root, with_journal=False))):
        before, after = make(tmp_path / f"before{k}"), make(tmp_path / f"after{k}")
        trials = pd.read_parquet(after / "trials.parquet")
        named = trials.get("variant", trials["method"]).fillna(trials["method"])
        trials.assign(variant=named).to_parquet(after / "trials.parquet")
        before, after = analysis.load(before), analysis.load(after)
        assert analysis.variants(after.trials).tolist() == analysis.variants(before.trials).tolist()
        pd.testing.assert_frame_equal(tables.method_summary(before), tables.method_summary(after))
        pd.testing.assert_frame_equal(tables.paired_comparison(before), tables.paired_comparison(after))


def test_a_grid_study_counts_its_points(tmp_path):
    page = write_report(grid_run(tmp_path)).read_text()
    assert "5 completed, 0 failed, 0 stopped, 0 running or not started, of 5 requested" in page


def test_the_teacher_is_the_reference_in_header_and_export(tmp_path):
    run = make_run(tmp_path / "run", with_journal=False)
    assert analysis.load(run).teacher() is None and "– (not recorded)" in write_report(run).read_text()
    (run / "teacher.json").write_text(
        json.dumps(
            {
                "name": "deeplabv3_lite0",
                "miou": 0.8123,
                "miou_img": 0.79,
                "hp_acc": 0.6,
                "var": 0.0123,
                "params": 3_400_000,
                "flops": 2.75e9,
            }
        )
    )
    line = (
        "deeplabv3_lite0 on the validation images: miou 0.812, miou_img 0.790, hp_acc 0.600, var 0.0123; "
        "3.4 M params, 2.75 GFLOPs"
    )
    assert line in write_report(run).read_text()
    from analysis.report import teacher_line

    assert teacher_line(analysis.load(run).teacher()) == line
    record = json.loads((run / "teacher.json").read_text())
    record["test"] = {"miou": 0.7, "miou_img": 0.71, "hp_acc": 0.5, "var": 0.02}  # after selection
    (run / "teacher.json").write_text(json.dumps(record))
    assert teacher_line(analysis.load(run).teacher()) == line.replace(
        "; 3.4 M", "; on the test images: miou 0.700, miou_img 0.710, hp_acc 0.500, var 0.0200; 3.4 M"
    )


def test_export_into_a_folder_that_cannot_be_made_says_so(tmp_path, capsys):
    run = make_run(tmp_path / "run", with_journal=False)
    (tmp_path / "a_file").write_text("")
    assert main([str(run), "--export", str(tmp_path / "a_file" / "figures")]) == 2
    err = capsys.readouterr().err
    assert "cannot export into" in err and "a_file/figures" in err and "Traceback" not in err
    assert (run / "report.html").is_file()  # the report itself is written before the export


def per_image_scores(trial_id):
    """Each seed's mean mIoU_i of a trial in per_image_rows()."""
    frame = pd.DataFrame(per_image_rows())
    return frame[frame["trial_id"] == trial_id].groupby("seed")["miou"].mean().tolist()


def test_failed_trials(study):
    failed = tables.failed_trials(study)
    assert failed["trial_id"].tolist() == ["s2"]
    assert (
        "NonFiniteLossError" in failed.loc[0, "error"]
        and "feature_lr=0.9" in failed.loc[0, "hyperparameters"]
    )


def test_pareto_mask_by_hand():
    points = [
        [0.6, 0.3, 0.01],  # front
        [0.5, 0.2, 0.02],  # dominated by the first
        [0.7, 0.1, 0.03],  # front: best miou_img
        [0.6, 0.3, 0.01],  # a duplicate of a front point is not dominated by it
        [np.nan, 0.9, 0.0],  # NaN: never on the front
        [0.55, 0.35, 0.005],  # front
        [0.6, 0.3, 0.02],
    ]  # dominated by the first: same accuracy, larger var
    mask = figures.pareto_mask(points, [True, True, False])
    assert mask.tolist() == [True, False, True, True, False, True, False]


@pytest.fixture(scope="module")
def tested(tmp_path_factory):
    return analysis.load(scored_on_test(make_run(tmp_path_factory.mktemp("tested"), with_journal=False)))


def test_once_scored_on_test_the_tables_report_test(tested):
    assert tables.reported_split(tested) == "test"
    assert set(tested.per_image["image_id"]) == set(IMAGES)  # selection rows stay apart
    summary = tables.method_summary(tested).set_index("variant")
    base, sd, esd = summary.loc["baseline"], summary.loc["sd"], summary.loc["esd"]
    assert set(summary["split"]) == {"test"} and base["ci_from"] == "final"
    per_seed = [np.mean(v) for v in TEST_B1.values()]
    assert base["miou_img"] == pytest.approx(np.mean(per_seed))
    assert base["miou_img_ci"] == pytest.approx(tables.mean_ci(per_seed)[1])
    assert base["miou"] == pytest.approx(0.41)  # from final.parquet, not the trials table's 0.62
    assert base["selection_score"] == pytest.approx(0.6)  # what chose it: miou_img on validation
    assert sd["miou_img"] == pytest.approx(np.mean(per_seed) + np.mean(list(TEST_GAIN.values())))
    assert pd.isna(esd["chosen_trial"]) and pd.isna(esd["miou_img"])  # not scored: no number, not val's
    on_val = tables.method_summary(tested, "val").set_index("variant")
    assert (
        on_val.loc["baseline", "miou_img"] == pytest.approx(0.6) and on_val.loc["esd", "chosen_trial"] == "e1"
    )


def test_once_scored_on_test_the_comparison_is_on_test(tested):
    paired = tables.paired_comparison(tested).set_index("variant")
    assert list(paired.index) == ["sd"]  # esd has no test scores
    sd = paired.loc["sd"]
    gains = np.array(list(TEST_GAIN.values()))
    assert sd["split"] == "test" and sd["n_seeds"] == 3 and sd["n_pairs"] == 9
    assert sd["mean_diff"] == pytest.approx(gains.mean()) and sd["sd_diff"] == pytest.approx(
        gains.std(ddof=1)
    )
    assert sd["p_value"] == pytest.approx(stats.ttest_1samp(gains, 0).pvalue)
    assert sd["p_adjusted"] == pytest.approx(sd["p_value"])  # one comparison: Holm changes nothing
    assert sd["image_mean_diff"] == pytest.approx(gains.mean())


def test_the_comparison_can_pair_the_pooled_miou_on_test(tmp_path):
    pooled_gain = {seed: 0.01 * (seed + 1) for seed in TEST_B1}  # not TEST_GAIN, s1's images' gain
    study = analysis.load(scored_on_test(make_run(tmp_path, with_journal=False), pooled_gain))
    sd = tables.paired_comparison(study, metric="miou").set_index("variant").loc["sd"]
    expected = np.array(list(pooled_gain.values()))
    assert sd["mean_diff"] == pytest.approx(expected.mean())
    assert sd["p_value"] == pytest.approx(stats.ttest_1samp(expected, 0).pvalue)
    assert sd["image_mean_diff"] == pytest.approx(np.mean(list(TEST_GAIN.values())))  # images: as before
    with pytest.raises(ValueError, match="test images only"):
        tables.paired_comparison(study, split="val", metric="miou")
    with pytest.raises(ValueError, match="choose one of"):
        tables.paired_comparison(study, metric="accuracy")


def test_once_scored_on_test_results_figures_use_test_and_say_so(tested, tmp_path):
    hist = figures.per_image_histograms(tested)
    assert sorted(hist.data[0].x) == sorted(v for s in TEST_B1.values() for v in s)
    assert "test images" in hist.layout.xaxis.title.text
    cost = figures.miou_vs_gflops(tested)
    assert [t.name for t in cost.data] == ["baseline", "sd"] and cost.data[0].y[0] == pytest.approx(0.41)
    names = [t.name for t in figures.hp_acc_vs_var(tested).data]
    assert names == ["baseline (val)", "sd (val)", "esd (val)", "baseline (test)", "sd (test)"]
    test_sd = next(t for t in figures.hp_acc_vs_var(tested).data if t.name == "sd (test)")
    assert test_sd.marker.symbol == "diamond" and "trial s1" in test_sd.text[0]
    page = write_report(tested.run_dir, tmp_path / "report.html").read_text()
    assert "Per-image mIoU of the chosen trials (test images)" in page
    assert "Pareto front (validation images)" in page
    assert "HP-Acc against Var (validation: every trial; test: chosen trials)" in page
    assert "Not scored on the test images: esd." in page
    assert "<b>test images</b>" in page and "p adj. (Holm)" in page


def test_before_test_scoring_the_report_says_its_numbers_are_validation(study, tmp_path):
    page = write_report(study.run_dir, tmp_path / "report.html").read_text()
    assert "Not yet scored on the test images" in page and "<b>validation images</b>" in page
    assert "Per-image mIoU of the chosen trials (validation images)" in page


# ---------------------------------------------------------------- figures


def test_hp_acc_vs_var_numbers(study):
    fig = figures.hp_acc_vs_var(study)
    esd = next(t for t in fig.data if t.name == "esd (val)")
    assert list(esd.x) == [0.006, 0.009, 0.004] and list(esd.y) == [0.2, 0.1, 0.25]
    assert "trial e1" in esd.text[0] and "r=3" in esd.text[0] and "method esd" in esd.text[0]
    assert {t.name for t in fig.data} == {"baseline (val)", "sd (val)", "esd (val)"}


def test_esd_ratio_sorted(study):
    fig = figures.esd_ratio(study)
    miou, hp_acc = fig.data
    assert list(miou.x) == [0.0, 1.0, 3.0] and list(miou.y) == [0.45, 0.60, 0.55]
    assert list(miou.error_y.array) == [0.03, 0.01, 0.02]
    assert list(hp_acc.y) == [0.1, 0.25, 0.2]


def test_other_figures(study):
    hist = figures.per_image_histograms(study)
    assert len(next(t for t in hist.data if t.name.startswith("baseline")).x) == 12
    front = figures.pareto_front(study)
    assert any("Pareto front" in t.name for t in front.data)
    cost = figures.miou_vs_gflops(study)
    sd = next(t for t in cost.data if t.name == "sd")
    assert list(sd.x) == [1.0] and list(sd.y) == [0.5]
    samples = figures.segmentation_samples(study)
    images = [t for t in samples.data if t.type == "image"]
    assert len(images) == 4 * 5  # rows: the first 3 images + img3 (hardest for esd); columns: 2 + 3 methods
    assert all(t.source.startswith("data:image/png;base64,") for t in images)
    curves = figures.curves(study)
    assert {t.name for t in curves.data} == {"baseline", "sd", "esd"}
    names = [a.text for a in curves.layout.annotations]
    assert "loss_kd" in names and "miou" in names and "var" not in names  # all-NaN columns left out


def test_segmentation_samples_rows(study):
    # The hardest image at seed 0: b1 img0 (0.4), s1 img2 (0.45), both among the first three; e1 img3.
    fig = figures.segmentation_samples(study)
    titles = [a.text for a in fig.layout.annotations]
    assert titles[0].startswith("img0") and "hardest for baseline" in titles[0]
    assert "hardest for sd" in titles[2 * 5] and titles[3 * 5] == "img3 hardest for esd"


def test_colorize_void_is_black():
    rgb = figures.colorize(np.array([[0, 1, 255]], dtype=np.uint8))
    assert rgb[0, 2].tolist() == [0, 0, 0] and rgb[0, 0].tolist() != rgb[0, 1].tolist()


def test_optuna_figures(study, tmp_path):
    drawn = dict(figures.optuna_figures(study))
    assert set(drawn) == {"Optimisation history", "Parallel coordinates", "Parameter importances"}
    assert not isinstance(drawn["Optimisation history"], str)
    multi = make_run(
        tmp_path / "multi",
        trials=False,
        per_image=False,
        curves=False,
        samples=False,
        predictions=False,
        with_journal=False,
        config={"objectives": ["miou_img", "var"]},
    )
    journal(multi / "optuna.journal", "hand", directions=("maximize", "minimize"))
    parts = figures.optuna_figures(analysis.load(multi))
    assert not isinstance(dict(parts)["Optimisation history"], str)  # target= given for multi-objective
    failed = make_run(tmp_path / "failed", with_journal=False)
    journal(failed / "optuna.journal", "hand", n_trials=2, fail=True)
    parts = figures.optuna_figures(analysis.load(failed))  # nothing to draw: notes, no exception
    assert len(parts) == 3 and all(isinstance(part, str) for _, part in parts)
    other = analysis.load(failed)
    other.config["name"] = "another study"
    [(title, note)] = figures.optuna_figures(other)
    assert "could not be read" in note


def test_figures_none_when_nothing_to_draw(tmp_path):
    study = analysis.load(
        make_run(
            tmp_path,
            trials=False,
            per_image=False,
            curves=False,
            samples=False,
            predictions=False,
            with_journal=False,
        )
    )
    for build in (
        figures.hp_acc_vs_var,
        figures.esd_ratio,
        figures.per_image_histograms,
        figures.pareto_front,
        figures.miou_vs_gflops,
        figures.segmentation_samples,
        figures.curves,
    ):
        assert build(study) is None
    assert figures.optuna_figures(study) == []


# ---------------------------------------------------------------- report

PLOTLY_JS = re.compile(r"<script>/\*\*\s*\* plotly\.js v.*?</script>", re.S)


def test_report_is_self_contained(run):
    path = write_report(run)
    assert path == run / "report.html"
    page = path.read_text()
    assert page.count("* plotly.js v") == 1
    rest = PLOTLY_JS.sub("", page)  # plotly.js's own source names map-tile servers it never uses here
    assert "cdn." not in rest and "https://cdn" not in rest and "https://" not in rest
    assert "<script src" not in page.lower()
    expected = int(re.search(r'data-expected="(\d+)"', page).group(1))
    assert expected == rest.count('class="plotly-graph-div"') == 7 + 3
    for text in (
        "Study hand",
        "6 completed, 1 failed",
        "3 running or not started",
        "NonFiniteLossError",
        "0.600 ± 0.248",
    ):
        assert text in page


@pytest.mark.parametrize("case", ["empty", "partial", "all_failed", "one_method", "no_baseline"])
def test_partial_studies_give_a_report(tmp_path, case):
    if case == "empty":
        run = tmp_path / "run"
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"name": "empty", "methods": ["baseline"], "trials": 4}))
        notes = ["No completed trials yet", "0 completed, 0 failed, 0 stopped, 4 running", "No failed trials"]
    elif case == "partial":
        run = make_run(
            tmp_path / "run",
            per_image=False,
            curves=False,
            samples=False,
            predictions=False,
            with_journal=False,
        )
        notes = ["trials table", "has no per-image scores", "No per-image scores of a chosen trial yet"]
        summary = tables.method_summary(analysis.load(run)).set_index("variant")
        assert summary.loc["baseline", "miou_img_ci"] == pytest.approx(
            stats.t.ppf(0.975, 2) * 0.01 * math.sqrt(3 / 2) / math.sqrt(3)
        )
    elif case == "all_failed":
        rows = [
            trial(f"f{i}", m, "failed", lr=0.1, error=f"RuntimeError: boom {i}")
            for i, m in enumerate(["baseline", "sd"])
        ]
        run = make_run(tmp_path / "run", rows=rows, per_image=False, curves=False, with_journal=False)
        notes = ["No completed trials yet", "RuntimeError: boom 1", "0 completed, 2 failed"]
    elif case == "one_method":
        rows = [r for r in trial_rows() if r["method"] == "esd"]
        run = make_run(tmp_path / "run", rows=rows, config={"methods": ["esd"]})
        notes = ["No trial of the &#x27;baseline&#x27; variant", "No failed trials"]
    else:
        rows = [r for r in trial_rows() if r["method"] != "baseline"]
        run = make_run(tmp_path / "run", rows=rows, config={"methods": ["sd", "esd"]}, with_journal=False)
        notes = ["No trial of the &#x27;baseline&#x27; variant", "No Optuna journal"]
    page = write_report(run).read_text()
    for note in notes:
        assert note in page, note
    assert page.rstrip().endswith("</html>")


def test_main_writes_and_prints(run, tmp_path, capsys):
    out = tmp_path / "elsewhere" / "r.html"
    assert main([str(run), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out) and out.is_file()
    assert main([str(tmp_path / "missing")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_module_entry_point_missing_folder(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "analysis.report", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 2 and "not a folder" in done.stderr and "Traceback" not in done.stderr
    assert "RuntimeWarning" not in done.stderr


def test_the_committed_tables_alone_rebuild_every_table(tmp_path):
    # docs/results/<study>/ holds only the tables (no images: their licence); RESULTS.md's numbers
    # must come back from those files alone, identical to the full run folder's. The markdown that
    # --export writes is compared (its PNGs are tested in test_report_browser.py).
    full = make_run(tmp_path / "full", with_journal=False)
    tables_only = tmp_path / "tables"
    tables_only.mkdir()
    scored_on_test(full)
    for name in ("config.json", "trials.parquet", "per_image.parquet", "curves.parquet", "final.parquet"):
        (tables_only / name).write_bytes((full / name).read_bytes())
    rebuilt = export_tables(analysis.load(tables_only), ("baseline",))
    assert rebuilt == export_tables(analysis.load(full), ("baseline",)) and "| esd |" in rebuilt
    assert "## Methods on the test images" in rebuilt


def test_committed_tables_state_their_bank_of_views():
    # camvid-sd was trained on a bank of 2 views per image; its tables and report say so
    study = analysis.load(Path(__file__).resolve().parents[1] / "docs/results/camvid-sd")
    assert set(study.trials["views"]) == {"2"} and set(study.final["views"]) == {"2"}
    assert "Training views: a fixed bank of 2" in export_tables(study, ("baseline",))


def test_degenerate_trials_steps_and_stage1_ratio_reach_the_summary_and_report(tmp_path):
    rows = trial_rows()
    for row in rows:
        row.update(degenerate=False)
    b1 = next(row for row in rows if row["trial_id"] == "b1")
    b1.update(degenerate=True, steps_train=1600)  # the baseline's chosen trial predicts one class
    s1 = next(row for row in rows if row["trial_id"] == "s1")
    s1.update(stage1_feature_ratio=0.45, steps_feature=640, steps_frozen=640, steps_finetune=320)
    run = make_run(tmp_path / "run", rows=rows, with_journal=False)
    study = analysis.load(run)
    summary = tables.method_summary(study).set_index("variant")
    assert summary.loc["baseline", "degenerate"] == 1 and summary.loc["baseline", "chosen_degenerate"]
    assert summary.loc["sd", "degenerate"] == 0 and not summary.loc["sd", "chosen_degenerate"]
    assert summary.loc["sd", "stage1_feature_ratio"] == pytest.approx(0.45)
    assert "steps_feature" not in tables.hyperparameters(study.trials)
    html = write_report(run).read_text()
    assert "b1 DEGENERATE" in html and "feature 640, frozen 640, finetune 320" in html


def test_the_mechanism_section_sets_stage_1_images_against_test_images_and_shadow_against_sun(tmp_path):
    rows = trial_rows()
    s1 = next(row for row in rows if row["trial_id"] == "s1")
    s1.update(stage1_feature_ratio=0.45, stage1_feature_ratio_test=0.9)
    run = scored_on_test(make_run(tmp_path / "run", rows=rows, with_journal=False))
    final = pd.read_parquet(run / "final.parquet")
    final["miou_shadow"] = 0.5 + final["seed"] / 100
    final["miou_sunlit"] = 0.8
    final.to_parquet(run / "final.parquet")
    teacher = {
        "name": "t",
        "miou_img": 0.7,
        "test": {"miou_img": 0.7, "miou_shadow": 0.6, "miou_sunlit": 0.9},
    }
    (run / "teacher.json").write_text(json.dumps(teacher))
    study = analysis.load(run)
    mechanism = tables.mechanism(study).set_index("variant")
    assert list(mechanism.index) == ["teacher", "baseline", "sd"]  # esd: not scored on test
    assert mechanism.loc["teacher", "shadow_gap"] == pytest.approx(0.3)
    sd = mechanism.loc["sd"]
    assert (sd["stage1_feature_ratio"], sd["stage1_feature_ratio_test"]) == (0.45, 0.9)
    shadow = [0.5 + seed / 100 for seed in sorted(study.final.loc[study.final["trial_id"] == "s1", "seed"])]
    assert (sd["miou_shadow"], sd["miou_shadow_ci"]) == pytest.approx(tables.mean_ci(shadow))
    assert sd["shadow_gap"] == pytest.approx(0.8 - np.mean(shadow))
    assert pd.isna(mechanism.loc["baseline", "stage1_feature_ratio"])  # no feature stage
    html = write_report(run).read_text()
    assert "Mechanism: stage 1 and shadows" in html and "stage-1 feature ratio, test images" in html
    assert "Mechanism: stage 1 and shadows" in export_tables(study)
    # a study that records none of it (real data, no feature stage) shows no such section
    plain = analysis.load(scored_on_test(make_run(tmp_path / "plain", with_journal=False)))
    assert tables.mechanism(plain).empty and "Mechanism" not in write_report(plain.run_dir).read_text()


def test_the_seed_table_holds_every_seed_behind_the_intervals(study):
    seeds = tables.seed_table(study)
    assert list(dict.fromkeys(seeds["variant"])) == ["baseline", "sd", "esd"]
    base = seeds[seeds["variant"] == "baseline"].set_index("seed")
    assert base["trial_id"].unique().tolist() == ["b1"] and set(base["split"]) == {"val"}
    assert base["miou_img"].tolist() == pytest.approx([0.5, 0.6, 0.7])
    sd = seeds[seeds["variant"] == "sd"].set_index("seed")["miou_img"]
    assert sd.tolist() == pytest.approx(
        np.array([0.5, 0.6, 0.7]) + np.asarray(DIFF).reshape(3, 4).mean(axis=1)
    )
    summary = tables.method_summary(study).set_index("variant")
    assert summary.loc["sd", "miou_img"] == pytest.approx(sd.mean())


def stage_curves(trial_id, method, stage_scores):
    """Two seeds; stage i's last epoch ends the stage, scored with stage_scores[i][seed] (None: not
    scored, as SD's feature stage)."""
    rows = []
    for seed in (0, 1):
        for index, scores in enumerate(stage_scores):
            for stage_epoch in (0, 1):
                last = stage_epoch == 1
                score = scores[seed] if last and scores is not None else np.nan
                rows.append(
                    {
                        "trial_id": trial_id,
                        "method": method,
                        "seed": seed,
                        "stage": ("feature", "frozen", "finetune")[index],
                        "stage_index": index,
                        "stage_epoch": stage_epoch,
                        "epoch": 2 * index + stage_epoch,
                        "stage_end": "max" if last else None,
                        "miou_img": score,
                        "hp_acc": score / 2 if not np.isnan(score) else np.nan,
                    }
                )
    return rows


def test_stage_ends_show_whether_a_later_stage_helped(tmp_path):
    run = make_run(tmp_path / "run", with_journal=False)
    rows = stage_curves("s1", "sd", [None, [0.8, 0.7], [0.6, 0.7]]) + stage_curves(
        "b1", "baseline", [[0.5, 0.6]]
    )
    rows += stage_curves("s2", "sd", [None, [0.9, 0.9], [0.9, 0.9]])  # not sd's chosen trial
    pd.DataFrame(rows).to_parquet(run / "curves.parquet")
    ends = tables.stage_ends(analysis.load(run))
    assert ends["variant"].tolist() == ["sd", "sd"]  # the baseline has one stage; s2 is not chosen
    assert ends["stage"].tolist() == ["frozen", "finetune"] and ends["seeds"].tolist() == [2, 2]
    assert ends["miou_img"].tolist() == pytest.approx([0.75, 0.65])
    assert ends["miou_img_ci"].tolist() == pytest.approx(
        [stats.t.ppf(0.975, 1) * math.sqrt(0.005) / math.sqrt(2)] * 2
    )
    assert ends["hp_acc"].tolist() == pytest.approx([0.375, 0.325])
    assert tables.stage_ends(analysis.load(make_run(tmp_path / "plain", with_journal=False))).empty


def test_export_has_seeds_stage_ends_and_a_section_per_reference(tmp_path, capsys, monkeypatch):
    # The tables are the subject: no figures are drawn (test_report_browser.py draws them as PNGs).
    monkeypatch.setattr(analysis.report, "FIGURES", [])
    run = make_run(tmp_path / "run", with_journal=False)
    pd.DataFrame(stage_curves("s1", "sd", [None, [0.8, 0.7], [0.6, 0.7]])).to_parquet(run / "curves.parquet")
    assert (
        main([str(run), "--export", str(tmp_path / "x"), "--reference", "baseline", "--reference", "sd"]) == 0
    )
    text = (tmp_path / "x" / "tables.md").read_text()
    assert "## Per seed on the validation images (mIoU_img / HP-Acc)" in text
    assert "| baseline | 0.500 / 0.00 | 0.600 / 0.00 | 0.700 / 0.25 |" in text
    assert "| sd | 1: frozen | 2 | 0.750 ± 0.635 | 0.375 ± 0.318 |" in text
    against_sd = text.split("## Against sd")[1]
    base = tables.paired_comparison(analysis.load(run), baseline="sd").set_index("variant").loc["baseline"]
    assert base["mean_diff"] == pytest.approx(-np.asarray(DIFF).mean())
    assert "| baseline | b1 | s1 |" in against_sd and "## Against baseline" in text
    (run / "report.html").unlink()
    assert main([str(run), "--export", str(tmp_path / "y"), "--reference", "sdd"]) == 2
    err = capsys.readouterr().err
    assert "--reference sdd: no such variant" in err and "choose from baseline, sd, esd" in err
    assert not (tmp_path / "y" / "tables.md").exists() and not (run / "report.html").exists()
    with pytest.raises(SystemExit) as stop:
        main([str(run), "--reference", "sd"])
    assert stop.value.code == 2 and "give --export too" in capsys.readouterr().err
