"""A teacher whose logits are mapped onto another label set (kd.data.class_maps).

    teacher = build_teacher("deeplabv3_efficientnet_lite0", num_classes=19)
    load_checkpoint(teacher, "cityscapes_teacher.pth")      # the checkpoint's own 19 classes
    teacher = with_class_map(teacher, CLASS_MAPS["cityscapes-camvid11"])   # now it predicts 11

The map runs as a forward hook on the head (and the auxiliary head), not as a new module in
the head's place: the state dict keeps its keys, so the same weights load before or after
mapping, and every path through the head (forward, forward_parts, a split's tail) is mapped.
"""

from __future__ import annotations

from torch import nn

from kd.data.class_maps import ClassMap, map_logits
from kd.errors import UserInputError
from kd.models.segmenter import Segmenter


class LogitMap(nn.Module):
    """map_logits as a module; no parameters, no buffers (nothing enters a state dict)."""

    def __init__(self, class_map: ClassMap):
        super().__init__()
        self.map = class_map

    def forward(self, logits):
        return map_logits(logits, self.map)

    def after(self, module, args, logits):
        """As a forward hook: the hooked head's logits, mapped."""
        return self(logits)

    def extra_repr(self) -> str:
        return f"{self.map.name}: {len(self.map.source)} -> {len(self.map.target)} classes"


def with_class_map(teacher: Segmenter, class_map: ClassMap) -> Segmenter:
    """`teacher` (changed in place and returned) predicting `class_map`'s target classes. Apply it
    after loading the teacher's weights, which predict the source classes."""
    if class_map_of(teacher) is not None:
        raise UserInputError(
            f"{teacher.name} is mapped by {class_map_of(teacher).name!r} already; map the unmapped teacher"
        )
    if teacher.num_classes != len(class_map.source):
        raise UserInputError(
            f"class map {class_map.name!r} maps {len(class_map.source)} classes, but {teacher.name} "
            f"predicts {teacher.num_classes}: build the teacher with num_classes={len(class_map.source)}"
        )
    teacher.class_map = LogitMap(class_map)
    for head in (teacher.head, getattr(teacher, "aux_head", None)):
        if head is not None:
            head.register_forward_hook(teacher.class_map.after)
    teacher.num_classes = len(class_map.target)
    return teacher


def class_map_of(model: nn.Module) -> ClassMap | None:
    """The class map `with_class_map` gave `model`, if any."""
    mapped = getattr(model, "class_map", None)
    return mapped.map if isinstance(mapped, LogitMap) else None
