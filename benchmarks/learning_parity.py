"""Does each recipe's student learn at least as well as a plain PyTorch loop on the same data?

    python benchmarks/learning_parity.py              # plain loop, engine, baseline, ftt, sd
    python benchmarks/learning_parity.py --entries plain,engine --seeds 0,1,2,3,4
    python benchmarks/learning_parity.py --eval test  # the issue's measurement, on test
    python benchmarks/learning_parity.py --entries pspnet_plain,ifvd_student   # the IFVD family

The data are the `camvid-sd` preset's: binary road against background, the first 64 CamVid
training images at 180x240, batch 4. The plain loop is what anyone writes in 30 lines: a
5-block CNN (three strided and two dilated conv-BN-ReLU blocks, a 1x1 classifier), SGD lr
1e-2 momentum 0.9, cross-entropy, 100 epochs, no augmentation, no schedule. `engine` trains
the same CNN from the same initial weights with the `baseline` recipe through kd.engine;
`baseline`, `ftt` and `sd` are the recipes with the preset's students and teacher.
`pspnet_plain` is the same 30-line loop on the IFVD family's student (PSPNet-ResNet18, output
stride 8, from the same initial weights as `ifvd_student`), and `ifvd_student` that student
trained by its recipe through kd.engine, with the references' augmentation and deep supervision.

Evaluation is on `dev` by default: every third CamVid training image after the first 64 (101
images the target set never contains), so that the check never looks at the test images the
studies report; `--eval test` scores the 233 test images instead. A recipe that trails the
plain loop by more than the spread over seeds is a bug until shown otherwise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import InMemory, check_output  # noqa: E402

from kd.data import PairedTransform, locate_camvid, open_dataset  # noqa: E402
from kd.engine import Engine, RunData, RunSettings, evaluate  # noqa: E402
from kd.errors import UserInputError  # noqa: E402
from kd.methods import build_recipe  # noqa: E402
from kd.models.sd import sd_capacity  # noqa: E402
from kd.models.segmenter import Segmenter  # noqa: E402

SIZE = (180, 240)
TARGET_IMAGES = 64
ENTRIES = ("plain", "engine", "sd_plain", "baseline", "ftt", "sd", "pspnet_plain", "ifvd_student")
IFVD_STUDENT = "pspnet_resnet18"


def plain_cnn(seed: int) -> Segmenter:
    """Three stride-2 and two dilated 3x3 conv-BN-ReLU blocks (16, 32, 64, 64, 64) and a 1x1 classifier."""
    torch.manual_seed(seed)
    layers, channels = [], 3
    for index, width in enumerate((16, 32, 64, 64, 64)):
        strided = index < 3
        layers += [
            nn.Conv2d(
                channels,
                width,
                3,
                stride=2 if strided else 1,
                padding=1 if strided else 2,
                dilation=1 if strided else 2,
            ),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        channels = width
    return Segmenter(OrderedDict(body=nn.Sequential(*layers)), nn.Conv2d(channels, 2, 1), 2, name="plain_cnn")


def plain_loop(model: Segmenter, target, epochs: int, seed: int) -> Segmenter:
    """The 30-line loop: whole images, shuffled, SGD at a constant rate."""
    transform = PairedTransform(resize=SIZE, normalize=False)
    samples = [transform(target[i]) for i in range(len(target))]
    images = torch.stack([s["image"].as_subclass(torch.Tensor) for s in samples])
    masks = torch.stack([s["mask"].as_subclass(torch.Tensor) for s in samples])
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(order) - 3, 4):
            batch = order[start : start + 4]
            loss = F.cross_entropy(model(model.normalize(images[batch])), masks[batch], ignore_index=255)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def datasets(root: Path, split: str):
    target = InMemory(open_dataset(f"camvid:{root}", "train", label_set="binary", first_n=TARGET_IMAGES))
    if split == "val":  # the camvid-sd study's own validation role, what it selects on
        from study.config import resolve
        from study.roles import open_roles

        return target, InMemory(open_roles(resolve("camvid-sd"), ("val",))["val"])
    if split == "test":
        val = open_dataset(f"camvid:{root}", "test", label_set="binary")
    else:
        val = InMemory(open_dataset(f"camvid:{root}", "train", label_set="binary"))
        val.samples = val.samples[TARGET_IMAGES::3]
        val.ids = [s["id"] for s in val.samples]
    return target, InMemory(val) if split == "test" else val


def camvid_sd_teacher():
    """The camvid-sd preset's teacher (its head trained as the study trains it; cached)."""
    from study.config import resolve
    from study.prepare import prepare_teacher, teacher_shell

    config = resolve("camvid-sd")
    teacher = teacher_shell(config, 2)
    teacher.load_state_dict(prepare_teacher(config, 2, say=lambda line: None))
    return teacher.eval()


