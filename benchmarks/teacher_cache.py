"""SD stage 1 (feature distillation) per-epoch time with the teacher-output cache and without.

    python benchmarks/teacher_cache.py [--images 32] [--size 256x512] [--epochs 4] [--views 4]
                                       [--teacher deeplabv3_efficientnet_lite0] [--split-point top]
                                       [--device auto]
    # the SD paper's teacher:
    python benchmarks/teacher_cache.py --teacher deeplabv3_resnet50 --split-point layer4
    python benchmarks/teacher_cache.py --recipe ifvd_paper --teacher pspnet_resnet101 \
        --student pspnet_resnet18_half_os32

Goal: at least 3x faster per epoch with the cache. The gain is the teacher's share of a
step: (teacher forward + student step) / student step. Also prints the teacher's forward count
for a small study (trials x seeds x epochs) with and without the cache. The teacher is the
default one with its real ImageNet backbone; the SD student is its group-conv copy.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import InMemory, device_name, device_of, median_after_warmup  # noqa: E402

from kd.data import PairedTransform, SyntheticRoadScenes  # noqa: E402
from kd.engine import Engine, RunData, RunSettings  # noqa: E402
from kd.methods import build_recipe  # noqa: E402
from kd.models import build_student, build_teacher  # noqa: E402

GOAL_SPEEDUP = 3.0


def recipe_for(name: str, epochs: int):
    if name == "ifvd":
        return build_recipe("ifvd", {"epochs": epochs})
    recipe = build_recipe("sd", {"feature.epochs": epochs})
    return dataclasses.replace(recipe, stages=recipe.stages[:1])  # SD stage 1


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument(
        "--size", default="256x512", help="image size HxW (the crop is the full image, flipped at random)"
    )
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--teacher", default="deeplabv3_efficientnet_lite0")
    parser.add_argument("--split-point", default="top")
    parser.add_argument(
        "--recipe", choices=("sd", "ifvd"), default="sd", help="sd: SD stage 1; ifvd: the whole IFVD recipe"
    )
    parser.add_argument(
        "--student", default="sd", help="sd (the SD student of the split teacher) or a kd.models student"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--trials", type=int, default=20, help="trials of the imagined study (forward counts)"
    )
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.size.split("x"))
    device = device_of(args.device)

    target = InMemory(
        SyntheticRoadScenes("target", size=args.images, image_size=(height, width), label_set="binary")
    )
    val = InMemory(SyntheticRoadScenes("test", size=4, image_size=(height, width), label_set="binary"))
    data = RunData(target, val, train_transform=PairedTransform(hflip=True, normalize=False))
    teacher = build_teacher(args.teacher, num_classes=2).eval()
    recipe = recipe_for(args.recipe, args.epochs)
    settings = RunSettings(batch_size=args.batch_size, views=args.views, evaluate="end", device=str(device))
    where = f" split at {args.split_point}" if args.student == "sd" else ""
    print(
        f"{'SD stage 1' if args.recipe == 'sd' else 'IFVD'}: student {args.student}, "
        f"teacher {args.teacher}{where}, {args.images} images {height}x{width}, batch {args.batch_size}, "
        f"{args.epochs} epochs, {args.views} views, {device}, {torch.get_num_threads()} threads"
    )

    timings = {}
    with tempfile.TemporaryDirectory() as cache_root:
        for label, cache in (("without cache", False), ("with cache", True)):
            torch.manual_seed(0)
            if args.student == "sd":
                student = build_student("sd", 2, teacher=teacher, split_point=args.split_point)
            else:
                student = build_student(args.student, 2)
            engine = Engine(
                recipe,
                student,
                teacher,
                data,
                dataclasses.replace(settings, cache=cache),
                progress=None,
                cache_root=cache_root,
            )
            started = time.perf_counter()
            fill, filled = 0.0, 0
            for part in engine.caches.values():
                fill_start = time.perf_counter()
                filled += part.fill(batch_size=args.batch_size, progress=None)
                fill += time.perf_counter() - fill_start
            result = engine.run()
            epoch = median_after_warmup([h["seconds"] for h in result.history])
            timings[label] = epoch
            print(
                f"  {label:>14}: {epoch:7.2f} s/epoch (median of epochs 2..{args.epochs}), "
                f"teacher forwards {result.teacher_forwards + filled}, "
                f"run {time.perf_counter() - started:.1f} s"
                + (f", of which filling the cache once {fill:.1f} s" if cache else "")
            )
    speedup = timings["without cache"] / timings["with cache"]
    print(
        f"  speedup per epoch on {device_name(device)}: {speedup:.1f}x (goal >= {GOAL_SPEEDUP:g}x): "
        f"{'met' if speedup >= GOAL_SPEEDUP else 'NOT met'}"
    )

    runs = args.trials * args.seeds
    without = runs * args.epochs * args.images
    with_cache = args.views * args.images
    print(
        f"teacher forwards for a study of {args.trials} trials x {args.seeds} seeds x {args.epochs} epochs "
        f"on {args.images} images: without cache {without}, with cache {with_cache} "
        f"({args.views} views x {args.images} images, once per study) = {without / with_cache:.0f}x fewer"
    )
    return {
        "seconds_per_epoch_without_cache": timings["without cache"],
        "seconds_per_epoch_with_cache": timings["with cache"],
        "ratio": speedup,
        "goal": f"ratio >= {GOAL_SPEEDUP:g}",
        "met": speedup >= GOAL_SPEEDUP,
        "teacher_forwards_per_study_without_cache": without,
        "teacher_forwards_per_study_with_cache": with_cache,
        "device": device_name(device),
        "setup": f"{args.recipe}, teacher {args.teacher}, student {args.student}, {args.images} images "
        f"{height}x{width}, batch {args.batch_size}, {device}",
    }


if __name__ == "__main__":
    main()
