"""The networks behind published KD checkpoints, computing what their own code computes.

A teacher file from CIRKD, IFVD or SKD only means something in the network that wrote it, and
these differ from torchvision's ResNets in ways that change every output:

- a deep stem (three 3x3 convs, 64-64-128 channels; CSAIL's `resnet18-imagenet.pth` layout) before
  the max-pool, which IFVD/SKD run with `ceil_mode=True` (65x129 maps at 512x1024, not 64x128);
- dilation at output stride 8 by two conventions: IFVD/SKD dilate every block of layer3/layer4 by
  2/4; CIRKD v1 (as torchvision's Bottleneck) keeps the first block one step behind (1 then 2 in
  layer3, 2 then 4 in layer4);
- IFVD/SKD normalise with InPlace-ABN (kd.models.inplace_abn); their pyramid pooling concatenates
  the pooled branches before the input, CIRKD's after it;
- the inputs: BGR images in 0-255 minus the Caffe means, no std (OpenCV-decoded in their data
  code); logits upsampled with `align_corners=True`.

Split points are the stem (max-pool included), layer1-layer4 and "psp" (the PSP module's output,
IFVD's `x_feat_after_psp`, CIRKD's PSP `features`) or "aspp" (CIRKD's `x_feat_after_aspp`: the
ASPP and the 3x3 block after it). The head is the final 1x1 classifier; the auxiliary head reads
layer3. The checkpoint layouts each network loads are named in kd.models.layouts.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.models.segmentation.deeplabv3 import ASPP

from kd.models.inplace_abn import InPlaceABN
from kd.models.registry import register_student, register_teacher
from kd.models.segmenter import Segmenter

# Caffe's BGR means in 0-255, which IFVD, SKD and CIRKD v1 subtract from OpenCV-decoded images
CAFFE_BGR_MEAN = (104.00698793, 116.66876762, 122.67891434)
CAFFE_INPUT = dict(
    input_channels="bgr",
    input_mean=tuple(m / 255 for m in CAFFE_BGR_MEAN),
    input_std=(1 / 255,) * 3,
    align_corners=True,
)
_LAYERS = {18: (BasicBlock, [2, 2, 2, 2]), 101: (Bottleneck, [3, 4, 23, 3])}
# Dilations of (first block, other blocks) of layer3 and layer4; a BasicBlock's first block has two
# 3x3 convs, given as (conv1, conv2).
_DILATIONS = {
    "ifvd": {"layer3": ((2, 2), 2), "layer4": ((4, 4), 4)},
    "cirkd": {"layer3": ((1, 2), 2), "layer4": ((2, 4), 4)},
}
IFVD_BN = partial(InPlaceABN, activation="identity")


def _dilate(layer: nn.Sequential, first: tuple[int, int], rest: int) -> None:
    for index, block in enumerate(layer):
        convs = [block.conv1, block.conv2] if isinstance(block, BasicBlock) else [block.conv2]
        for position, conv in enumerate(convs):
            d = rest if index else (first[position] if len(convs) == 2 else first[0])
            conv.stride, conv.dilation, conv.padding = (1, 1), (d, d), (d, d)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)


def deep_stem_resnet(depth: int, convention: str) -> OrderedDict[str, nn.Module]:
    """Stages stem, layer1-layer4 of a deep-stem ResNet at output stride 8, by `convention`
    ("ifvd": InPlace-ABN, ceil-mode max-pool, every block dilated; "cirkd": BatchNorm, floor-mode
    max-pool, first blocks one dilation behind)."""
    block, layers = _LAYERS[depth]
    ifvd = convention == "ifvd"
    norm = IFVD_BN if ifvd else nn.BatchNorm2d
    # torchvision's blocks have the references' parameter names and stride placement (conv2).
    trunk = ResNet(block, layers, norm_layer=norm)
    trunk.inplanes = 128  # layer1 reads the deep stem's 128 channels: rebuilt, with its downsample
    trunk.layer1 = trunk._make_layer(block, 64, layers[0])
    for name, (first, rest) in _DILATIONS[convention].items():
        _dilate(getattr(trunk, name), first, rest)

    def conv(cin, cout, stride=1):
        return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)

    stem = nn.Sequential(
        OrderedDict(
            conv1=conv(3, 64, 2),
            bn1=norm(64),
            relu1=nn.ReLU(),
            conv2=conv(64, 64),
            bn2=norm(64),
            relu2=nn.ReLU(),
            conv3=conv(64, 128),
            bn3=norm(128),
            relu3=nn.ReLU(),
            maxpool=nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=ifvd),
        )
    )
    return OrderedDict(stem=stem, **{f"layer{i}": getattr(trunk, f"layer{i}") for i in range(1, 5)})


class PyramidPooling(nn.Module):
    """PSPNet's pyramid: each branch pools to bin x bin, a 1x1 conv + norm (+ activation), upsampled
    back with align_corners=True; concatenated with the input, first (`input_first`, CIRKD) or last
    (IFVD)."""

    def __init__(self, channels: int, branch_channels: int, norm, input_first: bool, bins=(1, 2, 3, 6)):
        super().__init__()
        self.input_first = input_first
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(b), nn.Conv2d(channels, branch_channels, 1, bias=False), *norm()
            )
            for b in bins
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(b(x), size, mode="bilinear", align_corners=True) for b in self.branches]
        return torch.cat([x, *pooled] if self.input_first else [*pooled, x], dim=1)


def _ifvd_norm(channels: int) -> list[nn.Module]:
    return [InPlaceABN(channels)]  # leaky ReLU fused


def _cirkd_norm(channels: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(channels), nn.ReLU()]


def _psp_stage(channels: int, width: int, ifvd: bool) -> nn.Sequential:
    """The pyramid, then the 3x3 bottleneck (norm, activation, dropout 0.1): the split point "psp"."""
    norm = _ifvd_norm if ifvd else _cirkd_norm
    branch = width if ifvd else channels // 4
    pyramid = PyramidPooling(channels, branch, partial(norm, branch), input_first=not ifvd)
    dropout = nn.Dropout2d(0.1) if ifvd else nn.Dropout(0.1)
    return nn.Sequential(
        pyramid,
        nn.Conv2d(channels + 4 * branch, width, 3, padding=1, bias=False),
        *norm(width),
        dropout,
    )


def ifvd_pspnet(depth: int, num_classes: int) -> Segmenter:
    """IFVD's and SKD's PSPNet (`Res_pspnet` in networks/pspnet.py): deep-stem ResNet-`depth`
    with InPlace-ABN, PSP width 512 (R101) or 128 (R18), DSN head on layer3 (half its width)."""
    stages = deep_stem_resnet(depth, "ifvd")
    channels = 2048 if depth == 101 else 512
    width = channels // 4
    stages["psp"] = _psp_stage(channels, width, ifvd=True)
    aux_in = channels // 2
    dsn = nn.Sequential(
        nn.Conv2d(aux_in, aux_in // 2, 3, padding=1),
        InPlaceABN(aux_in // 2),
        nn.Dropout2d(0.1),
        nn.Conv2d(aux_in // 2, num_classes, 1),
    )
    return _segmenter(
        stages, width, num_classes, f"ifvd_pspnet_resnet{depth}", dsn, ("ifvd", "segmentation-toolbox")
    )


def _segmenter(stages, width: int, num_classes: int, name: str, aux_head, layouts) -> Segmenter:
    """The published networks' common frame: a 1x1 classifier on the last stage (which starts
    untrained with the head), the auxiliary head on layer3, the Caffe input convention."""
    return Segmenter(
        stages,
        nn.Conv2d(width, num_classes, 1),
        num_classes,
        name=name,
        aux_head=aux_head,
        aux_point="layer3",
        head_stages=(next(reversed(stages)),),
        checkpoint_layouts=layouts,
        **CAFFE_INPUT,
    )


def _fcn_head(channels: int, num_classes: int) -> nn.Sequential:
    """CIRKD's auxiliary `_FCNHead` on layer3: 3x3 conv to a quarter of the channels."""
    inner = channels // 4
    return nn.Sequential(
        nn.Conv2d(channels, inner, 3, padding=1, bias=False),
        nn.BatchNorm2d(inner),
        nn.ReLU(),
        nn.Dropout(0.1),
        nn.Conv2d(inner, num_classes, 1),
    )


