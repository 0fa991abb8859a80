"""Published networks load their authors' files as released and compute what the authors' code computes.

Every file here is made from a key list by kd.models.seeded (the same weights on every machine),
saved the way its repository saves it, and loaded through what a study calls. torchvision is a
dependency, so its networks are run here; the IFVD, SKD, segmentation-toolbox, CIRKD and CSAIL
networks' outputs were recorded once from their own code (tools/reference_outputs) into
tests/fixtures/reference_nets. Outputs must agree to 1e-4 relative (the norm of the difference
over the norm of the reference), in eval mode, from the same 0-1 RGB image through each network's
own preprocessing.
"""

import argparse
import importlib.util
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torchvision.models.segmentation import deeplabv3_resnet50 as tv_deeplabv3_resnet50
from torchvision.models.segmentation import deeplabv3_resnet101 as tv_deeplabv3_resnet101

from kd.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from kd.errors import UserInputError
from kd.models import build_student, build_teacher, load_checkpoint
from kd.models.checkpoints import load_backbone_weights
from kd.models.inplace_abn import InPlaceABN
from kd.models.seeded import key_spec, projected, seeded_image, seeded_state_dict
from study import config as study_config
from study.contract import TrialChoice
from study.prepare import prepare_teacher, recipe_for, student_for, teacher_shell
from study.run import config_from_args, parse_args

pytestmark = pytest.mark.usefixtures("one_thread")

FIXTURES = Path(__file__).parent / "fixtures" / "reference_nets"
SIZE = (64, 96)
TOLERANCE = 1e-4


def relative(ours: torch.Tensor, reference) -> float:
    reference = torch.as_tensor(np.asarray(reference), dtype=torch.float32)
    assert tuple(ours.shape) == tuple(reference.shape)
    return float((ours.float() - reference).norm() / reference.norm())


def outputs(model, image: torch.Tensor, points) -> dict[str, torch.Tensor]:
    """What the fixtures record, from our network: logits at the head's resolution and upsampled
    as forward() does, the auxiliary logits, and the split points' features."""
    model.eval()
    x = model.normalize(image)
    with torch.no_grad():
        parts = model.forward_parts(x, want=("logits", "aux_logits"))
        found = {"logits": parts["logits"], "aux_logits": parts["aux_logits"], "logits_up": model(x)}
        for point in points:
            found[point] = model.features(x, point)
    return found


def study_teacher(name: str, path: Path, num_classes: int):
    """The teacher a study with `--teacher name --teacher-checkpoint path` trains its students with."""
    config = study_config.resolve("smoke", overrides={"teacher": name, "teacher_checkpoint": str(path)})
    state = prepare_teacher(config, num_classes, say=lambda message: None)
    teacher = build_teacher(name, num_classes, **({"pretrained": False} if "lite0" in name else {}))
    teacher.load_state_dict(state)
    return teacher


# ---- torchvision: run here ---------------------------------------------------------------------


def references_checkpoint(state: dict, path: Path) -> Path:
    """A checkpoint as torchvision's references/segmentation/train.py writes it (model_29.pth)."""
    args = argparse.Namespace(model="deeplabv3_resnet101", lr=0.02, epochs=30, aux_loss=True)
    parameters = [torch.zeros(1, requires_grad=True)]
    optimizer = torch.optim.SGD(parameters, lr=0.02, momentum=0.9)
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=10, power=0.9)
    torch.save(
        {
            "model": state,
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": scheduler.state_dict(),
            "epoch": 29,
            "args": args,
        },
        path,
    )
    return path


