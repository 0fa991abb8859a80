import dataclasses

import pytest

from kd.errors import UserInputError
from kd.methods import RECIPES, build_recipe, describe
from kd.methods.__main__ import main as methods_main


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_is_valid_data(name):
    recipe = build_recipe(name)
    assert recipe.name == name
    assert recipe.stages and all(stage.active_losses() for stage in recipe.stages)
    assert name in describe(recipe)


def test_sd_has_the_papers_three_stages_and_optimisers():
    recipe = build_recipe("sd")
    assert recipe.stage_names == ["feature", "frozen", "finetune"]
    feature, frozen, finetune = recipe.stages
    assert feature.losses == {"feature": 1.0} and feature.train == ("fe",)
    assert (feature.optimizer.kind, feature.optimizer.lr) == (
        "adam",
        1e-3,
    )  # our reading: see kd.methods.recipes
    assert frozen.losses == {"ce": 1.0} and frozen.train == ("head",)
    assert (frozen.optimizer.lr, frozen.optimizer.momentum) == (1e-2, 0.9)
    assert finetune.train == ("student",) and (finetune.optimizer.lr, finetune.optimizer.momentum) == (
        5e-5,
        0.99,
    )
    assert {s.optimizer.weight_decay for s in recipe.stages[1:]} == {3e-3}
    assert [s.epochs for s in recipe.stages] == [40, 40, 20]


def test_the_papers_stage_one_optimiser_is_a_named_reading():
    paper = build_recipe("sd", {"feature.optimizer": "sd-paper"}).stages[0].optimizer
    assert (paper.kind, paper.lr, paper.momentum, paper.weight_decay) == ("sgd", 3e-3, 0.99, 3e-3)
    later = (
        build_recipe("sd", {"feature.optimizer": "sd-paper", "feature.optimizer.lr": 1e-3})
        .stages[0]
        .optimizer
    )
    assert (later.kind, later.lr) == ("sgd", 1e-3)  # overrides apply in order
    with pytest.raises(UserInputError, match="unknown optimiser 'rmsprop'; named ones: adam, sd-paper"):
        build_recipe("sd", {"feature.optimizer": "rmsprop"})


def test_a_total_budget_is_shared_in_the_recipes_proportions():
    assert [s.epochs for s in build_recipe("sd", {"total_epochs": 100}).stages] == [40, 40, 20]
    assert [s.epochs for s in build_recipe("sd", {"total_epochs": 6}).stages] == [
        3,
        2,
        1,
    ]  # ties: earlier stage
    for total in (3, 4, 7, 11, 250):
        stages = build_recipe("esd", {"total_epochs": total}).stages
        assert sum(s.epochs for s in stages) == total and min(s.epochs for s in stages) >= 1
    assert build_recipe("baseline", {"total_epochs": 7}).stages[0].epochs == 7
    with pytest.raises(UserInputError, match="needs a whole number of epochs >= 3"):
        build_recipe("sd", {"total_epochs": 2})


def test_esd_is_sd_with_the_mixed_stream_in_stage_one_only():
    sd, esd = build_recipe("sd"), build_recipe("esd", {"r": 0.2})
    assert [s.stream for s in esd.stages] == ["mix", "target", "target"]
    assert esd.stages[0].r == 0.2
    assert build_recipe("esd", {"feature.r": 3}).stages[0].r == 3  # the stage field, addressed by its name
    assert esd.stages[1:] == sd.stages[1:]
    assert esd.stages[0].optimizer == sd.stages[0].optimizer


