"""sd_adabn, ESD's control: SD's stage 1 on target images, its BatchNorm statistics then
recomputed over ESD's target + proximity stream."""

import dataclasses

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from kd.data import PairedTransform, SyntheticRoadScenes
from kd.engine import Engine, RunData, RunSettings
from kd.errors import UserInputError
from kd.methods import build_recipe
from kd.models import build_student, build_teacher

pytestmark = pytest.mark.usefixtures("one_thread")


def scenes(domain, size=6):
    return SyntheticRoadScenes(domain, size=size, image_size=(48, 64), seed=0, label_set="binary")


def stage_one(name, proximity):
    recipe = build_recipe(name, {"epochs": 1})
    recipe = dataclasses.replace(recipe, stages=recipe.stages[:1])
    data = RunData(
        scenes("target"), scenes("test", 3), proximity, eval_transform=PairedTransform(normalize=False)
    )
    torch.manual_seed(0)
    teacher = build_teacher(num_classes=2, pretrained=False).eval()
    torch.manual_seed(1)
    student = build_student("sd", 2, teacher=teacher, split_point="stage3")
    Engine(
        recipe, student, teacher, data, RunSettings(batch_size=3, views=1, evaluate="end"), progress=None
    ).run()
    return student


def test_the_statistics_come_from_proximity_images_and_the_weights_from_target_images_alone():
    sd = stage_one("sd", None)
    adabn = stage_one("sd_adabn", scenes("proximity"))
    for (name, a), b in zip(sd.stages.state_dict().items(), adabn.stages.state_dict().values(), strict=True):
        if "running" not in name and "num_batches" not in name:
            assert torch.equal(a, b), name  # the feature loss saw the same target batches
    norms = [(a, b) for a, b in zip(sd.modules(), adabn.modules(), strict=True) if isinstance(a, _BatchNorm)]
    assert any(not torch.allclose(a.running_mean, b.running_mean) for a, b in norms)


def test_it_needs_proximity_images_and_a_precise_pass():
    recipe = build_recipe("sd_adabn", {"r": 0.5})
    assert recipe.needs_proximity and recipe.stages[0].r == 0.5 and recipe.stages[0].stream == "target"
    with pytest.raises(UserInputError, match="batchnorm_stream"):
        build_recipe("sd_adabn", {"feature.batchnorm": "frozen"})
