"""Intra-class feature variation distillation (IFVD, Wang et al. ECCV 2020).

    IFV map: M(p) = cos(f(p), prototype of p's class), the prototype being the average of the
    image's features over that class's pixels (labels down-sampled nearest to the feature size).
    L = sum_{evaluable p} (M_s(p) - M_t(p))^2 / #evaluable

Our choice for ignored pixels: M = 1 there in both maps (as the official code, where an ignored
pixel is its own "prototype"), but they are left out of the mean, so the loss's scale does not
shrink with the share of void pixels (the official code averages over all pixels). When the
student's features have another size than the teacher's, each map is computed at its own size and
the student's map is resized bilinearly to the teacher's; the evaluable pixels are those of the
teacher-resolution labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kd.losses.base import LossTerm, float32, register_term


def _labels_at(labels: torch.Tensor, size) -> torch.Tensor:
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    return F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest")[:, 0].long()


@float32
def ifv_map(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """[N,C,h,w] features, [N,H,W] labels -> [N,h,w] cosine of each pixel to its class prototype
    (1 if ignored)."""
    f = features.float()
    n, c, h, w = f.shape
    labels = _labels_at(labels, (h, w))
    valid = labels != ignore_index
    safe = torch.where(valid, labels, 0)
    one_hot = F.one_hot(safe, num_classes).permute(0, 3, 1, 2).to(f.dtype) * valid[:, None]  # [N,K,h,w]
    sums = torch.einsum("nkhw,nchw->nck", one_hot, f)
    # Absent classes: sum 0 over count 0 -> prototype 0, gathered by no pixel.
    prototypes = sums / one_hot.sum(dim=(2, 3)).clamp(min=1)[:, None]  # [N,C,K]
    per_pixel = prototypes.gather(2, safe.view(n, 1, h * w).expand(n, c, h * w)).view(n, c, h, w)
    cos = F.cosine_similarity(f, per_pixel, dim=1, eps=1e-8)
    return torch.where(valid, cos, torch.ones_like(cos))


@float32
def ifv_loss(
    student_features: torch.Tensor,
    teacher_features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    ignore_index: int = 255,
) -> torch.Tensor:
    with torch.no_grad():
        m_t = ifv_map(teacher_features, labels, num_classes, ignore_index)
    m_s = ifv_map(student_features, labels, num_classes, ignore_index)
    if m_s.shape[-2:] != m_t.shape[-2:]:
        m_s = F.interpolate(m_s[:, None], size=m_t.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    valid = _labels_at(labels, m_t.shape[-2:]) != ignore_index
    # No evaluable pixel: 0 / 1 = 0, still connected to the student's graph.
    return ((m_s - m_t) ** 2 * valid).sum() / valid.sum().clamp(min=1)


@register_term("ifv")
class IFV(LossTerm):
    """IFVD's feature term; needs num_classes (constructor or bind) and the batch's mask."""

    student_needs = ("features",)
    teacher_needs = ("features",)

    def __init__(self, num_classes: int | None = None, ignore_index: int = 255):
        super().__init__()
        self.num_classes, self.ignore_index = num_classes, ignore_index

    def bind(
        self, *, student_features_shape=None, teacher_features_shape=None, num_classes=None, ignore_index=None
    ) -> IFV:
        if num_classes is not None:
            self.num_classes = num_classes
        if ignore_index is not None:
            self.ignore_index = ignore_index
        return self

    def forward(self, student: dict, teacher: dict, batch: dict) -> torch.Tensor:
        if self.num_classes is None:
            raise RuntimeError(
                "loss term 'ifv' needs the number of classes: pass IFV(num_classes=...) "
                "or call bind(num_classes=...) before training"
            )
        return ifv_loss(
            student["features"], teacher["features"], batch["mask"], self.num_classes, self.ignore_index
        )
