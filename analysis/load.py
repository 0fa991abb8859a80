"""A run directory as tidy pandas tables. Reads files only: works while a study runs, after it
stopped midway, and when some or all of its trials failed (missing tables come back empty,
with their columns).

    run_dir/config.json          the resolved study configuration
    run_dir/trials.parquet       one row per trial (the columns of all three: kd/run_folder.py)
    run_dir/per_image.parquet    one row per trial, seed and validation image
    run_dir/curves.parquet       one row per trial, seed and epoch; also a loss_<term> per loss term
    run_dir/samples.npz          ids, images uint8 [N,H,W,3], masks uint8 [N,H,W] (255 = void), classes
    run_dir/predictions/<key>.npz  ids, predictions uint8 [N,H,W] of a trial's first seed
                                   (column `predictions`)
    run_dir/teacher.json         the teacher's name, its scores on the validation images, params, flops;
                                 with a teacher axis, every teacher's under "teachers", by name
    run_dir/optuna.journal       the Optuna study
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kd import run_folder
from kd.errors import UserInputError
from kd.run_folder import CONFIG, CURVES, FINAL, JOURNAL, PER_IMAGE, SAMPLES, TEACHER, TRIALS
from kd.run_folder import variants as variants


@dataclass
class Study:
    run_dir: Path
    config: dict
    trials: pd.DataFrame
    per_image: pd.DataFrame  # validation images (split "val"): what every trial was selected on
    curves: pd.DataFrame
    final: pd.DataFrame = None  # each variant's chosen trial on the test images, per seed
    test_per_image: pd.DataFrame = None  # their per-image test scores

    @property
    def name(self) -> str:
        return self.config.get("name", self.run_dir.name)

    @property
    def completed(self) -> pd.DataFrame:
        return self.trials[self.trials["status"] == "completed"]

    def samples(self) -> dict | None:
        """Validation images and ground truth as the trials saw them, or None if the study saved none."""
        return _npz(self.run_dir / SAMPLES)

    def predictions(self, trial_id: str) -> dict | None:
        """{"ids", "predictions"} of a trial's first seed, or None if it saved none."""
        row = self.trials[self.trials["trial_id"] == trial_id]
        if row.empty:
            return None
        path = row.iloc[0]["predictions"]
        if not isinstance(path, str):
            return None
        path = Path(path)
        return _npz(path if path.is_absolute() else self.run_dir / path)

    def teacher(self) -> dict | None:
        """The teacher's own scores on the validation images (name, miou, miou_img, hp_acc, var, params,
        flops), or None for a study that saved none."""
        path = self.run_dir / TEACHER
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except ValueError:
            return None

    def teachers(self) -> dict[str, dict]:
        """Every teacher's own scores by its name as trials record it (column `teacher`): those of
        a study with a teacher axis, else its one teacher's under the study's `teacher` ({} when
        the study saved none)."""
        record = self.teacher()
        if record is None:
            return {}
        if isinstance(record.get("teachers"), dict):
            return record["teachers"]
        return {self.config.get("teacher") or record.get("name", "teacher"): record}

    def journal(self) -> Path | None:
        path = self.run_dir / JOURNAL
        return path if path.is_file() else None


def _npz(path: Path) -> dict | None:
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def _table(run_dir: Path, table: str) -> pd.DataFrame:
    path = run_dir / table
    if not path.is_file():
        return run_folder.migrate(table, pd.DataFrame(columns=list(run_folder.COLUMNS[table])))
    return run_folder.migrate(table, run_folder.read_table(path))


def _config(run_dir: Path) -> dict:
    """config.json, {} while a study has written none yet; a folder with neither it nor a table is
    not a run folder."""
    path = run_dir / CONFIG
    if not path.is_file():
        if not any((run_dir / table).is_file() for table in run_folder.COLUMNS):
            raise UserInputError(
                f"{run_dir} is not a run folder: it has no {CONFIG} and no tables "
                f"({', '.join(run_folder.COLUMNS)}); give a study's run folder, e.g. runs/default."
            )
        return {}
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserInputError(f"{path} cannot be read ({err}): restore the study's {CONFIG}.") from None
    if not isinstance(config, dict):
        raise UserInputError(
            f"{path} holds no study configuration (a JSON object): restore the study's {CONFIG}."
        )
    return config


def load(run_dir: str | Path) -> Study:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserInputError(f"{run_dir} is not a folder; give a study's run folder, e.g. runs/default.")
    config = _config(run_dir)
    trials = _table(run_dir, TRIALS)
    per_image = _table(run_dir, PER_IMAGE)
    test = per_image["split"] == "test"  # a row without a split (a table made by hand) is a validation row
    return Study(
        run_dir=run_dir,
        config=config,
        trials=trials,
        per_image=per_image[~test].reset_index(drop=True),
        curves=_table(run_dir, CURVES),
        final=_table(run_dir, FINAL),
        test_per_image=per_image[test].reset_index(drop=True),
    )
