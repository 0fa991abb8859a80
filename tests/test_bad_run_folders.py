"""Every command that reads a run folder refuses one that is no run, or whose tables cannot be read,
naming the file and the cause: exit status 2, no traceback, nothing written."""

import shutil
from pathlib import Path

import pandas as pd
import pytest
from helpers import make_run

from analysis.merge import main as merge_main
from analysis.report import main as report_main
from study.evaluate import main as evaluate_main

DEFAULT = Path(__file__).resolve().parents[1] / "docs" / "results" / "default"


def cut_short(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def foreign(path: Path) -> None:
    path.write_text("trial_id,method\nb1,baseline\n")  # a CSV under the parquet table's name


def committed_run(root: Path) -> Path:
    """The committed default study's configuration and trials table (its students are not committed)."""
    root.mkdir()
    for name in ("config.json", "trials.parquet"):
        shutil.copy(DEFAULT / name, root / name)
    return root


def refused(main, argv, capsys) -> str:
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error and error.startswith("error: ")
    return error


@pytest.mark.parametrize("damage", [cut_short, foreign])
@pytest.mark.parametrize("table", ["trials.parquet", "per_image.parquet", "final.parquet"])
def test_the_report_names_a_table_it_cannot_read(tmp_path, capsys, damage, table):
    run = make_run(tmp_path / "run", with_journal=False)
    if not (run / table).is_file():
        shutil.copy(DEFAULT / table, run / table)
    damage(run / table)
    error = refused(report_main, [str(run)], capsys)
    assert f"{run / table} cannot be read as a table" in error and "not the parquet table" in error
    assert not (run / "report.html").exists()


def test_the_report_names_a_config_it_cannot_read(tmp_path, capsys):
    run = make_run(tmp_path / "run", with_journal=False)
    cut_short(run / "config.json")
    error = refused(report_main, [str(run)], capsys)
    assert f"{run / 'config.json'} cannot be read" in error and not (run / "report.html").exists()


def test_an_empty_folder_gets_no_report(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    error = refused(report_main, [str(empty)], capsys)
    assert f"{empty} is not a run folder: it has no config.json and no tables" in error
    assert list(empty.iterdir()) == []
    out = tmp_path / "page.html"
    refused(report_main, [str(empty), "--out", str(out)], capsys)
    assert not out.exists()


def test_merge_names_a_part_s_table_it_cannot_read(tmp_path, capsys):
    parts = [make_run(tmp_path / name, with_journal=False) for name in ("a", "b")]
    cut_short(parts[1] / "per_image.parquet")
    error = refused(merge_main, [str(tmp_path / "merged"), *map(str, parts)], capsys)
    assert f"{parts[1] / 'per_image.parquet'} cannot be read as a table" in error


@pytest.mark.parametrize("damage", [cut_short, foreign])
def test_evaluate_names_a_trials_table_it_cannot_read(tmp_path, capsys, damage):
    run = committed_run(tmp_path / "run")
    damage(run / "trials.parquet")
    error = refused(evaluate_main, [str(run)], capsys)
    assert f"{run / 'trials.parquet'} cannot be read as a table" in error
    assert not (run / "evaluation.parquet").exists()


def test_evaluate_refuses_students_that_are_gone_before_writing(tmp_path, capsys):
    run = committed_run(tmp_path / "run")
    error = refused(evaluate_main, [str(run)], capsys)
    assert "the chosen trials' students are gone: no seed*.pt in" in error
    trials = pd.read_parquet(run / "trials.parquet")
    baseline = trials.loc[trials["method"] == "baseline", "trial_id"].item()
    assert f"({baseline})" in error and str(run / "ray" / "trainable_") in error  # its folder, by id
    assert not (run / "evaluation.parquet").exists()


def test_evaluate_names_a_config_it_cannot_read(tmp_path, capsys):
    run = committed_run(tmp_path / "run")
    cut_short(run / "config.json")
    error = refused(evaluate_main, [str(run)], capsys)
    assert f"{run / 'config.json'} cannot be read" in error
    assert not (run / "evaluation.parquet").exists()
