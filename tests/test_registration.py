"""A new loss term, recipe or model is one module that registers it where it is defined,
as a study's `imports` plugin does; a name taken by another thing is refused."""

import importlib
import sys

import pytest
import torch
from helpers import train_alone

from kd.errors import UserInputError
from kd.losses import TERMS, CrossEntropy, LossTerm, build_term, register_term
from kd.methods import RECIPES, Recipe, Stage, build_recipe, describe, register_recipe
from kd.models import STUDENTS, TEACHERS, build_student, model_names, register_student, register_teacher
from kd.models.pspnet import pspnet

PLUGIN = '''
from kd.losses import LossTerm, register_term
from kd.methods import Recipe, Stage, register_recipe


@register_term("logit_size")
class LogitSize(LossTerm):
    """Mean |z|^power of the student's logits: needs no teacher."""

    def __init__(self, power: float = 2.0):
        super().__init__()
        self.power = power

    def forward(self, student, teacher, batch):
        return student["logits"].abs().pow(self.power).mean()


@register_term("logit_gap")
class LogitGap(LossTerm):
    teacher_needs = ("logits",)

    def forward(self, student, teacher, batch):
        return (student["logits"] - teacher["logits"]).square().mean()


@register_recipe("small_logits")
def small_logits(epochs: int = 3) -> Recipe:
    return Recipe("small_logits", (Stage("train", {"ce": 1.0, "logit_size": 0.1}, epochs=epochs),),
                  student="pspnet_resnet18_half", description="cross-entropy + small logits")
'''
PLUGIN_NAMES = {"term": ("logit_size", "logit_gap"), "recipe": ("small_logits",)}


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / "registration_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield importlib.import_module("registration_plugin")
    # Other test modules list every recipe and term: leave the tables as they were.
    for name in PLUGIN_NAMES["term"]:
        TERMS.pop(name, None)
    for name in PLUGIN_NAMES["recipe"]:
        RECIPES.pop(name, None)
    sys.modules.pop("registration_plugin", None)


def test_a_plugin_term_is_built_by_name(plugin):
    term = build_term("logit_size", power=1.0)
    assert isinstance(term, plugin.LogitSize) and term.power == 1.0
    value = term({"logits": torch.full((1, 2, 3, 3), -2.0)}, {}, {})
    assert value.item() == pytest.approx(2.0)
    with pytest.raises(UserInputError, match="loss term 'logit_size'.*its options are: power"):
        build_term("logit_size", pwr=1.0)


def test_a_plugin_term_serves_in_stages_and_overrides(plugin):
    recipe = build_recipe("sd", {"frozen.losses.logit_size": 0.5, "logit_size.power": 1.0})
    frozen = recipe.stage("frozen")
    assert frozen.losses == {"ce": 1.0, "logit_size": 0.5} and frozen.loss_options == {
        "logit_size": {"power": 1.0}
    }
    assert build_recipe("small_logits", {"lambda_logit_size": 2.0}).stages[0].losses["logit_size"] == 2.0
    with pytest.raises(UserInputError, match="no field or option 'pwr'.*'logit_size' takes power"):
        build_recipe("small_logits", {"logit_size.pwr": 1.0})
    stage = Stage("train", {"ce": 1.0, "logit_gap": 1.0})
    assert Recipe("gap", (stage,)).validate(TERMS).teacher_terms == {"logit_gap": ("logits",)}


def test_a_plugin_recipe_is_listed_built_and_run(plugin, one_thread):
    assert list(RECIPES)[-1] == "small_logits"  # after the published ones, in registration order
    recipe = build_recipe("small_logits", {"epochs": 1})
    assert "small_logits: cross-entropy + small logits" in describe(recipe)
    assert not recipe.needs_teacher and not recipe.needs_proximity
    result = train_alone(recipe)
    assert result.history[0]["loss_logit_size"] > 0


def test_reloading_a_plugin_replaces_its_own_definitions(plugin):
    reloaded = importlib.reload(plugin)
    assert TERMS["logit_size"] is reloaded.LogitSize and RECIPES["small_logits"] is reloaded.small_logits


def test_registering_the_same_thing_again_changes_nothing():
    before = dict(TERMS), dict(RECIPES)
    assert register_term("ce")(CrossEntropy) is CrossEntropy
    register_recipe("sd")(RECIPES["sd"])
    assert (dict(TERMS), dict(RECIPES)) == before


def test_a_taken_name_is_refused_naming_both():
    class Impostor(LossTerm):
        pass

    def sd() -> Recipe:
        return build_recipe("baseline")

    with pytest.raises(
        UserInputError,
        match=r"loss term 'ce' is registered already \(kd.losses.ce.CrossEntropy\); "
        r".*Impostor cannot take its name",
    ):
        register_term("ce")(Impostor)
    with pytest.raises(UserInputError, match=r"recipe 'sd' is registered already \(kd.methods.recipes.sd\)"):
        register_recipe("sd")(sd)
    with pytest.raises(TypeError, match="decorates a LossTerm subclass"):
        register_term("not_a_term")(sd)
    assert TERMS["ce"] is CrossEntropy and RECIPES["sd"] is not sd and "not_a_term" not in TERMS


def tiny_student(num_classes):
    return pspnet("resnet18_half", num_classes)


def test_a_plugin_model_is_built_by_name_and_names_stay_unique():
    try:
        register_student("tiny_student")(tiny_student)
        assert model_names()["tiny_student"] == "student"
        assert build_student("tiny_student", 3).num_classes == 3
        with pytest.raises(UserInputError, match="student 'pspnet_resnet18' is registered already"):
            register_student("pspnet_resnet18")(tiny_student)
        with pytest.raises(
            UserInputError, match="teacher 'tiny_student': a model of another kind has that name"
        ):
            register_teacher("tiny_student")(tiny_student)
        with pytest.raises(UserInputError, match="student 'sd': a model of another kind has that name"):
            register_student("sd")(tiny_student)
    finally:
        STUDENTS.pop("tiny_student", None)
    assert "tiny_student" not in TEACHERS
