"""Tidy result tables, written by the driver as trials finish, and the progress line.

`trials.parquet`: one row per trial (TrialReport.to_row; kd.run_folder names the columns).
`per_image.parquet`: one row per (trial, seed, validation image) with mIoU_i.
`curves.parquet`: one row per (trial, seed, epoch): losses per term, lr and validation metrics.
All three are rewritten atomically after every finished trial; rows from before a `--resume`
are read back first, so nothing is lost and a trial is never listed twice.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd

from kd.errors import StorageError
from kd.io import atomic_write, storage_error
from kd.run_folder import CURVES, PER_IMAGE, PER_IMAGE_COLUMNS, TRIALS, is_hyperparameter
from study.contract import TrialChoice, TrialReport, short


def write_table(frame: pd.DataFrame, path: Path) -> None:
    try:
        atomic_write(path, lambda partial: frame.to_parquet(partial, index=False))
    except OSError as err:  # a full disk, a folder gone read-only: the previous table stays as it was
        fault = err if isinstance(err, StorageError) else storage_error(path, err)
        advice = "the previous version is intact: free space or fix the folder, then continue with --resume"
        raise StorageError(path, fault.cause, fault.errno, advice) from err


def last_error_line(text: str | None) -> str:
    """The line of a traceback that names the error."""
    if not text:
        return "unknown error"
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^\w[\w.]*(Error|Exception|Interrupt)\b", line.strip())]
    return (errors or lines)[-1].strip()


class ResultsTables:
    """The run folder's three tables, kept in memory and written whole after every trial."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.rows, self.images, self.curves = {}, [], []
        if (self.run_dir / TRIALS).is_file():  # a resumed study keeps what it had
            self.rows = {
                row["trial_id"]: row for row in pd.read_parquet(self.run_dir / TRIALS).to_dict("records")
            }
        if (self.run_dir / PER_IMAGE).is_file():
            self.images = pd.read_parquet(self.run_dir / PER_IMAGE).to_dict("records")
        if (self.run_dir / CURVES).is_file():
            self.curves = pd.read_parquet(self.run_dir / CURVES).to_dict("records")

    def add(
        self,
        trial_id: str,
        choice: TrialChoice,
        report: TrialReport,
        status: str,
        trial_dir: str | None = None,
        students: str | None = None,
    ) -> dict | None:
        """Record a finished trial and rewrite the tables; its row, or None when it was recorded
        already (finished before an interruption and reported again on resume). A crashed trial run
        again (--resume) replaces its failed row."""
        if trial_id in self.rows:
            if self.rows[trial_id]["status"] != "failed":
                return None
            self.images = [r for r in self.images if r["trial_id"] != trial_id]  # the failed attempt's
            self.curves = [r for r in self.curves if r["trial_id"] != trial_id]
        row = self.rows[trial_id] = report.to_row(trial_id, choice, status, trial_dir, students)
        ids = {"trial_id": trial_id, "method": choice.method}
        self.images += [
            {**ids, "split": "val", "seed": r["seed"], "image_id": r["id"], "miou": r["miou"]}
            for r in report.per_image
        ]
        self.curves += [{**ids, **r} for r in report.curves]
        self.write()
        return row

    def write(self) -> None:
        write_table(pd.DataFrame(list(self.rows.values())), self.run_dir / TRIALS)
        empty = ["trial_id", "method", "seed", "epoch"]
        write_table(pd.DataFrame(self.curves, columns=None if self.curves else empty), self.run_dir / CURVES)
        write_table(pd.DataFrame(self.images, columns=list(PER_IMAGE_COLUMNS)), self.run_dir / PER_IMAGE)

    def keep_best_students(self, variant: str, objective: str, mode: str) -> list[str]:
        """Delete the kept students of `variant`'s trials but its best on validation by `objective`
        (ties: the earlier trial); the folders deleted, relative to the run folder."""
        kept = [
            r for r in self.rows.values() if r["variant"] == variant and isinstance(r.get("students"), str)
        ]
        if len(kept) < 2:
            return []
        sign = 1 if mode == "max" else -1
        best = max(kept, key=lambda row: sign * row[objective])
        dropped = []
        for row in kept:
            if row is not best:
                shutil.rmtree(self.run_dir / row["students"], ignore_errors=True)
                dropped.append(row["students"])
                row["students"] = None
        self.write()
        return dropped

    def set_test_images(self, rows: list[dict]) -> None:
        """The chosen trials' per-image test scores, replacing any from an earlier scoring."""
        self.images = [r for r in self.images if r.get("split", "val") != "test"] + rows
        self.write()

    def counts(self) -> dict[str, int]:
        statuses = [row["status"] for row in self.rows.values()]
        return {status: statuses.count(status) for status in ("completed", "failed", "stopped")}


def trial_name(trial_id: str, method: str, chosen: dict) -> str:
    """How progress output names a trial: "8bddabae esd (split_point=top, r=0.5)"."""
    listed = ", ".join(f"{k}={short(v)}" for k, v in chosen.items() if v is not None)
    return f"{trial_id} {method}" + (f" ({listed})" if listed else "")


def progress_line(done: int, total: int, row: dict) -> str:
    chosen = {k: v for k, v in row.items() if is_hyperparameter(k)}
    teacher = row.get("teacher")
    named = isinstance(teacher, str) and str(row.get("variant", "")).endswith(f" @ {teacher}")
    method = f"{row['method']} @ {teacher}" if named else row["method"]  # a study with a teacher axis
    head = f"[{done}/{total}] {trial_name(row['trial_id'], method, chosen)}"
    if row["status"] == "failed":
        return f"{head}: FAILED: {row['error']}"
    if row["status"] == "stopped":
        return f"{head}: stopped early by the scheduler"
    ratio = row.get("stage1_feature_ratio")
    return (
        f"{head}: miou_img {row['miou_img']:.3f} +- {row['miou_img_std']:.3f}, hp_acc {row['hp_acc']:.2f}, "
        f"var {row['var']:.4f}, miou {row['miou']:.3f}"
        + (f", stage-1 feature ratio {ratio:.2f}" if ratio is not None else "")
        + (" DEGENERATE: one class predicted everywhere" if row.get("degenerate") else "")
        + f" ({row['duration_s']:.0f} s)"
    )
