"""Adapters for feature losses between a student and a teacher whose features differ.

An adapter maps the student's features to the teacher's shape (a FitNets-style regressor).
It belongs to the student side: its parameters are trained with the student's, the
teacher's features are left as they are (a target), and it is discarded at inference,
where only the student's logits are used. The SD student needs none at the AMG's output
stride; a denser SD feature extractor (output stride 8 under a stride-32 teacher) has the
teacher's channels at a finer size, and is averaged down to the teacher's positions without
any learned part, so the feature extractor itself must reproduce the teacher's features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FeatureAdapter(nn.Module):
    """1x1 conv + BN to the teacher's channels, then bilinear resize to the teacher's size."""

    def __init__(self, student_channels: int, teacher_channels: int):
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(student_channels, teacher_channels, 1, bias=False), nn.BatchNorm2d(teacher_channels)
        )

    def forward(self, student_features: torch.Tensor, teacher_size=None) -> torch.Tensor:
        x = self.proj(student_features)
        if teacher_size is not None and tuple(x.shape[-2:]) != tuple(teacher_size):
            x = F.interpolate(x, size=tuple(teacher_size), mode="bilinear", align_corners=False)
        return x


class ResizeAdapter(nn.Module):
    """No parameters: average-pools a finer student map to the teacher's size (bilinear if coarser)."""

    def forward(self, student_features: torch.Tensor, teacher_size=None) -> torch.Tensor:
        if teacher_size is None or tuple(student_features.shape[-2:]) == tuple(teacher_size):
            return student_features
        if all(s >= t for s, t in zip(student_features.shape[-2:], teacher_size, strict=True)):
            return F.adaptive_avg_pool2d(student_features, tuple(teacher_size))
        return F.interpolate(student_features, size=tuple(teacher_size), mode="bilinear", align_corners=False)


class IdentityAdapter(nn.Identity):
    """nn.Identity that takes (and ignores) teacher_size, so every adapter is called alike."""

    def forward(self, student_features: torch.Tensor, teacher_size=None) -> torch.Tensor:
        return student_features


def needs_adapter(student_shape, teacher_shape) -> bool:
    """Whether features of these shapes ([N,]C,H,W) differ in channels or spatial size."""
    return tuple(student_shape)[-3:] != tuple(teacher_shape)[-3:]


def make_adapter(student_shape, teacher_shape) -> nn.Module:
    """IdentityAdapter when the shapes ([N,]C,H,W) match, ResizeAdapter when only the size
    differs, else a FeatureAdapter."""
    if not needs_adapter(student_shape, teacher_shape):
        return IdentityAdapter()
    if tuple(student_shape)[-3] == tuple(teacher_shape)[-3]:
        return ResizeAdapter()
    return FeatureAdapter(tuple(student_shape)[-3], tuple(teacher_shape)[-3])
