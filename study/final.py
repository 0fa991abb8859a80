"""Test once, after selection: each variant's chosen trial, every seed, on the test images.

While trials run, only each variant's best trial on validation keeps its students' weights
(ResultsWriter); when the study has every trial, those students are scored on the test role,
which nothing before touched. `final.parquet`: one row per (variant, seed) with the test
metrics and the trial's hyperparameters; their per-image scores join `per_image.parquet`
with split "test".
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from kd.engine import evaluate
from kd.metrics import METRICS
from study.config import StudyConfig
from study.contract import TrialChoice
from study.prepare import Shared, eval_transform, recipe_for, student_for, teacher_shell
from study.results import ResultsTables, write_table
from study.roles import open_roles
from study.schema import FINAL, FINAL_COLUMNS, is_hyperparameter


def score_chosen(config: StudyConfig, run_dir: Path, shared: Shared, say=print) -> pd.DataFrame:
    """Score every kept student on the test images; write final.parquet and the test rows of
    per_image.parquet. Returns the final table."""
    tables = ResultsTables(run_dir)
    chosen = [row for row in tables.rows.values() if isinstance(row.get("students"), str)]  # NaN: none kept
    device = "cuda" if config.gpus_per_trial > 0 and torch.cuda.is_available() else "cpu"
    test, transform = open_roles(config, ("test",))["test"], eval_transform(config)
    teacher = teacher_shell(config, shared.num_classes)
    teacher.load_state_dict(shared.teacher_state)
    teacher.eval()
    finals, images = [], []
    for row in chosen:
        choice = TrialChoice.from_row(row)
        recipe = recipe_for(config, choice.method, choice.recipe_overrides)
        hyperparameters = {k: v for k, v in row.items() if is_hyperparameter(k)}
        for path in sorted((run_dir / row["students"]).glob("seed*.pt"), key=lambda p: int(p.stem[4:])):
            seed = int(path.stem[4:])
            student = student_for(config, choice, recipe, teacher, shared.num_classes)
            student.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            metrics, per_image = evaluate(student.to(device), test, transform, config.batch_size, device)
            ids = {"trial_id": row["trial_id"], "method": row["method"]}
            finals.append(
                {**ids, "variant": row["variant"], "seed": seed, **{m: metrics[m] for m in METRICS}}
            )
            finals[-1].update(hyperparameters)
            images += [
                {**ids, "split": "test", "seed": seed, "image_id": r["id"], "miou": r["miou"]}
                for r in per_image
            ]
        say(
            f"test: {row['variant']} ({row['trial_id']}): miou_img "
            + ", ".join(f"{f['miou_img']:.3f}" for f in finals if f["trial_id"] == row["trial_id"])
        )
    final = pd.DataFrame(finals, columns=None if finals else list(FINAL_COLUMNS))
    write_table(final, run_dir / FINAL)
    tables.set_test_images(images)
    return final
