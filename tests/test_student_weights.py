"""Students start from a local weights file (`student_weights`): torchvision's classification
state dicts load into the student's backbone stages, strictly, and a file that does not fit says
which keys differ."""

import pytest
import torch
import torchvision

from kd.errors import UserInputError
from kd.models import build_student
from kd.models.checkpoints import backbone_keys, load_backbone_weights
from study import config as study_config
from study.contract import TrialChoice
from study.prepare import check_student_weights, recipe_for, student_for


def saved(tmp_path, model, name):
    path = tmp_path / name
    torch.save(model.state_dict(), path)
    return path


def test_a_torchvision_resnet18_file_becomes_the_students_backbone(tmp_path, monkeypatch):
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    (tmp_path / "weights").mkdir()
    torch.save(state, tmp_path / "weights" / "r18.pth")
    monkeypatch.chdir(tmp_path)  # a relative path, as a study file would give it
    config = study_config.resolve(
        "smoke", overrides={"methods": ["ifvd"], "student_weights": {"ifvd": "weights/r18.pth"}}
    )
    assert config.student_weights == {"ifvd": str(tmp_path / "weights" / "r18.pth")}
    study_config.validate(config)
    recipe = recipe_for(config, "ifvd")
    student = student_for(config, TrialChoice("ifvd", {}), recipe, None, 2, load_weights=True)
    loaded = student.stages.state_dict()
    renamed = backbone_keys(state, list(student.stages))
    assert "stem.conv1.weight" in renamed and not any(k.startswith("fc.") for k in renamed)
    assert all(torch.equal(loaded[key], value) for key, value in renamed.items())
    assert len(renamed) == len(state) - 2  # everything but fc.weight and fc.bias
    untouched = student_for(config, TrialChoice("ifvd", {}), recipe, None, 2)
    assert not torch.equal(untouched.stages.stem.conv1.weight, state["conv1.weight"])


def test_an_efficientnet_file_loads_by_its_features_children(tmp_path):
    state = torchvision.models.efficientnet_b0(weights=None).state_dict()
    path = tmp_path / "b0.pth"
    torch.save(state, path)
    student = build_student("pspnet_efficientnet_b0", 2)
    load_backbone_weights(student, path)
    assert torch.equal(student.stages.stem[0].weight, state["features.0.0.weight"])
    assert torch.equal(student.stages.top[0].weight, state["features.8.0.weight"])


@pytest.mark.parametrize(
    "model, expected",
    [
        (  # another depth: blocks the student lacks (their BatchNorm counters are no weights, not counted)
            lambda: torchvision.models.resnet34(weights=None),
            r"80 unexpected keys \(layer1\.2\.conv1\.weight, .*\(75 more\)\)",
        ),
        (  # bottleneck blocks: other shapes
            lambda: torchvision.models.resnet50(weights=None),
            r"23 shape mismatches, file vs model "
            r"\(layer1\.0\.conv1\.weight \(64, 64, 1, 1\) vs \(64, 64, 3, 3\)",
        ),
    ],
)
def test_a_file_of_another_architecture_names_the_keys_that_differ(tmp_path, model, expected):
    path = saved(tmp_path, model(), "other.pth")
    config = study_config.resolve(
        "smoke", overrides={"methods": ["ifvd"], "student_weights": {"ifvd": str(path)}}
    )
    with pytest.raises(
        UserInputError, match=r"\[student_weights\] ifvd: weights file .*" + expected
    ) as caught:
        check_student_weights(config, None, 2)
    assert "torchvision.models.resnet18(weights='IMAGENET1K_V1').state_dict()" in str(caught.value)


def test_a_file_missing_a_block_names_the_missing_keys(tmp_path):
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "short.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("layer4.1.")}, path)
    # 10 weights and statistics; the block's two BatchNorm counters are no weights
    with pytest.raises(UserInputError, match=r"10 missing keys \(layer4\.1\.conv1\.weight, "):
        load_backbone_weights(build_student("pspnet_resnet18", 2), path)


def test_a_file_that_is_not_a_state_dict_says_what_to_save(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(UserInputError, match=r"not a state dict of tensors; save it with torch.save"):
        load_backbone_weights(build_student("pspnet_resnet18", 2), path)


def test_a_missing_file_or_unknown_method_is_reported_before_anything_runs(tmp_path):
    config = study_config.resolve(
        "smoke", overrides={"student_weights": {"ifvd": str(tmp_path / "absent.pth"), "ifdv": str(tmp_path)}}
    )
    with pytest.raises(UserInputError) as caught:
        study_config.validate(config)
    text = str(caught.value)
    assert f"[student_weights] ifvd = '{tmp_path / 'absent.pth'}': no such file" in text
    assert "[student_weights] names unknown method 'ifdv'" in text
    bad = study_config.resolve("smoke", overrides={"student_weights": "r18.pth"})
    with pytest.raises(UserInputError, match=r"student_weights must be a table of method = weights file"):
        study_config.validate(bad)
