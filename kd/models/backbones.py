"""torchvision classification backbones cut into ordered stages for `Segmenter`.

Each builder returns an OrderedDict of stages; stage i maps the output of stage i-1 to
its own output (the first takes the image), so the stage names are the split points.
The stages are the torchvision model's own modules (the classifier is dropped), so
module paths such as "stages.layer2.0.conv1" stay recognisable. Weights are never
downloaded: every model is built with weights=None.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from functools import partial

import torch
import torchvision.models as tvm
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from kd.errors import UserInputError

Stages = "OrderedDict[str, nn.Module]"

_RESNET_LAYERS = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
    "resnet101": (Bottleneck, [3, 4, 23, 3]),
    "resnet152": (Bottleneck, [3, 8, 36, 3]),
}


class _ScaledResNet(ResNet):
    """torchvision's ResNet with every channel count multiplied by `width`.

    ResNet hard-codes 64 stem channels and planes 64/128/256/512; scaling them in
    _make_layer and rebuilding the stem is shorter than copying its __init__.
    """

    def __init__(self, block, layers, width: float = 1.0, **kwargs):
        self.width = width
        super().__init__(block, layers, **kwargs)
        stem = self._scaled(64)
        self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.bn1 = self._norm_layer(stem)
        self.fc = nn.Linear(self._scaled(512) * block.expansion, self.fc.out_features)

    def _scaled(self, channels: int) -> int:
        return max(1, int(round(channels * self.width)))

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        if planes == 64:  # layer1: its input is the (scaled) stem
            self.inplanes = self._scaled(64)
        return super()._make_layer(block, self._scaled(planes), blocks, stride, dilate)


def _dilate_basic_layer(layer: nn.Sequential, dilation: int) -> None:
    """Replace a BasicBlock layer's stride 2 by dilation, which torchvision refuses for BasicBlock.

    As the IFVD reference code dilates its ResNet-18 students: every conv of the layer, the
    first block's too, at the full dilation. (torchvision's Bottleneck, used as it is for
    ResNet-50/101, keeps the previous dilation in a layer's first block.)
    """
    for block in layer:
        for conv in (block.conv1, block.conv2):
            conv.stride, conv.dilation, conv.padding = (1, 1), (dilation, dilation), (dilation, dilation)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)


def resnet_stages(name: str, dilated: bool = False, width: float = 1.0) -> Stages:
    """Stages stem (conv1, bn1, relu, maxpool), layer1..layer4 of a torchvision ResNet.

    dilated=True replaces the strides of layer3 and layer4 by dilation (output stride 8,
    as in DeepLabV3 and PSPNet). width scales every channel count (0.5: half-width ResNet).
    """
    if name not in _RESNET_LAYERS:
        raise UserInputError(f"unknown ResNet {name!r}; choose one of {', '.join(_RESNET_LAYERS)}.")
    if not width > 0:
        raise UserInputError(f"ResNet width must be positive (1.0 is the standard ResNet), got {width}.")
    block, layers = _RESNET_LAYERS[name]
    bottleneck = block is Bottleneck
    model = _ScaledResNet(
        block,
        layers,
        width=width,
        replace_stride_with_dilation=[False, dilated, dilated] if bottleneck else None,
    )
    if dilated and not bottleneck:
        _dilate_basic_layer(model.layer3, 2)
        _dilate_basic_layer(model.layer4, 4)
    stem = nn.Sequential(
        OrderedDict(conv1=model.conv1, bn1=model.bn1, relu=model.relu, maxpool=model.maxpool)
    )
    return OrderedDict(
        stem=stem, layer1=model.layer1, layer2=model.layer2, layer3=model.layer3, layer4=model.layer4
    )


_EFFICIENTNETS = [f"efficientnet_b{i}" for i in range(8)]


def efficientnet_stages(name: str) -> Stages:
    """Stages stem (features[0]), stage1..stage7 (features[1..7]), top (features[8], 1x1 conv)."""
    if name not in _EFFICIENTNETS:
        raise UserInputError(f"unknown EfficientNet {name!r}; choose one of {', '.join(_EFFICIENTNETS)}.")
    features = tvm.get_model(name, weights=None).features
    names = ["stem"] + [f"stage{i}" for i in range(1, 8)] + ["top"]
    return OrderedDict(zip(names, features, strict=True))


def _downsamples(block: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) and max(m.stride) > 1 for m in block.modules())


def mobilenet_v3_stages(name: str) -> Stages:
    """torchvision MobileNetV3 `features` grouped by output resolution.

    A new stage starts at every block with a stride-2 convolution, so each stage ends just
    before the next downsampling and the final 1x1 conv joins the last stage:
      large: stem = features[0:2] (/2), stage1 = [2:4] (/4), stage2 = [4:7] (/8),
             stage3 = [7:13] (/16), stage4 = [13:17] (/32, ends with the 960-channel conv)
      small: stem = features[0:1] (/2), stage1 = [1:2] (/4), stage2 = [2:4] (/8),
             stage3 = [4:9] (/16), stage4 = [9:13] (/32, ends with the 576-channel conv)
    """
    if name not in ("mobilenet_v3_large", "mobilenet_v3_small"):
        raise UserInputError(
            f"unknown MobileNetV3 {name!r}; choose mobilenet_v3_large or mobilenet_v3_small."
        )
    groups: list[list[nn.Module]] = []
    for block in tvm.get_model(name, weights=None).features:
        if not groups or _downsamples(block):
            groups.append([])
        groups[-1].append(block)
    names = ["stem"] + [f"stage{i}" for i in range(1, len(groups))]
    stages = OrderedDict((n, nn.Sequential(*blocks)) for n, blocks in zip(names, groups, strict=True))
    for stage in stages.values():
        stage.features_group = len(stage)  # how a classifier file's features.<i> finds its stage
    return stages


def features_stages(name: str) -> Stages:
    """One stage per child of a torchvision model's `features` Sequential: features0, features1, ..."""
    model = tvm.get_model(name, weights=None) if name in tvm.list_models(module=tvm) else None
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential):
        raise UserInputError(
            f"{name!r} is not a torchvision classification model with a `features` Sequential; "
            f"choose one of {', '.join(list_backbones())}."
        )
    return OrderedDict((f"features{i}", block) for i, block in enumerate(features))


