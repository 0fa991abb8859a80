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
    # Copy the conv rather than build a plain nn.Conv2d: subclasses (the EfficientNet-Lite
    # package's dynamic 'same' padding, say) keep their own forward.
    groups = math.gcd(conv.in_channels, conv.out_channels)
    if groups % conv.groups != 0:
        groups = conv.groups
    grouped = copy.deepcopy(conv)
    grouped.groups = groups
    grouped.weight = nn.Parameter(
        conv.weight.new_empty(conv.out_channels, conv.in_channels // groups, *conv.kernel_size)
    )
    grouped.reset_parameters()
    return grouped
