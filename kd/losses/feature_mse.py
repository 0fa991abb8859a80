"""Feature distillation, SD eq. 2: squared error between (adapted) student and teacher features.

Two readings, by `reduction`:

    "channel_sum"  L = 1/(N h w) sum_{n,h,w} sum_c (f_s - f_t)^2     eq. 2 as written (the default)
    "mean"         L = 1/(N C h w) sum_{n,c,h,w} (f_s - f_t)^2       F.mse_loss: C times smaller

At the same learning rate the "mean" gradient is C times smaller (1280 for EfficientNet-Lite0's
top, 2048 for ResNet-50's layer4), so the paper's rate (3e-3, momentum 0.99) barely moves the
feature extractor under it. Both are measured at the teacher's C, h, w.

The adapter (kd.models.adapters) is identity when the shapes match; a parameter-free resize
when only the size differs (a denser student feature extractor); else a 1x1 conv + BN and a
resize. It is student-side: trained with the student. The teacher's features are a target
(detached).
"""

from __future__ import annotations

import torch

from kd.errors import UserInputError
from kd.losses.base import LossTerm, float32, register_term
from kd.models.adapters import make_adapter, needs_adapter

REDUCTIONS = ("channel_sum", "mean")


@float32
def feature_mse(
    student_features: torch.Tensor, teacher_features: torch.Tensor, reduction: str = "channel_sum"
) -> torch.Tensor:
    if (
        student_features.shape != teacher_features.shape
    ):  # broadcasting would hide it, silently for some shapes
        raise ValueError(
            f"student features {tuple(student_features.shape)} and teacher features "
            f"{tuple(teacher_features.shape)} differ in shape; adapt the student's first"
        )
    squared = (student_features.float() - teacher_features.float()).square()
    if reduction == "mean":
        return squared.mean()
    return squared.sum(dim=1).mean()


@register_term("feature")
class FeatureMSE(LossTerm):
    """SD's feature loss; bind() builds the adapter when student and teacher features differ in shape."""

    student_needs = ("features",)
    teacher_needs = ("features",)

    def __init__(self, reduction: str = "channel_sum"):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise UserInputError(
                f"loss term 'feature': reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}"
            )
        self.reduction = reduction
        self.adapter, self.bound_shapes = None, None

    def bind(
        self, *, student_features_shape=None, teacher_features_shape=None, num_classes=None, ignore_index=None
    ) -> FeatureMSE:
        if student_features_shape is not None and teacher_features_shape is not None:
            shapes = (tuple(student_features_shape)[-3:], tuple(teacher_features_shape)[-3:])
            if shapes != self.bound_shapes:  # binding again (a later stage) keeps a trained adapter
                self.adapter, self.bound_shapes = make_adapter(*shapes), shapes
        return self

    def adapt(self, student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
        """The student's features in the teacher's shape."""
        if self.adapter is not None:
            return self.adapter(student_features, teacher_size=teacher_features.shape[-2:])
        if needs_adapter(student_features.shape, teacher_features.shape):
            raise RuntimeError(
                f"loss term 'feature': student features {tuple(student_features.shape[1:])} "
                f"and teacher features {tuple(teacher_features.shape[1:])} differ in shape; "
                "call bind(student_features_shape=..., teacher_features_shape=...) "
                "before making the optimiser, so an adapter is built and trained"
            )
        return student_features

    def forward(self, student: dict, teacher: dict, batch: dict) -> torch.Tensor:
        ft = teacher["features"].detach()
        return feature_mse(self.adapt(student["features"], ft), ft, self.reduction)