# Generic `features` backbones checked to work (a tensor in, a tensor out, per child). The
# list is kept short on purpose: every listed backbone is built in the tests, and the big
# ones (VGG16's 120M-parameter classifier, EfficientNet-B5+) take seconds each on a CPU.
_FEATURES_BACKBONES = ["vgg11", "mobilenet_v2", "convnext_tiny", "efficientnet_v2_s"]

_BACKBONES = {
    **{name: partial(resnet_stages, name) for name in _RESNET_LAYERS},
    "resnet18_half": partial(resnet_stages, "resnet18", width=0.5),
    **{name: partial(efficientnet_stages, name) for name in _EFFICIENTNETS[:2]},
    "mobilenet_v3_large": partial(mobilenet_v3_stages, "mobilenet_v3_large"),
    "mobilenet_v3_small": partial(mobilenet_v3_stages, "mobilenet_v3_small"),
    **{name: partial(features_stages, name) for name in _FEATURES_BACKBONES},
}


def list_backbones() -> list[str]:
    return list(_BACKBONES)


def backbone_stages(name: str, **options) -> Stages:
    """Stages of the backbone `name` (see list_backbones()); options go to the builder
    (dilated=, width= for ResNets)."""
    if name not in _BACKBONES:
        raise UserInputError(f"unknown backbone {name!r}; choose one of {', '.join(_BACKBONES)}.")
    builder = _BACKBONES[name]
    try:
        inspect.signature(builder).bind(**options)
    except TypeError:
        accepted = [
            p for p in inspect.signature(builder).parameters if p not in builder.keywords and p != "name"
        ]
        raise UserInputError(
            f"backbone {name!r} takes options {', '.join(accepted) or 'none'}; "
            f"got {', '.join(sorted(options))}."
        ) from None
    return builder(**options)


@torch.no_grad()
def stage_channels(stages: Stages, size: tuple[int, int] = (64, 64)) -> OrderedDict[str, int]:
    """Output channels of every stage, from one forward pass on a small input in eval mode."""
    modules = list(stages.values())
    parameter = next((p for m in modules for p in m.parameters()), None)
    x = torch.zeros(1, 3, *size, device=parameter.device if parameter is not None else "cpu")
    modes = [m.training for m in modules]
    channels = OrderedDict()
    try:
        for name, stage in stages.items():
            x = stage.eval()(x)
            channels[name] = x.shape[1]
    finally:
        for module, mode in zip(modules, modes, strict=True):
            module.train(mode)
    return channels
