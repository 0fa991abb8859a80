"""PSPNet as the IFVD reference runs it: output stride 8, the "psp" split point, the DSN head and term."""

import copy

import pytest
import torch
import torch.nn.functional as F

from kd.data import PairedTransform, SyntheticRoadScenes
from kd.engine import Engine, RunData, RunSettings
from kd.errors import UserInputError
from kd.losses import build_term
from kd.methods.recipe import Recipe, Stage
from kd.models import build_student, build_teacher, split_points
from kd.models.pspnet import pspnet

pytestmark = pytest.mark.usefixtures("one_thread")

X = torch.rand(2, 3, 256, 256)


@pytest.fixture(scope="module")
def student():
    torch.manual_seed(0)
    return build_student("pspnet_resnet18", 5).eval()


def test_psp_features_are_at_output_stride_8_with_the_bottleneck_width(student):
    with torch.no_grad():
        features = student.forward_parts(X, "psp", want=("features",))["features"]
    assert features.shape == (2, student.stages["psp"].channels, 32, 32) == (2, 128, 32, 32)
    assert (features >= 0).all()  # after the bottleneck's ReLU
    assert student.split_points[-1] == "psp" == split_points("pspnet_resnet18")[-1]


def test_forward_is_the_head_on_the_psp_features_upsampled(student):
    with torch.no_grad():
        features = student.features(X, "psp")
        expected = F.interpolate(
            student.head(features), size=(256, 256), mode="bilinear", align_corners=False
        )
        assert torch.allclose(student(X), expected, atol=1e-6)
        parts = student.forward_parts(X, "psp", want=("features", "logits"))
    assert torch.equal(parts["features"], features) and parts["logits"].shape == (2, 5, 32, 32)


def test_aux_logits_come_from_layer3_only_when_asked(student):
    with torch.no_grad():
        parts = student.forward_parts(X, "layer2", want=("features", "aux_logits"))
        expected = student.aux_head(student.features(X, "layer3"))
    assert set(parts) == {"features", "aux_logits"}
    assert parts["aux_logits"].shape == (2, 5, 32, 32) and torch.equal(parts["aux_logits"], expected)
    assert parts["features"].shape[-2:] == (32, 32)
    calls = []
    hook = student.aux_head.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        student(X)
        student.forward_parts(X, "psp")
    hook.remove()
    assert calls == []


def test_forward_is_the_same_with_or_without_the_aux_head():
    torch.manual_seed(1)
    with_aux = pspnet("resnet18_half", 3).eval()
    torch.manual_seed(1)
    without = pspnet("resnet18_half", 3, aux=False).eval()
    assert without.aux_head is None and with_aux.aux_point == "layer3"
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(with_aux(x), without(x))
    with pytest.raises(UserInputError, match="no auxiliary head"):
        without.forward_parts(x, want=("aux_logits",))


def test_dsn_term_is_cross_entropy_of_the_upsampled_aux_logits():
    torch.manual_seed(0)
    aux = torch.randn(2, 4, 8, 10, requires_grad=True)
    mask = torch.randint(0, 4, (2, 32, 40))
    mask[0, :5] = 255
    term = build_term("dsn").bind(ignore_index=255, num_classes=4)
    assert term.student_needs == ("aux_logits",)
    value = term({"aux_logits": aux}, {}, {"mask": mask, "image": torch.rand(2, 3, 32, 40)})
    upsampled = F.interpolate(aux, size=(32, 40), mode="bilinear", align_corners=False)
    assert torch.allclose(value, F.cross_entropy(upsampled, mask, ignore_index=255))
    value.backward()
    assert aux.grad.abs().sum() > 0


def test_os32_variant_keeps_stride_32():
    model = build_student("pspnet_resnet18_os32", 2).eval()
    assert model.name == "pspnet_resnet18_os32"
    with torch.no_grad():
        assert model.features(X[:1], "psp").shape == (1, 128, 8, 8)


def test_teacher_has_the_psp_point_and_the_aux_head():
    with torch.device("meta"):
        teacher = build_teacher("pspnet_resnet101", 3)
        parts = teacher.forward_parts(torch.zeros(1, 3, 256, 256), "psp", want=("features", "aux_logits"))
    assert teacher.split_points == ["stem", "layer1", "layer2", "layer3", "layer4", "psp"]
    assert parts["features"].shape == (1, 512, 32, 32) and parts["aux_logits"].shape == (1, 3, 32, 32)
    assert teacher.aux_head[0].in_channels == 1024 and teacher.aux_head[0].out_channels == 512


def test_resnet18_layers_3_and_4_are_dilated_as_the_reference_every_block():
    stages = pspnet("resnet18", 2).stages
    for layer, dilation in (("layer3", 2), ("layer4", 4)):
        convs = [m for m in stages[layer].modules() if isinstance(m, torch.nn.Conv2d)]
        assert all(c.stride == (1, 1) for c in convs), layer
        assert {c.dilation for c in convs if c.kernel_size == (3, 3)} == {(dilation, dilation)}, layer


def test_the_engine_trains_the_aux_head_with_the_dsn_term():
    target = SyntheticRoadScenes("target", size=4, image_size=(48, 64), seed=0, label_set="binary")
    val = SyntheticRoadScenes("test", size=2, image_size=(48, 64), seed=0, label_set="binary")
    data = RunData(target, val, train_transform=PairedTransform(crop=(40, 56), normalize=False))
    recipe = Recipe(
        "dsn", (Stage("train", {"ce": 1.0, "dsn": 0.4}, epochs=1),), student="pspnet_resnet18_half"
    )
    torch.manual_seed(0)
    student = build_student("pspnet_resnet18_half", 2)
    before = copy.deepcopy(student.aux_head.state_dict())
    result = Engine(recipe, student, None, data, RunSettings(batch_size=2, views=1), progress=None).run()
    assert result.history[-1]["loss_dsn"] > 0
    after = student.aux_head.state_dict()
    assert not torch.equal(after["0.weight"], before["0.weight"])  # trained
    assert not torch.equal(after["1.running_mean"], torch.zeros_like(before["1.running_mean"]))  # precise BN
    with pytest.raises(UserInputError, match="dsn trains an auxiliary head"):
        Engine(
            recipe,
            pspnet("resnet18_half", 2, aux=False),
            None,
            data,
            RunSettings(batch_size=2),
            progress=None,
        )


def test_training_the_head_only_trains_the_psp_stage_too(tmp_path):
    # The PSP module is a split point but starts untrained: "head only" must not freeze it.
    from kd.models.teacher_training import TeacherTraining, fit_teacher

    torch.manual_seed(0)
    model = pspnet("resnet18_half", 2)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    data = SyntheticRoadScenes("source", size=4, image_size=(32, 32), seed=0, label_set="binary")
    settings = TeacherTraining(epochs=1, batch_size=2, trainable="head")
    fit_teacher(model, data, settings, cache_dir=tmp_path, progress=None)
    moved = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert any(name.startswith("stages.psp.") for name in moved)
    assert any(name.startswith("head.") for name in moved)
    assert not any(name.startswith("stages.layer") or name.startswith("stages.stem") for name in moved)
