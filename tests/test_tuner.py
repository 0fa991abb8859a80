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


def test_every_sampler_survives_the_pickling_ray_tune_does(tmp_path):
    # Optuna 5.1's NSGA-II keeps a thread lock; Tune pickles the searcher into its experiment state
    import pickle

    from ray import cloudpickle

    from study import config as study_config
    from study.tuner import searcher

    for sampler in ("tpe", "nsga2", "gp"):
        overrides = {
            "out": str(tmp_path),
            "name": sampler,
            "sampler": sampler,
            "objectives": ["miou_img", "var"],
        }
        config = study_config.resolve("smoke", overrides=overrides)
        space = study_config.validate(config)
        (tmp_path / sampler).mkdir()
        search = searcher(config, space, tmp_path / sampler)
        limiter = cloudpickle.loads(cloudpickle.dumps(search))
        pickle.loads(pickle.dumps(search.searcher._sampler))  # Tune's OptunaSearch.save uses plain pickle
        sampler_back = limiter.searcher._sampler
        assert (
            type(sampler_back).__name__
            == {"tpe": "TPESampler", "nsga2": "PicklableNSGAIISampler", "gp": "GPSampler"}[sampler]
        )
        if sampler == "nsga2":
            with sampler_back._thread_lock:  # a fresh lock, usable after the trip
                pass
