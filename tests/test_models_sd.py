"""SD models: group-conv conversion, the SD student, the constructed teacher, adapters."""
import copy
import math
from collections import OrderedDict

import pytest
import torch
from torch import nn
from torchvision.models import mobilenet_v3_small, resnet18, resnet50

from kd.errors import UserInputError
from kd.metrics import count_parameters
from kd.models import Segmenter, group_conv_copy
from kd.models.adapters import FeatureAdapter, make_adapter, needs_adapter
from kd.models.sd import SDHead, constructed_teacher, sd_student

SIZE = (65, 97)  # odd, so every stride rounds


def resnet_teacher(builder=resnet18, num_classes: int = 5) -> Segmenter:
    torch.manual_seed(0)
    net = builder(weights=None)
    stages = OrderedDict(
        stem=nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool),
        layer1=net.layer1, layer2=net.layer2, layer3=net.layer3, layer4=net.layer4,
    )
    head = nn.Conv2d(net.fc.in_features, num_classes, 1)
    return Segmenter(stages, head, num_classes, name=builder.__name__).eval()


@pytest.fixture(scope="module")
def teacher() -> Segmenter:
    return resnet_teacher()


def convs(module: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    return [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Conv2d)]


def test_group_conv_copy_keeps_geometry_and_shapes(teacher):
    original = teacher.stages["layer2"]
    before = copy.deepcopy(original.state_dict())
    grouped = group_conv_copy(original)
    pairs = list(zip(convs(original), convs(grouped)))
    assert len(pairs) == len(convs(original)) > 0
    for (name, a), (name_b, b) in pairs:
        assert name == name_b
        assert b.groups == math.gcd(a.in_channels, a.out_channels)
        for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation"):
            assert getattr(a, attr) == getattr(b, attr), (name, attr)
        assert (a.bias is None) == (b.bias is None)
        assert a.groups == 1  # the original is not touched
    x = torch.randn(2, 64, 17, 25)
    assert grouped.eval()(x).shape == original(x).shape
    assert all(torch.equal(before[k], v) for k, v in original.state_dict().items())
    assert count_parameters(grouped) < count_parameters(original)


def test_group_conv_copy_keeps_depthwise_groups():
    features = mobilenet_v3_small(weights=None).features.eval()
    grouped = group_conv_copy(features).eval()
    depthwise = 0
    for (_, a), (_, b) in zip(convs(features), convs(grouped)):
        if a.groups > 1:
            depthwise += 1
            assert b.groups == a.groups
        else:
            assert b.groups == math.gcd(a.in_channels, a.out_channels)
    assert depthwise > 0
    x = torch.randn(1, 3, *SIZE)
    assert grouped(x).shape == features(x).shape


def test_group_conv_copy_of_a_bare_conv():
    conv = nn.Conv2d(12, 18, 3, stride=2, padding=2, dilation=2)
    grouped = group_conv_copy(conv)
    assert conv.groups == 1 and grouped.groups == 6
    x = torch.randn(1, 12, 11, 13)
    assert grouped(x).shape == conv(x).shape


def test_sd_head_is_grouped_and_returns_signed_logits():
    head = SDHead(2048, 3)
    for name, conv in convs(head):
        assert conv.groups == math.gcd(conv.in_channels, conv.out_channels), name
    assert isinstance(list(head.modules())[-1], nn.Conv2d)  # classifier last, no ReLU/BN after it
    assert head.classifier.bias is not None
    assert 0.08e6 < count_parameters(head) < 0.12e6
    with torch.no_grad():
        head.classifier.bias.fill_(-100.0)
        logits = head.eval()(torch.randn(2, 2048, 3, 5))
    assert logits.shape == (2, 3, 6, 10)  # x2: the head's own upsampling
    assert (logits < 0).all()  # nothing clips the logits at 0


@pytest.mark.parametrize("point", ["stem", "layer1", "layer2", "layer3", "layer4"])
def test_sd_student_at_every_split_point(teacher, point):
    student = sd_student(teacher, point).eval()
    assert student.split_points == teacher.split_points[: teacher.split_points.index(point) + 1]
    assert student.name == f"sd_student_resnet18@{point}"
    x = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        logits = student(x)
        assert logits.shape == (1, teacher.num_classes, *SIZE)
        amg, _ = teacher.split(point)
        assert student.features(x, point).shape == amg(x).shape  # eq. 2 needs no adapter
    for name, conv in convs(student):
        assert conv.groups == math.gcd(conv.in_channels, conv.out_channels), name
    fe = sum(p.numel() for p in student.stages.parameters())
    if point == "stem":  # 3 -> 64 has gcd 1: the stem conv stays dense
        assert fe == count_parameters(amg)
    else:
        assert fe < count_parameters(amg)
    assert all(p.requires_grad for p in student.parameters())


