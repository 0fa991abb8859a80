"""Watching a sweep while it runs: live progress on the terminal, TensorBoard event files, and
Ray's MLflow or W&B loggers. Each is a Tune callback fed by the epoch reports every trial sends.

    tensorboard --logdir runs/NAME/tensorboard
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from pathlib import Path

from ray import tune

from kd.metrics import METRICS
from kd.run_folder import TENSORBOARD
from study.results import trial_name

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


def _name(trial, values: bool = True) -> str:
    """As the finished trial's line names it; a bar, one line wide, shows the variant instead."""
    choice = trial.config["choice"]
    if not values:
        return f"{trial.trial_id} {choice.variant}"
    return trial_name(trial.trial_id, choice.method, {"split_point": choice.split_point, **choice.values})


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
    """Per running trial: its id and variant, seed, stage, epochs done over all seeds, loss, the last
    validation score and an ETA (from the epochs this driver has seen: a resumed trial's earlier
    epochs took no time here). On a terminal, one tqdm bar per trial; elsewhere (a log file, CI),
    one line per trial when a seed ends and at least every `every_s` seconds, so a grid point that
    trains for an hour is not silent. Finished trials keep their one line (ResultsWriter)."""

    def __init__(self, objective: str, bars: bool = True, say=print, every_s: float = 600.0):
        self.objective, self.use_bars, self.say, self.every_s = objective, bars, say, every_s
        self.bars, self.last_score, self.lines = {}, {}, {}

    def __getstate__(self) -> dict:  # bars hold the terminal; a resumed study passes its own callbacks
        return {k: getattr(self, k) for k in ("objective", "use_bars", "every_s")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, say=print, bars={}, last_score={}, lines={})

    def on_trial_result(self, iteration, trials, trial, result, **info):
        done = _position(result)
        if done is None:
            return
        score = result.get(self.objective)
        if isinstance(score, float) and math.isfinite(score):
            self.last_score[trial.trial_id] = score
        total = int(result["seeds"]) * int(result["epochs"])
        if self.use_bars:
            bar = self._bar(trial, total, done)
            bar.set_postfix_str(self._state(trial, result), refresh=False)
            bar.update(max(0, done - bar.n))
        else:
            self._line(trial, result, done, total)

    def _state(self, trial, result: dict) -> str:
        score = self.last_score.get(trial.trial_id)
        return (
            f"seed {result['seed'] + 1}/{result['seeds']}, {result.get('stage', '')}, "
            f"loss {result['loss']:.4g}" + (f", {self.objective} {score:.3f}" if score is not None else "")
        )

    def _bar(self, trial, total: int, done: int):
        from tqdm import tqdm

        if trial.trial_id not in self.bars:
            # tqdm reads an unknown terminal size as -1 rows and draws nothing; shutil falls back to 80x24
            columns, rows = shutil.get_terminal_size()
            self.bars[trial.trial_id] = tqdm(
                total=total,
                initial=done,
                desc=_name(trial, values=False),
                bar_format="{desc}: {n_fmt}/{total_fmt} epochs, ETA {remaining}{postfix}",
                leave=False,
                ncols=columns,
                nrows=rows,
            )
        return self.bars[trial.trial_id]

    def _line(self, trial, result: dict, done: int, total: int) -> None:
        now = time.monotonic()
        seen = self.lines.setdefault(trial.trial_id, (now, done, now, result["seed"]))
        started, done_then, last_at, last_seed = seen
        if result["seed"] == last_seed and now - last_at < self.every_s:
            return
        self.lines[trial.trial_id] = (started, done_then, now, result["seed"])
        rate = (now - started) / max(done - done_then, 1)
        self.say(
            f"  {_name(trial)}: epoch {done}/{total}, {self._state(trial, result)}, "
            f"ETA {_duration(rate * (total - done))}"
        )

    def on_trial_complete(self, iteration, trials, trial, **info):
        bar = self.bars.pop(trial.trial_id, None)
        if bar is not None:
            bar.close()
        self.last_score.pop(trial.trial_id, None)
        self.lines.pop(trial.trial_id, None)

    on_trial_error = on_trial_complete


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


# name -> what to change when the logger cannot start
LOGGER_FIXES = {
    "mlflow": "set MLFLOW_TRACKING_URI to your tracking server or a database (sqlite:///mlflow.db)",
    "wandb": "log in with `wandb login`, or set WANDB_MODE=offline",
}


def logger_problems(names: list[str], study_name: str = "study") -> list[str]:
    """Unknown loggers, loggers whose package is not installed, and loggers that cannot start (an
    unreachable tracking server, no account), each named with the fix: found before the teacher
    trains, not when the trials start."""
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
        else:
            try:
                _logger(name, study_name).setup()  # what Tune calls first; creates the experiment
            except Exception as err:
                said = str(err).strip().splitlines()[0] if str(err).strip() else ""
                found.append(
                    f"callbacks: {name!r} could not start ({type(err).__name__}: {said}); "
                    f"{LOGGER_FIXES[name]}, or remove it from callbacks"
                )
    return found


def _logger(name: str, study_name: str) -> tune.Callback:
    """Ray's logger callback: MLflow's experiment or W&B's project is the study's name."""
    import importlib

    module, _, cls = LOGGERS[name][1].rpartition(".")
    callback = getattr(importlib.import_module(module), cls)
    return callback(experiment_name=study_name) if name == "mlflow" else callback(project=study_name)


def watchers(config, run_dir: Path, progress: str, say=print) -> list[tune.Callback]:
    """The callbacks that show the study: TensorBoard always, the live progress (bars on a terminal,
    lines through `say` elsewhere) unless `progress` is "quiet", and the loggers the study's
    `callbacks` setting names."""
    found = [TensorBoardWriter(run_dir)]
    if progress != "quiet":
        found.append(LiveProgress(config.objectives[0], bars=sys.stderr.isatty(), say=say))
    return found + [_logger(name, config.name) for name in config.callbacks]  # checked with the config
