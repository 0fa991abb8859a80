import pytest
import torch
import torchvision.models as tvm

from kd.errors import UserInputError
from kd.models.backbones import backbone_stages, list_backbones, resnet_stages, stage_channels
from kd.models.pspnet import PSP_BACKBONES, PSPModule, pspnet, pspnet_resnet101


def n_params(modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


@pytest.fixture(autouse=True)
def seeded_single_thread():
    # One thread: these tiny CPU forwards are 10x slower when torch's threads compete
    # with other processes for a few cores, and the file has to stay fast.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", list_backbones())
def test_every_backbone_builds_and_runs(name):
    stages = backbone_stages(name)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        for stage in stages.values():
            x = stage.eval()(x)
    assert x.ndim == 4 and x.shape[1] == list(stage_channels(stages).values())[-1]


@pytest.mark.parametrize("backbone", PSP_BACKBONES)
def test_pspnet_output_matches_odd_input_size_in_train_mode_with_batch_1(backbone):
    model = pspnet(backbone, num_classes=5).train()
    assert model.name.startswith(f"pspnet_{backbone}")
    logits = model(torch.rand(1, 3, 65, 97))
    assert logits.shape == (1, 5, 65, 97)
    logits.mean().backward()


@pytest.mark.parametrize("backbone", ["resnet18", "resnet18_half", "efficientnet_b0", "mobilenet_v3_large"])
def test_split_at_every_point_reproduces_the_model(backbone):
    model = pspnet(backbone, num_classes=4).eval()
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        expected = model(x)
        for point in model.split_points:
            amg, tail = model.split(point)
            assert torch.allclose(tail(amg(x), x.shape[-2:]), expected, atol=1e-5), point


def test_half_width_resnet18_has_a_quarter_of_the_parameters():
    full, half = (
        n_params(resnet_stages("resnet18").values()),
        n_params(resnet_stages("resnet18", width=0.5).values()),
    )
    assert full == n_params([tvm.resnet18(weights=None)]) - n_params([tvm.resnet18(weights=None).fc])
    assert 0.24 < half / full < 0.26
    assert list(stage_channels(resnet_stages("resnet18", width=0.5)).values()) == [32, 32, 64, 128, 256]


@pytest.mark.parametrize("name", ["resnet50", "resnet18"])
def test_dilated_resnet_has_output_stride_8(name):
    stages = backbone_stages(name, dilated=True)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        for stage in stages.values():
            x = stage.eval()(x)
    assert x.shape[-2:] == (8, 12)


def test_pspnet_resnets_are_dilated_by_default_as_the_ifvd_references():
    assert pspnet("resnet18", 3).features(torch.rand(1, 3, 64, 64), "layer4").shape[-1] == 8
    assert pspnet("resnet18", 3, dilated=False).features(torch.rand(1, 3, 64, 64), "layer4").shape[-1] == 2
    teacher = pspnet_resnet101(19)
    assert teacher.name == "pspnet_resnet101"
    assert teacher.split_points == ["stem", "layer1", "layer2", "layer3", "layer4", "psp"]
    with torch.no_grad():
        assert teacher.eval().features(torch.rand(1, 3, 64, 64), "layer4").shape[-2:] == (8, 8)


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(UserInputError, match="resnet18.*mobilenet_v3_small"):
        backbone_stages("resnet17")
    with pytest.raises(UserInputError, match="resnet18_half"):
        pspnet("vgg12", 19)
    with pytest.raises(UserInputError, match="dilated"):
        pspnet("mobilenet_v3_small", 19, dilated=True)
    with pytest.raises(UserInputError, match="takes options none"):
        backbone_stages("efficientnet_b0", width=0.5)


def test_pspnet_on_a_generic_features_backbone():
    model = pspnet("mobilenet_v2", 3).eval()
    assert model.split_points[0] == "features0"
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 96)).shape == (1, 3, 64, 96)


def test_psp_module_on_2x2_feature_map_in_train_mode_with_batch_1():
    psp = PSPModule(16).train()
    assert psp(torch.rand(1, 16, 2, 2)).shape == (1, 4, 2, 2)
    assert psp.eval()(torch.rand(2, 16, 2, 2)).shape == (2, 4, 2, 2)
