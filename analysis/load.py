"""A run directory as tidy pandas tables. Reads files only: works while a study runs, after it
stopped midway, and when some or all of its trials failed (missing tables come back empty,
with their columns).

    run_dir/config.json          the resolved study configuration
    run_dir/trials.parquet       one row per trial
    run_dir/per_image.parquet    trial_id, method, seed, image_id, miou
    run_dir/curves.parquet       trial_id, method, seed, epoch, stage, stage_epoch, loss, loss_<term>, lr,
                                 seconds, miou, miou_img, hp_acc, var (NaN where not evaluated)
    run_dir/samples.npz          ids, images uint8 [N,H,W,3], masks uint8 [N,H,W] (255 = void), classes
    run_dir/predictions/<key>.npz  ids, predictions uint8 [N,H,W] of a trial's first seed (column `predictions`)
    run_dir/teacher.json         the teacher's name, its scores on the validation images, params, flops
    run_dir/optuna.journal       the Optuna study
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

METRICS = ("miou", "miou_img", "hp_acc", "var")
TRIAL_COLUMNS = ["trial_id", "method", "status", "split_point", "seeds", *METRICS, *(f"{m}_std" for m in METRICS),
                 "params", "flops", "duration_s", "error", "trial_dir"]
PER_IMAGE_COLUMNS = ["trial_id", "method", "seed", "image_id", "miou"]
CURVE_COLUMNS = ["trial_id", "method", "seed", "epoch", "stage", "stage_epoch", "loss", "lr", "seconds", *METRICS]


@dataclass
class Study:
    run_dir: Path
    config: dict
    trials: pd.DataFrame
    per_image: pd.DataFrame
    curves: pd.DataFrame

    @property
    def name(self) -> str:
        return self.config.get("name", self.run_dir.name)

    @property
    def completed(self) -> pd.DataFrame:
        return self.trials[self.trials["status"] == "completed"]

    def samples(self) -> dict | None:
        """Validation images and ground truth as the trials saw them, or None if the study saved none."""
        path = self.run_dir / "samples.npz"
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}

    def predictions(self, trial_id: str) -> dict | None:
        """{"ids", "predictions"} of a trial's first seed, or None if it saved none."""
        row = self.trials[self.trials["trial_id"] == trial_id]
        if row.empty:
            return None
        row = row.iloc[0]
        if isinstance(row.get("predictions"), str):
            path = Path(row["predictions"])
        elif isinstance(row.get("trial_dir"), str):  # studies written before predictions had their own folder
            path = Path(row["trial_dir"]) / "predictions.npz"
        else:
            return None
        if not path.is_absolute():
            path = self.run_dir / path
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}

    def teacher(self) -> dict | None:
        """The teacher's own scores on the validation images (name, miou, miou_img, hp_acc, var, params,
        flops), or None for a study that saved none."""
        path = self.run_dir / "teacher.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except ValueError:
            return None

    def journal(self) -> Path | None:
        path = self.run_dir / "optuna.journal"
        return path if path.is_file() else None


def _table(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame(columns=columns)
    frame = pd.read_parquet(path)
    for column in columns:  # tables written by older versions or hand-made ones may lack some
        if column not in frame.columns:
            frame[column] = np.nan
    return frame


def load(run_dir: str | Path) -> Study:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        from kd.errors import UserInputError

        raise UserInputError(f"{run_dir} is not a folder; give a study's run folder, e.g. runs/default.")
    config_path = run_dir / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    return Study(
        run_dir=run_dir,
        config=config,
        trials=_table(run_dir / "trials.parquet", TRIAL_COLUMNS),
        per_image=_table(run_dir / "per_image.parquet", PER_IMAGE_COLUMNS),
        curves=_table(run_dir / "curves.parquet", CURVE_COLUMNS),
    )
