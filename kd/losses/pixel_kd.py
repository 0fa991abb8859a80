"""Pixel-wise KD (Hinton et al., applied per pixel): KL(p_t || p_s) of the softened class distributions.

    p = softmax(z / T) over the classes
    reduction "pixel":   L = T^2 sum_{n,h,w} sum_k p_t (log p_t - log p_s) / (N H W)
    reduction "element": L = T^2 sum_{n,h,w} sum_k p_t (log p_t - log p_s) / (N K H W)

"pixel" is the papers' equation (IFVD and SKD: the KL of each pixel, averaged over pixels).
"element" is what their official code computes: `nn.KLDivLoss()` with its default mean over
every element, N*K*H*W, so the same lambda_kd weighs KD K times less (19x on Cityscapes, 11x on
CamVid-11). The published numbers came from the code.

Every pixel counts, ignored and unlabelled ones too (the teacher has an output everywhere).
T^2 keeps the gradients' scale comparable across temperatures.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kd.errors import UserInputError
from kd.losses.base import LossTerm, check_logits_at, check_positive, float32, register_term

REDUCTIONS = ("pixel", "element")


@float32
def pixel_kd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    reduction: str = "pixel",
) -> torch.Tensor:
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape; upsample both to the input size"
        )
    t = temperature
    log_ps = F.log_softmax(student_logits.float() / t, dim=1)
    log_pt = F.log_softmax(teacher_logits.float() / t, dim=1)
    per_pixel = (log_pt.exp() * (log_pt - log_ps)).sum(dim=1)
    classes = student_logits.shape[1] if reduction == "element" else 1
    return t * t * per_pixel.mean() / classes


@register_term("kd")
class PixelKD(LossTerm):
    """Pixel-wise KL divergence from the teacher's softened output to the student's."""

    teacher_needs = ("logits",)

    def __init__(self, temperature: float = 1.0, reduction: str = "pixel", logits_at: str = "input"):
        super().__init__()
        check_positive("kd", temperature=temperature)
        if reduction not in REDUCTIONS:
            raise UserInputError(
                f"loss term 'kd': reduction must be one of {', '.join(REDUCTIONS)} "
                f"(pixel: the papers' per-pixel KL; element: their code's KLDivLoss mean), got {reduction!r}"
            )
        self.temperature, self.reduction = temperature, reduction
        self.logits_at = check_logits_at("kd", logits_at)

    def forward(self, student: dict, teacher: dict, batch: dict) -> torch.Tensor:
        return pixel_kd(student["logits"], teacher["logits"].detach(), self.temperature, self.reduction)
