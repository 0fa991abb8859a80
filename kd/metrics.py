"""Segmentation metrics, model size and cost.

Conventions (fixed, documented in docs/guide/metrics.md):
- predictions and targets are class-index maps [N,H,W]; pixels whose target equals
  `ignore_index` are left out entirely (a prediction there counts for nothing);
- dataset mIoU: IoU per class from one confusion matrix over all pixels, averaged over
  the classes that occur in the ground truth or the predictions;
- per-image mIoU_i: the same within image i; classes absent from both its prediction
  and its ground truth are left out of its mean. An image with no evaluable pixel gets NaN
  and `robustness` leaves it out;
- FLOPs as counted by torch.utils.flop_counter: a multiply-add counts as 2 FLOPs.
"""

from __future__ import annotations

import copy
import math
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

# The scores every run reports, and whether a study maximises or minimises each.
OBJECTIVES = {"miou": "max", "miou_img": "max", "hp_acc": "max", "var": "min"}
METRICS = tuple(OBJECTIVES)
THETA = 0.75  # the SD paper's HP-Acc threshold: an image counts as well segmented above it
# Pixel regions a dataset may mark in its images (the synthetic domains: ground in cast shadow and
# in sunlight, kd.data.synthetic.ground_light); miou_<region> is the mIoU over that region's pixels
# of every image, reported only for datasets that mark them
REGIONS = ("shadow", "sunlit")
REGION_METRICS = tuple(f"miou_{region}" for region in REGIONS)


def _check_labels(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int
) -> torch.Tensor:
    if pred.shape != target.shape:
        raise ValueError(
            f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}"
        )
    if pred.is_floating_point() or target.is_floating_point():
        raise TypeError("pass class-index maps (integer tensors); take logits.argmax(1) first")
    valid = target != ignore_index
    if valid.any():
        t, p = target[valid], pred[valid]
        if t.min() < 0 or t.max() >= num_classes:
            raise ValueError(
                f"target holds values outside 0..{num_classes - 1} other than ignore_index={ignore_index}"
            )
        if p.min() < 0 or p.max() >= num_classes:
            raise ValueError(f"prediction holds values outside 0..{num_classes - 1}")
    return valid


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """[C, C] pixel counts; rows are ground truth, columns predictions."""
    valid = _check_labels(pred, target, num_classes, ignore_index)
    index = target[valid].long() * num_classes + pred[valid].long()
    return torch.bincount(index, minlength=num_classes * num_classes).view(num_classes, num_classes)


def iou_per_class(confusion: torch.Tensor) -> torch.Tensor:
    """IoU of every class; NaN for a class absent from both ground truth and predictions."""
    confusion = confusion.double()
    inter = confusion.diagonal(dim1=-2, dim2=-1)
    union = confusion.sum(-1) + confusion.sum(-2) - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.full_like(inter, math.nan))


def miou(confusion: torch.Tensor) -> float:
    return float(iou_per_class(confusion).nanmean())


class ConfusionMeter:
    """Accumulates a confusion matrix over batches for dataset-level mIoU."""

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.confusion += confusion_matrix(pred.cpu(), target.cpu(), self.num_classes, self.ignore_index)

    def compute(self) -> dict:
        iou = iou_per_class(self.confusion)
        total = int(self.confusion.sum())
        return {
            "miou": float(iou.nanmean()),
            "iou": iou.tolist(),
            "pixel_acc": float(self.confusion.diagonal().sum()) / total if total else math.nan,
            # 1: one class predicted on every labelled pixel, a degenerate model whatever its mIoU
            "classes_predicted": int((self.confusion.sum(dim=0) > 0).sum()),
        }


def per_image_miou(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """mIoU_i of every image of a batch [N,H,W] -> [N] (float64), with one bincount for the batch."""
    if pred.dim() != 3:
        raise ValueError(f"expected [N,H,W] class-index maps, got shape {tuple(pred.shape)}")
    valid = _check_labels(pred, target, num_classes, ignore_index)
    n = pred.shape[0]
    image = torch.arange(n, device=pred.device).view(n, 1, 1).expand_as(target)
    index = (image[valid] * num_classes + target[valid].long()) * num_classes + pred[valid].long()
    confusion = torch.bincount(index, minlength=n * num_classes * num_classes).view(
        n, num_classes, num_classes
    )
    return iou_per_class(confusion).nanmean(dim=1)


def robustness(per_image, theta: float = THETA) -> dict:
    """The SD paper's robustness figures from per-image mIoU_i.

    miou_img: mean of mIoU_i; hp_acc: share of images with mIoU_i > theta;
    var: (1/n) sum (mIoU_i - miou_img)^2. Images with NaN (nothing to evaluate) are left out.
    """
    scores = torch.as_tensor(per_image, dtype=torch.float64).flatten()
    scores = scores[~scores.isnan()]
    if scores.numel() == 0:
        raise ValueError(
            "no per-image scores to summarise (empty input, or every image had nothing to evaluate)"
        )
    mean = scores.mean()
    return {
        "miou_img": float(mean),
        "hp_acc": float((scores > theta).double().mean()),
        "var": float(((scores - mean) ** 2).mean()),
    }


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _example_input(model: torch.nn.Module, input_size) -> torch.Tensor:
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    return torch.zeros(*input_size, device=device)


@torch.no_grad()
def count_flops(model: torch.nn.Module, input_size=(1, 3, 512, 1024)) -> int:
    """FLOPs of one forward pass at `input_size` (N, C, H, W); a multiply-add is 2 FLOPs.

    Counted on a copy of the model on the meta device: shapes only, no arithmetic, so
    large inputs cost nothing.
    """
    meta_model = copy.deepcopy(model).to("meta").eval()
    with FlopCounterMode(display=False) as counter:
        meta_model(torch.zeros(*input_size, device="meta"))
    return int(counter.get_total_flops())


@torch.no_grad()
def latency(model: torch.nn.Module, input_size=(1, 3, 512, 1024), warmup: int = 2, repeats: int = 10) -> dict:
    """Forward-pass wall time in milliseconds on the model's device (median, min, mean)."""
    was_training = model.training
    model.eval()
    x = _example_input(model, input_size)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    times = []
    try:
        for i in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            model(x)
            sync()
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000.0)
    finally:
        model.train(was_training)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "mean_ms": statistics.fmean(times)}
