"""Watching a sweep while it runs: live progress on the terminal, TensorBoard event files, and
Ray's MLflow or W&B loggers. Each is a Tune callback fed by the epoch reports every trial sends.

    tensorboard --logdir runs/NAME/tensorboard
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from ray import tune

from kd.errors import UserInputError
from kd.metrics import METRICS

TENSORBOARD = "tensorboard"  # run_dir/tensorboard/<trial>: one event folder per trial
# name -> (the package it needs, Ray's callback)
LOGGERS = {
    "mlflow": ("mlflow", "ray.air.integrations.mlflow.MLflowLoggerCallback"),
    "wandb": ("wandb", "ray.air.integrations.wandb.WandbLoggerCallback"),
}


def _position(result: dict) -> int | None:
    """Epochs done over all the trial's seeds, or None for a result that is not an epoch's."""
    if "epoch" not in result or "seed" not in result or "epochs" not in result or result.get("final"):
        return None
    return int(result["seed"]) * int(result["epochs"]) + int(result["epoch"])


def _name(trial) -> str:
    return f"{trial.trial_id} {trial.config['choice']}"


class TensorBoardWriter(tune.Callback):
    """Per trial, its loss and validation scores after every epoch (tensorboardX, which Ray needs)."""

    def __init__(self, run_dir: Path):
        self.folder = Path(run_dir) / TENSORBOARD
        self.writers = {}

    def __getstate__(self) -> dict:  # writers hold open files; a restored study opens new ones
        return {"folder": self.folder}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, writers={})

    def on_trial_result(self, iteration, trials, trial, result, **info):
        step = _position(result)
        if step is None:
            return
        from tensorboardX import SummaryWriter

        if trial.trial_id not in self.writers:
            self.writers[trial.trial_id] = SummaryWriter(str(self.folder / str(trial.config["choice"])))
        writer = self.writers[trial.trial_id]
        for key in ("loss", *METRICS):
            value = result.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                writer.add_scalar(f"{key}/seed{result['seed']}", value, int(result["epoch"]))
        writer.flush()

    def on_trial_complete(self, iteration, trials, trial, **info):
        writer = self.writers.pop(trial.trial_id, None)
        if writer is not None:
            writer.close()

    on_trial_error = on_trial_complete


class LiveProgress(tune.Callback):
    """One tqdm bar per running trial: its id and choice, stage, epochs done over all seeds, loss,
    the last validation score, and tqdm's ETA. Finished trials keep their one line (ResultsWriter)."""

    def __init__(self, objective: str):
        self.objective, self.bars = objective, {}

    def __getstate__(self) -> dict:
        return {"objective": self.objective}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, bars={})

    def on_trial_result(self, iteration, trials, trial, result, **info):
        done = _position(result)
        if done is None:
            return
        from tqdm import tqdm

        bar = self.bars.get(trial.trial_id)
        if bar is None:
            total = int(result["seeds"]) * int(result["epochs"])
            bar = self.bars[trial.trial_id] = tqdm(total=total, desc=_name(trial), unit="epoch", leave=False)
        score = result.get(self.objective)
        scored = isinstance(score, float) and math.isfinite(score)
        bar.set_postfix_str(
            f"seed {result['seed'] + 1}/{result['seeds']}, {result.get('stage', '')}, "
            f"loss {result['loss']:.4g}" + (f", {self.objective} {score:.3f}" if scored else "")
        )
        bar.update(max(0, done - bar.n))

    def on_trial_complete(self, iteration, trials, trial, **info):
        bar = self.bars.pop(trial.trial_id, None)
        if bar is not None:
            bar.close()

    on_trial_error = on_trial_complete


def logger_problems(names: list[str]) -> list[str]:
    """Unknown loggers, or loggers whose package is not installed, named with the fix."""
    import importlib.util

    found = []
    for name in names:
        if name not in LOGGERS:
            found.append(f"callbacks: unknown logger {name!r}; choose from {', '.join(LOGGERS)}")
        elif importlib.util.find_spec(LOGGERS[name][0]) is None:
            found.append(
                f"callbacks: {name!r} needs the {LOGGERS[name][0]} package: pip install -e '.[{name}]' "
                f"(or pip install {LOGGERS[name][0]}), or remove it from callbacks"
            )
    return found


def watchers(config, run_dir: Path, progress: str) -> list[tune.Callback]:
    """The callbacks that show the study: TensorBoard always, the live bars on a terminal unless
    `progress` is "quiet", and the loggers the study's `callbacks` setting names."""
    import importlib

    found = [TensorBoardWriter(run_dir)]
    if progress == "live" and sys.stderr.isatty():
        found.append(LiveProgress(config.objectives[0]))
    for name in config.callbacks:
        problems = logger_problems([name])
        if problems:
            raise UserInputError(problems[0])
        module, _, cls = LOGGERS[name][1].rpartition(".")
        callback = getattr(importlib.import_module(module), cls)
        found.append(
            callback(experiment_name=config.name) if name == "mlflow" else callback(project=config.name)
        )
    return found
