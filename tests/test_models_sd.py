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
from kd.models import Segmenter, build_student, build_teacher, group_conv_copy
from kd.models.adapters import FeatureAdapter, ResizeAdapter, make_adapter, needs_adapter
from kd.models.dilation import output_stride, set_output_stride
from kd.models.group_conv import GroupPolicy, group_policy
from kd.models.sd import SDHead, constructed_teacher, head_widths, sd_capacity, sd_student

SIZE = (65, 97)  # odd, so every stride rounds


def resnet_teacher(builder=resnet18, num_classes: int = 5) -> Segmenter:
    torch.manual_seed(0)
    net = builder(weights=None)
    stages = OrderedDict(
        stem=nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool),
        layer1=net.layer1,
        layer2=net.layer2,
        layer3=net.layer3,
        layer4=net.layer4,
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
    pairs = list(zip(convs(original), convs(grouped), strict=True))
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
    for (_, a), (_, b) in zip(convs(features), convs(grouped), strict=True):
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
    student = sd_student(teacher, point, capacity="text").eval()
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
    for a, b in zip(amg.parameters(), ct.stages.parameters(), strict=True):
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
    student = sd_student(teacher, "layer4", capacity="text")
    assert count_parameters(student) < total / 10


def test_the_table_capacity_is_calibrated_to_the_papers_table_ii():
    # Table II at 512x1024: S has 9.5 M parameters and 41.8 % of CT's FLOPs (169.4 / 405.7 GFLOPs).
    from kd.metrics import count_flops
    from kd.models import build_teacher

    with torch.device("meta"):
        teacher = build_teacher("deeplabv3_resnet50", num_classes=2)
        student, ct = sd_student(teacher, "layer4", capacity="table"), constructed_teacher(teacher, "layer4")
    assert abs(count_parameters(student) / 9.5e6 - 1) < 0.15
    share = count_flops(student, (1, 3, 512, 1024)) / count_flops(ct, (1, 3, 512, 1024))
    assert abs(share / 0.418 - 1) < 0.15
    assert (
        output_stride(nn.Sequential(*student.stages.values())) == 8
    )  # Table IV: the FE at 1/8, as the dilated teacher


def test_capacities_order_the_students_by_size(teacher):
    sizes = [count_parameters(sd_student(teacher, "layer4", capacity=c)) for c in ("text", "table", "dense")]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3
    dense = sd_student(teacher, "layer4", capacity="dense")
    assert all(conv.groups == 1 for _, conv in convs(dense.stages))  # the teacher's own architecture
    narrow = sd_student(teacher, "layer4", capacity="dense", head_width=128)
    assert count_parameters(narrow.head) < count_parameters(dense.head)
    assert narrow.head.block1[0][0].out_channels == 128


def test_group_policies():
    wide = nn.Conv2d(64, 256, 1)
    spatial = nn.Conv2d(64, 64, 3, padding=1)
    assert group_policy("gcd").groups(wide) == 64 and group_policy("gcd").groups(spatial) == 64
    assert group_policy("dense").groups(wide) == 1 and group_policy("dense").groups(spatial) == 1
    assert group_policy("table") == GroupPolicy(2, 4)
    assert group_policy("table").groups(wide) == 2 and group_policy("table").groups(spatial) == 4
    assert group_policy("cap:8").groups(spatial) == 8 and group_policy("cap:2,16").groups(spatial) == 16
    assert group_policy("cap:3").groups(spatial) == 1  # gcd(64, 64, 3)
    depthwise = nn.Conv2d(32, 32, 3, padding=1, groups=32)
    assert group_policy("dense").groups(depthwise) == 32  # already grouped convolutions stay so
    for bad in ("gdc", "cap:0", "cap:x", "cap:1,2,3"):
        with pytest.raises(UserInputError, match="group policy"):
            group_policy(bad)


def test_capacity_problems_are_named_at_once():
    with pytest.raises(UserInputError, match="unknown SD student capacity 'huge'"):
        sd_capacity("huge")
    with pytest.raises(
        UserInputError,
        match="groups: group policy 'x'.*head_groups: group policy 'y'.*"
        "output_stride must be one of 8, 16, 32.*head_width",
    ):
        sd_capacity(groups="x", output_stride=12, head_width=3, head_groups="y")
    assert sd_capacity("text", output_stride="teacher").output_stride is None
    assert sd_capacity().groups == "table"  # the default: the Table II reading


