"""Test once, after selection: each variant's chosen trial, every seed, on the test images.

While trials run, only each variant's chosen trial keeps its students' weights
(ResultsWriter); when the study has every trial, those students are scored on the test role,
which nothing before touched. `final.parquet`: one row per (variant, seed) with the test
metrics and the trial's hyperparameters; their per-image scores join `per_image.parquet`
with split "test". The teacher is scored on the same images, as the reference (teacher.json).
`python -m study.evaluate` scores the same students on other data with `score_students`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from kd.engine import evaluate
from kd.metrics import METRICS, REGION_METRICS
from kd.run_folder import FINAL, FINAL_COLUMNS, TEACHER, TRIALS, is_hyperparameter, read_table
from study.config import StudyConfig
from study.contract import TrialChoice
from study.prepare import Shared, eval_transform, recipe_for, student_for, teacher_shell
from study.results import ResultsTables, write_table
from study.roles import open_roles


def chosen_rows(run_dir: Path) -> list[dict]:
    """The rows of trials.parquet whose students the run folder keeps: each variant's chosen trial."""
    path = Path(run_dir) / TRIALS
    rows = read_table(path).to_dict("records") if path.is_file() else []
    return [row for row in rows if isinstance(row.get("students"), str)]


def seed_files(run_dir: Path, row: dict) -> list[tuple[int, Path]]:
    paths = (Path(run_dir) / row["students"]).glob("seed*.pt")
    return sorted((int(path.stem[4:]), path) for path in paths)


def score_students(
    config: StudyConfig, run_dir: Path, rows: list[dict], dataset, teacher, device: str, say=print
) -> tuple[list[dict], list[dict]]:
    """Every student of `rows` (chosen trials) on `dataset`: (one row per trial and seed with the metrics and
    the trial's hyperparameters, one row per trial, seed and image with mIoU_i). `teacher` (the
    study's) only shapes split students: their weights are all in the student files; a trial of
    another of the study's teachers is shaped by an untrained copy of its own."""
    transform, num_classes = eval_transform(config), dataset.num_classes
    seeds, images, shells = [], [], {config.teacher: teacher}
    for row in rows:
        choice = TrialChoice.from_row(row)
        recipe = recipe_for(config, choice.method, choice.recipe_overrides)
        name = choice.teacher or config.teacher
        if name not in shells:
            shells[name] = teacher_shell(config.for_teacher(name), num_classes)
        ids = {"trial_id": row["trial_id"], "method": row["method"]}
        hyperparameters = {k: v for k, v in row.items() if is_hyperparameter(k)}
        mine = []
        for seed, path in seed_files(run_dir, row):
            student = student_for(config, choice, recipe, shells[name], num_classes)
            student.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            metrics, per_image = evaluate(student.to(device), dataset, transform, config.batch_size, device)
            mine.append(
                {**ids, "variant": row["variant"], "teacher": choice.teacher, "seed": seed}
                | {m: metrics[m] for m in METRICS}
                | {m: metrics.get(m) for m in REGION_METRICS}
                | {"views": row.get("views")}
                | hyperparameters
            )
            images += [{**ids, "seed": seed, "image_id": r["id"], "miou": r["miou"]} for r in per_image]
        say(
            f"{dataset.name}: {row['variant']} ({row['trial_id']}): miou_img "
            + (", ".join(f"{m['miou_img']:.3f}" for m in mine) or "no student files")
        )
        seeds += mine
    return seeds, images


def score_chosen(
    config: StudyConfig, run_dir: Path, shared: Shared, say=print, device: str = "cpu"
) -> pd.DataFrame:
    """Score every chosen trial's students and the teacher on the test images; write final.parquet, the test
    rows of per_image.parquet and the teacher's test scores. Returns the final table."""
    test = open_roles(config, ("test",))["test"]
    teacher = teacher_shell(config, shared.num_classes, shared.teacher_state).eval()
    finals, images = score_students(config, run_dir, chosen_rows(run_dir), test, teacher, device, say)
    final = pd.DataFrame(finals, columns=None if finals else list(FINAL_COLUMNS))
    write_table(final, run_dir / FINAL)
    ResultsTables(run_dir).set_test_images([{**row, "split": "test"} for row in images])
    if shared.teacher_trained and teacher.num_classes == shared.num_classes:  # else: another label set
        record_teacher_on_test(teacher.to(device), test, config, run_dir, device)
        for name in config.teacher_names[1:]:
            mine = config.for_teacher(name)
            other = teacher_shell(mine, shared.num_classes, shared.state_of(name)).eval()
            record_teacher_on_test(other.to(device), test, mine, run_dir, device)
    return final


def record_teacher_on_test(teacher, test, config: StudyConfig, run_dir: Path, device: str) -> None:
    """teacher.json gains "test": the teacher's scores on the test images, the reference the
    students' test scores are read against (with a teacher axis, under its name in "teachers" too;
    `config`: the study of that one teacher)."""
    path = Path(run_dir) / TEACHER
    record = json.loads(path.read_text()) if path.is_file() else {"name": teacher.name}
    metrics, _ = evaluate(teacher, test, eval_transform(config), config.batch_size, device)
    scores = {m: metrics[m] for m in (*METRICS, *REGION_METRICS) if m in metrics}
    if config.teacher in record.get("teachers", {}):
        record["teachers"][config.teacher]["test"] = scores
    if config.teacher == config.teacher_names[0]:
        record["test"] = scores
    path.write_text(json.dumps(record, indent=2) + "\n")
