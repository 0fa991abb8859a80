"""`python -m analysis.report RUN_A RUN_B ...`: one page comparing studies (analysis/compare.py), on run
folders made by hand as in test_analysis.py (no Ray, no training)."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from helpers import TEST_B1, find_chromium, headless, make_run, score_on_test, scored_on_test

import analysis
from analysis import compare
from analysis.report import main, write_report

# Study B's chosen trials on the test images, per seed. b1 shares t1 and t2 with study A's test images
# (t0, t1, t2: test_analysis.TEST_IMAGES), t3 is B's alone; s1 saw only an image A never scored.
B_TEST = {
    ("b1", "baseline"): {0: {"t1": 0.6, "t2": 0.5, "t3": 0.9}, 1: {"t1": 0.7, "t2": 0.4, "t3": 0.1}},
    ("s1", "sd"): {0: {"t9": 0.5}, 1: {"t9": 0.6}},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A and B scored on test (sharing two images), C and D on validation only, with another label set."""
    root = tmp_path_factory.mktemp("runs")

    def run(name, label_set):  # the comparison reads no images, curves or journal: faster without
        return make_run(
            root / name,
            config={"label_set": label_set},
            curves=False,
            samples=False,
            predictions=False,
            with_journal=False,
        )

    return {
        "A": scored_on_test(run("A", "binary")),
        "B": score_on_test(run("B", "binary"), B_TEST),
        "C": run("C", "full"),
        "D": run("D", "full"),
    }


@pytest.fixture(scope="module")
def a_b(runs, tmp_path_factory) -> str:
    return compare_page(tmp_path_factory.mktemp("a_b"), runs["A"], runs["B"])


def html_tables(page: str) -> list[list[dict[str, str]]]:
    """Every table of the page as rows of {header: cell text}."""
    found = []
    for table in re.findall(r"<table.*?</table>", page, flags=re.S):
        rows = [
            [html.unescape(c).strip() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, flags=re.S)]
            for row in re.findall(r"<tr.*?</tr>", table, flags=re.S)
        ]
        found.append([dict(zip(rows[0], row, strict=True)) for row in rows[1:]])
    return found


def table_with(page: str, header: str) -> list[dict[str, str]]:
    return next(rows for rows in html_tables(page) if rows and header in rows[0])


def row_of(rows: list[dict[str, str]], **cells) -> dict[str, str]:
    (found,) = [row for row in rows if all(row[k] == v for k, v in cells.items())]
    return found


def compare_page(tmp_path: Path, *runs: Path) -> str:
    out = tmp_path / "compare.html"
    assert main([*map(str, runs), "--out", str(out)]) == 0
    return out.read_text()


def test_shared_test_images_are_compared_after_averaging_each_image_over_seeds(a_b):
    page = a_b
    paired = table_with(page, "shared images")
    base = row_of(paired, study="B", variant="baseline")
    # Per image over its study's seeds: A's b1 on t1 and t2 (three seeds), B's b1 (two seeds).
    a_t1, a_t2 = (0.5 + 0.55 + 0.6) / 3, (0.4 + 0.45 + 0.4) / 3
    b_t1, b_t2 = (0.6 + 0.7) / 2, (0.5 + 0.4) / 2
    assert base["shared images"] == "2"  # pairs of (seed, image) would be 4
    assert base["mean diff (per image)"] == f"{((b_t1 - a_t1) + (b_t2 - a_t2)) / 2:.4f}" == "0.0667"
    assert base["reference mean mIoU_i"] == f"{(a_t1 + a_t2) / 2:.4f}"
    # Two positive differences: the exact two-sided Wilcoxon p is 2 * 1/4; the only test, so Holm keeps it
    assert (base["p (Wilcoxon)"], base["p adj. (Holm)"], base["effect size"]) == ("0.5", "0.5", "1.000")
    assert base["better"] == "B" and base["scored on"] == "test" and base["no test because"] == ""
    assert row_of(paired, variant="sd")["no test because"] == "no shared test images"
    esd = "A: esd not scored on the test images yet; B: esd not scored on the test images yet"
    assert row_of(paired, variant="esd")["no test because"] == esd
    assert "<h1>Comparison of 2 studies: A, B</h1>" in page and "differ in their label sets" not in page


def test_each_study_block_equals_its_own_report(runs, a_b, tmp_path):
    methods = table_with(a_b, "miou_img ± 95% CI")
    own = table_with(write_report(runs["A"], tmp_path / "a.html").read_text(), "miou_img ± 95% CI")
    assert [{k: v for k, v in row.items() if k != "study"} for row in methods if row["study"] == "A"] == own
    # A's b1 on test: seed means 0.4, 0.45, 0.4; B's b1: seed means (0.6+0.5+0.9)/3, (0.7+0.4+0.1)/3
    assert row_of(methods, study="A", variant="baseline")["miou_img ± 95% CI"].startswith("0.417 ± ")
    b_base = row_of(methods, study="B", variant="baseline")
    assert (
        b_base["miou_img ± 95% CI"].startswith(f"{(2.0 / 3 + 0.4) / 2:.3f} ± ")
        and b_base["scored on"] == "test"
    )


