"""The trial's checkpoint: its students' weights and its report, so a finished trial is not trained twice."""

import dataclasses
import json

from ray import tune

from study.contract import TrialReport
from study.tuner import REPORT, saved_report


def test_a_finished_trials_checkpoint_gives_back_its_report(tmp_path):
    report = TrialReport(seeds=2, metrics={"miou_img": 0.7, "miou_img_std": 0.01}, steps={"train": 80.0})
    (tmp_path / "seed0.pt").write_bytes(b"weights")
    (tmp_path / REPORT).write_text(json.dumps(dataclasses.asdict(report)))
    assert saved_report(tune.Checkpoint.from_directory(tmp_path)) == report
    assert saved_report(None) is None  # a trial that never reported: train it
    (tmp_path / REPORT).unlink()
    assert saved_report(tune.Checkpoint.from_directory(tmp_path)) is None
