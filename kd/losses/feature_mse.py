"""Feature distillation, SD eq. 2: mean squared error between adapted student and teacher features.

    L = sum_{n,c,h,w} (adapter(f_s) - f_t)^2 / (N C h w)        (at the teacher's C, h, w)

The adapter (kd.models.adapters) is identity when the shapes match, else a 1x1 conv + BN and a
bilinear resize to the teacher's size. It is student-side: trained with the student. The
teacher's features are a target (detached).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kd.losses.base import LossTerm, float32
from kd.models.adapters import make_adapter, needs_adapter


@float32
def feature_mse(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    if student_features.shape != teacher_features.shape:  # mse_loss would broadcast, silently for some shapes
        raise ValueError(f"student features {tuple(student_features.shape)} and teacher features "
                         f"{tuple(teacher_features.shape)} differ in shape; adapt the student's first")
    return F.mse_loss(student_features.float(), teacher_features.float())


class FeatureMSE(LossTerm):
    """SD's feature loss; bind() builds the adapter when student and teacher features differ in shape."""

    student_needs = ("features",)
    teacher_needs = ("features",)

    def __init__(self):
        super().__init__()
        self.adapter, self.bound_shapes = None, None

    def bind(self, *, student_features_shape=None, teacher_features_shape=None, num_classes=None,
             ignore_index=None) -> FeatureMSE:
        if student_features_shape is not None and teacher_features_shape is not None:
            shapes = (tuple(student_features_shape)[-3:], tuple(teacher_features_shape)[-3:])
            if shapes != self.bound_shapes:  # binding again (a later stage) keeps a trained adapter
                self.adapter, self.bound_shapes = make_adapter(*shapes), shapes
        return self

    def forward(self, student: dict, teacher: dict, batch: dict) -> torch.Tensor:
        fs, ft = student["features"], teacher["features"].detach()
        if self.adapter is not None:
            fs = self.adapter(fs, teacher_size=ft.shape[-2:])
        elif needs_adapter(fs.shape, ft.shape):
            raise RuntimeError(
                f"loss term 'feature': student features {tuple(fs.shape[1:])} and teacher features "
                f"{tuple(ft.shape[1:])} differ in shape; call bind(student_features_shape=..., "
                "teacher_features_shape=...) before making the optimiser, so an adapter is built and trained")
        return feature_mse(fs, ft)