def test_the_head_is_grouped_by_its_own_policy(teacher):
    heads = {g: sd_student(teacher, "layer4", head_groups=g).head for g in ("gcd", "cap:16", "dense")}
    first = {g: head.block1[0][0] for g, head in heads.items()}
    assert first["gcd"].groups == math.gcd(first["gcd"].in_channels, first["gcd"].out_channels) > 16
    assert first["cap:16"].groups == 16 and first["dense"].groups == 1
    assert all(conv.groups == 1 for _, conv in convs(heads["dense"]))
    sizes = [count_parameters(head) for head in heads.values()]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3
    # the FE is the capacity's whatever the head
    same_fe = [sd_student(teacher, "layer4", head_groups=g).stages for g in ("gcd", "dense")]
    assert count_parameters(same_fe[0]) == count_parameters(same_fe[1])
    # CT's head is grouped like the default student's unless told otherwise
    assert constructed_teacher(teacher, "layer4").head.block1[0][0].groups == first["gcd"].groups
    assert all(
        conv.groups == 1
        for _, conv in convs(constructed_teacher(teacher, "layer4", head_groups="dense").head)
    )


def test_head_widths_keep_channels_mixing():
    assert head_widths(384) == (384, 160, 128, 96, 80, 64)
    for width in (128, 256, 512):
        widths = head_widths(width)
        assert widths[0] == width and all(w % 16 == 0 for w in widths)
        assert all(
            math.gcd(a, b) < b for a, b in zip(widths, widths[1:], strict=False)
        )  # no conv is depthwise


def test_output_stride_by_dilation_keeps_the_weights_meaning(teacher):
    # A plain ResNet-18 (output stride 32) made denser: sizes grow, parameters stay, and a stride-16
    # copy computes what the stride-32 one does on the part both see (dilation keeps the receptive field).
    amg, _ = teacher.split("layer4")
    base = copy.deepcopy(amg).eval()
    assert output_stride(base) == 32
    for goal in (16, 8):
        dense = set_output_stride(copy.deepcopy(amg), goal).eval()
        assert output_stride(dense) == goal
        assert count_parameters(dense) == count_parameters(base)
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            assert dense(x).shape[-1] == 64 // goal
            # every `goal/32`-th position of the denser map is the original network's output
            step = 32 // goal
            assert torch.allclose(dense(x)[..., ::step, ::step], base(x), atol=1e-4)
    with pytest.raises(UserInputError, match="can be made denser"):
        set_output_stride(set_output_stride(copy.deepcopy(amg), 8), 16)
    with pytest.raises(UserInputError, match="one of 8, 16, 32"):
        set_output_stride(copy.deepcopy(amg), 4)


def test_output_stride_of_an_efficientnet_student():
    from kd.models import build_teacher

    teacher = build_teacher("deeplabv3_efficientnet_lite0", num_classes=2, pretrained=False)
    student = sd_student(teacher, "top", output_stride=8).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert student.features(x, "top").shape[-2:] == (8, 12)
        assert teacher.eval().features(x, "top").shape[-2:] == (2, 3)
        assert student(x).shape == (1, 2, 64, 96)
    # stochastic depth is off in the student: train mode gives eval mode's features
    assert all(
        rate == 0 for stage in student.stages.values() for rate in getattr(stage, "drop_connect_rates", [])
    )


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


def test_resize_adapter_when_only_the_size_differs():
    adapter = make_adapter((2, 16, 8, 12), (2, 16, 2, 3))
    assert isinstance(adapter, ResizeAdapter) and not list(adapter.parameters())
    x = torch.arange(2 * 16 * 8 * 12, dtype=torch.float32).view(2, 16, 8, 12)
    assert torch.allclose(adapter(x, (2, 3)), nn.functional.avg_pool2d(x, 4))  # the mean of each 4x4 block
    assert adapter(x[..., :2, :3], (8, 12)).shape == (2, 16, 8, 12)  # coarser students are upsampled


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


def test_the_student_batchnorm_uses_pytorchs_momentum_not_the_lite0_ports():
    teacher = build_teacher("deeplabv3_efficientnet_lite0", num_classes=2)
    assert any(
        m.momentum == pytest.approx(0.01) for m in teacher.modules() if isinstance(m, torch.nn.BatchNorm2d)
    )
    student = build_student("sd", 2, teacher=teacher, split_point="top")
    assert {m.momentum for m in student.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.1}
