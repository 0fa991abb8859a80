"""Paired transforms keep image and mask aligned and are reproducible per (seed, index, view)."""

import pytest
import torch
from torchvision import tv_tensors

from kd.data import Augmented, MaxPool2x, PairedTransform, SyntheticRoadScenes

# One colour per class, far apart, so a pixel's colour tells its class.
PALETTE = torch.tensor(
    [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255], [0, 255, 255], [255, 255, 255]],
    dtype=torch.uint8,
)


def colour_coded(index=0):
    """A synthetic sample whose image is painted from its mask (void black)."""
    sample = SyntheticRoadScenes("target", size=4, image_size=(96, 192))[index]
    mask = sample["mask"]
    image = torch.zeros(3, *mask.shape, dtype=torch.uint8)
    valid = mask != 255
    image[:, valid] = PALETTE[mask[valid]].T
    return {**sample, "image": tv_tensors.Image(image)}


def agreement(out):
    """Share of labelled pixels whose colour decodes to their mask's class."""
    image, mask = out["image"], out["mask"]
    distances = ((image.permute(1, 2, 0)[..., None, :] * 255 - PALETTE.float()) ** 2).sum(-1)
    decoded = distances.argmin(-1)
    valid = mask != 255
    return float((decoded[valid] == mask[valid]).float().mean())


# Resizing blends colours at class borders, and max-pooling mixes the channels of a 2x2
# window, so those keep slightly fewer decodable pixels; a misaligned pair keeps under half.
AUGMENTATIONS = [
    (dict(crop=(64, 128), hflip=True), 0.999),
    (dict(resize=(48, 96), crop=(40, 80), hflip=True), 0.96),
    (dict(crop=(64, 96), hflip=True, max_pool=True), 0.92),
    (dict(resize=(192, 384), crop=(128, 256)), 0.99),
]


@pytest.mark.parametrize("options, least", AUGMENTATIONS)
def test_image_and_mask_stay_aligned(options, least):
    transform = PairedTransform(normalize=False, **options)
    for view in range(4):
        out = transform(colour_coded(1), seed=0, view=view)
        assert out["image"].shape[-2:] == out["mask"].shape
        assert agreement(out) > least
        out["mask"] = out["mask"].flip(-1).flip(-2)
        assert agreement(out) < 0.5, "the check must catch a mask that no longer fits its image"


def test_views_are_reproducible_and_distinct():
    transform = PairedTransform(crop=(64, 128), hflip=True, max_pool=True)
    sample = SyntheticRoadScenes("target", size=3, image_size=(96, 192))[2]
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first = transform(sample, seed=5, view=3)
    assert torch.equal(torch.random.get_rng_state(), before), "the global generator must be left as it was"
    again = transform(sample, seed=5, view=3)
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["mask"], again["mask"])
    others = [transform(sample, seed=5, view=v)["image"] for v in range(4, 8)] + [
        transform(sample, seed=6, view=3)["image"]
    ]
    assert all(not torch.equal(first["image"], other) for other in others)


def test_normalised_output_is_float_with_imagenet_statistics():
    sample = SyntheticRoadScenes("target", size=1, image_size=(32, 64))[0]
    out = PairedTransform()(sample)
    assert out["image"].dtype == torch.float32 and out["mask"].dtype == torch.int64
    expected = (sample["image"][0].float() / 255 - 0.485) / 0.229
    assert torch.allclose(out["image"][0], expected, atol=1e-5)


def test_max_pool_takes_window_maxima_and_subsamples_the_mask():
    image = tv_tensors.Image(torch.arange(20, dtype=torch.float32).view(1, 4, 5))
    mask = tv_tensors.Mask(torch.arange(20).view(4, 5))
    pooled_image, pooled_mask = MaxPool2x()(image, mask)
    assert pooled_image.tolist() == [[[6.0, 8.0], [16.0, 18.0]]]
    assert pooled_mask.tolist() == [[0, 2], [10, 12]]
    with pytest.raises(TypeError, match="float image"):
        MaxPool2x()(tv_tensors.Image(torch.zeros(1, 4, 4, dtype=torch.uint8)))


def test_crop_larger_than_the_image_pads_the_mask_with_ignore():
    sample = SyntheticRoadScenes("target", size=1, image_size=(32, 64))[0]
    out = PairedTransform(crop=(48, 64), normalize=False)(sample)
    assert out["mask"].shape == (48, 64)
    assert (out["mask"] == 255).sum() >= 16 * 64


def test_augmented_dataset_uses_a_fixed_bank_of_views():
    base = SyntheticRoadScenes("target", size=6, image_size=(32, 64))
    data = Augmented(base, PairedTransform(crop=(24, 48), hflip=True), seed=1, views=3)
    assert data.num_classes == base.num_classes and len(data) == 6
    seen = set()
    for epoch in range(8):
        data.set_epoch(epoch)
        seen |= {data.view_of(i) for i in range(6)}
        assert data[4]["view"] == data.view_of(4)
    assert seen == {0, 1, 2}
    data.set_epoch(2)
    reference = PairedTransform(crop=(24, 48), hflip=True)(base[4], seed=1, view=data.view_of(4))
    assert torch.equal(data[4]["image"], reference["image"])
    fresh = Augmented(base, PairedTransform(hflip=True), views=None)
    fresh.set_epoch(11)
    assert fresh.view_of(0) == 11
    with pytest.raises(ValueError, match="views must be at least 1"):
        Augmented(base, PairedTransform(), views=0)


def test_batches_from_worker_processes_equal_the_main_process():
    data = Augmented(
        SyntheticRoadScenes("target", size=8, image_size=(64, 128)),
        PairedTransform(crop=(32, 64), hflip=True),
        seed=2,
    )
    data.set_epoch(3)
    in_main = list(torch.utils.data.DataLoader(data, batch_size=4))
    in_workers = list(torch.utils.data.DataLoader(data, batch_size=4, num_workers=2))
    assert in_main[0]["image"].shape == (4, 3, 32, 64) and in_main[0]["mask"].shape == (4, 32, 64)
    assert in_main[1]["id"] == ["target_00004", "target_00005", "target_00006", "target_00007"]
    for a, b in zip(in_main, in_workers, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
        assert torch.equal(a["view"], torch.full((4,), 3))
