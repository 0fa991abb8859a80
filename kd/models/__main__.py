"""List the models and their split points, or print their size and cost.

    python -m kd.models --list
    python -m kd.models --summary                        # params and GFLOPs at 512x1024, in seconds
    python -m kd.models --summary --latency --repeats 3  # adds the median CPU forward time (minutes)
    python -m kd.models --summary --latency --models pspnet_resnet18,sd --size 256x512
    python -m kd.models --summary --json --models deeplabv3_resnet50

Parameters and FLOPs are counted on the meta device: shapes only, no weights and no arithmetic,
so they cost the same at any --size. Only --latency runs real forward passes on the CPU, which at
512x1024 takes minutes for the whole table; it shows a progress bar on a terminal meanwhile.

A teacher named in --models brings its constructed teacher (ct) and every SD-student capacity
(sd-text, sd-table, sd-dense: kd.models.sd.SD_CAPACITIES) at its split point with it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from tqdm import tqdm

from kd.errors import UserInputError
from kd.metrics import count_flops, count_parameters, latency
from kd.models.registry import (
    SPLIT_STUDENTS,
    STUDENTS,
    TEACHERS,
    build_student,
    build_teacher,
    model_names,
    split_points,
    without_weights,
)
from kd.models.sd import SD_CAPACITIES

# The SD paper's setting: DeepLabV3-ResNet50 split after layer4; and the project's default teacher
# at the split point its studies use.
SPLIT_EXAMPLES = (("deeplabv3_resnet50", "layer4"), ("deeplabv3_efficientnet_lite0", "top"))

# Timed forward passes per model with --latency: the median of two, after one warm-up pass.
DEFAULT_REPEATS = 2


def parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"size must look like 512x1024 (height x width), got {text!r}"
        ) from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"size must be at least 1x1 pixels, got {text!r}")
    return height, width


def parse_repeats(text: str) -> int:
    """A median needs one timed pass at least."""
    try:
        repeats = int(text)
    except ValueError:
        repeats = 0
    if repeats < 1:
        raise argparse.ArgumentTypeError(f"repeats must be a whole number >= 1, got {text!r}")
    return repeats


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m kd.models", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--list", action="store_true", help="every model with its role and split points")
    action.add_argument(
        "--summary",
        action="store_true",
        help="a table of params and GFLOPs per model (add --latency for CPU forward times)",
    )
    parser.add_argument("--models", default=None, help="comma-separated names to include (default: all)")
    parser.add_argument(
        "--size",
        type=parse_size,
        default=(512, 1024),
        help="input HxW for FLOPs and --latency (default 512x1024)",
    )
    parser.add_argument(
        "--classes", type=int, default=2, help="output classes (default 2, the SD paper's road vs background)"
    )
    parser.add_argument(
        "--latency",
        action="store_true",
        help="also time CPU forward passes per model at --size, each model built in memory and run: "
        "minutes for every model at 512x1024 (off by default)",
    )
    parser.add_argument(
        "--repeats",
        type=parse_repeats,
        default=None,
        help=f"timed forward passes per model with --latency, median reported (default {DEFAULT_REPEATS})",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='print the summary as a JSON list of {"name", "params", "gflops"}, '
        'plus "latency_ms" with --latency',
    )
    args = parser.parse_args(argv)
    if args.repeats is not None and not args.latency:
        parser.error("--repeats counts the timed passes of --latency; add --latency, or leave --repeats out")
    if args.repeats is None:
        args.repeats = DEFAULT_REPEATS
    return args


def list_models() -> None:
    roles = model_names()
    width = max(map(len, roles)) + 2
    for name, role in roles.items():
        points = (
            "the teacher's, up to the split point (build with teacher= and split_point=)"
            if name in SPLIT_STUDENTS
            else ", ".join(split_points(name))
        )
        print(f"{name:<{width}} {role:<10} split points: {points}")
    print(
        "\nAlso HEAD:BACKBONE, e.g. deeplabv3:resnet34 or pspnet:mobilenet_v3_small, "
        "for any listed torchvision backbone."
    )


def summary_rows(wanted: set[str] | None, num_classes: int):
    """(label, model builder) in table order, teachers first."""
    for name in TEACHERS:
        if wanted is None or name in wanted:
            yield name, lambda name=name: build_teacher(name, num_classes)
    for name in STUDENTS:
        if wanted is None or name in wanted:
            yield name, lambda name=name: build_student(name, num_classes)
    for teacher, point in SPLIT_EXAMPLES:
        students = [("ct", {})] + [(f"sd-{name}", {"capacity": name}) for name in SD_CAPACITIES]
        for label, options in students:
            student = label.partition("-")[0]
            if wanted is None or student in wanted or teacher in wanted:
                yield (
                    f"{label} ({teacher}@{point})",
                    lambda s=student, t=teacher, p=point, o=options: build_student(
                        s,
                        num_classes,
                        teacher=build_teacher(t, num_classes, **without_weights(t)),
                        split_point=p,
                        **o,
                    ),
                )


def measure(label: str, build, shape: tuple[int, ...], repeats: int | None = None) -> dict:
    """One table row. Without `repeats` the model is built on the meta device: parameters and
    FLOPs are exact from shapes alone and nothing runs. With it, the model is built in memory and
    the median of `repeats` CPU forward passes is added."""
    with torch.device("meta" if repeats is None else "cpu"):
        model = build().eval()
    row = {"name": label, "params": count_parameters(model), "gflops": count_flops(model, shape) / 1e9}
    if repeats is not None:
        row["latency_ms"] = latency(model, shape, warmup=1, repeats=repeats)["median_ms"]
    return row


@torch.no_grad()
def summarise(args) -> None:
    wanted = set(args.models.split(",")) if args.models else None
    if wanted:
        unknown = wanted - set(model_names())
        if unknown:
            raise UserInputError(
                f"unknown model(s) {', '.join(sorted(unknown))}; see python -m kd.models --list."
            )
    height, width = args.size
    shape = (1, 3, height, width)
    rows_to_build = list(summary_rows(wanted, args.classes))
    if not args.json:
        timing = (
            f", latency on CPU ({torch.get_num_threads()} threads, median of {args.repeats})"
            if args.latency
            else " (counted on the meta device; --latency adds CPU forward times)"
        )
        print(f"input 1x3x{height}x{width}, {args.classes} classes, FLOPs = 2 x multiply-adds{timing}")
        print(
            f"{'model':<48} {'params (M)':>11} {'GFLOPs':>9}"
            + (f" {'latency (ms)':>13}" if args.latency else "")
        )
    rows = []
    # The bar goes to stderr and only on a terminal (disable=None): piped tables and JSON stay clean.
    with tqdm(
        rows_to_build, desc="timing", unit="model", leave=False, disable=None if args.latency else True
    ) as bar:
        for label, build in bar:
            bar.set_postfix_str(label)
            row = measure(label, build, shape, args.repeats if args.latency else None)
            rows.append(row)
            if not args.json:
                ms = f" {row['latency_ms']:>13.0f}" if args.latency else ""
                tqdm.write(f"{label:<48} {row['params'] / 1e6:>11.2f} {row['gflops']:>9.1f}{ms}")
                sys.stdout.flush()  # a row as soon as it is measured, also through a pipe or tee
    if args.json:
        print(json.dumps(rows, indent=1))


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        list_models() if args.list else summarise(args)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.summary and not args.json:
        print(f"({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
