"""Class maps: a teacher trained on one label set distils into a student of another.

A map groups the teacher's (source) classes into the student's (target) classes. The teacher's
logits become target logits by `map_logits`: target logit j = logsumexp of the source logits
in group j, so that softmax(mapped) is the teacher's probabilities summed per group and
renormalised over the mapped classes (source classes in no group are dropped: their share is
spread over the rest in proportion). Every logit-level consumer (KD, CWD, the critic, the
teacher cache, the teacher's own scores) then reads target classes; feature-level terms never
see the classes. At temperature T, KD divides the mapped logits by T: softmax(mapped / T) is
not softmax(source / T) summed per group, unless T = 1.

A plain dict names the maps; a plugin adds its own with `register_class_map`:

    register_class_map(to_road("mine-road", my_classes, my_classes.index("road")))
    register_class_map(by_name("mine-camvid11", my_classes, CAMVID.classes, {"road": ("road", "lane"), ...}))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kd.data.labels import BINARY_CLASSES, CAMVID, CITYSCAPES
from kd.errors import UserInputError
from kd.registry import register


@dataclass(frozen=True)
class ClassMap:
    """`groups[j]`: the indices of the source classes summed into target class j."""

    name: str
    source: tuple[str, ...]
    target: tuple[str, ...]
    groups: tuple[tuple[int, ...], ...]

    def __post_init__(self):
        # tuples whatever the caller gave: maps compare equal to label sets' class tuples
        object.__setattr__(self, "source", tuple(self.source))
        object.__setattr__(self, "target", tuple(self.target))
        object.__setattr__(self, "groups", tuple(tuple(group) for group in self.groups))
        problems = []
        if len(self.groups) != len(self.target):
            problems.append(f"{len(self.groups)} groups for {len(self.target)} target classes")
        seen: set[int] = set()
        for name, group in zip(self.target, self.groups, strict=False):
            if not group:  # logsumexp of nothing is -inf: a class the teacher would never predict
                problems.append(f"target class {name!r} has no source class")
            outside = [i for i in group if not 0 <= i < len(self.source)]
            if outside:
                problems.append(
                    f"target class {name!r} names source indices {outside} outside 0..{len(self.source) - 1}"
                )
            twice = seen & set(group) - set(outside)
            if twice:  # a probability counted in two classes: the mapped ones would not sum to 1
                problems.append(f"source classes {[self.source[i] for i in sorted(twice)]} are in two groups")
            seen |= set(group)
        if problems:
            raise UserInputError(f"class map {self.name!r}: {'; '.join(problems)}.")

    @property
    def dropped(self) -> tuple[str, ...]:
        """The source classes in no group."""
        kept = {i for group in self.groups for i in group}
        return tuple(name for i, name in enumerate(self.source) if i not in kept)


CLASS_MAPS: dict[str, ClassMap] = {}


def register_class_map(class_map: ClassMap) -> ClassMap:
    return register(CLASS_MAPS, "class map", class_map.name, class_map)


def map_logits(logits: torch.Tensor, class_map: ClassMap) -> torch.Tensor:
    """[N, source classes, ...] logits -> [N, target classes, ...]: logsumexp over each group (dim 1).

    Computed in float32 (a bfloat16 sum of exponentials loses the small classes), returned in the
    input's dtype."""
    if logits.shape[1] != len(class_map.source):
        raise ValueError(
            f"class map {class_map.name!r} maps {len(class_map.source)} classes, the logits have "
            f"{logits.shape[1]}"
        )
    wide = logits.float()
    mapped = [wide[:, list(group)].logsumexp(dim=1) for group in class_map.groups]
    return torch.stack(mapped, dim=1).to(logits.dtype)


def by_name(name: str, source: tuple[str, ...], target: tuple[str, ...], groups: dict) -> ClassMap:
    """A ClassMap from {target class: source class names}, in the target's order."""
    unknown = sorted(set(groups) - set(target)) + sorted(
        {s for g in groups.values() for s in g} - set(source)
    )
    if unknown or set(groups) != set(target):
        raise UserInputError(
            f"class map {name!r}: unknown class(es) {unknown}, or a target class without a group; "
            f"targets {list(target)}, sources {list(source)}."
        )
    return ClassMap(name, source, target, tuple(tuple(source.index(s) for s in groups[t]) for t in target))


def to_road(name: str, source_classes: tuple[str, ...], road_index: int) -> ClassMap:
    """The binary road-vs-background map of a label set: road <- its road class, background <- every other."""
    others = tuple(i for i in range(len(source_classes)) if i != road_index)
    return ClassMap(name, tuple(source_classes), BINARY_CLASSES, (others, (road_index,)))


# Cityscapes' 19 train ids onto CamVid's 11 classes, after SegNet's grouping of CamVid's 32 raw
# classes into the 11 (which source class went where there decides where its Cityscapes twin goes).
register_class_map(
    by_name(
        "cityscapes-camvid11",
        CITYSCAPES.classes,
        CAMVID.classes,
        {
            "sky": ("sky",),
            "building": ("building", "wall"),  # SegNet: Building, Wall, Bridge, Tunnel, Archway
            "pole": ("pole",),  # SegNet: Column_Pole, TrafficCone
            "road": ("road",),  # lane markings are road in both
            "pavement": ("sidewalk",),  # SegNet: Sidewalk, ParkingBlock, RoadShoulder
            "tree": ("vegetation", "terrain"),  # SegNet puts VegetationMisc (grass, shrubs) with Tree
            "sign_symbol": ("traffic_sign", "traffic_light"),  # SegNet: SignSymbol, Misc_Text, TrafficLight
            "fence": ("fence",),
            # SegNet: Car, SUVPickupTruck, Truck_Bus, Train, OtherMoving: every vehicle on four or more wheels
            "car": ("car", "truck", "bus", "train"),
            "pedestrian": ("person",),  # SegNet: Pedestrian, Child, CartLuggagePram, Animal
            # SegNet: Bicyclist, MotorcycleScooter; CamVid labels the rider with the bike, so rider
            # goes here, not to pedestrian, and so do riderless bikes (no other class fits them)
            "bicyclist": ("rider", "bicycle", "motorcycle"),
        },
    )
)
register_class_map(to_road("cityscapes-road", CITYSCAPES.classes, CITYSCAPES.road))
register_class_map(to_road("camvid11-road", CAMVID.classes, CAMVID.road))