def run_entry(
    entry: str,
    seed: int,
    target,
    val,
    teacher,
    epochs: int | None,
    capacity: dict | None = None,
    changes: dict | None = None,
    split_point: str | None = None,
) -> dict:
    """`capacity`: the SD student's settings ({"output_stride": 8}; kd.models.sd.SDCapacity);
    `changes`: recipe overrides by target ({"train.optimizer.weight_decay": 0.0}); `split_point`:
    where the SD student copies the teacher up to (default: its last point, `top`)."""
    from kd.models import build_student
    from search_spaces.base import STUDENT
    from study.config import resolve
    from study.contract import TrialChoice
    from study.prepare import recipe_for, student_for, train_transform

    resize = PairedTransform(resize=SIZE, normalize=False)
    overrides = {f"{STUDENT}{k}": v for k, v in (capacity or {}).items()}
    if entry == "plain":
        model = plain_loop(plain_cnn(seed), target, epochs or 100, seed)
        return evaluate(model, val, resize)[0]
    if entry == "pspnet_plain":
        torch.manual_seed(seed)
        model = plain_loop(build_student(IFVD_STUDENT, 2), target, epochs or 100, seed)
        return evaluate(model, val, resize)[0]
    if entry == "sd_plain":  # the baseline's student in the 30-line loop: the network, not the recipe
        torch.manual_seed(seed)
        config = resolve("camvid-sd")
        choice = TrialChoice("baseline", overrides, split_point)
        model = student_for(config, choice, recipe_for(config, "baseline", {}), teacher, 2)
        return evaluate(plain_loop(model, target, epochs or 100, seed), val, resize)[0]
    config = resolve(
        "camvid-sd", overrides={"epochs": epochs}
    )  # None: the recipes' own (100 for every method)
    method = "baseline" if entry == "engine" else entry
    recipe = recipe_for(config, method, changes)
    if entry == "engine":
        recipe = build_recipe("baseline", {"epochs": epochs or 100} | (changes or {}))
        student = plain_cnn(seed)
    elif entry == "ifvd_student":
        torch.manual_seed(seed)
        student = build_student(IFVD_STUDENT, 2)
    else:
        torch.manual_seed(seed)
        capacity_of = overrides if method != "ftt" else {}  # CT is the teacher's own copy, no SD capacity
        student = student_for(config, TrialChoice(method, capacity_of, split_point), recipe, teacher, 2)
    data = RunData(
        target,
        val,
        None,
        train_transform=train_transform(config, recipe),
        eval_transform=resize,
    )
    settings = RunSettings(batch_size=config.batch_size, seed=seed, views=config.views, evaluate="end")
    return Engine(recipe, student, teacher, data, settings, progress=None).run().final


def _settings(parser, flag: str, given: list[str]) -> dict:
    """KEY=VALUE settings as a dict of numbers where they parse as numbers."""
    malformed = [s for s in given if "=" not in s]
    if malformed:
        parser.error(f"{flag} takes KEY=VALUE, got {', '.join(malformed)}")
    return {k: _value(v) for k, _, v in (s.partition("=") for s in given)}


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", default=",".join(ENTRIES), help=f"some of {', '.join(ENTRIES)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--eval", choices=("dev", "val", "test"), default="dev")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="each method's epochs in all (default: the recipes' own, 100)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--json",
        metavar="PATH",
        help="also write every seed's scores (miou, miou_img, hp_acc, var) and the command to PATH, "
        "e.g. next to a study's tables so that a comparison with the plain loop can be recomputed",
    )
    parser.add_argument(
        "--student",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an SD student capacity setting for sd_plain, baseline and sd, e.g. output_stride=8",
    )
    parser.add_argument(
        "--recipe",
        action="append",
        default=[],
        metavar="TARGET=VALUE",
        help="a recipe override for engine, baseline, ftt and sd, e.g. train.optimizer.weight_decay=0",
    )
    parser.add_argument(
        "--split-point", help="the SD student's and CT's split point (default: the teacher's last)"
    )
    args = parser.parse_args(argv)
    check_output(parser, args.json)
    changes, capacity = (
        _settings(parser, "--recipe", args.recipe),
        _settings(parser, "--student", args.student),
    )
    try:  # a typo is refused before the teacher and the students train
        build_recipe("baseline", changes)
        sd_capacity(**capacity)
    except (UserInputError, TypeError) as error:
        parser.error(str(error))
    root = locate_camvid()
    if root is None:
        print("skipped: no CamVid copy (set SEGKD_CAMVID or put it in ../shared/data/camvid)")
        return {"skipped": "no CamVid copy"}
    torch.set_num_threads(args.threads)
    entries = [e.strip() for e in args.entries.split(",") if e.strip()]
    unknown = sorted(set(entries) - set(ENTRIES))
    if unknown:
        parser.error(f"unknown entries {', '.join(unknown)}; choose from {', '.join(ENTRIES)}")
    target, val = datasets(root, args.eval)
    teacher = camvid_sd_teacher() if set(entries) & {"ftt", "sd", "sd_plain", "baseline"} else None
    results = {}
    for entry in entries:
        scores, per_seed = [], {}
        for seed in (int(s) for s in args.seeds.split(",")):
            started = time.perf_counter()
            final = run_entry(
                entry, seed, target, val, teacher, args.epochs, capacity, changes, args.split_point
            )
            scores.append(final["miou_img"])
            per_seed[seed] = {key: float(final[key]) for key in ("miou", "miou_img", "hp_acc", "var")}
            print(
                f"{entry:<9} seed {seed}: miou_img {final['miou_img']:.3f} hp_acc {final['hp_acc']:.2f} "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
        results[entry] = {
            "miou_img": scores,
            "mean": statistics.fmean(scores),
            "sd": statistics.stdev(scores) if len(scores) > 1 else 0.0,
            "per_seed": per_seed,
        }
    plain = results.get("plain", {}).get("mean")
    print(f"\nmIoU_img on {args.eval} ({len(val)} images), mean and sd over seeds:")
    for entry, row in results.items():
        gap = (
            f", {row['mean'] - plain:+.3f} against the plain loop"
            if plain is not None and entry != "plain"
            else ""
        )
        print(f"  {entry:<9} {row['mean']:.3f} +- {row['sd']:.3f}{gap}")
    print(json.dumps(results))
    if args.json:
        record = {
            "command": "python benchmarks/learning_parity.py " + " ".join(argv or sys.argv[1:]),
            "eval": args.eval,
            "eval_images": len(val),
            "epochs": args.epochs,
            "results": results,
        }
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
