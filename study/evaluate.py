"""python -m study.evaluate: score a finished study's chosen students again, on any data or resolution.

    python -m study.evaluate runs/camvid-sd                                   # its test images again
    python -m study.evaluate runs/camvid-sd --data cityscapes:../shared/data/cityscapes
    python -m study.evaluate runs/camvid-sd --split val --size 360x480

The study keeps the students of each variant's chosen trial (every seed) in its run folder. Each
is rebuilt from the study's configuration, loaded and scored on the role `--split` of `--data`
(drawn by the study's own role rules, study/roles.py), resized to `--size`. The rows go to
RUN_DIR/evaluation.parquet, one per trial, seed and evaluation; an evaluation run again on the
same (data, split, size) replaces its rows, others stay.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import pandas as pd
import torch

from kd.errors import UserInputError
from kd.run_folder import CONFIG, EVALUATION
from study import config as study_config
from study.checks import data_problems
from study.config import StudyConfig
from study.final import chosen_rows, score_students, seed_files
from study.prepare import teacher_shell
from study.results import write_table
from study.roles import open_roles

EVALUATED_ON = ("data", "split", "image_size")  # what names one evaluation in the table


def parse_size(text: str) -> list[int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserInputError(f"--size {text!r}: give HEIGHTxWIDTH in pixels, e.g. 360x480") from None
    if height < 1 or width < 1:
        raise UserInputError(f"--size {text!r}: both sides must be at least 1 pixel")
    return [height, width]


def evaluation_config(run_dir: Path, data: str | None, size: str | None) -> StudyConfig:
    """The study's configuration with the data and size to score on, checked before any model is built."""
    if not (run_dir / CONFIG).is_file():
        raise UserInputError(f"{run_dir} is not a study's run folder (no config.json), e.g. runs/default")
    try:
        config = study_config.load(run_dir)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserInputError(
            f"{run_dir / CONFIG} cannot be read ({err}): restore the study's {CONFIG}."
        ) from None
    changes = {"data": data} if data else {}
    if size:
        changes["image_size"] = parse_size(size)
    config = dataclasses.replace(config, **changes)
    found = data_problems(config)
    if found:
        raise UserInputError("cannot evaluate on that data:\n" + "\n".join(f"  - {p}" for p in found))
    return config


def evaluate_run(
    run_dir, data: str | None = None, split: str = "test", size: str | None = None, say=print
) -> pd.DataFrame:
    """Score the students of `run_dir`'s chosen trials; add their rows to evaluation.parquet, return them."""
    run_dir = Path(run_dir)
    config = evaluation_config(run_dir, data, size)
    rows = chosen_rows(run_dir)
    if not rows:
        raise UserInputError(
            f"{run_dir} kept no students: a study keeps each variant's chosen trial once its trials "
            "finish (studies started before this version keep none); run or --resume it first."
        )
    gone = [
        f"{run_dir / row['students']} ({row['trial_id']})" for row in rows if not seed_files(run_dir, row)
    ]
    if gone:
        raise UserInputError(
            f"the chosen trials' students are gone: no seed*.pt in {', '.join(gone)}; restore them "
            "from a copy of the run folder, or run the study again."
        )
    dataset = open_roles(config, (split,))[split]
    teacher = teacher_shell(config, dataset.num_classes)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    size = "x".join(map(str, config.image_size)) if config.image_size else "original"
    say(f"{len(rows)} chosen trial(s) on {dataset.name}: {len(dataset)} images at {size}")
    try:
        seeds, _ = score_students(config, run_dir, rows, dataset, teacher, device, say)
    except RuntimeError as err:
        if "size mismatch" not in str(err):
            raise
        raise UserInputError(
            f"the students predict another number of classes than the {dataset.num_classes} of "
            f"{dataset.name}: evaluate on data with the study's label set ({config.label_set}) "
            "and classes."
        ) from None
    evaluated = pd.DataFrame(seeds).assign(data=config.data, split=split, image_size=size)
    write_table(merged(run_dir / EVALUATION, evaluated), run_dir / EVALUATION)
    return evaluated


def merged(path: Path, evaluated: pd.DataFrame) -> pd.DataFrame:
    """The table at `path` with `evaluated`'s rows in place of any earlier ones of the same evaluation."""
    if not path.is_file():
        return evaluated
    earlier = pd.read_parquet(path)
    same = (
        earlier[list(EVALUATED_ON)]
        .apply(tuple, axis=1)
        .isin(set(evaluated[list(EVALUATED_ON)].apply(tuple, axis=1)))
    )
    return pd.concat([earlier[~same], evaluated], ignore_index=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m study.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", help="a study's run folder, e.g. runs/camvid-sd")
    parser.add_argument(
        "--data",
        help="synthetic, camvid:PATH, cityscapes:PATH, kitti:PATH or folder:IMAGES_DIR,MASKS_DIR "
        "(default: the study's own)",
    )
    parser.add_argument(
        "--split",
        default="test",
        choices=("test", "val", "target", "proximity", "source"),
        help="which role's images, drawn by the study's rules on --data (default: test)",
    )
    parser.add_argument(
        "--size", metavar="HxW", help="resize images to this, e.g. 360x480 (default: the study's)"
    )
    args = parser.parse_args(argv)
    try:
        evaluate_run(args.run_dir, args.data, args.split, args.size)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(Path(args.run_dir) / EVALUATION)
    return 0


if __name__ == "__main__":
    sys.exit(main())
