"""Does SD's stage 3 (fine-tuning the whole student) help, and with which BatchNorm handling?

    python benchmarks/sd_stage3.py --seeds 0,1                  # about 25 min a seed on one core
    python benchmarks/sd_stage3.py --method esd --r 1 --seeds 0,1

Trains SD's (or ESD's) stages 1 and 2 once per seed on camvid-sd's data (the first 64 CamVid
training images, binary road, 180x240, the preset's teacher; ESD's proximity images are the
101 of CamVid's val split, labels unused), then stage 3 from that same student with each
BatchNorm handling (`precise`, `frozen`, `train`), and scores every result on the camvid-sd
study's validation images (`--eval val`, the default: what a study may choose on) or on `dev`
(`--eval dev`: every third CamVid training image after the first 64; 34 of them are validation
images and 67 teacher-source images). The numbers behind the recipes' stage-3 default
(kd/methods/recipes.py; docs/guide/distillation.md, "BatchNorm").
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import InMemory, check_output  # noqa: E402
from learning_parity import SIZE, camvid_sd_teacher, datasets  # noqa: E402

from kd.data import PairedTransform, locate_camvid, open_dataset  # noqa: E402
from kd.engine import Engine, RunData, RunSettings  # noqa: E402
from kd.methods import build_recipe  # noqa: E402
from kd.methods.recipe import BATCHNORM  # noqa: E402


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="0")
    parser.add_argument(
        "--total-epochs", type=int, default=None, help="SD's epochs in all (default: the recipe's 100)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--method", choices=("sd", "esd"), default="sd")
    parser.add_argument("--r", type=float, help="ESD's ratio r (--method esd; default: the recipe's 1)")
    parser.add_argument(
        "--eval", choices=("val", "dev"), default="val", help="the images every result is scored on"
    )
    parser.add_argument(
        "--views",
        default=None,
        help='"fresh" or a bank of N views per image (default: the camvid-sd preset\'s)',
    )
    parser.add_argument("--json", metavar="PATH", help="also write the rows to PATH")
    args = parser.parse_args(argv)
    check_output(parser, args.json)
    if args.r is not None and args.method != "esd":
        parser.error("--r is ESD's ratio; give --method esd too")
    root = locate_camvid()
    if root is None:
        print("skipped: no CamVid copy (set SEGKD_CAMVID or put it in ../shared/data/camvid)")
        return []
    torch.set_num_threads(args.threads)
    from study.config import resolve
    from study.contract import TrialChoice
    from study.prepare import student_for

    config = resolve("camvid-sd")
    teacher = camvid_sd_teacher()
    target, dev = datasets(root, args.eval)
    views = config.views if args.views is None else (args.views if args.views == "fresh" else int(args.views))
    proximity = (
        InMemory(open_dataset(f"camvid:{root}", "val", label_set="binary")) if args.method == "esd" else None
    )
    data = RunData(
        target,
        dev,
        proximity,
        train_transform=PairedTransform(resize=SIZE, hflip=True, normalize=False),
        eval_transform=PairedTransform(resize=SIZE, normalize=False),
    )
    overrides = {"total_epochs": args.total_epochs} if args.total_epochs else {}
    recipe = build_recipe(args.method, {**overrides, **({"r": args.r} if args.r is not None else {})})
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        settings = RunSettings(batch_size=config.batch_size, seed=seed, views=views, evaluate="end")
        torch.manual_seed(seed)
        student = student_for(config, TrialChoice(args.method, {}), recipe, teacher, 2)
        stage2 = Engine(
            dataclasses.replace(recipe, stages=recipe.stages[:2]),
            student,
            teacher,
            data,
            settings,
            progress=None,
        ).run()
        rows.append(
            {
                "method": recipe.name,
                "seed": seed,
                "eval": args.eval,
                "views": str(views),
                "after": "stage 2",
                "miou_img": stage2.final["miou_img"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
        for batchnorm in BATCHNORM:
            finetune = dataclasses.replace(recipe.stage("finetune"), batchnorm=batchnorm)
            result = Engine(
                dataclasses.replace(recipe, stages=(finetune,)),
                copy.deepcopy(student),
                teacher,
                data,
                settings,
                progress=None,
            ).run()
            rows.append(
                {
                    "method": recipe.name,
                    "seed": seed,
                    "eval": args.eval,
                    "views": str(views),
                    "after": f"stage 3, batchnorm {batchnorm}",
                    "miou_img": result.final["miou_img"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
