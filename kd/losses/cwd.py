"""Channel-wise distillation (Shu et al. 2021) on the logits.

    p[n,c,:] = softmax(z[n,c,:] / T) over the H W positions of each channel
    L = T^2 sum_{n,c} sum_{hw} p_t (log p_t - log p_s) / (N C)

As the official code: summed over positions (each channel's distribution sums to 1), averaged
over images and channels, so the scale does not grow with batch or image size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kd.losses.base import LossTerm, check_logits_at, check_positive, float32, register_term


@float32
def channel_wise(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0
) -> torch.Tensor:
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape; upsample both to the input size"
        )
    n, c = student_logits.shape[:2]
    t = temperature
    log_ps = F.log_softmax(student_logits.float().flatten(2) / t, dim=2)
    log_pt = F.log_softmax(teacher_logits.float().flatten(2) / t, dim=2)
    return t * t * (log_pt.exp() * (log_pt - log_ps)).sum() / (n * c)


@register_term("cwd")
class ChannelWise(LossTerm):
    """KL divergence between each channel's spatial distributions of teacher and student."""

    teacher_needs = ("logits",)

    def __init__(self, temperature: float = 4.0, logits_at: str = "input"):
        super().__init__()
        check_positive("cwd", temperature=temperature)
        self.temperature, self.logits_at = temperature, check_logits_at("cwd", logits_at)

    def forward(self, student: dict, teacher: dict, batch: dict) -> torch.Tensor:
        return channel_wise(student["logits"], teacher["logits"].detach(), self.temperature)
