"""The SD paper's feature-extractor conversion: every convolution becomes a group convolution."""
from __future__ import annotations

import copy
import math

from torch import nn


def group_conv_copy(module: nn.Module) -> nn.Module:
    """A deep copy of `module` in which every Conv2d has groups = gcd(in_channels, out_channels).

    Shapes, strides, padding, dilation and bias are kept, so the copy is a drop-in
    replacement with far fewer parameters and FLOPs; the grouped kernels are freshly
    initialised (they have another shape). A convolution that is already grouped (the
    depthwise convolutions of MobileNets and EfficientNets) keeps its groups unless the
    gcd is a multiple of them.
    """
    if isinstance(module, nn.Conv2d):
        return _grouped(module)
    clone = copy.deepcopy(module)
    for name, conv in [(n, m) for n, m in clone.named_modules() if isinstance(m, nn.Conv2d)]:
        parent_name, _, child = name.rpartition(".")
        parent = clone.get_submodule(parent_name) if parent_name else clone
        setattr(parent, child, _grouped(conv))
    return clone


def _grouped(conv: nn.Conv2d) -> nn.Conv2d:
    groups = math.gcd(conv.in_channels, conv.out_channels)
    if groups % conv.groups != 0:
        groups = conv.groups
    return nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
        dilation=conv.dilation, groups=groups, bias=conv.bias is not None, padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