@pytest.mark.parametrize(
    "name, build, layout",
    [
        ("deeplabv3_resnet50", tv_deeplabv3_resnet50, "hub"),  # deeplabv3_resnet50_coco-cd0a2569.pth
        ("deeplabv3_resnet101", tv_deeplabv3_resnet101, "references"),  # model_29.pth of train.py
    ],
)
def test_torchvision_deeplabv3_files_load_through_the_study_and_compute_what_torchvision_computes(
    tmp_path, name, build, layout
):
    reference = build(weights=None, weights_backbone=None, num_classes=21, aux_loss=True).eval()
    reference.load_state_dict(seeded_state_dict(key_spec(reference.state_dict())))
    path = tmp_path / "teacher.pth"
    if layout == "hub":
        torch.save(reference.state_dict(), path)
    else:
        references_checkpoint(reference.state_dict(), path)

    image = seeded_image(SIZE)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    taps = {}
    body = reference.backbone
    for point, module in (("stem", body.maxpool), ("layer1", body.layer1), ("layer2", body.layer2)):
        module.register_forward_hook(lambda m, i, o, point=point: taps.__setitem__(point, o))
    reference.classifier.register_forward_hook(lambda m, i, o: taps.__setitem__("logits", o))
    with torch.no_grad():
        expected = reference((image - mean) / std)
        trunk = body((image - mean) / std)
    expected = {
        **taps,
        "layer3": trunk["aux"],
        "layer4": trunk["out"],
        "logits_up": expected["out"],
        "aux_up": expected["aux"],
    }

    teacher = study_teacher(name, path, 21)
    ours = outputs(teacher, image, ("stem", "layer1", "layer2", "layer3", "layer4"))
    ours["aux_up"] = F.interpolate(ours.pop("aux_logits"), SIZE, mode="bilinear", align_corners=False)
    for key, value in expected.items():
        assert relative(ours[key], value) < TOLERANCE, key


def test_a_ddp_checkpoint_of_our_own_teacher_loads_without_its_module_prefix(tmp_path):
    torch.manual_seed(0)
    teacher = build_teacher("cirkd_pspnet_resnet18", 2)
    path = tmp_path / "ddp.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in teacher.state_dict().items()}}, path)
    loaded = build_teacher("cirkd_pspnet_resnet18", 2)
    load_checkpoint(loaded, path)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in teacher.state_dict().items())


def test_a_file_of_another_network_is_refused_naming_the_layouts_and_the_closest_reading(tmp_path):
    path = tmp_path / "psp101.pth"
    torch.save(build_teacher("ifvd_pspnet_resnet18", 19).state_dict(), path)
    with pytest.raises(UserInputError) as error:
        load_checkpoint(build_teacher("ifvd_pspnet_resnet18", 11), path)
    message = str(error.value)
    assert "ifvd (IFVD's and SKD's Res_pspnet" in message and "segmentation-toolbox (" in message
    # the classifier differs in its classes, named as the file names it
    assert (
        "Read in the closest, segkd: 4 shape mismatches" in message
        and "head.weight (19, 128, 1, 1)" in message
    )

    torch.save(build_teacher("cirkd_pspnet_resnet18", 19).state_dict(), path)
    with pytest.raises(UserInputError, match=r"does not fit ifvd_pspnet_resnet18 in any layout it loads"):
        load_checkpoint(build_teacher("ifvd_pspnet_resnet18", 19), path)


def test_a_file_holding_other_python_objects_is_refused_without_unpickling_them(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"model": {}, "settings": torch.nn.Identity()}, path)
    with pytest.raises(UserInputError) as error:
        load_checkpoint(build_teacher("cirkd_pspnet_resnet18", 2), path)
    message = str(error.value)
    assert "it holds a torch.nn.modules.linear.Identity object" in message
    assert "weights_only=False" not in message


def test_torchvision_mobilenet_v3_weights_are_the_students_backbone_stage_by_stage(tmp_path):
    torch.manual_seed(0)
    classifier = torchvision.models.mobilenet_v3_large(weights=None).eval()
    path = tmp_path / "mobilenet_v3_large.pth"
    torch.save(classifier.state_dict(), path)
    student = build_student("pspnet_mobilenet_v3", 11).eval()
    load_backbone_weights(student, path)
    x = seeded_image(SIZE)
    with torch.no_grad():
        expected, ends = x, []
        for block in classifier.features:
            expected = block(expected)
            ends.append(expected)
        ours = x
        seen = 0
        for name, stage in student.stages.items():
            if name == "psp":
                break
            ours = stage(ours)
            seen += len(stage)
            assert torch.equal(ours, ends[seen - 1]), name
    assert seen == len(classifier.features)


def test_the_ifvd_stem_keeps_its_ceil_mode_max_pool_and_cirkds_does_not():
    x = torch.zeros(1, 3, *SIZE)
    with torch.no_grad():
        ifvd = build_student("ifvd_pspnet_resnet18", 2).eval().features(x, "stem")
        cirkd = build_student("cirkd_pspnet_resnet18", 2).eval().features(x, "stem")
    assert ifvd.shape[-2:] == (17, 25) and cirkd.shape[-2:] == (16, 24)


# ---- recorded from the reference code -----------------------------------------------------------

CASES = sorted(path.stem for path in FIXTURES.glob("*.json"))


