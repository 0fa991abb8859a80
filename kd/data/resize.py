"""A copy of a dataset folder at a study's image size, which the study reads as it reads the original.

python -m kd.data.resize camvid:../shared/data/camvid /tmp/camvid-180x240 --image-size 180,240

A study resizes every file to its `image_size` first (torchvision's Resize: antialiased for
images, nearest for masks), and resizing to the size an image already has changes nothing. So a
copy made with that same Resize gives the study byte-identical samples, views and scores, at a
fraction of the size (CamVid at 180x240: 47 MB of PNG against 182 MB), for a machine the full
data cannot reach. The copy is checked against the original through the study's readers before
this returns: every split both hold, a spread of images, with and without the study's resize.

Which files are masks: single-channel ones (class values: resized by nearest neighbour, values
kept); colour ones are images. Other files (split lists, READMEs) are copied as they are.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from kd.data.folders import IMAGE_SUFFIXES
from kd.data.transforms import PairedTransform
from kd.errors import DatasetError, UserInputError

KINDS = ("camvid", "cityscapes", "kitti")  # a dataset in one folder (folder: has two roots)
SPLITS = ("train", "val", "test", "training")
CHECKED_PER_SPLIT = 12


def resize_file(source: Path, target: Path, resize: v2.Resize) -> None:
    """One file through the study's first step; a single-channel file is a mask."""
    with Image.open(source) as img:
        array = np.asarray(img)
        mode = img.mode
    if array.ndim == 2:
        resized = (
            resize(tv_tensors.Mask(torch.from_numpy(array.astype(np.int64)))).numpy().astype(array.dtype)
        )
        out = Image.fromarray(resized)
        if mode == "P":
            out = out.convert("L")  # the class values, as the readers see them
    else:
        rgb = np.array(Image.fromarray(array).convert("RGB"))
        tensor = tv_tensors.Image(torch.from_numpy(rgb).permute(2, 0, 1).contiguous())
        out = Image.fromarray(resize(tensor).permute(1, 2, 0).numpy())
    target.parent.mkdir(parents=True, exist_ok=True)
    out.save(target)


def resized_copy(spec: str, destination: str | Path, image_size: tuple[int, int], say=print) -> Path:
    """Copy the dataset `spec` (KIND:PATH) to `destination` at `image_size` (height, width), then
    check that the study reads the same samples from both. Returns the copy's KIND:PATH."""
    kind, _, root = spec.partition(":")
    if kind not in KINDS or not root:
        raise UserInputError(f"resize takes {', '.join(k + ':PATH' for k in KINDS)}, got {spec!r}.")
    source, destination = Path(root), Path(destination)
    if not source.is_dir():
        raise UserInputError(f"dataset folder {source} does not exist.")
    if destination.exists() and any(destination.iterdir()):
        raise UserInputError(f"{destination} is not empty: give a new folder for the copy.")
    if any(p.suffix.lower() in (".jpg", ".jpeg") for p in source.rglob("*")):
        raise UserInputError(
            f"{source} holds JPEG files: a resized JPEG is not the image the study would see."
        )
    resize = v2.Resize(tuple(image_size), antialias=True)
    files = sorted(p for p in source.rglob("*") if p.is_file())
    for count, path in enumerate(files, 1):
        target = destination / path.relative_to(source)
        if path.suffix.lower() in IMAGE_SUFFIXES:
            resize_file(path, target, resize)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        if count % 200 == 0 or count == len(files):
            say(f"  {count}/{len(files)} files")
    copy = f"{kind}:{destination}"
    check_same_samples(spec, copy, image_size, say)
    return copy


def check_same_samples(original: str, copy: str, image_size: tuple[int, int], say=print) -> None:
    """The study's eval transform (resize to `image_size`) gives identical tensors from both, on a
    spread of each split the original has; raises DatasetError naming the first that differs."""
    from kd.data import open_dataset

    transform = PairedTransform(resize=tuple(image_size), normalize=False)
    for split in SPLITS:
        try:
            before = open_dataset(original, split)
        except (DatasetError, UserInputError, ValueError):
            continue  # a split this layout does not have
        after = open_dataset(copy, split)
        indices = np.linspace(0, len(before) - 1, min(CHECKED_PER_SPLIT, len(before))).astype(int)
        for index in indices:
            a, b = transform(before[int(index)]), transform(after[int(index)])
            if not (torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])):
                raise DatasetError(f"the copy of {before.ids[index]} ({split}) differs from the original.")
        say(f"  {split}: {len(before)} images, {len(indices)} checked: identical samples")


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m kd.data.resize",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("spec", help=f"the dataset: {', '.join(k + ':PATH' for k in KINDS)}")
    parser.add_argument("destination", help="a new (or empty) folder for the copy")
    parser.add_argument("--image-size", required=True, help="HEIGHT,WIDTH: the study's image_size")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        size = tuple(int(v) for v in args.image_size.split(","))
        if len(size) != 2 or min(size) < 1:
            raise ValueError
    except ValueError:
        print(
            f"error: --image-size must be HEIGHT,WIDTH (e.g. 180,240), got {args.image_size!r}",
            file=sys.stderr,
        )
        return 2
    try:
        copy = resized_copy(args.spec, args.destination, size)
    except (UserInputError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"copy: {copy} (give it to the study as --data {copy})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
