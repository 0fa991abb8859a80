"""Label sets: class names, the ignore value, and raw-value -> train-id lookup tables.

Every dataset stores masks in its own raw encoding (CamVid class indices with 11 = void,
Cityscapes labelIds, ...). A lookup table (LUT) of 256 entries maps raw values to the
label set a method trains on: the dataset's full class set or the SD paper's binary
road-vs-background set. Raw values that the dataset does not define map to INVALID so a
single vectorised check finds them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kd.errors import UserInputError

IGNORE_INDEX = 255
INVALID = -1
LABEL_SETS = ("full", "binary")
BINARY_CLASSES = ("background", "road")


@dataclass(frozen=True)
class RawLabels:
    """How a dataset encodes its masks on disk."""

    classes: tuple[str, ...]  # train-id order of the full label set
    raw_to_train: dict[int, int]  # every raw value that may occur -> train id or IGNORE_INDEX
    road: int  # train id of the road class, for the binary label set

    def lut(self, label_set: str) -> np.ndarray:
        if label_set not in LABEL_SETS:
            raise UserInputError(f"unknown label set {label_set!r}; choose one of {', '.join(LABEL_SETS)}")
        table = np.full(256, INVALID, dtype=np.int16)
        for raw, train in self.raw_to_train.items():
            if label_set == "binary" and train != IGNORE_INDEX:
                train = int(train == self.road)
            table[raw] = train
        return table

    def class_names(self, label_set: str) -> tuple[str, ...]:
        return BINARY_CLASSES if label_set == "binary" else self.classes


def identity_labels(classes: tuple[str, ...], road: int, void_values: tuple[int, ...] = ()) -> RawLabels:
    """Masks that already hold train ids 0..C-1, with the given raw values meaning void."""
    mapping = {i: i for i in range(len(classes))}
    mapping[IGNORE_INDEX] = IGNORE_INDEX
    mapping.update({v: IGNORE_INDEX for v in void_values})
    return RawLabels(classes=tuple(classes), raw_to_train=mapping, road=road)


CAMVID = identity_labels(
    (
        "sky",
        "building",
        "pole",
        "road",
        "pavement",
        "tree",
        "sign_symbol",
        "fence",
        "car",
        "pedestrian",
        "bicyclist",
    ),
    road=3,
    void_values=(11,),
)


def _cityscapes_labels() -> RawLabels:
    # torchvision ships the official labelId -> trainId table; reuse it rather than copy it.
    from torchvision.datasets import Cityscapes

    train_classes = sorted((c for c in Cityscapes.classes if 0 <= c.train_id < 255), key=lambda c: c.train_id)
    mapping = {
        c.id: (c.train_id if 0 <= c.train_id < 255 else IGNORE_INDEX) for c in Cityscapes.classes if c.id >= 0
    }
    return RawLabels(
        classes=tuple(c.name.replace(" ", "_") for c in train_classes),
        raw_to_train=mapping,
        road=next(c.train_id for c in train_classes if c.name == "road"),
    )


CITYSCAPES = _cityscapes_labels()
