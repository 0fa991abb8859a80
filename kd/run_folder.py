"""A study's run folder: the name of every file in it, the columns of its tables, and the one
migration that reads tables written by earlier versions as the current ones.

It sits in kd, the lowest layer, so that study (which writes a run folder) and analysis (which
reads it) share it without importing each other.

`trials.parquet` has one row per trial: the columns below, then one column per hyperparameter
(named as in the search space and the study file: `r`, `feature_lr`, `split_point`, ...), then
`steps_<stage>` per stage. Everything that is not listed in TRIAL_COLUMNS and does not start
with STEPS is a hyperparameter. `variant` is what summaries compare: a grid point's name
("esd r=0.5"), else the method.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from kd.errors import UserInputError
from kd.metrics import METRICS, REGION_METRICS

CONFIG = "config.json"  # the resolved study configuration
TRIALS, PER_IMAGE, CURVES, FINAL = "trials.parquet", "per_image.parquet", "curves.parquet", "final.parquet"
SAMPLES = "samples.npz"  # ids, images, masks and classes of the validation images the trials saw
TEACHER = "teacher.json"  # the teacher's (or every teacher's) scores, params and flops
ROLES = "roles.json"  # which images each role (source, target, proximity, val, test) holds
TIMING = "timing.json"  # each session's preparation and trial time
JOURNAL = "optuna.journal"  # the Optuna study
LOCK = "driver.lock"  # held by the driver that runs the study
MERGED = "merged.json"  # the parts a merged study was joined from
REPORT_PAGE = "report.html"  # the study's report
EVALUATION = "evaluation.parquet"  # the chosen students scored again on other images (study.evaluate)
PREDICTIONS = "predictions"  # predictions/<choice key>.npz: a trial's first seed on the validation images
RAY_DIR = "ray"  # Ray Tune's record of the experiment, which --resume restores
SCRATCH = "scratch"  # scratch/<choice key>: engine checkpoints of trials in flight
TENSORBOARD = "tensorboard"  # tensorboard/<trial>: one event folder per trial
TRIAL_DIR_PREDICTIONS = "predictions.npz"  # in the trial's own folder: where a table made by hand finds them

STEPS = "steps_"  # steps_<stage>: the optimiser steps a stage took (mean over seeds)

# teacher: the one the trial distilled from or started from (None: its method uses none)
IDENTITY = ("trial_id", "method", "variant", "status", "teacher")
OUTCOME = (
    "seeds",
    *(c for m in METRICS for c in (m, f"{m}_std")),
    "degenerate",
    "stage1_feature_ratio",  # on the stage's own images (kd.engine.Engine.feature_ratio)
    "stage1_feature_ratio_test",  # on test images: whether the mimicry carries over
    "params",
    "flops",
    "duration_s",
    "error",
    "trial_dir",
    "node",
    "workers",  # the resources the trial ran on: workers, and CPUs and GPUs per worker
    "cpus",
    "gpus",
    "precision",  # fp32, bf16 or fp16: parts and resumed studies must not mix them
    "views",  # what the students trained on: "fresh" (a new view every epoch) or N (a fixed bank)
    "predictions",
    "overrides",
    "students",
)
TRIAL_COLUMNS = (*IDENTITY, "split_point", *OUTCOME)
# split: "val" (every trial, what selects) or "test" (each variant's chosen trial, scored once at the end)
PER_IMAGE_COLUMNS = ("trial_id", "method", "split", "seed", "image_id", "miou")
# final.parquet: each variant's chosen trial, every seed scored on the test images
FINAL_COLUMNS = ("method", "variant", "teacher", "trial_id", "seed", *METRICS, *REGION_METRICS, "views")
CURVE_COLUMNS = (
    "trial_id",
    "method",
    "seed",
    "epoch",
    "stage",
    "stage_epoch",
    "loss",
    "lr",
    "seconds",
    *METRICS,
)
COLUMNS = {TRIALS: TRIAL_COLUMNS, PER_IMAGE: PER_IMAGE_COLUMNS, CURVES: CURVE_COLUMNS, FINAL: FINAL_COLUMNS}


def is_hyperparameter(column: str) -> bool:
    """Whether a trials.parquet column holds a value the search chose or a grid crossed."""
    return column not in IDENTITY and column not in OUTCOME and not column.startswith(STEPS)


def variants(trials: pd.DataFrame) -> pd.Series:
    """Each trial's variant, what summaries compare: a grid point's name ("esd r=0.5"), else the method.

    A table made by hand may name it only for grid points, or not at all.
    """
    if "variant" not in trials:
        return trials["method"]
    named = trials["variant"].map(lambda v: isinstance(v, str) and v != "")
    return trials["variant"].where(named, trials["method"])


def read_table(path: Path) -> pd.DataFrame:
    """One of a run folder's tables as written; a file that is none (cut short, or another kind of
    file under its name) is a UserInputError that names it and the cause."""
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as err:
        cause = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserInputError(
            f"{path} cannot be read as a table ({cause}): the file was cut short or is not the "
            "parquet table a study writes; restore it from a copy, or run the study again."
        ) from None


def migrate(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    """`frame`, read from the run folder's `table` (TRIALS, PER_IMAGE, CURVES or FINAL), with the
    current columns. A table made by hand may lack some: they come back empty, a trial's variant
    then is its method, and its predictions are looked for in its own folder."""
    for column in COLUMNS[table]:
        if column not in frame.columns:
            frame[column] = np.nan
    if table == TRIALS:
        own = frame["predictions"].map(lambda path: isinstance(path, str))
        old = frame["trial_dir"].map(
            lambda folder: f"{folder}/{TRIAL_DIR_PREDICTIONS}" if isinstance(folder, str) else None
        )
        frame = frame.assign(predictions=frame["predictions"].where(own, old), variant=variants(frame))
    return frame


# The settings of config.json that --resume may change (and parts of one study may differ in): where
# and how fast trials run, never what they compute (amp and augmentation-affecting settings are not here).
RESUMABLE = (
    "cpus_per_trial",
    "gpus_per_trial",
    "workers_per_trial",
    "address",
    "max_concurrent",
    "num_workers",
    "cache_dir",
    "resource_wait_s",
    "check_resources",
    "callbacks",
    "connect_timeout_s",
    "report",
)