def cirkd_pspnet(depth: int, num_classes: int) -> Segmenter:
    """CIRKD v1's PSPNet (models/pspnet.py): deep-stem ResNet, pyramid branches at a quarter of the
    channels, bottleneck 128 (R18) or 512 wide, FCN auxiliary head."""
    stages = deep_stem_resnet(depth, "cirkd")
    channels = 2048 if depth == 101 else 512
    width = 512 if depth == 101 else 128
    stages["psp"] = _psp_stage(channels, width, ifvd=False)
    aux = _fcn_head(channels // 2, num_classes)
    return _segmenter(stages, width, num_classes, f"cirkd_pspnet_resnet{depth}", aux, ("cirkd-pspnet",))


def cirkd_deeplabv3(depth: int, num_classes: int) -> Segmenter:
    """CIRKD v1's DeepLabV3 (models/deeplabv3.py): ASPP at rates 12/24/36, 256 (R101) or 128 (R18)
    wide (torchvision's ASPP computes the same: a 1x1 pooled branch upsamples to a constant either
    way), then a 3x3 conv block; the split point "aspp" is that block's output."""
    stages = deep_stem_resnet(depth, "cirkd")
    channels = 2048 if depth == 101 else 512
    width = 256 if depth == 101 else 128
    stages["aspp"] = nn.Sequential(
        ASPP(channels, [12, 24, 36], width),
        nn.Conv2d(width, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Dropout(0.1),
    )
    aux = _fcn_head(channels // 2, num_classes)
    return _segmenter(stages, width, num_classes, f"cirkd_deeplabv3_resnet{depth}", aux, ("cirkd-deeplabv3",))


# Their files load as released: IFVD's teacher_city.pth (also the SKD teacher), CIRKD's Cityscapes
# teacher; the students take CSAIL's resnet18-imagenet.pth as student_weights (deep stem).
register_teacher("ifvd_pspnet_resnet101")(partial(ifvd_pspnet, 101))
register_teacher("cirkd_deeplabv3_resnet101")(partial(cirkd_deeplabv3, 101))
register_student("ifvd_pspnet_resnet18")(partial(ifvd_pspnet, 18))  # IFVD's and SKD's student
register_student("cirkd_pspnet_resnet18")(partial(cirkd_pspnet, 18))
register_student("cirkd_deeplabv3_resnet18")(partial(cirkd_deeplabv3, 18))
