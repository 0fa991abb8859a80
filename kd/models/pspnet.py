"""PSPNet (Zhao et al. 2017): a backbone's stages followed by a pyramid pooling head.

The IFVD teacher is PSPNet-ResNet101 with output stride 8 (`pspnet_resnet101`); the
students are PSPNets on small backbones (`pspnet("resnet18", 19)` and friends).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kd.errors import UserInputError
from kd.models.backbones import backbone_stages, list_backbones, stage_channels
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
# The teachers follow the PSPNet paper (output stride 8); the students keep their stride
# 32, which is what makes them cheap.
_DILATED_BY_DEFAULT = ("resnet50", "resnet101", "resnet152")


class PSPHead(nn.Module):
    """Pyramid pooling module, then 3x3 conv + BN + ReLU, dropout 0.1 and a 1x1 classifier.

    Each bin branch pools the input to bin x bin, reduces it to in_channels / len(bins)
    channels with a 1x1 conv and is upsampled back; the branches are concatenated with the
    input. `channels` (default in_channels // 4, 512 for ResNet-50/101 as in the paper) is
    the width of the 3x3 conv. Works for any feature map size: adaptive pooling to a bin
    larger than the map just repeats values.
    """

    def __init__(self, in_channels: int, num_classes: int, bins=(1, 2, 3, 6), channels: int | None = None):
        super().__init__()
        branch_channels = max(1, in_channels // len(bins))
        channels = channels or max(1, in_channels // 4)
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
            nn.Conv2d(in_channels + len(bins) * branch_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout2d(0.1)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pyramid = [x] + [
            F.interpolate(b(x), size=size, mode="bilinear", align_corners=False) for b in self.branches
        ]
        return self.classifier(self.dropout(self.bottleneck(torch.cat(pyramid, dim=1))))


def pspnet(backbone: str, num_classes: int, dilated: bool | None = None) -> Segmenter:
    """PSPNet on `backbone` (PSP_BACKBONES or any list_backbones() name); split points are its stages.

    dilated (ResNets only) defaults to True for resnet50/resnet101 (output stride 8) and
    False for the small students (output stride 32).
    """
    if backbone not in list_backbones():
        raise UserInputError(
            f"unknown PSPNet backbone {backbone!r}; choose one of {', '.join(list_backbones())}."
        )
    if not isinstance(num_classes, int) or num_classes < 1:
        raise UserInputError(f"num_classes must be a positive integer, got {num_classes!r}.")
    default = backbone in _DILATED_BY_DEFAULT
    dilated = default if dilated is None else dilated
    is_resnet = backbone.startswith("resnet")
    if dilated and not is_resnet:
        raise UserInputError(
            "dilated=True is only implemented for ResNet backbones; "
            f"use dilated=False (or None) for {backbone!r}."
        )
    stages = backbone_stages(backbone, dilated=dilated) if is_resnet else backbone_stages(backbone)
    in_channels = list(stage_channels(stages).values())[-1]
    # The name tells a non-default output stride apart, so checkpoints and logs don't collide.
    name = f"pspnet_{backbone}" + ("" if dilated == default else ("_dilated" if dilated else "_undilated"))
    return Segmenter(stages, PSPHead(in_channels, num_classes), num_classes, name=name)


def pspnet_resnet101(num_classes: int) -> Segmenter:
    """The IFVD teacher: PSPNet on a dilated ResNet-101 (output stride 8)."""
    return pspnet("resnet101", num_classes)