def _compare_tool():
    """tools/reference_outputs/compare.py (no installed package): the same comparison as a command,
    and the one table of which network computes each recorded reference network."""
    path = Path(__file__).resolve().parents[1] / "tools" / "reference_outputs" / "compare.py"
    spec = importlib.util.spec_from_file_location("compare", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


compare = _compare_tool()
NETWORK = compare.NETWORK


def fixture(case: str) -> tuple[dict, dict]:
    meta = json.loads((FIXTURES / f"{case}.json").read_text())
    with np.load(FIXTURES / f"{case}.npz") as arrays:
        return meta, {name: arrays[name] for name in arrays.files}


def test_every_recorded_reference_network_has_one_of_ours():
    assert set(CASES) == set(NETWORK)


def save_in_the_references_layout(meta: dict, path: Path) -> Path:
    """Every recorded repository saves a bare model's plain state_dict (the fixture says so)."""
    assert meta["checkpoint"]["format"].startswith(("plain state_dict", "CSAIL resnet18-imagenet.pth: plain"))
    torch.save(seeded_state_dict(meta["keys"]), path)
    return path


def assert_outputs_match(ours: dict, expected: dict, meta: dict) -> None:
    for name, reference in expected.items():
        value = ours[name]
        if name == "logits_up":
            assert meta["outputs"][name]["sampled"] == "[..., 0::7, 0::5]"
            value = value[..., 0::7, 0::5]
        elif meta["outputs"][name].get("projected"):
            value = projected(value)
        assert relative(value, reference) < TOLERANCE, f"{meta['case']}: {name}"


NETWORK_CASES = [case for case in CASES if not case.startswith("csail_")]


@pytest.mark.parametrize("case", NETWORK_CASES)
def test_a_published_file_loads_through_the_study_and_computes_what_its_code_computes(tmp_path, case):
    meta, expected = fixture(case)
    path = save_in_the_references_layout(meta, tmp_path / f"{case}.pth")
    teacher = study_teacher(NETWORK[case], path, 19)
    points = [name for name in expected if name in teacher.split_points]
    assert_outputs_match(outputs(teacher, seeded_image(tuple(meta["input"]["size"])), points), expected, meta)


@pytest.mark.parametrize("case", [case for case in CASES if case.startswith("csail_")])
def test_the_deep_stem_imagenet_file_starts_the_students_as_their_code_starts_them(tmp_path, case):
    meta, expected = fixture(case)
    (tmp_path / "weights").mkdir()
    path = save_in_the_references_layout(meta, tmp_path / "weights" / "resnet18-imagenet.pth")
    network = NETWORK[case]
    config = study_config.resolve(
        "smoke",
        overrides={
            "methods": ["ifvd"],
            "students": {"ifvd": network},
            "student_weights": {"ifvd": str(path)},
        },
    )
    study_config.validate(config)
    student = student_for(
        config, TrialChoice("ifvd", {}), recipe_for(config, "ifvd"), None, 19, load_weights=True
    )
    assert student.name == network
    ours = outputs(student, seeded_image(tuple(meta["input"]["size"])), list(expected))
    assert_outputs_match({k: ours[k] for k in expected}, expected, meta)


# ---- the documentation's commands ----------------------------------------------------------------


def documented_commands() -> list[str]:
    """The `python -m study.run` commands of the "Bring your own teacher" guide, before its
    "Teachers from another label set"."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "guide" / "teachers.md").read_text()
    section = text.split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [" ".join(block.replace("\\\n", " ").split()) for block in blocks]


def write_cityscapes(root: Path, train: int = 8, val: int = 2) -> Path:
    labels = np.full((4, 8), 7, np.uint8)  # road
    for split, count in (("train", train), ("val", val)):
        for i in range(count):
            stem = f"aachen_{i:06d}_000019"
            image = root / "leftImg8bit" / split / "aachen" / f"{stem}_leftImg8bit.png"
            mask = root / "gtFine" / split / "aachen" / f"{stem}_gtFine_labelIds.png"
            for path, array in ((image, np.zeros((4, 8, 3), np.uint8)), (mask, labels)):
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(path)
    return root


def test_the_documented_cityscapes_commands_pass_the_studys_validation(tmp_path, monkeypatch):
    commands = [c for c in documented_commands() if "cityscapes:/data/cityscapes" in c]
    assert len(commands) == 2
    write_cityscapes(tmp_path / "cityscapes")
    for case, name in (
        ("ifvd_pspnet_resnet101", "ckpt/teacher_city.pth"),
        ("cirkd_deeplabv3_resnet101", None),
    ):
        meta, _ = fixture(case)
        path = tmp_path / (name or "deeplabv3_resnet101_citys_best_model.pth")
        path.parent.mkdir(exist_ok=True)
        save_in_the_references_layout(meta, path)
    student = fixture("csail_resnet18_into_ifvd_student")[0]
    for name in ("ckpt/resnet18-imagenet.pth", "resnet18-imagenet.pth"):
        save_in_the_references_layout(student, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    for command in commands:
        args = shlex.split(command.replace("/data/cityscapes", str(tmp_path / "cityscapes")))
        assert args[:3] == ["python", "-m", "study.run"]
        small = ["--target-images", "2", "--val-images", "1", "--test-images", "2"]
        config = config_from_args(parse_args(args[3:] + small))
        study_config.validate(config)  # every problem, the checkpoint's classes included, named at once
        assert config.teacher_checkpoint and all(Path(p).is_file() for p in config.student_weights.values())


def test_the_sd_papers_coco_teacher_serves_a_road_study_without_a_map(tmp_path, camvid_root):
    reference = tv_deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
    path = tmp_path / "deeplabv3_resnet50_coco-cd0a2569.pth"
    torch.save(seeded_state_dict(key_spec(reference.state_dict())), path)
    values = {
        "data": f"camvid:{camvid_root}",
        "label_set": "binary",
        "methods": ["baseline", "sd", "esd"],
        "trials": 6,
        "teacher": "deeplabv3_resnet50",
        "teacher_checkpoint": str(path),
        "space": {m: {"split_point": "layer4"} for m in ("baseline", "sd", "esd")},
    }
    config = study_config.resolve("smoke", overrides=values)
    study_config.validate(config)
    state = prepare_teacher(config, 2, say=lambda message: None)
    teacher = teacher_shell(config, 2, state)
    assert teacher.num_classes == 21 and torch.equal(state["head.4.weight"], teacher.head[4].weight)
    refused = study_config.resolve("smoke", overrides=values | {"methods": ["sd", "ifvd_kd"]})
    with pytest.raises(UserInputError, match=r"predicts 21 classes, the study's data has 2: ifvd_kd read"):
        study_config.validate(refused)


def test_inplace_abn_trains_as_batchnorm_with_its_own_scale_and_saves_no_counter():
    torch.manual_seed(0)
    abn, bn = InPlaceABN(4, activation="identity"), torch.nn.BatchNorm2d(4)
    with torch.no_grad():
        abn.weight.copy_(torch.tensor([-2.0, -0.5, 0.5, 2.0]))
        bn.weight.copy_(abn.weight.abs() + abn.eps)
    x = torch.randn(3, 4, 5, 5)
    assert torch.allclose(abn(x), bn(x), atol=1e-6)  # training: batch statistics, the same update
    assert torch.allclose(abn.running_var, bn.running_var) and "num_batches_tracked" not in abn.state_dict()
    abn.reset_running_stats()
    abn.momentum = None  # precise BN: a cumulative average
    for batch in (x, 2 * x):
        abn(batch)
    assert torch.allclose(abn.running_mean, 1.5 * x.mean((0, 2, 3)), atol=1e-6)
    leaky = InPlaceABN(4).eval()
    assert torch.allclose(leaky(-torch.ones(1, 4, 1, 1)), torch.full((1, 4, 1, 1), -0.01), atol=1e-4)


@pytest.mark.parametrize("teacher", ["ifvd_pspnet_resnet18", "cirkd_deeplabv3_resnet18"])
def test_sd_and_ct_students_of_a_published_teacher_see_its_inputs(teacher):
    teacher = build_teacher(teacher, 2).eval()
    x = seeded_image(SIZE)
    for name in ("sd", "ct"):
        student = build_student(name, 2, teacher=teacher, split_point="layer2").eval()
        assert student.input_channels == "bgr" and student.input_mean == teacher.input_mean
        with torch.no_grad():
            assert (
                student.features(student.normalize(x), "layer2").shape
                == teacher.features(teacher.normalize(x), "layer2").shape
            )


def test_the_comparison_tool_prints_each_cases_difference_and_what_a_convention_is_worth(capsys):
    for without, low, high in ((None, 0, TOLERANCE), ("bgr", 0.1, 10)):
        compare.main(["--case", "cirkd_pspnet_resnet18"] + (["--without", without] if without else []))
        largest = float(capsys.readouterr().out.split("largest ")[1].split()[0])
        assert low <= largest < high, without
