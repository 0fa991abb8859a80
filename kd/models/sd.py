"""Spirit Distillation (Wu et al. 2021) models: the student and the constructed teacher.

A teacher split at a point gives the activation map generator (AMG, the stages up to and
including the point) and the teacher head. From it:

- `sd_student`: the student S = feature extractor FE (the AMG's architecture with every
  convolution a group convolution, freshly initialised) + `SDHead`. How small S is, is a
  setting (`SDCapacity`): the group policy of the FE (kd.models.group_conv: the text's gcd,
  or the Table II calibration), its output stride, and the head's width. At the AMG's own
  output stride the FE's output has the AMG output's shape, so the feature loss (eq. 2)
  needs no adapter; a denser FE is compared at the teacher's resolution.
- `constructed_teacher`: CT = a frozen copy of the AMG + a trainable `SDHead`; the
  transfer-learning baseline of the paper.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass
from itertools import pairwise

import torch.nn.functional as F
from torch import nn

from kd.errors import UserInputError
from kd.models.backbones import stage_channels
from kd.models.dilation import OUTPUT_STRIDES, set_output_stride
from kd.models.efficientnet_lite import (
    EFFICIENTNET_LITE_MEAN,
    EFFICIENTNET_LITE_STD,
    efficientnet_lite_stages,
)
from kd.models.group_conv import GroupPolicy, group_conv_copy, group_policy
from kd.models.registry import register_split_student, register_teacher
from kd.models.segmenter import Segmenter

# Not all equal, so that gcd(in, out) < out and every conv mixes a few channels (equal
# widths would make the convs depthwise). On ResNet-50 layer4 (2048 channels) the head
# has 91 k parameters with 2 classes, 102 k with 19; fan-in per output channel
# (in / groups) is 16, 12, 5, 4, 6, 5, then 32..64 for the classifier.
SD_HEAD_WIDTHS = (384, 160, 128, 96, 80, 64)
STUDENT_BN_MOMENTUM = 0.1  # PyTorch's default, whatever convention the teacher's weights came with


def head_widths(width: int) -> tuple[int, ...]:
    """SD_HEAD_WIDTHS scaled so the first conv is `width` wide: multiples of 16, none dividing the
    width before it, so that no gcd-grouped conv of the head is depthwise (every group mixes channels)."""
    widths = [width]
    for base in SD_HEAD_WIDTHS[1:]:
        w = max(16, round(base * width / SD_HEAD_WIDTHS[0] / 16) * 16)
        while widths[-1] % w == 0:
            w += 16
        widths.append(w)
    return tuple(widths)


@dataclass(frozen=True)
class SDCapacity:
    """How large the SD student is: the FE's group policy, its output stride (None, or "teacher"
    in study files: the AMG's own) and the width of the head's first conv (Table V: 512)."""

    groups: str = "gcd"
    output_stride: int | None = None
    head_width: int = SD_HEAD_WIDTHS[0]
    head_groups: str = "gcd"

    def problems(self) -> list[str]:
        found = []
        for field, policy in (("groups", self.groups), ("head_groups", self.head_groups)):
            try:
                group_policy(policy)
            except UserInputError as err:
                found.append(f"{field}: " + str(err).rstrip("."))
        if self.output_stride is not None and self.output_stride not in OUTPUT_STRIDES:
            found.append(
                f"output_stride must be one of {', '.join(map(str, OUTPUT_STRIDES))} or None "
                f"(the teacher's), got {self.output_stride!r}"
            )
        if not (isinstance(self.head_width, int) and self.head_width >= 16):
            found.append(f"head_width must be a whole number >= 16, got {self.head_width!r}")
        return found


# The two readings of the paper, and the uncompressed copy. `text`: groups = gcd(in, out) as
# section III says, the narrow head. `table`: calibrated to Table II (9.5 M parameters, 41.8 % of
# CT's FLOPs on DeepLabV3-ResNet50 at layer4) with a 512-wide head (Table V). `dense`: the AMG's
# own architecture, freshly initialised. All at the AMG's output stride, as Table IV has it (1/8
# on the dilated ResNet-50; 1/32 on EfficientNet-Lite0's top).
SD_CAPACITIES = {
    "text": SDCapacity("gcd", None, SD_HEAD_WIDTHS[0]),
    "table": SDCapacity("table", None, 512),
    "dense": SDCapacity("dense", None, 512),
}
DEFAULT_CAPACITY = "table"


def sd_capacity(capacity: str | SDCapacity | None = None, **changes) -> SDCapacity:
    """A named capacity (default DEFAULT_CAPACITY) with some fields changed; every problem at once."""
    if not isinstance(capacity, SDCapacity):
        name = DEFAULT_CAPACITY if capacity is None else capacity
        if name not in SD_CAPACITIES:
            raise UserInputError(
                f"unknown SD student capacity {name!r}; choose one of {', '.join(SD_CAPACITIES)}."
            )
        capacity = SD_CAPACITIES[name]
    changes = {k: v for k, v in changes.items() if v is not None}
    if changes.get("output_stride") == "teacher":
        changes["output_stride"] = None
    capacity = SDCapacity(**{**capacity.__dict__, **changes})
    problems = capacity.problems()
    if problems:
        raise UserInputError("SD student: " + "; ".join(problems) + ".")
    return capacity


def _group_conv(in_channels: int, out_channels: int, policy: GroupPolicy, bias: bool) -> nn.Conv2d:
    groups = policy.count(in_channels, out_channels, spatial=True)
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, groups=groups, bias=bias)


def _conv_bn_relu(in_channels: int, out_channels: int, policy: GroupPolicy) -> nn.Sequential:
    return nn.Sequential(
        _group_conv(in_channels, out_channels, policy, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SDHead(nn.Module):
    """The SD student head (the paper's Table V), a light SegNet-like decoder.

        (Conv3x3 + BN + ReLU) x 3          widths[0..2], at feature resolution
        bilinear upsampling x 2
        (Conv3x3 + BN + ReLU) x 3          widths[3..5], at 2x feature resolution
        Conv3x3 -> num_classes             plain conv with bias: logits, no BN, no ReLU
        bilinear upsampling to input size  (done by Segmenter, not here)

    Every conv is a group conv, grouped by `groups` (a kd.models.group_conv policy; the text's
    gcd(in, out) by default). The table's 4th conv of the
    second block is the classifier; it is a plain conv because a ReLU would clip logits
    at 0 (no negative evidence) and a BN on logits would fix their scale.
    """

    def __init__(self, in_channels: int, num_classes: int, widths=SD_HEAD_WIDTHS, groups: str = "gcd"):
        super().__init__()
        if len(widths) != 6:
            raise ValueError(
                f"SDHead takes 6 widths (3 convs before and 3 after the upsampling), got {len(widths)}"
            )
        policy = group_policy(groups)
        chans = [in_channels, *widths]
        convs = [_conv_bn_relu(a, b, policy) for a, b in pairwise(chans)]
        self.block1 = nn.Sequential(*convs[:3])
        self.block2 = nn.Sequential(*convs[3:])
        self.classifier = _group_conv(widths[-1], num_classes, policy, bias=True)

    def forward(self, x):
        x = self.block1(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return self.classifier(self.block2(x))


class _Frozen(nn.Module):
    """A module that stays in eval mode and has no trainable parameters.

    requires_grad=False alone is not enough: in train mode BatchNorm still updates its
    running statistics from the batches, so a "frozen" AMG would drift and no longer be
    the teacher's. Module.train() recurses through children, so overriding it here keeps
    the wrapped module in eval mode whatever its parent (CT, or CT.split()'s AMG) is set to.
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> _Frozen:
        return super().train(False)

    def forward(self, x):
        return self.module(x)


def _amg_stages(teacher: Segmenter, split_point: str) -> OrderedDict[str, nn.Module]:
    amg, _ = teacher.split(teacher.check_split_point(split_point))
    return OrderedDict(amg.named_children())


def _num_classes(teacher: Segmenter, num_classes: int | None) -> int:
    if num_classes is None:
        return teacher.num_classes
    if num_classes < 1:
        raise UserInputError(f"num_classes must be a positive number of classes, got {num_classes}.")
    return num_classes


def _head(teacher: Segmenter, split_point: str, num_classes: int, capacity: SDCapacity) -> SDHead:
    parameter = next(teacher.parameters())
    widths = head_widths(capacity.head_width)
    head = SDHead(teacher.stage_channels()[split_point], num_classes, widths, capacity.head_groups)
    return head.to(device=parameter.device, dtype=parameter.dtype)


@register_split_student("sd")
def sd_student(
    teacher: Segmenter,
    split_point: str,
    num_classes: int | None = None,
    capacity: str | SDCapacity | None = None,
    *,
    groups: str | None = None,
    output_stride: int | None = None,
    head_width: int | None = None,
    head_groups: str | None = None,
) -> Segmenter:
    """The SD student: grouped copy of the teacher's AMG at `split_point` + `SDHead`.

    `capacity` names an SDCapacity (SD_CAPACITIES; default DEFAULT_CAPACITY); `groups`,
    `output_stride`, `head_width` and `head_groups` change single fields of it. The FE keeps the stage names,
    so the student's split points are the AMG's. It is freshly initialised throughout: its
    convs have new shapes, and the teacher's BatchNorm statistics belong to the teacher's
    kernels. Inherited stochastic depth (EfficientNet's drop-connect) is switched off: a head
    trained on the frozen FE's eval-mode features (stage 2) would see other features when
    fine-tuning puts the FE back in train mode, and 64 images do not need it. BatchNorm momentum
    is PyTorch's 0.1: the Lite0 port carries TensorFlow's 0.01, under which the running averages
    of a student trained for a few hundred steps still hold mostly their initial values, and its
    eval-mode outputs would be judged with them.
    """
    capacity = sd_capacity(
        capacity, groups=groups, output_stride=output_stride, head_width=head_width, head_groups=head_groups
    )
    fe = group_conv_copy(nn.Sequential(_amg_stages(teacher, split_point)), capacity.groups)
    for module in fe.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        if hasattr(module, "drop_connect_rates"):
            module.drop_connect_rates = [0.0] * len(module.drop_connect_rates)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = STUDENT_BN_MOMENTUM
    if capacity.output_stride is not None:
        set_output_stride(fe, capacity.output_stride)
    fe.requires_grad_(True)
    num_classes = _num_classes(teacher, num_classes)
    return Segmenter(
        OrderedDict(fe.named_children()),
        _head(teacher, split_point, num_classes, capacity),
        num_classes,
        name=f"sd_student_{teacher.name}@{split_point}",
        input_mean=teacher.input_mean,
        input_std=teacher.input_std,  # it mimics the teacher on the same inputs
        input_channels=teacher.input_channels,
    )


@register_split_student("ct")
def constructed_teacher(
    teacher: Segmenter,
    split_point: str,
    num_classes: int | None = None,
    head_width: int | None = None,
    head_groups: str | None = None,
) -> Segmenter:
    """CT: a frozen deep copy of the teacher's AMG at `split_point` + a trainable `SDHead` (as wide
    as the default SD student's, and grouped like it, unless `head_width` and `head_groups` say otherwise).

    The copy leaves the teacher untouched by CT's training. Each stage is wrapped, so its
    parameters are named `stages.<point>.module.<...>`.
    """
    stages = copy.deepcopy(_amg_stages(teacher, split_point))
    num_classes = _num_classes(teacher, num_classes)
    return Segmenter(
        OrderedDict((name, _Frozen(stage)) for name, stage in stages.items()),
        _head(teacher, split_point, num_classes, sd_capacity(head_width=head_width, head_groups=head_groups)),
        num_classes,
        name=f"ct_{teacher.name}@{split_point}",
        input_mean=teacher.input_mean,
        input_std=teacher.input_std,
        input_channels=teacher.input_channels,
    )


# The last EfficientNet-Lite0 stage the teacher below keeps: output stride 16, 112 channels
SDHEAD_TEACHER_POINT = "stage5"


@register_teacher("sdhead_efficientnet_lite0")
def sdhead_efficientnet_lite0(num_classes: int, pretrained: bool = True) -> Segmenter:
    """EfficientNet-Lite0's ImageNet stages up to stage5 (output stride 16, no dilation) + an SDHead
    of dense convolutions: CT's architecture as a teacher in its own right. On small images it
    segments far better than an ASPP head on the last stage, whose one 16x upsampling blurs every
    boundary (the default study's teacher: docs/guide/models.md)."""
    stages = efficientnet_lite_stages(0, pretrained)
    names = list(stages)[: list(stages).index(SDHEAD_TEACHER_POINT) + 1]
    kept = OrderedDict((name, stages[name]) for name in names)
    return Segmenter(
        kept,
        SDHead(stage_channels(kept)[SDHEAD_TEACHER_POINT], num_classes, SD_HEAD_WIDTHS, groups="dense"),
        num_classes,
        name="sdhead_efficientnet_lite0",
        input_mean=EFFICIENTNET_LITE_MEAN,
        input_std=EFFICIENTNET_LITE_STD,
    )
