"""Which images play which role in a study, disjoint by construction and checked anyway.

| role      | trains            | scores                          |
|-----------|-------------------|---------------------------------|
| source    | the teacher       | -                               |
| target    | the students      | -                               |
| proximity | ESD (no labels)   | -                               |
| val       | -                 | selection: objectives, ASHA, the chosen trial |
| test      | -                 | the reported results            |

Val, test and target never share an image; neither do val or test with source or proximity,
so neither the teacher nor ESD's unlabelled stream has seen what selects or what is reported.
Counts come from the study (`target_images`, `val_images`, ...; None: every image the rule
leaves). Where the images come from:

- camvid: target = the first train images, val = the train images that follow after a gap of
  VAL_GAP, source = every train image outside val; proximity = the val split (unlabelled);
  test = the test split. With the camvid-sd counts: target = 62 frames of 0001TP and 2 of
  0006R0, val = the rest of 0006R0 and the first 0016E5 frames (far from the 0016E5 frames of
  the val split, which ESD reads as proximity images), test = 0001TP's later frames and Seq05VD.
- cityscapes: as camvid from train, proximity = train images after val; test = the val split
  (Cityscapes' test labels are not public).
- kitti, folder: one labelled list, shuffled with `split_seed`: test first, then val, target
  and proximity; source = everything outside val and test.
- synthetic: target and val from the target domain (val after target), test = the test
  domain, proximity and source their own domains.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from kd.data import Subset, open_dataset
from kd.errors import UserInputError

ROLES = ("source", "target", "proximity", "val", "test")
# Roles that may share images: the teacher may learn from the labelled target images, and
# unlabelled proximity images may be ones the teacher was trained on.
MAY_SHARE = {frozenset(("source", "target")), frozenset(("source", "proximity"))}
# camvid, cityscapes: frames of one drive next to each other look alike, so val starts this many
# train images after the target's last
VAL_GAP = 5
SHUFFLED_DEFAULTS = {"test": 0.2, "val": 0.1}  # kitti and folder: shares of the list when no count is given


@dataclass(frozen=True)
class Draw:
    """A role's images: positions `indices` of the split `split`."""

    split: str
    indices: tuple[int, ...]


def _count(config, role: str) -> int | None:
    return getattr(config, f"{role}_images")


def _head(n: int | None, available: list[int]) -> list[int]:
    return available if n is None else available[:n]


def draws(config, sizes: dict[str, int]) -> dict[str, Draw]:
    """Every role's images, from the number of images in each split (`sizes`)."""

    def first(role: str, split: str, available: list[int] | None = None) -> Draw:
        available = list(range(sizes[split])) if available is None else available
        return Draw(split, tuple(_head(_count(config, role), available)))

    kind = config.kind
    if kind in ("kitti", "folder"):
        return _shuffled(config, sizes["train"])
    if kind == "synthetic":
        target = first("target", "target")
        after = [i for i in range(sizes["target"]) if i not in set(target.indices)]
        return {
            "source": first("source", "source"),
            "target": target,
            "val": first("val", "target", after),
            "proximity": first("proximity", "proximity"),
            "test": first("test", "test"),
        }
    train = list(range(sizes["train"]))
    target = _head(_count(config, "target"), train)
    after = train[len(target) + VAL_GAP :]
    val = _head(_count(config, "val"), after)
    if kind == "camvid":
        proximity, test = first("proximity", "val"), first("test", "test")
    else:  # cityscapes
        proximity, test = first("proximity", "train", after[len(val) :]), first("test", "val")
    return {
        "source": first("source", "train", [i for i in train if i not in set(val)]),
        "target": Draw("train", tuple(target)),
        "val": Draw("train", tuple(val)),
        "proximity": proximity,
        "test": test,
    }


def _shuffled(config, n: int) -> dict[str, Draw]:
    order = list(range(n))
    random.Random(config.split_seed).shuffle(order)
    taken, start = {}, 0
    for role in ("test", "val", "target", "proximity"):
        count = _count(config, role)
        if count is None:
            count = round(SHUFFLED_DEFAULTS[role] * n) if role in SHUFFLED_DEFAULTS else n - start
        taken[role] = order[start : start + count]
        start += count
    source = [i for i in order if i not in set(taken["val"]) | set(taken["test"])]
    taken["source"] = _head(_count(config, "source"), source)
    return {role: Draw("train", tuple(taken[role])) for role in ROLES}


SPLITS = {
    "synthetic": ("source", "target", "proximity", "test"),
    "camvid": ("train", "val", "test"),
    "cityscapes": ("train", "val"),
    "kitti": ("train",),
    "folder": ("train",),
}


def open_split(config, split: str):
    options = {"image_size": tuple(config.image_size)} if config.kind == "synthetic" else {}
    if config.kind == "folder":
        options["classes"] = config.classes
    return open_dataset(config.data, split, label_set=config.label_set, **options)


def open_roles(config, roles=ROLES) -> dict[str, Subset]:
    """The datasets of `roles`; one of them left without images, or two roles sharing an image,
    stop the study here, naming the images."""
    splits = {split: open_split(config, split) for split in SPLITS[config.kind]}
    chosen = draws(config, {split: len(data) for split, data in splits.items()})
    problems = [short(config, role, chosen[role], splits) for role in roles]
    problems = [p for p in problems if p]
    problems += overlaps({role: [splits[d.split].ids[i] for i in d.indices] for role, d in chosen.items()})
    if problems:
        raise UserInputError(
            "the study's image roles are not usable:\n" + "\n".join(f"  - {p}" for p in problems)
        )
    return {role: Subset(splits[chosen[role].split], chosen[role].indices, role) for role in roles}


def short(config, role: str, drawn: Draw, splits: dict) -> str | None:
    """What is wrong when `role` got fewer images than its setting asks for, or none."""
    wanted, got = _count(config, role), len(drawn.indices)
    name = splits[drawn.split].name if hasattr(splits[drawn.split], "name") else drawn.split
    if got and wanted is not None and got < wanted:
        return (
            f"{role}_images = {wanted} but {name} has {got} image(s) left for it after the other roles: "
            f"set --{role}-images {got} (or {role}_images = {got} in the study file), or add images"
        )
    if not got:
        return (
            f"{role}: no images left in {name} after the other roles: ask for fewer with the other roles' "
            "settings (--target-images, --val-images, --test-images, --proximity-images), or add images"
        )
    return None


def overlaps(ids: dict[str, list[str]]) -> list[str]:
    """Pairs of roles that share images (except the pairs in MAY_SHARE), naming a few."""
    found = []
    names = list(ids)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            if frozenset((first, second)) in MAY_SHARE:
                continue
            shared = sorted(set(ids[first]) & set(ids[second]))
            if shared:
                listed = ", ".join(shared[:5]) + (f" and {len(shared) - 5} more" if len(shared) > 5 else "")
                found.append(f"{first} and {second} share {len(shared)} image(s): {listed}")
    return found
