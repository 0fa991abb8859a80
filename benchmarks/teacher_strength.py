"""How strong is a teacher a preset can train, class by class, on the preset's validation images?

    python benchmarks/teacher_strength.py --teacher deeplabv3_efficientnet_lite0_os16 --trainable all
    python benchmarks/teacher_strength.py --teacher deeplabv3_efficientnet_lite0_os16 --trainable all \\
        --weight-decay 1e-4 --augmentation ifvd --json docs/results/camvid-11/teachers/os16-ifvd.json
    python benchmarks/teacher_strength.py --student-checkpoint PATH   # a trained pspnet_resnet18 instead
    python benchmarks/teacher_strength.py --teacher-checkpoint PATH --split test  # a study's teacher

A distillation ladder means something only when the teacher knows more than the student; on
`camvid-11` (180x240) the question is open (docs/RESULTS.md). The teacher trains as the study trains
it (kd.models.fit_teacher on the preset's source images, cached under --cache-dir), with the
settings a study cannot yet change (weight decay, the references' scale augmentation) as flags. The
validation images are the preset's. The test images are read only with `--split test`: for a
reference row beside a finished study's test scores, never to choose a teacher.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import check_output  # noqa: E402

from kd.engine import evaluate  # noqa: E402
from kd.metrics import ConfusionMeter  # noqa: E402
from kd.models import build_student, build_teacher, fit_teacher  # noqa: E402
from kd.models.checkpoints import load_checkpoint  # noqa: E402
from kd.models.teacher_training import TRAINABLE, TeacherTraining  # noqa: E402
from study.config import resolve  # noqa: E402
from study.prepare import open_data, teacher_training  # noqa: E402
from study.roles import open_roles  # noqa: E402


def per_class_iou(model, dataset, transform) -> list[float]:
    meter = ConfusionMeter(model.num_classes, dataset.ignore_index)
    model.eval()
    with torch.no_grad():
        for index in range(len(dataset)):
            sample = transform(dataset[index])
            image = sample["image"].as_subclass(torch.Tensor)[None]
            meter.update(
                model(model.normalize(image)).argmax(1), sample["mask"].as_subclass(torch.Tensor)[None]
            )
    return [round(value, 3) for value in meter.compute()["iou"]]


def trained_teacher(args, config, source):
    torch.manual_seed(config.seed)  # as study.prepare: the head's initial weights are in the content hash
    teacher = build_teacher(args.teacher, num_classes=source.num_classes)
    family = None if args.augmentation == "none" else args.augmentation
    settings, transform = teacher_training(config, teacher, family)
    settings = dataclasses.replace(
        settings, trainable=args.trainable, epochs=args.epochs, weight_decay=args.weight_decay
    )
    fit_teacher(teacher, source, settings, transform=transform, cache_dir=args.cache_dir)
    return teacher


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="camvid-11")
    parser.add_argument("--teacher", default="deeplabv3_efficientnet_lite0_os16")
    parser.add_argument("--trainable", choices=TRAINABLE, default="all")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--weight-decay", type=float, default=TeacherTraining.weight_decay)
    parser.add_argument("--augmentation", choices=("none", "ifvd"), default="none")
    parser.add_argument("--cache-dir", default=None, help="trained teachers (default $SEGKD_CACHE/teachers)")
    parser.add_argument(
        "--student-checkpoint", help="score this pspnet_resnet18 state dict instead of a teacher"
    )
    parser.add_argument(
        "--teacher-checkpoint",
        help="score this trained --teacher (a file fit_teacher saved, e.g. from a study's teacher cache) "
        "instead of training one",
    )
    parser.add_argument(
        "--split",
        choices=("val", "test"),
        default="val",
        help="the preset's images to score on (default val; test only to report beside a finished study)",
    )
    parser.add_argument("--json", help="also write the row here")
    args = parser.parse_args(argv)
    if args.student_checkpoint and args.teacher_checkpoint:
        parser.error("--student-checkpoint and --teacher-checkpoint each name the model to score; give one")
    check_output(parser, args.json)
    torch.set_num_threads(1)
    config = resolve(args.preset)
    roles = open_roles(config, ("source", "target", "val", "test"))
    data = open_data(config, roles)
    images = roles["test"] if args.split == "test" else data.val
    started = time.perf_counter()
    if args.student_checkpoint:
        model = build_student("pspnet_resnet18", roles["val"].num_classes)
        model.load_state_dict(torch.load(args.student_checkpoint, map_location="cpu", weights_only=True))
        what = {"student": "pspnet_resnet18", "checkpoint": args.student_checkpoint}
    elif args.teacher_checkpoint:
        model = build_teacher(args.teacher, num_classes=roles["val"].num_classes)
        load_checkpoint(model, args.teacher_checkpoint)
        what = {"teacher": args.teacher, "checkpoint": args.teacher_checkpoint}
    else:
        model = trained_teacher(args, config, roles["source"])
        what = {
            k: getattr(args, k) for k in ("teacher", "trainable", "epochs", "weight_decay", "augmentation")
        }
    metrics, _ = evaluate(model, images, data.eval_transform, config.batch_size)
    row = {
        "command": "python benchmarks/teacher_strength.py " + " ".join(argv or sys.argv[1:]),
        **what,
        "split": args.split,
        "classes": list(data.val.classes),
        "iou": per_class_iou(model, images, data.eval_transform),
        "miou": round(metrics["miou"], 3),
        "miou_img": round(metrics["miou_img"], 3),
        "seconds": round(time.perf_counter() - started),
    }
    print(json.dumps(row))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(row, handle, indent=1)
            handle.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
