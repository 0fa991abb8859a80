"""Metrics against hand-computed examples, including absent classes and ignored pixels."""

import math

import pytest
import torch

from kd.metrics import (
    ConfusionMeter,
    confusion_matrix,
    count_flops,
    count_parameters,
    iou_per_class,
    latency,
    miou,
    per_image_miou,
    robustness,
)

T = torch.tensor
VOID = 255  # ignored

# Three images, three classes.
TARGET = T(
    [
        [[0, 0], [1, 1]],  # class 2 absent from both maps: left out of this image's mean
        [[VOID, VOID], [VOID, VOID]],  # nothing to evaluate
        [[0, 0], [0, 0]],  # class 2 only predicted: counts with IoU 0
    ]
)
PRED = T(
    [
        [[0, 0], [1, 0]],
        [[2, 1], [0, 0]],
        [[0, 2], [0, 0]],
    ]
)


def test_per_image_miou_by_hand():
    scores = per_image_miou(PRED, TARGET, num_classes=3, ignore_index=VOID)
    # image 0: class 0 IoU 2/3, class 1 IoU 1/2; image 2: class 0 IoU 3/4, class 2 IoU 0
    assert scores[0].item() == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert math.isnan(scores[1].item())
    assert scores[2].item() == pytest.approx(3 / 8)


def test_predictions_on_ignored_pixels_do_not_count():
    target = T([[[0, VOID], [1, VOID]]])
    a = per_image_miou(T([[[0, 0], [1, 0]]]), target, 2, VOID)
    b = per_image_miou(T([[[0, 1], [1, 1]]]), target, 2, VOID)
    assert a.item() == b.item() == 1.0


def test_dataset_miou_pools_pixels_over_images():
    confusion = confusion_matrix(PRED, TARGET, 3, VOID)
    # rows: ground truth 0 (6 px: 5 -> 0, 1 -> 2) and 1 (2 px: 1 -> 1, 1 -> 0)
    assert confusion.tolist() == [[5, 0, 1], [1, 1, 0], [0, 0, 0]]
    iou = iou_per_class(confusion)
    assert (
        iou[0].item() == pytest.approx(5 / 7) and iou[1].item() == pytest.approx(1 / 2) and iou[2].item() == 0
    )
    assert miou(confusion) == pytest.approx((5 / 7 + 1 / 2 + 0) / 3)
    meter = ConfusionMeter(3, VOID)
    for k in range(3):
        meter.update(PRED[k : k + 1], TARGET[k : k + 1])
    result = meter.compute()
    assert result["miou"] == pytest.approx(miou(confusion)) and result["pixel_acc"] == pytest.approx(6 / 8)


def test_class_absent_everywhere_is_left_out_of_the_dataset_mean():
    assert miou(confusion_matrix(T([[0, 1]]), T([[0, 1]]), num_classes=4)) == 1.0


def test_vectorised_per_image_miou_equals_one_image_at_a_time():
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (6, 17, 23), generator=generator)
    target[torch.rand(target.shape, generator=generator) < 0.1] = VOID
    pred = torch.randint(0, 5, (6, 17, 23), generator=generator)
    pred[:, :8] = target[:, :8].clamp(max=4)
    batch = per_image_miou(pred, target, 5, VOID)
    single = torch.tensor(
        [miou(confusion_matrix(pred[k], target[k], 5, VOID)) for k in range(6)], dtype=torch.float64
    )
    assert torch.allclose(batch, single)


def test_robustness_by_hand():
    result = robustness(T([0.9, 0.8, 0.5, 0.75]), theta=0.75)
    assert result["miou_img"] == pytest.approx(0.7375)
    assert result["hp_acc"] == pytest.approx(0.5), "mIoU_i must exceed theta, not equal it"
    assert result["var"] == pytest.approx(((0.1625**2) + (0.0625**2) + (0.2375**2) + (0.0125**2)) / 4)
    assert robustness([0.9, 0.8, 0.5, 0.75], theta=0.7)["hp_acc"] == pytest.approx(0.75)
    assert set(result) == {"miou_img", "hp_acc", "var"}


def test_robustness_leaves_out_images_with_nothing_to_evaluate():
    assert robustness(T([0.5, math.nan, 1.0])) == robustness(T([0.5, 1.0]))
    with pytest.raises(ValueError, match="no per-image scores"):
        robustness(T([math.nan]))
    with pytest.raises(ValueError, match="no per-image scores"):
        robustness([])


@pytest.mark.parametrize(
    "pred, target, message",
    [
        (T([[[0, 1]]]), T([[0, 1]]), "differs from target shape"),
        (T([[[0.0, 1.0]]]), T([[[0, 1]]]), "class-index maps"),
        (T([[[0, 3]]]), T([[[0, 1]]]), "prediction holds values outside 0..2"),
        (T([[[0, 1]]]), T([[[0, 7]]]), "target holds values outside 0..2"),
    ],
)
def test_bad_metric_input(pred, target, message):
    with pytest.raises((ValueError, TypeError), match=message):
        per_image_miou(pred, target, 3, VOID)


def test_parameters_and_flops_of_a_known_layer():
    conv = torch.nn.Conv2d(3, 8, kernel_size=3, padding=1)
    assert count_parameters(conv) == 3 * 8 * 9 + 8
    conv.bias.requires_grad_(False)
    assert count_parameters(conv, trainable_only=True) == 3 * 8 * 9
    # 8 outputs x 3 inputs x 9 taps per pixel, 100 pixels, 2 FLOPs per multiply-add
    assert count_flops(conv, (1, 3, 10, 10)) == 2 * 8 * 3 * 9 * 100
    assert conv.training, "the model's mode must be restored"


def test_latency_reports_positive_times():
    result = latency(torch.nn.Conv2d(3, 4, 3), (1, 3, 32, 32), warmup=1, repeats=3)
    assert 0 < result["min_ms"] <= result["median_ms"] and result["mean_ms"] > 0


def test_classes_predicted_counts_the_classes_a_model_ever_outputs():
    from kd.metrics import ConfusionMeter

    meter = ConfusionMeter(3)
    target = torch.tensor([[[0, 1], [2, 255]]])
    meter.update(torch.zeros(1, 2, 2, dtype=torch.long), target)  # one class everywhere: degenerate
    assert meter.compute()["classes_predicted"] == 1
    meter.update(torch.tensor([[[0, 2], [2, 1]]]), target)
    assert meter.compute()["classes_predicted"] == 2  # labelled pixels only: the 1 falls on a void pixel