def test_figures_overlay_the_studies_and_name_their_images(runs, a_b):
    page = a_b
    assert page.count("* plotly.js v") == 1
    assert (
        re.search(r'data-expected="(\d+)"', page).group(1)
        == "3"
        == str(page.count('class="plotly-graph-div"'))
    )
    for title in (
        "Per-image mIoU of the chosen trials (test images)",
        "Accuracy against cost (test images)",
        "HP-Acc against Var (validation: every trial; test: chosen trials)",
    ):
        assert f"<h2>{title}</h2>" in page
    studies, labels = [analysis.load(runs["A"]), analysis.load(runs["B"])], ["A", "B"]
    hist = compare.per_image_histograms(studies, labels)
    assert hist.layout.xaxis.title.text == "mIoU_i on the test images"
    traces = {(t.legendgroup, t.name): sorted(t.x) for t in hist.data}
    assert set(traces) == {("A", "baseline (b1)"), ("A", "sd (s1)"), ("B", "baseline (b1)"), ("B", "sd (s1)")}
    assert traces["A", "baseline (b1)"] == sorted(v for seed in TEST_B1.values() for v in seed)
    assert traces["B", "baseline (b1)"] == sorted(
        v for s in B_TEST["b1", "baseline"].values() for v in s.values()
    )
    cost = compare.accuracy_vs_cost(studies, labels)
    symbols = {t.legendgroup: t.marker.symbol for t in cost.data}
    assert len(cost.data) == 4 and symbols["A"] != symbols["B"]
    assert {t.marker.color for t in cost.data if t.name == "baseline"} == {hist.data[0].marker.color}


def test_a_run_not_scored_on_test_says_why_there_is_no_test(runs, tmp_path):
    page = compare_page(tmp_path, runs["A"], runs["C"])
    paired = table_with(page, "shared images")
    assert {row["no test because"] for row in paired} == {"C not scored on the test images yet"}
    assert {row["shared images"] for row in paired} == {"–"}
    assert "C: not yet scored on the test images" in page
    assert "differ in their label sets" in page and "C: label set full" in page
    methods = table_with(page, "miou_img ± 95% CI")
    assert {row["scored on"] for row in methods if row["study"] == "C"} == {"val"}
    assert "Per-image mIoU of the chosen trials (A: test images | C: validation images)" in page


def test_two_runs_on_validation_are_compared_there(runs, tmp_path):
    page = compare_page(tmp_path, runs["C"], runs["D"])  # the same hand-made scores in both
    base = row_of(table_with(page, "shared images"), variant="baseline")
    assert (base["scored on"], base["shared images"], base["mean diff (per image)"]) == ("val", "4", "0.0000")
    assert (base["p (Wilcoxon)"], base["better"]) == ("1", "tie")


def test_a_folder_that_is_not_a_run_is_named_before_any_work(runs, tmp_path, capsys):
    empty, missing, out = tmp_path / "empty", tmp_path / "missing", tmp_path / "compare.html"
    empty.mkdir()
    assert main([str(runs["A"]), str(empty), str(missing), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert f"{empty} is not a run folder: it has no trials.parquet" in error
    assert f"{missing} is not a folder" in error and "runs/default" in error and "Traceback" not in error
    assert main([str(runs["A"]), str(runs["A"]), "--out", str(out)]) == 2
    assert "is given twice" in capsys.readouterr().err
    assert main([str(runs["A"]), str(runs["B"]), "--export", str(tmp_path / "x")]) == 2
    assert "--export writes one study's" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "x").exists()


def test_one_run_writes_its_own_report_as_before(tmp_path, monkeypatch, capsys):
    run = make_run(tmp_path / "single", samples=False, predictions=False, with_journal=False)
    monkeypatch.chdir(tmp_path)
    assert main([str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "report.html")
    assert "<h1>Study hand</h1>" in (run / "report.html").read_text()
    assert not (tmp_path / "compare.html").exists()


def test_several_runs_write_compare_html_in_the_current_folder(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([str(runs["A"]), str(runs["B"])]) == 0
    assert capsys.readouterr().out.strip() == "compare.html"
    assert "<h1>Comparison of 2 studies: A, B</h1>" in (tmp_path / "compare.html").read_text()
    assert not (runs["B"] / "report.html").exists()


def test_runs_that_share_a_folder_name_are_told_apart_by_their_paths(tmp_path):
    paths = [tmp_path / "x" / "default", tmp_path / "y" / "default", tmp_path / "esd"]
    assert compare.study_labels(paths) == [str(paths[0]), str(paths[1]), "esd"]


@pytest.mark.slow  # headless Chromium: about ten seconds
def test_the_comparison_draws_every_figure_in_a_browser(a_b, tmp_path):
    chromium = find_chromium()
    page = tmp_path / "compare.html"
    page.write_text(a_b)
    body = re.search(r"<body[^>]*>", headless(chromium, "--dump-dom", page.as_uri()).stdout).group(0)
    values = dict(re.findall(r'data-(figures|errors|expected)="(\d+)"', body))
    assert values == {"expected": "3", "figures": "3", "errors": "0"}, body
