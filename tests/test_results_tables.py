"""The study's tables as trials finish: a trial reported again after a resume is listed once,
and a failed trial that ran again replaces its failed attempt."""

import pandas as pd
import pytest

from study.contract import TrialChoice, TrialReport
from study.results import ResultsTables

CHOICE = TrialChoice(method="baseline", overrides={"lr": 0.01}, split_point="top")


def _report(miou_img: float, error: str | None = None) -> TrialReport:
    return TrialReport(
        seeds=1,
        metrics={"miou_img": miou_img},
        per_image=[{"seed": 0, "id": "a", "miou": miou_img}],
        curves=[{"seed": 0, "epoch": 1, "loss": 1.0 - miou_img}],
        error=error,
    )


def test_a_failed_trial_run_again_replaces_its_attempt_and_a_finished_one_stays(tmp_path):
    tables = ResultsTables(tmp_path)
    assert tables.add("t1", CHOICE, _report(0.2, error="RuntimeError: boom"), "failed") is not None
    assert tables.add("t1", CHOICE, _report(0.7), "completed") is not None
    assert tables.add("t1", CHOICE, _report(0.9), "completed") is None  # re-reported after a resume
    trials = pd.read_parquet(tmp_path / "trials.parquet")
    assert trials["status"].tolist() == ["completed"] and trials["miou_img"].tolist() == [0.7]
    assert pd.read_parquet(tmp_path / "per_image.parquet")["miou"].tolist() == [0.7]
    assert pd.read_parquet(tmp_path / "curves.parquet")["loss"].tolist() == [pytest.approx(0.3)]
    assert ResultsTables(tmp_path).counts() == {"completed": 1, "failed": 0, "stopped": 0}  # read back