def test_sd_student_is_freshly_initialised_and_leaves_teacher_alone(teacher):
    bn = teacher.stages["layer1"][0].bn1
    with torch.no_grad():
        bn.running_mean.fill_(0.5)
    try:
        student = sd_student(teacher, "layer2", num_classes=3)
        assert student.num_classes == 3 and student.head.classifier.out_channels == 3
        assert torch.equal(student.stages["layer1"][0].bn1.running_mean, torch.zeros(64))
        assert teacher.stages["layer1"][0].conv1.groups == 1
        assert torch.equal(bn.running_mean, torch.full((64,), 0.5))
    finally:
        bn.reset_running_stats()


def test_bad_split_point_lists_the_valid_ones(teacher):
    for build in (sd_student, constructed_teacher):
        with pytest.raises(UserInputError, match="layer3"):
            build(teacher, "layer5")
    with pytest.raises(UserInputError, match="num_classes"):
        sd_student(teacher, "layer1", num_classes=0)


def test_constructed_teacher_trains_only_its_head(teacher):
    ct = constructed_teacher(teacher, "layer3")
    assert ct.name == "ct_resnet18@layer3" and ct.split_points == ["stem", "layer1", "layer2", "layer3"]
    amg, _ = teacher.split("layer3")
    assert [p.requires_grad for p in ct.stages.parameters()] == [False] * len(list(amg.parameters()))
    for a, b in zip(amg.parameters(), ct.stages.parameters()):
        assert torch.equal(a, b) and a is not b
    assert all(p.requires_grad for p in ct.head.parameters())

    teacher_before = copy.deepcopy(teacher.state_dict())
    ct_amg_before = copy.deepcopy(ct.stages.state_dict())
    head_before = copy.deepcopy(ct.head.state_dict())
    optimizer = torch.optim.SGD([p for p in ct.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    ct.train()
    assert not any(m.training for stage in ct.stages.values() for m in stage.modules()) and ct.head.training
    x, target = torch.randn(2, 3, *SIZE) * 3 + 1, torch.randint(0, teacher.num_classes, (2, *SIZE))
    for _ in range(2):
        optimizer.zero_grad()
        nn.functional.cross_entropy(ct(x), target).backward()
        optimizer.step()
    # nothing of the teacher changed, nor CT's AMG (BatchNorm running stats included)
    assert all(torch.equal(teacher_before[k], v) for k, v in teacher.state_dict().items())
    assert all(torch.equal(ct_amg_before[k], v) for k, v in ct.stages.state_dict().items())
    assert not all(torch.equal(head_before[k], v) for k, v in ct.head.state_dict().items())
    with torch.no_grad():
        assert torch.equal(ct.features(x, "layer3"), amg(x))


def test_constructed_teacher_resnet50_size():
    # the paper's CT (DeepLabV3-ResNet50 split after layer4) has about 23.6 M parameters
    teacher = resnet_teacher(resnet50, num_classes=2)
    ct = constructed_teacher(teacher, "layer4")
    total = count_parameters(ct)
    assert abs(total - 23.6e6) < 0.2e6, total
    assert count_parameters(ct, trainable_only=True) == count_parameters(ct.head)
    student = sd_student(teacher, "layer4")
    assert count_parameters(student) < total / 10


def test_adapter_maps_channels_and_size():
    adapter = make_adapter((2, 16, 9, 13), (2, 32, 17, 25))
    assert isinstance(adapter, FeatureAdapter)
    x = torch.randn(2, 16, 9, 13, requires_grad=True)
    out = adapter(x, (17, 25))
    assert out.shape == (2, 32, 17, 25)
    out.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in adapter.parameters())
    assert adapter(x).shape == (2, 32, 9, 13)  # without a size, channels only


def test_adapter_is_identity_when_shapes_match():
    assert not needs_adapter((2, 16, 9, 13), torch.Size([4, 16, 9, 13]))
    assert needs_adapter((16, 9, 13), (16, 9, 14))
    assert needs_adapter((2, 16, 9, 13), (2, 17, 9, 13))
    adapter = make_adapter((2, 16, 9, 13), (2, 16, 9, 13))
    assert isinstance(adapter, nn.Identity) and not list(adapter.parameters())
    x = torch.randn(2, 16, 9, 13)
    assert adapter(x) is x and adapter(x, (9, 13)) is x


def test_group_conv_copy_keeps_conv_subclasses_and_their_padding():
    from kd.models.efficientnet_lite import efficientnet_lite0_stages

    stages = torch.nn.Sequential(efficientnet_lite0_stages(pretrained=False))
    grouped = group_conv_copy(stages)
    originals = [m for m in stages.modules() if isinstance(m, torch.nn.Conv2d)]
    copies = [m for m in grouped.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [type(m) for m in originals] == [type(m) for m in copies]
    x = torch.zeros(1, 3, 65, 97)
    assert grouped.eval()(x).shape == stages.eval()(x).shape
