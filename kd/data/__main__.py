"""Check a dataset before a study: what it holds, whether every file decodes, what it looks like.

python -m kd.data synthetic --split proximity --preview proximity.png
python -m kd.data camvid:../shared/data/camvid --split test --label-set binary --verify
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from PIL import Image

from kd.data import DATA_KINDS, LABEL_SETS, open_dataset
from kd.errors import UserInputError

# Distinct colours for masks in previews; void is black.
PREVIEW_COLOURS = np.array(
    [
        [128, 64, 128],
        [244, 35, 232],
        [70, 70, 70],
        [70, 130, 180],
        [107, 142, 35],
        [0, 0, 142],
        [220, 20, 60],
        [250, 170, 30],
        [220, 220, 0],
        [152, 251, 152],
        [102, 102, 156],
        [190, 153, 153],
        [153, 153, 153],
        [255, 0, 0],
        [0, 0, 70],
        [0, 60, 100],
        [0, 80, 100],
        [0, 0, 230],
        [119, 11, 32],
    ],
    np.uint8,
)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m kd.data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "spec", help=f"dataset spec: {', '.join(DATA_KINDS)} (e.g. camvid:PATH, folder:IMAGES,MASKS)"
    )
    parser.add_argument(
        "--split", default="train", help="split (real data) or domain (synthetic); default train"
    )
    parser.add_argument("--label-set", default="full", choices=LABEL_SETS, help="default full")
    parser.add_argument("--first-n", type=int, default=None, help="keep the first N images in sorted order")
    parser.add_argument(
        "--classes", default=None, help="folder data: comma-separated class names, or a count"
    )
    parser.add_argument(
        "--verify", action="store_true", help="decode every image and mask; print class frequencies"
    )
    parser.add_argument(
        "--preview", metavar="PNG", default=None, help="write images above their masks to this PNG"
    )
    parser.add_argument("--count", type=int, default=4, help="images in the preview (default 4)")
    return parser.parse_args(argv)


def _classes(text: str | None):
    if text is None:
        return {}
    return {"classes": int(text) if text.isdigit() else [name.strip() for name in text.split(",")]}


def describe(dataset) -> None:
    print(f"{dataset.name}: {len(dataset)} images, {'labelled' if dataset.labelled else 'unlabelled'}")
    print(
        f"  {dataset.num_classes} classes ({dataset.label_set}): {', '.join(dataset.classes)}; "
        f"ignore = {dataset.ignore_index}"
    )
    ids = dataset.ids
    print(f"  first ids: {', '.join(ids[:3])}{' ...' if len(ids) > 3 else ''}")


def verify(dataset) -> None:
    counts = np.zeros(dataset.num_classes + 1, np.int64)  # last: ignored
    start, step = time.perf_counter(), max(1, len(dataset) // 10)
    for index in range(len(dataset)):
        mask = dataset[index]["mask"]
        counts += np.bincount(
            torch.where(mask == dataset.ignore_index, dataset.num_classes, mask).flatten().numpy(),
            minlength=dataset.num_classes + 1,
        )
        if (index + 1) % step == 0 or index + 1 == len(dataset):
            print(f"  decoded {index + 1}/{len(dataset)} ({time.perf_counter() - start:.1f} s)", flush=True)
    total = counts.sum()
    print("  pixel share per class:")
    for name, count in zip((*dataset.classes, "(ignored)"), counts, strict=True):
        print(f"    {name:<16} {100 * count / total:6.2f} %")


def preview(dataset, path: str, count: int) -> None:
    columns = []
    for index in range(min(count, len(dataset))):
        sample = dataset[index]
        image = sample["image"].permute(1, 2, 0).numpy()
        mask = sample["mask"].numpy()
        colours = np.zeros((*mask.shape, 3), np.uint8)
        valid = mask != dataset.ignore_index
        colours[valid] = PREVIEW_COLOURS[mask[valid] % len(PREVIEW_COLOURS)]
        columns.append(np.concatenate([image, colours], axis=0))
    Image.fromarray(np.concatenate(columns, axis=1)).save(path)
    print(f"  preview of {len(columns)} images written to {path}")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        dataset = open_dataset(args.spec, args.split, args.label_set, args.first_n, **_classes(args.classes))
        describe(dataset)
        if args.verify:
            verify(dataset)
        if args.preview:
            preview(dataset, args.preview, args.count)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
