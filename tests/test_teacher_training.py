"""Teacher training is stored under a content hash and reused instead of repeated."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

from kd.data import SyntheticRoadScenes
from kd.errors import UserInputError
from kd.models import Segmenter
from kd.models.checkpoints import load_checkpoint
from kd.models.teacher_training import TeacherTraining, fit_teacher

SIZE = (32, 64)


def tiny_teacher(num_classes=7, seed=0):
    torch.manual_seed(seed)

    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

    stages = OrderedDict(stem=block(3, 8), stage1=block(8, 16))
    return Segmenter(stages, nn.Conv2d(16, num_classes, 1), num_classes, name="tiny")


def target(**options):
    return SyntheticRoadScenes("target", size=8, image_size=SIZE, **options)


SETTINGS = TeacherTraining(epochs=6, batch_size=4, lr=0.05)


def test_training_is_stored_and_reused(tmp_path):
    model = tiny_teacher()
    first = fit_teacher(model, target(), SETTINGS, cache_dir=tmp_path, progress=None)
    assert not first.reused and first.path.is_file() and first.path.parent == tmp_path
    trained = {k: v.clone() for k, v in model.state_dict().items()}

    again = tiny_teacher()  # same initial weights
    second = fit_teacher(again, target(), SETTINGS, cache_dir=tmp_path, progress=None)
    assert second.reused and second.path == first.path
    assert all(torch.equal(trained[k], v) for k, v in again.state_dict().items())


@pytest.mark.parametrize(
    "change",
    [
        dict(settings=TeacherTraining(epochs=7, batch_size=4, lr=0.05)),
        dict(dataset=target(seed=1)),
        dict(dataset=target(label_set="binary"), model=tiny_teacher(num_classes=2)),
        dict(model=tiny_teacher(seed=1)),
    ],
)
def test_any_changed_input_gives_another_checkpoint(tmp_path, change):
    base = fit_teacher(tiny_teacher(), target(), SETTINGS, cache_dir=tmp_path, progress=None)
    other = fit_teacher(
        change.get("model", tiny_teacher()),
        change.get("dataset", target()),
        change.get("settings", SETTINGS),
        cache_dir=tmp_path,
        progress=None,
    )
    assert not other.reused and other.digest != base.digest


def test_head_training_learns_and_leaves_the_backbone_alone(tmp_path):
    model = tiny_teacher()
    backbone_before = {k: v.clone() for k, v in model.stages.state_dict().items()}
    head_before = model.head.weight.clone()
    messages = []
    result = fit_teacher(model, target(), SETTINGS, cache_dir=tmp_path, progress=messages.append)
    assert all(torch.equal(backbone_before[k], v) for k, v in model.stages.state_dict().items())
    assert not torch.equal(head_before, model.head.weight)
    first_loss = float(messages[0].split("loss ")[1].split()[0])
    assert result.final_loss < first_loss
    assert len(messages) == 7 and "epoch 6/6" in messages[-2] and "saved" in messages[-1]


def test_fine_tuning_trains_the_backbone_too(tmp_path):
    model = tiny_teacher()
    before = model.stages.stem[0].weight.clone()
    fit_teacher(
        model,
        target(),
        TeacherTraining(trainable="all", epochs=1, batch_size=4),
        cache_dir=tmp_path,
        progress=None,
    )
    assert not torch.equal(before, model.stages.stem[0].weight)


def test_bad_requests_are_refused(tmp_path):
    with pytest.raises(UserInputError, match="unlabelled"):
        fit_teacher(
            tiny_teacher(), SyntheticRoadScenes("proximity", size=2, image_size=SIZE), cache_dir=tmp_path
        )
    with pytest.raises(UserInputError, match="predicts 2 classes but synthetic target has 7"):
        fit_teacher(tiny_teacher(num_classes=2), target(), cache_dir=tmp_path)
    refusal = "trainable must be one of head, all, got 'backbone'.*epochs must be at least 1"
    with pytest.raises(UserInputError, match=refusal):
        TeacherTraining(trainable="backbone", epochs=0)


def test_damaged_or_foreign_checkpoints_name_the_file(tmp_path):
    result = fit_teacher(tiny_teacher(), target(), SETTINGS, cache_dir=tmp_path, progress=None)
    state = torch.load(result.path, weights_only=True)
    state["state_dict"]["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "foreign.pt")
    with pytest.raises(
        UserInputError, match=r"foreign.pt does not fit tiny: 1 unexpected keys \(extra.weight\)"
    ):
        load_checkpoint(tiny_teacher(), tmp_path / "foreign.pt")
    with pytest.raises(UserInputError, match="does not exist"):
        load_checkpoint(tiny_teacher(), tmp_path / "none.pt")


def test_a_damaged_stored_teacher_is_trained_again(tmp_path):
    first = fit_teacher(tiny_teacher(), target(), SETTINGS, cache_dir=tmp_path, progress=None)
    first.path.write_bytes(first.path.read_bytes()[:100])
    messages = []
    again = fit_teacher(tiny_teacher(), target(), SETTINGS, cache_dir=tmp_path, progress=messages.append)
    assert not again.reused and again.path == first.path
    assert "unusable, training again" in messages[0] and str(first.path) in messages[0]
    assert fit_teacher(tiny_teacher(), target(), SETTINGS, cache_dir=tmp_path, progress=None).reused
