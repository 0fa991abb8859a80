"""Augmentation per recipe: the references' random scale, crop and flip, seeded per view, the same
for every method of one family, and what the study gives each trial."""

import pytest
import torch
from torchvision import tv_tensors

from kd.data.transforms import Augmentation, PairedTransform, RandomScale
from kd.engine import Engine
from kd.errors import UserInputError
from kd.losses import TERMS
from kd.methods import Recipe, Stage
from kd.methods.recipes import AUGMENTATIONS
from study import config as study_config
from study.contract import TrialChoice
from study.prepare import (
    eval_transform,
    fill_caches,
    open_data,
    recipe_data,
    recipe_for,
    settings_for,
    student_for,
    teacher_shell,
    train_transform,
)

MEAN_PIXEL = (124, 116, 104)  # the ImageNet mean in uint8, what the references pad images with


def test_random_scale_draws_factors_across_its_range_and_keeps_the_labels():
    image = tv_tensors.Image(torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.randint(0, 3, (40, 60)))
    heights = set()
    for seed in range(40):
        torch.manual_seed(seed)
        scaled_image, scaled_mask = RandomScale((0.5, 2.0))(image, mask)
        assert scaled_image.shape[-2:] == scaled_mask.shape
        assert set(scaled_mask.unique().tolist()) <= {0, 1, 2}, "nearest neighbour: no blended labels"
        heights.add(scaled_mask.shape[0])
    assert min(heights) < 30 and max(heights) > 60 and all(20 <= h <= 80 for h in heights)


def white_unlabelled_free(size=(32, 64)):
    """A white image whose every pixel is labelled 0: after the transform, 255 marks padding."""
    return {
        "image": tv_tensors.Image(torch.full((3, *size), 255, dtype=torch.uint8)),
        "mask": tv_tensors.Mask(torch.zeros(size, dtype=torch.int64)),
        "index": 3,
    }


def test_the_references_augmentation_pads_with_the_mean_pixel_and_ignore():
    augmentation = AUGMENTATIONS["ifvd"]
    assert augmentation.scale == (0.5, 2.0) and augmentation.hflip and augmentation.fill == MEAN_PIXEL
    transform = PairedTransform.from_augmentation(
        Augmentation(augmentation.scale, (32, 64), augmentation.hflip, augmentation.fill), normalize=False
    )
    padded = 0
    for view in range(16):
        out = transform(white_unlabelled_free(), seed=0, view=view)
        assert out["image"].shape == (3, 32, 64) and out["mask"].shape == (32, 64)
        pad = out["mask"] == 255
        expected = torch.tensor(MEAN_PIXEL, dtype=torch.float32)[:, None] / 255
        assert torch.allclose(out["image"][:, pad], expected.expand(3, int(pad.sum())))
        assert torch.all(out["image"][:, ~pad] == 1.0)
        padded += bool(pad.any())
    assert 0 < padded < 16, "a scale below 1 pads the crop, one above 1 does not"


def test_a_random_scale_without_a_crop_is_refused():
    with pytest.raises(ValueError, match="needs a crop"):
        PairedTransform(scale=(0.5, 2.0))


def test_a_recipe_names_a_known_augmentation():
    recipe = Recipe("mine", (Stage("train", {"ce": 1.0}),), augmentation="mosaic")
    with pytest.raises(UserInputError, match="augmentation must be one of sd, ifvd, got 'mosaic'"):
        recipe.validate(TERMS)


def test_the_study_builds_each_methods_train_transform_from_its_family():
    config = study_config.resolve("smoke")  # 32x64 synthetic images, no crop, flips on
    sd = train_transform(config, recipe_for(config, "sd"))
    ifvd = train_transform(config, recipe_for(config, "ifvd"))
    assert (
        recipe_for(config, "baseline").augmentation == "sd"
        and recipe_for(config, "cwd").augmentation == "ifvd"
    )
    assert "RandomScale" not in repr(sd) and "RandomCrop" not in repr(sd) and "HorizontalFlip" in repr(sd)
    assert "RandomScale(scale=(0.5, 2.0))" in repr(ifvd) and "RandomCrop(size=(32, 64)" in repr(ifvd)
    cropped = study_config.resolve("smoke", overrides={"crop": [16, 32], "hflip": False})
    for method in ("sd", "ifvd"):
        text = repr(train_transform(cropped, recipe_for(cropped, method)))
        assert "RandomCrop(size=(16, 32)" in text and "HorizontalFlip" not in text
    assert not eval_transform(config).random


def batches(config, data, teacher, method):
    recipe = recipe_for(config, method)
    student = student_for(config, TrialChoice(method, {}), recipe, teacher, data.target.num_classes)
    engine = Engine(
        recipe,
        student,
        teacher,
        recipe_data(config, data, recipe),
        settings_for(config, 1, "cpu"),
        progress=None,
    )
    # listed once: a shuffling loader's generator moves on with every pass
    return [list(engine._loader(0, recipe.stages[0], epoch, epoch)) for epoch in (0, 1)], engine


def same(epochs_a, epochs_b) -> bool:
    pairs = [(a, b) for la, lb in zip(epochs_a, epochs_b, strict=True) for a, b in zip(la, lb, strict=True)]
    return all(torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"]) for a, b in pairs)


def test_methods_of_one_family_see_byte_identical_batches(one_thread):
    config = study_config.resolve("smoke", overrides={"methods": ["baseline", "sd", "ifvd", "cwd"]})
    data = open_data(config)
    teacher = teacher_shell(config, data.target.num_classes).eval()
    seen = {m: batches(config, data, teacher, m)[0] for m in config.methods}
    assert same(seen["ifvd"], seen["cwd"]) and same(seen["baseline"], seen["sd"])
    assert not same(seen["ifvd"], seen["baseline"]), "the two families must augment differently"
    assert same(seen["ifvd"], batches(config, open_data(config), teacher, "ifvd")[0]), (
        "same seed, same batches"
    )


def test_the_teacher_caches_are_filled_with_each_recipes_own_views(one_thread):
    config = study_config.resolve("smoke", overrides={"methods": ["ifvd"], "sampler": "grid"})
    data = open_data(config)
    teacher = teacher_shell(config, data.target.num_classes).eval()
    space = study_config.validate(config)
    fill_caches(config, teacher, data, space.grid(), data.target.num_classes, say=lambda line: None)
    _, engine = batches(config, data, teacher, "ifvd")
    assert engine.caches and all(not cache.missing for cache in engine.caches.values())


def test_a_study_can_give_every_method_one_augmentation():
    import dataclasses

    from study.prepare import recipe_for

    config = study_config.resolve("default")  # every method on the SD student, with the same views
    assert config.augmentation == "sd"
    assert {recipe_for(config, m).augmentation for m in config.methods} == {"sd"}
    own = dataclasses.replace(config, augmentation=None)
    assert recipe_for(own, "ifvd_paper").augmentation == "ifvd"  # left out: the recipe's own
    bad = study_config.resolve("default", overrides={"augmentation": "jitter"})
    with pytest.raises(Exception, match="augmentation must be one of sd, ifvd"):
        study_config.validate(bad)
