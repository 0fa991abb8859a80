"""The SD paper's feature-extractor conversion: every convolution becomes a group convolution.

How many groups is a policy, because the paper's text and its tables disagree. The text says
groups = gcd(in_channels, out_channels); on ResNet-50 that makes nearly every convolution
depthwise (0.2 M parameters for the feature extractor up to layer4), while the paper's Table II
gives the student 9.5 M parameters and 41.8 % of the constructed teacher's FLOPs. A policy caps
the gcd separately for pointwise (1x1) and spatial (kxk) convolutions:

    "gcd"        groups = gcd(in, out)                     the text's reading
    "dense"      groups = 1                                the teacher's own architecture
    "table"      pointwise gcd(in, out, 2), spatial gcd(in, out, 4)
                 calibrated to Table II: on DeepLabV3-ResNet50 at layer4 the student has 8.9 M
                 parameters and 38 % of CT's FLOPs (the table: 9.5 M, 41.8 %)
    "cap:N"      groups = gcd(in, out, N) for every convolution
    "cap:P,S"    pointwise gcd(in, out, P), spatial gcd(in, out, S)
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

from torch import nn

from kd.errors import UserInputError


@dataclass(frozen=True)
class GroupPolicy:
    """Caps on the groups of pointwise and spatial convolutions; None: no cap (the gcd itself)."""

    pointwise: int | None = None
    spatial: int | None = None

    def groups(self, conv: nn.Conv2d) -> int:
        groups = self.count(conv.in_channels, conv.out_channels, any(k > 1 for k in conv.kernel_size))
        # Already-grouped convolutions (depthwise in MobileNets and EfficientNets) stay at least as grouped.
        return groups if groups % conv.groups == 0 else conv.groups

    def count(self, in_channels: int, out_channels: int, spatial: bool) -> int:
        """The groups of a new convolution from `in_channels` to `out_channels`."""
        cap = self.spatial if spatial else self.pointwise
        gcd = math.gcd(in_channels, out_channels)
        return gcd if cap is None else math.gcd(gcd, cap)


NAMED_POLICIES = {"gcd": GroupPolicy(), "dense": GroupPolicy(1, 1), "table": GroupPolicy(2, 4)}


def group_policy(spec: str | GroupPolicy) -> GroupPolicy:
    """A policy from its name ("gcd", "dense", "table") or "cap:N" / "cap:P,S"."""
    if isinstance(spec, GroupPolicy):
        return spec
    text = str(spec).strip().lower()
    if text in NAMED_POLICIES:
        return NAMED_POLICIES[text]
    kind, _, caps = text.partition(":")
    try:
        numbers = [int(c) for c in caps.split(",")]
    except ValueError:
        numbers = []
    if kind != "cap" or len(numbers) not in (1, 2) or min(numbers) < 1:
        raise UserInputError(
            f"group policy {spec!r} is not one of {', '.join(NAMED_POLICIES)}, 'cap:N' or 'cap:P,S' "
            "(whole numbers >= 1: the most groups of pointwise and spatial convolutions)."
        )
    return GroupPolicy(numbers[0], numbers[-1])


def group_conv_copy(module: nn.Module, policy: str | GroupPolicy = "gcd") -> nn.Module:
    """A deep copy of `module` in which every Conv2d is grouped by `policy` (default: the text's gcd).

    Shapes, strides, padding, dilation and bias are kept, so the copy is a drop-in
    replacement with fewer parameters and FLOPs; the grouped kernels are freshly
    initialised (they have another shape). A convolution that is already grouped (the
    depthwise convolutions of MobileNets and EfficientNets) keeps its groups unless the
    policy's groups are a multiple of them.
    """
    policy = group_policy(policy)
    if isinstance(module, nn.Conv2d):
        return _grouped(module, policy)
    clone = copy.deepcopy(module)
    for name, conv in [(n, m) for n, m in clone.named_modules() if isinstance(m, nn.Conv2d)]:
        parent_name, _, child = name.rpartition(".")
        parent = clone.get_submodule(parent_name) if parent_name else clone
        setattr(parent, child, _grouped(conv, policy))
    return clone


def _grouped(conv: nn.Conv2d, policy: GroupPolicy) -> nn.Conv2d:
    # Copy the conv rather than build a plain nn.Conv2d: subclasses (the EfficientNet-Lite
    # package's dynamic 'same' padding, say) keep their own forward.
    groups = policy.groups(conv)
    grouped = copy.deepcopy(conv)
    grouped.groups = groups
    grouped.weight = nn.Parameter(
        conv.weight.new_empty(conv.out_channels, conv.in_channels // groups, *conv.kernel_size)
    )
    grouped.reset_parameters()
    return grouped
