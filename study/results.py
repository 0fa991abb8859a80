"""Tidy result tables, written by the driver as trials finish, and the progress display.

`trials.parquet`: one row per trial (id, method, status, every hyperparameter the search
chose, the recipe overrides including fixed ones, seeds, the mean and standard deviation of
miou, miou_img, hp_acc and var over the seeds, params, FLOPs, duration, error text).
`per_image.parquet`: one row per (trial, seed, validation image) with mIoU_i.
`curves.parquet`: one row per (trial, seed, epoch): losses per term, lr and validation metrics.
Both are rewritten atomically after every finished trial; rows from before a `--resume`
are read back first, so nothing is lost and a trial is never listed twice.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pandas as pd
from ray.tune import Callback

from study.trial import METRICS, PREDICTIONS, trial_key

TRIALS, PER_IMAGE, CURVES = "trials.parquet", "per_image.parquet", "curves.parquet"


def _write(frame: pd.DataFrame, path: Path) -> None:
    partial = path.with_suffix(f".tmp{os.getpid()}")
    try:
        frame.to_parquet(partial, index=False)
    except OSError as err:  # a full disk, a folder gone read-only: the previous table stays as it was
        partial.unlink(missing_ok=True)
        raise OSError(err.errno, f"could not write {path} ({err.strerror or err}); the previous version is "
                                 "intact: free space or fix the folder, then continue with --resume") from err
    os.replace(partial, path)  # readers never see a half-written table


def _last_error_line(text: str | None) -> str:
    if not text:
        return "unknown error"
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^\w[\w.]*(Error|Exception|Interrupt)\b", line.strip())]
    return (errors or lines)[-1].strip()


class ResultsWriter(Callback):
    """A Ray Tune callback: tables and one progress line per finished trial."""

    def __init__(self, run_dir: Path, total: int, say=print):
        self.run_dir, self.total, self.say = Path(run_dir), total, say
        self._load()

    def _load(self) -> None:
        """The tables on disk: a resumed study keeps what it had."""
        self.rows, self.images, self.curves, self.started = {}, [], [], {}
        if (self.run_dir / CURVES).is_file():
            self.curves = pd.read_parquet(self.run_dir / CURVES).to_dict("records")
        if (self.run_dir / TRIALS).is_file():
            for row in pd.read_parquet(self.run_dir / TRIALS).to_dict("records"):
                self.rows[row["trial_id"]] = row
        if (self.run_dir / PER_IMAGE).is_file():
            self.images = pd.read_parquet(self.run_dir / PER_IMAGE).to_dict("records")

    def __getstate__(self) -> dict:
        # Ray pickles callbacks with the experiment and restores them on --resume: rows come from disk then.
        return {"run_dir": self.run_dir, "total": self.total, "say": self.say}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._load()

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started.setdefault(trial.trial_id, time.time())

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        if result.get("failed"):  # the trial's own error (divergence, out of memory, a bug in a component)
            self._record(trial, "failed", result, error=result["failed"])
            return
        status = "completed" if result.get("final") else "stopped"  # stopped: early-stopped by the scheduler
        self._record(trial, status, result, error=None)

    def on_trial_error(self, iteration, trials, trial, **info):
        # The error file is written locally first (get_error reads the synced copy, which may lag).
        path = trial.error_file
        text = Path(path).read_text() if path and Path(path).is_file() else trial.get_error()
        self._record(trial, "failed", {}, error=_last_error_line(text))

    def _trial_dir(self, trial) -> str | None:
        """Where Ray keeps the trial's files (predictions, logs), relative to the run folder when inside it."""
        path = Path(trial.path) if getattr(trial, "path", None) else None
        if path is None:
            return None
        try:
            return str(path.resolve().relative_to(self.run_dir.resolve()))
        except ValueError:
            return str(path)

    def _record(self, trial, status: str, result: dict, error: str | None) -> None:
        choice = {k: v for k, v in trial.config.items() if k != "grid"}
        method = result.get("method") or choice.get("method") or trial.config.get("grid", {}).get("method")
        row = {"trial_id": trial.trial_id, "method": method, "status": status,
               "split_point": result.get("split_point", choice.get(f"{method}.split_point"))}
        row.update({key.split(".", 1)[1]: value for key, value in choice.items() if "." in key})
        if "grid" in trial.config:
            crossed = trial.config["grid"].get("values") or {}
            row.update(crossed)  # the crossed parameters, as searched ones are
            if crossed:  # the analysis summarises each grid point on its own under this name
                row["variant"] = f"{method} " + ", ".join(f"{k}={_short(v)}" for k, v in crossed.items())
            row["overrides"] = json.dumps(trial.config["grid"]["overrides"], sort_keys=True)
        row["seeds"] = result.get("seeds")
        for name in METRICS:
            row[name] = result.get(name) if status == "completed" else None
            row[f"{name}_std"] = result.get(f"{name}_std") if status == "completed" else None
        row["degenerate"] = result.get("degenerate") if status == "completed" else None
        row["stage1_feature_ratio"] = result.get("stage1_feature_ratio")
        row.update({k: v for k, v in result.items() if k.startswith(STEPS)})
        row.update({"params": result.get("params"), "flops": result.get("flops"),
                    "duration_s": result.get("seconds", time.time() - self.started.get(trial.trial_id, time.time())),
                    "error": error, "trial_dir": self._trial_dir(trial), "node": result.get("node"),
                    "predictions": f"{PREDICTIONS}/{trial_key(trial.config)}.npz"})
        if trial.trial_id in self.rows:
            return  # finished before an interruption and reported again on resume: listed once
        self.rows[trial.trial_id] = row
        self.images += [{"trial_id": trial.trial_id, "method": method, "seed": r["seed"], "image_id": r["id"],
                         "miou": r["miou"]} for r in result.get("per_image", [])]
        self.curves += [{"trial_id": trial.trial_id, "method": method, **row} for row in result.get("curves", [])]
        _write(pd.DataFrame(list(self.rows.values())), self.run_dir / TRIALS)
        _write(pd.DataFrame(self.curves, columns=None if self.curves else ["trial_id", "method", "seed", "epoch"]),
               self.run_dir / CURVES)
        _write(pd.DataFrame(self.images, columns=["trial_id", "method", "seed", "image_id", "miou"]),
               self.run_dir / PER_IMAGE)
        self.say(_line(len(self.rows), self.total, row))


