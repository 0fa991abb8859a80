"""Deep supervision (DSN): pixel cross-entropy of the auxiliary head's logits (PSPNet on layer3).

    L = ce(upsample(aux_logits, mask size), mask)     normalised as "ce"

As the IFVD reference's CriterionDSN second term, unweighted: its 0.4 belongs in the recipe. The
reference upsamples with align_corners=True; we use align_corners=False, as everywhere here.
"""

from __future__ import annotations

import torch

from kd.losses.base import LossTerm, register_term
from kd.losses.ce import cross_entropy
from kd.models.segmenter import upsample


@register_term("dsn")
class DeepSupervision(LossTerm):
    """Cross-entropy of the student's auxiliary logits against the batch's mask."""

    student_needs = ("aux_logits",)

    def __init__(self, ignore_index: int = 255):
        super().__init__()
        self.ignore_index = ignore_index

    def bind(
        self, *, student_features_shape=None, teacher_features_shape=None, num_classes=None, ignore_index=None
    ) -> DeepSupervision:
        if ignore_index is not None:
            self.ignore_index = ignore_index
        return self

    def forward(self, student: dict, teacher: dict, batch: dict) -> torch.Tensor:
        mask = batch["mask"]
        return cross_entropy(
            upsample(student["aux_logits"].float(), mask.shape[-2:]), mask, self.ignore_index
        )
