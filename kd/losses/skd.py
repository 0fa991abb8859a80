"""Structured KD's pairwise-similarity term (Liu et al. 2019; official
CriterionPairWiseforWholeFeatAfterPool).

    each feature map is max-pooled in patches of (int(h*scale), int(w*scale)) (at least 1, ceil mode),
    each position's vector L2-normalised over channels, S = F^T F of shape [N,P,P];
    L = sum_{n,i,j} (S_s - S_t)^2 / (N P P)

As the official code, which divides by P^2 and N. Channels may differ between student and teacher
(S is P x P); when the pooled grids differ, the student's is adaptive-average-pooled to the teacher's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kd.errors import UserInputError
from kd.losses.base import LossTerm, float32, register_term


def _pool(features: torch.Tensor, scale: float) -> torch.Tensor:
    h, w = features.shape[-2:]
    kernel = (max(1, int(h * scale)), max(1, int(w * scale)))
    return F.max_pool2d(features, kernel_size=kernel, stride=kernel, ceil_mode=True)


def _similarity(pooled: torch.Tensor) -> torch.Tensor:
    v = F.normalize(pooled.flatten(2), dim=1)  # [N,C,P]
    return v.transpose(1, 2) @ v


@float32
def pairwise_similarity(
    student_features: torch.Tensor, teacher_features: torch.Tensor, scale: float = 0.5
) -> torch.Tensor:
    ps = _pool(student_features.float(), scale)
    pt = _pool(teacher_features.float(), scale)
    if ps.shape[-2:] != pt.shape[-2:]:
        ps = F.adaptive_avg_pool2d(ps, pt.shape[-2:])
    return ((_similarity(ps) - _similarity(pt)) ** 2).mean()


@register_term("skd")
class PairwiseSimilarity(LossTerm):
    """Pairwise similarity of pooled feature positions, student vs teacher."""

    student_needs = ("features",)
    teacher_needs = ("features",)

    def __init__(self, scale: float = 0.5):
        super().__init__()
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 1:
            raise UserInputError(
                f"loss term 'skd': scale must be in (0, 1] (the pooling patch as a share "
                f"of the feature map's side), got {scale!r}"
            )
        self.scale = scale

    def forward(self, student: dict, teacher: dict, batch: dict) -> torch.Tensor:
        return pairwise_similarity(student["features"], teacher["features"].detach(), self.scale)