def _line(done: int, total: int, row: dict) -> str:
    chosen = ", ".join(f"{k}={_short(v)}" for k, v in row.items()
                       if k not in _NOT_PARAMS and not k.startswith(STEPS) and v is not None)
    head = f"[{done}/{total}] {row['trial_id']} {row['method']}" + (f" ({chosen})" if chosen else "")
    if row["status"] == "failed":
        return f"{head}: FAILED: {row['error']}"
    if row["status"] == "stopped":
        return f"{head}: stopped early by the scheduler"
    ratio = row.get("stage1_feature_ratio")
    return (f"{head}: miou_img {row['miou_img']:.3f} +- {row['miou_img_std']:.3f}, hp_acc {row['hp_acc']:.2f}, "
            f"var {row['var']:.4f}, miou {row['miou']:.3f}"
            + (f", stage-1 feature ratio {ratio:.2f}" if ratio is not None else "")
            + (" DEGENERATE: one class predicted everywhere" if row.get("degenerate") else "")
            + f" ({row['duration_s']:.0f} s)")


STEPS = "steps_"  # steps_<stage>: the optimiser steps each stage took (mean over seeds)
_NOT_PARAMS = {"trial_id", "method", "variant", "status", "seeds", "params", "flops", "duration_s", "error", "overrides", "trial_dir",
               "node", "predictions", "degenerate", "stage1_feature_ratio",
               *METRICS, *(f"{m}_std" for m in METRICS)}


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
