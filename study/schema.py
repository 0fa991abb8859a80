"""The tables a study writes, as the driver writes them and the analysis reads them.

`trials.parquet` has one row per trial: the columns below, then one column per hyperparameter
(named as in the search space and the study file: `r`, `feature_lr`, `split_point`, ...), then
`steps_<stage>` per stage. Everything that is not listed in TRIAL_COLUMNS and does not start
with STEPS is a hyperparameter.

`variant` is what summaries compare: a grid point's name ("esd r=0.5"), else the method.
"""

from __future__ import annotations

from kd.metrics import METRICS

TRIALS, PER_IMAGE, CURVES, FINAL = "trials.parquet", "per_image.parquet", "curves.parquet", "final.parquet"
STEPS = "steps_"  # steps_<stage>: the optimiser steps a stage took (mean over seeds)

# teacher: the one the trial distilled from or started from (None: its method uses none)
IDENTITY = ("trial_id", "method", "variant", "status", "teacher")
OUTCOME = (
    "seeds",
    *(c for m in METRICS for c in (m, f"{m}_std")),
    "degenerate",
    "stage1_feature_ratio",
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
FINAL_COLUMNS = ("method", "variant", "teacher", "trial_id", "seed", *METRICS, "views")
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


def is_hyperparameter(column: str) -> bool:
    """Whether a trials.parquet column holds a value the search chose or a grid crossed."""
    return column not in IDENTITY and column not in OUTCOME and not column.startswith(STEPS)
