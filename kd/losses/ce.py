"""Pixel cross-entropy: mean over the non-ignored pixels (weighted mean with class weights).

    L = sum_p w[y_p] (-log softmax(z_p)[y_p]) / sum_p w[y_p]     over pixels p with y_p != ignore

As F.cross_entropy, except that an image batch with no labelled pixel gives 0 (still connected
to the logits' graph), not NaN: unlabelled images are common here (ESD's proximity domain).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kd.errors import UserInputError
from kd.losses.base import LossTerm, float32, register_term


@float32
def cross_entropy(
    logits: torch.Tensor,
    mask: torch.Tensor,
    ignore_index: int = 255,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    logits = logits.float()
    weight = None if class_weights is None else class_weights.to(logits)
    per_pixel = F.cross_entropy(logits, mask, weight=weight, ignore_index=ignore_index, reduction="none")
    valid = mask != ignore_index
    if weight is None:
        denominator = valid.sum()
    else:
        denominator = (weight[torch.where(valid, mask, 0)] * valid).sum()
    # Dividing by a clamped denominator (no .any() test) avoids a device sync; 0/eps = 0 when all ignored.
    return per_pixel.sum() / denominator.clamp(min=torch.finfo(torch.float32).tiny)


@register_term("ce")
class CrossEntropy(LossTerm):
    """Supervised pixel cross-entropy on the student's logits and the batch's mask."""

    def __init__(self, ignore_index: int = 255, class_weights=None):
        super().__init__()
        self.ignore_index = ignore_index
        weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        if weights is not None and (
            weights.ndim != 1 or not torch.isfinite(weights).all() or (weights < 0).any()
        ):
            raise UserInputError(
                f"loss term 'ce': class_weights must be a list of finite numbers >= 0, got {class_weights!r}"
            )
        self.register_buffer("class_weights", weights, persistent=False)

    def bind(
        self, *, student_features_shape=None, teacher_features_shape=None, num_classes=None, ignore_index=None
    ) -> CrossEntropy:
        if ignore_index is not None:
            self.ignore_index = ignore_index
        if (
            num_classes is not None
            and self.class_weights is not None
            and len(self.class_weights) != num_classes
        ):
            raise UserInputError(
                f"loss term 'ce': {len(self.class_weights)} class_weights given for "
                f"{num_classes} classes; give one weight per class"
            )
        return self

    def forward(self, student: dict, teacher: dict, batch: dict) -> torch.Tensor:
        return cross_entropy(student["logits"], batch["mask"], self.ignore_index, self.class_weights)