def test_ifvd_in_both_readings():
    code, paper = build_recipe("ifvd").stages[0], build_recipe("ifvd_paper").stages[0]
    # options.py of the official code: kd 10, adv 0.001, ifv 200, plus CriterionDSN's 0.4
    assert code.losses == {"ce": 1.0, "dsn": 0.4, "kd": 10.0, "adv": 0.001, "ifv": 200.0}
    assert code.loss_options["kd"] == {"logits_at": "output", "reduction": "element"}
    assert code.loss_options["adv"] == {"critic": "logits", "critic_weight": 0.1, "logits_at": "output"}
    assert (code.critic.kind, code.critic.lr, code.critic.poly_power) == ("adam", 4e-4, 0.9)
    assert paper.losses == {"ce": 1.0, "kd": 10.0, "adv": 0.1, "ifv": 50.0} and not paper.loss_options
    assert paper.critic.poly_power == 0  # constant, as before this reading had a name
    skd = build_recipe("skd").stages[0]
    assert skd.losses == {"ce": 1.0, "dsn": 0.4, "kd": 10.0, "skd": 1.0, "adv": 0.1}
    assert (skd.critic.kind, skd.critic.momentum, skd.critic.weight_decay) == ("sgd", 0.9, 1e-4)
    assert build_recipe("skd_paper").stages[0].losses == {"ce": 1.0, "kd": 10.0, "skd": 1.0, "adv": 0.1}
    assert build_recipe("ifvd_student").stages[0].active_losses() == {"ce": 1.0, "dsn": 0.4}
    assert {build_recipe(n).augmentation for n in ("ifvd", "ifvd_paper", "skd", "cwd", "ifvd_student")} == {
        "ifvd"
    }


def test_ablations_switch_terms_off():
    # IFVD's Table 1 from the code reading: its numbers came from the code
    assert build_recipe("ifvd_kd").stages[0].active_losses() == {"ce": 1.0, "dsn": 0.4, "kd": 10.0}
    assert build_recipe("ifvd_ifv").stages[0].active_losses() == {"ce": 1.0, "dsn": 0.4, "ifv": 200.0}
    kd_adv = build_recipe("ifvd_kd_adv").stages[0]
    assert kd_adv.active_losses() == {"ce": 1.0, "dsn": 0.4, "kd": 10.0, "adv": 0.001}
    assert kd_adv.critic == build_recipe("ifvd").stages[0].critic
    # switched back on, adv keeps the code's critic
    assert build_recipe("ifvd_kd", {"lambda_adv": 0.01}).stages[0].critic == kd_adv.critic


def test_overrides_reach_every_field_and_leave_the_original_alone():
    original = build_recipe("sd")
    recipe = original.override(
        {
            "feature.epochs": 3,
            "frozen.optimizer.lr": 0.02,
            "lambda_ce": 2.0,
            "finetune.train": ["head"],
        }
    )
    assert recipe.stage("feature").epochs == 3
    assert recipe.stage("frozen").optimizer.lr == 0.02
    assert recipe.stage("frozen").losses["ce"] == 2.0 and recipe.stage("finetune").losses["ce"] == 2.0
    assert recipe.stage("finetune").train == ("head",)
    assert original.stage("feature").epochs == 40 and original.stage("frozen").optimizer.lr == 1e-2
    assert [s.epochs for s in original.override({"epochs": 1}).stages] == [1, 1, 1]


def test_term_options_override():
    # SD's stage and its loss term share the name "feature": stage fields win, other keys are the term's
    recipe = build_recipe("sd", {"feature.reduction": "mean", "feature.epochs": 3})
    assert (
        recipe.stages[0].loss_options == {"feature": {"reduction": "mean"}} and recipe.stages[0].epochs == 3
    )
    with pytest.raises(UserInputError, match="no field or option 'temprature'"):
        build_recipe("ifvd", {"kd.temprature": 2.0})
    recipe = build_recipe("ifvd", {"kd.temperature": 2.0})
    assert recipe.stages[0].loss_options["kd"] == {
        "logits_at": "output",
        "reduction": "element",
        "temperature": 2.0,
    }  # added to the reading's own options
    assert build_recipe("cwd", {"cwd.temperature": 1.0}).stages[0].loss_options["cwd"] == {
        "temperature": 1.0,
        "logits_at": "output",
    }


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"r": 0.5}, "no stage reading the mixed"),
        ({"lambda_ifv": 1.0}, "no stage of recipe 'sd' uses loss term 'ifv'"),
        ({"nonsense": 1}, "unknown override 'nonsense'"),
        ({"feature.optimiser.lr": 1}, "no field or option 'optimiser.lr'.*'feature' takes reduction"),
        ({"kd.temprature": 1}, "unknown override 'kd.temprature'"),  # sd has no kd term
        ({"feature.reduction": "max"}, "reduction must be one of channel_sum, mean"),
        ({"feature.epochs": 0}, "epochs must be a whole number >= 1"),
        ({"frozen.optimizer.lr": -1.0}, "lr must be a finite number >= 0"),
        ({"lambda_ce": float("nan")}, "weight of 'ce' must be a finite number >= 0"),
        ({"feature.train": ["backbone"]}, "train must name some of fe, head, student"),
        ({"feature.losses.mse": 1.0}, "unknown loss terms mse"),
        ({"lambda_feature": 0.0}, "has no loss term with a non-zero weight"),
    ],
)
def test_bad_overrides_are_named(overrides, words):
    with pytest.raises(UserInputError, match=words):
        build_recipe("sd", overrides)


