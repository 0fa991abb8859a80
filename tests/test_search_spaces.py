import math

import optuna
import pytest

from kd.errors import UserInputError
from kd.methods import RECIPES, build_recipe
from search_spaces import SPACES, Choice, Fixed, Float, space_for
from search_spaces.base import resolve
from study.space import resolve_space

POINTS = ["stage3", "stage5", "stage7"]
SPLIT_METHODS = {"baseline", "ftt", "sd", "esd", "sd_adabn"}

optuna.logging.set_verbosity(optuna.logging.WARNING)


def ask(methods, study_values=None, sampler=None):
    """An Optuna trial asked over the study's space, and the TrialChoice it gives."""
    study = optuna.create_study(sampler=sampler or optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    return trial, resolve_space(methods, POINTS, study_values).suggest(trial)


def grid(methods, split_points, study_values=None):
    return resolve_space(methods, split_points, study_values).grid()


def test_spaces_match_the_recipes():
    assert list(SPACES) == list(RECIPES)


@pytest.mark.parametrize("method", list(RECIPES))
def test_a_trial_has_exactly_its_methods_parameters(method):
    trial, choice = ask([method])
    params = space_for(method, POINTS)
    assert choice.method == method and choice.variant == method
    searched = {name: p for name, p in params.items() if not isinstance(p, Fixed)}
    assert set(trial.params) == {f"{method}.{name}" for name in searched}
    assert ("split_point" in params) == (method in SPLIT_METHODS)
    for name, p in searched.items():
        value, dist = trial.params[f"{method}.{name}"], trial.distributions[f"{method}.{name}"]
        if isinstance(p, Choice):
            assert value in POINTS and list(dist.choices) == POINTS
        else:
            assert p.low <= value <= p.high and dist.log is p.log
        assert choice.values[name] == value  # the table column has the parameter's own name


def asked(methods, count, study_values=None):
    """`count` trials of one Optuna study over the methods' space: (trial, TrialChoice) pairs."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space = resolve_space(methods, POINTS, study_values)
    return [(trial, space.suggest(trial)) for trial in (study.ask() for _ in range(count))]


def test_methods_take_turns_and_parameters_belong_to_their_method_only():
    pairs = asked(["sd", "esd", "ifvd"], 6)
    assert [c.method for _, c in pairs] == ["sd", "esd", "ifvd"] * 2  # an equal number of trials each
    seen = {c.method: set(t.params) for t, c in pairs}
    assert all(t.user_attrs["method"] == c.method for t, c in pairs)
    assert seen["esd"] >= {"esd.r", "esd.split_point"} and "sd.r" not in seen["sd"]
    assert not any("split_point" in name for name in seen["ifvd"])
    assert all(name.startswith("ifvd.") for name in seen["ifvd"])


def test_weights_and_rates_are_log_uniform_r_and_temperature_are_not():
    trial, _ = ask(["ifvd"])
    assert trial.distributions["ifvd.lambda_kd"].log is True
    assert trial.distributions["ifvd.lr"].log is True
    assert trial.distributions["ifvd.temperature"].log is False
    trial, _ = ask(["esd"])
    assert trial.distributions["esd.r"].log is False
    assert (trial.distributions["esd.r"].low, trial.distributions["esd.r"].high) == (0.0, 10.0)


def test_tpe_runs_over_the_conditional_space():
    space = resolve_space(list(RECIPES), POINTS)

    def objective(trial):
        method = space(trial)["choice"].method
        return sum(v for k, v in trial.params.items() if k.startswith(method + ".") and isinstance(v, float))

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=10))
    study.optimize(objective, n_trials=30)
    assert len(study.trials) == 30
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_a_fixed_value_leaves_the_trial_but_reaches_the_overrides():
    values = {"esd": {"feature_lr": 3e-3, "split_point": "stage5"}}
    trial, choice = ask(["esd"], values)
    assert set(trial.params) == {"esd.frozen_lr", "esd.r"}
    assert choice.method == "esd" and choice.split_point == "stage5"
    assert choice.overrides["feature.optimizer.lr"] == 3e-3 and choice.overrides["r"] == trial.params["esd.r"]
    assert set(choice.values) == {"frozen_lr", "r"}  # fixed values are no hyperparameter columns


def test_ranges_choices_and_tables_narrow():
    values = {
        "esd": {
            "r": [0.0, 3.0],
            "split_point": ["stage5", "stage7"],
            "frozen_lr": {"low": 2e-3, "high": 3e-2},
        },
        "cwd": {"temperature": {"choices": [1.0, 4.0]}},
    }
    space = space_for("esd", POINTS, values)
    assert space["r"] == Float(0.0, 3.0, target="r", default=1.0)
    assert space["split_point"].choices == ("stage5", "stage7")
    assert (space["frozen_lr"].low, space["frozen_lr"].high, space["frozen_lr"].log) == (2e-3, 3e-2, True)
    for trial, choice in asked(["esd", "cwd"], 6, values):
        if choice.method == "esd":
            assert 0.0 <= trial.params["esd.r"] <= 3.0 and trial.params["esd.split_point"] != "stage3"
        else:
            assert trial.params["cwd.temperature"] in (1.0, 4.0)


def test_bad_study_values_are_all_reported_at_once():
    values = {
        "esd": {"r": [-1, 3], "split_point": ["stage9"], "gamma": 1.0, "feature_lr": [1e-2, 1e-3]},
        "ifvd": {"lambda_kd": -1.0, "lr": 0},
        "sd": {"frozen_lr": "fast"},
    }
    with pytest.raises(UserInputError) as caught:
        resolve_space(["esd", "ifvd", "sd"], POINTS, values)
    message = str(caught.value)
    # values outside what the recipe accepts get the recipe's own message, as an override would
    for expected in (
        "esd.r = -1.0: recipe 'esd': stage 'feature': r, the mixed stream's target images per "
        "proximity image, must be a finite number >= 0",
        "'stage9' is not valid; valid: stage3, stage5, stage7",
        "no parameter 'gamma'",
        "its parameters: split_point, groups, output_stride, head_width, head_groups, feature_optimizer, "
        "feature_lr, frozen_lr, r",
        "low < high",
        "ifvd.lambda_kd = -1.0: recipe 'ifvd': stage 'train': weight of 'kd' must be a finite number >= 0",
        "ifvd.lr = 0.0: recipe 'ifvd': stage 'train': optimizer.lr must be positive",
        "expected a number",
    ):
        assert expected in message, expected


@pytest.mark.parametrize(
    "methods, values, expected",
    [
        (["nope"], None, "unknown methods nope; choose among baseline, ftt"),
        (["sd"], {"esd": {"r": 1.0}}, "space settings for esd, which the study does not run"),
        (["sd"], {"sd": {"feature_lr": [0.0, 1e-2]}}, "log scale, so low must be > 0"),
        (["sd"], {"sd": {"feature_lr": [1e-3, 1e-2, 1e-1]}}, "a range is [low, high]"),
        (["cwd"], {"cwd": {"temperature": {"low": 2.0, "step": 1}}}, "a table has keys low, high, log"),
        ([], None, "no methods given"),
    ],
)
def test_other_bad_inputs(methods, values, expected):
    with pytest.raises(UserInputError) as caught:
        resolve_space(methods, POINTS, values)
    assert expected in str(caught.value)


def test_split_methods_need_split_points():
    with pytest.raises(UserInputError, match="offers no split points"):
        space_for("sd", [])
    assert "split_point" not in space_for("ifvd", [])


def test_resolve_alone():
    params = {"x": Float(0.1, 1.0, log=True, target="lambda_kd")}
    assert resolve("ifvd", params, {"x": 0.5}) == {"x": Fixed(0.5, "lambda_kd")}
    with pytest.raises(UserInputError) as caught:
        resolve("ifvd", params, {"y": 1, "x": [0.0, 1.0]})
    assert "method 'ifvd' has no parameter 'y' (its parameters: x)" in str(caught.value)
    assert "ifvd.x is sampled on a log scale, so low must be > 0" in str(caught.value)
    with pytest.raises(UserInputError, match="ifvd.x = -1.0: recipe 'ifvd'"):  # the recipe judges the values
        resolve("ifvd", {"x": Float(-1.0, 1.0, target="lambda_kd")}, None)


def test_a_space_registers_next_to_it_and_a_name_names_one_space():
    from search_spaces import register

    def params(split_points):
        return {"lr": Float(1e-3, 1e-1, log=True, target="train.optimizer.lr", default=1e-2)}

    with pytest.raises(UserInputError, match="search space 'esd' is registered already"):
        register("esd")(params)
    register("esd")(SPACES["esd"])  # the same space again: nothing happens
    from kd.methods.recipe import RECIPES as KNOWN
    from kd.methods.recipe import register_recipe

    try:  # a plugin module: its recipe and its space
        register_recipe("baseline_again")(lambda: build_recipe("baseline"))
        register("baseline_again")(params)
        choice = resolve_space(["baseline_again"], POINTS).grid()[0]
        assert choice.overrides == {"train.optimizer.lr": 1e-2}
    finally:
        SPACES.pop("baseline_again", None)
        KNOWN.pop("baseline_again", None)


@pytest.mark.parametrize("method", list(RECIPES))
def test_suggested_choices_build_valid_recipes(method):
    for seed in range(3):
        trial, choice = ask([method], sampler=optuna.samplers.RandomSampler(seed=seed))
        point = choice.split_point
        assert choice.method == method and (point in POINTS) == (method in SPLIT_METHODS)
        assert point is None or point == trial.params[f"{method}.split_point"]
        build_recipe(method, choice.recipe_overrides)
        fixed = (
            {"feature.optimizer": "adam"} if method in {"sd", "esd", "sd_adabn"} else {}
        )  # unsearched, at its default
        assert len(choice.recipe_overrides) == len(trial.params) - (point is not None) + len(fixed)
        assert fixed.items() <= choice.recipe_overrides.items()
        # the SD student's capacity is fixed at the default variant unless a study asks to search it
        assert choice.student_options == (
            {"groups": "table", "output_stride": "teacher", "head_width": 512, "head_groups": "gcd"}
            if method in {"baseline", "sd", "esd", "sd_adabn"}
            else {}
        )


def test_a_choice_is_named_by_its_content():
    _, first = ask(["esd"])
    _, again = ask(["esd"])
    _, other = ask(["esd"], sampler=optuna.samplers.RandomSampler(seed=1))
    assert first == again and first.key == again.key and first.key != other.key
    assert len(first.key) == 16 and str(first).startswith("esd-")


def test_grid_gives_the_papers_defaults():
    points = grid(list(RECIPES), POINTS, {"esd": {"r": 0.5}, "sd": {"split_point": "stage5"}})
    assert [p.method for p in points] == list(RECIPES)
    by_method = {p.method: p for p in points}
    for method, point in by_method.items():
        recipe = build_recipe(method, point.recipe_overrides)
        if method != "esd":  # grid defaults are the recipes' own values
            assert recipe == build_recipe(method), method
    assert by_method["esd"].overrides["r"] == 0.5 and by_method["esd"].split_point == "stage7"
    assert by_method["sd"].split_point == "stage5" and by_method["ifvd"].split_point is None
    assert "kd.temperature" not in by_method["ifvd"].overrides  # no paper value: the kd term's own
    assert math.isclose(by_method["cwd"].overrides["lambda_cwd"], 3.0)
    assert all(p.values == {} and p.variant == p.method for p in points)  # fixed values are not crossed


def test_grid_crosses_the_choices_a_study_lists():
    points = grid(
        ["baseline", "esd"],
        POINTS,
        {"esd": {"r": {"choices": [0, 0.5, 5]}, "split_point": ["stage5", "stage7"]}},
    )
    assert [p.method for p in points] == ["baseline"] + ["esd"] * 6
    esd = [p for p in points if p.method == "esd"]
    assert sorted((p.values["r"], p.values["split_point"]) for p in esd) == sorted(
        (r, s) for r in (0.0, 0.5, 5.0) for s in ("stage5", "stage7")
    )
    assert "esd split_point=stage5, r=0.5" in [p.variant for p in esd]
    for p in esd:  # the recorded values are the ones trained with
        assert p.overrides["r"] == p.values["r"] and p.split_point == p.values["split_point"]
        assert build_recipe("esd", p.recipe_overrides).stages[0].r == p.values["r"]


def test_student_capacity_is_fixed_unless_a_study_lists_choices():
    assert isinstance(space_for("sd", POINTS)["groups"], Fixed)
    values = {
        "sd": {
            "groups": ["gcd", "dense"],
            "output_stride": {"choices": [8, "teacher"]},
            "head_width": 256,
            "head_groups": "cap:16",
        }
    }
    space = space_for("sd", POINTS, values)
    assert space["groups"].choices == ("gcd", "dense") and space["output_stride"].choices == (8, "teacher")
    assert space["head_width"] == Fixed(256, "student.head_width")
    trial, choice = ask(["sd"], values)
    assert trial.params["sd.groups"] in ("gcd", "dense")
    assert choice.student_options["head_width"] == 256
    assert choice.student_options["head_groups"] == "cap:16"
    # a grid crosses them: does distillation help small students more than large ones?
    points = grid(["sd"], POINTS, {"sd": {"groups": {"choices": ["gcd", "table", "dense"]}}})
    assert [p.student_options["groups"] for p in points] == ["gcd", "table", "dense"]
    assert [p.values for p in points] == [{"groups": g} for g in ("gcd", "table", "dense")]
    with pytest.raises(UserInputError, match="'huge' is not valid; valid: gcd, table"):
        space_for("sd", POINTS, {"sd": {"groups": "huge"}})


def test_a_choice_reads_back_from_its_table_row(tmp_path):
    import dataclasses

    import pandas as pd

    from study.contract import TrialChoice, TrialReport

    points = grid(["ifvd", "esd"], POINTS, {"esd": {"r": {"choices": [0.5, 1.0]}}})
    rows = [TrialReport(seeds=1).to_row(f"t{i}", c, "completed") for i, c in enumerate(points)]
    pd.DataFrame(rows).to_parquet(tmp_path / "trials.parquet")  # None split points come back as NaN
    for choice, row in zip(
        points, pd.read_parquet(tmp_path / "trials.parquet").to_dict("records"), strict=True
    ):
        assert TrialChoice.from_row(row) == dataclasses.replace(choice, values={})
