"""Datasets, paired transforms, synthetic domains and the ESD stream.

Every dataset yields dicts with `image` (uint8 [3,H,W]), `mask` (int64 [H,W], 255 = void),
`index` and `id`, and has `classes`, `num_classes`, `ignore_index`, `labelled`, `ids`.
"""

from __future__ import annotations

import os
from pathlib import Path

from kd.data.esd import MixedDataset, mixed_stream, stream_counts
from kd.data.folders import CAMVID_ENV, CamVid, Cityscapes, Folder, Kitti, SegmentationFiles
from kd.data.labels import IGNORE_INDEX, LABEL_SETS
from kd.data.subset import Subset
from kd.data.synthetic import DOMAINS, SyntheticRoadScenes, render
from kd.data.transforms import Augmented, MaxPool2x, PairedTransform, view_seed
from kd.errors import DatasetError

__all__ = [
    "Augmented",
    "CAMVID_ENV",
    "DATA_KINDS",
    "CamVid",
    "Cityscapes",
    "DOMAINS",
    "DatasetError",
    "Folder",
    "IGNORE_INDEX",
    "Kitti",
    "LABEL_SETS",
    "MaxPool2x",
    "MixedDataset",
    "PairedTransform",
    "SegmentationFiles",
    "Subset",
    "SyntheticRoadScenes",
    "locate_camvid",
    "mixed_stream",
    "open_dataset",
    "render",
    "stream_counts",
    "view_seed",
]

DATA_KINDS = ("synthetic", "camvid", "cityscapes", "kitti", "folder")
SYNTHETIC_SPLITS = {"train": "target", "val": "test", "test": "test"}


def locate_camvid() -> Path | None:
    """The CamVid copy named by $SEGKD_CAMVID, else the project's ../shared/data/camvid, else None."""
    if os.environ.get(CAMVID_ENV):
        return Path(os.environ[CAMVID_ENV])
    shared = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "camvid"
    return shared if shared.is_dir() else None


def open_dataset(
    spec: str, split: str = "train", label_set: str = "full", first_n: int | None = None, **options
):
    """A dataset from a spec string, as the study CLI's --data takes it.

    `synthetic[:DOMAIN]` (without DOMAIN the split picks it: train -> target, val and test ->
    test, or a domain name), `camvid:PATH`,
    `cityscapes:PATH`, `kitti:PATH`, `folder:IMAGES_DIR,MASKS_DIR` (pass `classes=`).
    Extra options go to the dataset's constructor.
    """
    kind, _, location = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in DATA_KINDS:
        raise DatasetError(f"unknown data kind {kind!r} in {spec!r}; use one of: {', '.join(DATA_KINDS)}.")
    if kind == "synthetic":
        domain = location or SYNTHETIC_SPLITS.get(split, split)
        return SyntheticRoadScenes(domain, label_set=label_set, first_n=first_n, **options)
    if not location:
        example = "folder:IMAGES_DIR,MASKS_DIR" if kind == "folder" else f"{kind}:PATH"
        raise DatasetError(f"data spec {spec!r} names no path; write it as {example}.")
    if kind == "folder":
        images_dir, comma, masks_dir = location.partition(",")
        if not comma:
            raise DatasetError(
                f"data spec {spec!r}: write folder:IMAGES_DIR,MASKS_DIR (two folders, comma between)."
            )
        if "classes" not in options:
            raise DatasetError("folder datasets need their classes: pass classes=[names] or a class count.")
        return Folder(images_dir, masks_dir, label_set=label_set, first_n=first_n, **options)
    factory = {"camvid": CamVid, "cityscapes": Cityscapes, "kitti": Kitti}[kind]
    return factory(location, split=split, label_set=label_set, first_n=first_n, **options)