@pytest.mark.parametrize("r", [-1, float("nan"), float("inf"), "1", None])
def test_a_bad_r_is_refused_by_the_recipe(r):
    with pytest.raises(
        UserInputError, match=r"stage 'feature': r, the mixed stream's .* must be a finite number >= 0"
    ):
        build_recipe("esd", {"r": r})


def test_the_old_name_of_r_is_an_unknown_field_whose_message_names_r():
    with pytest.raises(UserInputError, match=r"no field or option 'ratio'.*stage fields: .*\br\b"):
        build_recipe("esd", {"feature.ratio": 0.5})
    with pytest.raises(UserInputError, match=r"no field 'ratio' here; fields: .*\br\b"):
        build_recipe("baseline", {"train.ratio": 0.5})


def test_recipes_say_what_data_they_need():
    mixed = {"esd", "sd_adabn"}  # ESD and its control read the target + proximity stream
    assert all(build_recipe(name).needs_proximity == (name in mixed) for name in RECIPES)
    assert build_recipe("sd").needs_teacher and build_recipe("sd").teacher_terms == {"feature": ("features",)}
    assert not build_recipe("baseline").needs_teacher and not build_recipe("ftt").needs_teacher
    assert build_recipe("ifvd").teacher_terms == {"adv": ("logits",), "ifv": ("features",), "kd": ("logits",)}
    assert "dsn" not in build_recipe("ifvd").teacher_terms  # the student's own auxiliary head
    # a term at weight 0 is never computed: it needs no teacher
    assert build_recipe("ifvd_ifv").teacher_terms == {"ifv": ("features",)}
    assert not build_recipe("sd", {"lambda_feature": 0, "feature.losses.ce": 1.0}).needs_teacher


def test_the_default_critic_is_one_definition():
    from kd.methods import DEFAULT_CRITIC

    assert build_recipe("ifvd_paper").stages[0].critic == DEFAULT_CRITIC
    assert (DEFAULT_CRITIC.kind, DEFAULT_CRITIC.lr, DEFAULT_CRITIC.betas) == ("adam", 4e-4, (0.9, 0.99))
    # a critic setting on a stage without one starts from the default
    assert build_recipe("sd", {"feature.critic.lr": 1e-3}).stages[0].critic == dataclasses.replace(
        DEFAULT_CRITIC, lr=1e-3
    )


def test_unknown_recipe():
    with pytest.raises(UserInputError, match="choose one of baseline, ftt, sd, esd"):
        build_recipe("distil")


def test_cli_prints_defaults(capsys):
    assert methods_main(["sd", "esd"]) == 0
    out = capsys.readouterr().out
    assert (
        "feature: 1*feature; trains fe; 40 epochs on target; adam lr 0.001 betas (0.9, 0.99) wd 0 poly 0.9; "
        "batchnorm precise" in out
    )
    assert "mix r=1" in out
    assert methods_main(["nope"]) == 2
