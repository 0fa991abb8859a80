import math

import optuna
import pytest

from kd.errors import UserInputError
from kd.methods import RECIPES, build_recipe
from search_spaces import SPACES, Choice, Fixed, Float, define_by_run, grid, space_for, trial_overrides
from search_spaces.base import resolve, split_student_options

POINTS = ["stage3", "stage5", "stage7"]
SPLIT_METHODS = {"baseline", "ftt", "sd", "esd"}

optuna.logging.set_verbosity(optuna.logging.WARNING)


def ask(methods, study_values=None, sampler=None):
    study = optuna.create_study(sampler=sampler or optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    returned = define_by_run(methods, POINTS, study_values)(trial)
    return trial, returned


def test_spaces_match_the_recipes():
    assert list(SPACES) == list(RECIPES)


@pytest.mark.parametrize("method", list(RECIPES))
def test_a_trial_has_exactly_its_methods_parameters(method):
    trial, returned = ask([method])
    params = space_for(method, POINTS)
    assert returned == {"method": method}
    searched = {name: p for name, p in params.items() if not isinstance(p, Fixed)}
    assert set(trial.params) == {f"{method}.{name}" for name in searched}
    assert ("split_point" in params) == (method in SPLIT_METHODS)
    for name, p in searched.items():
        value, dist = trial.params[f"{method}.{name}"], trial.distributions[f"{method}.{name}"]
        if isinstance(p, Choice):
            assert value in POINTS and list(dist.choices) == POINTS
        else:
            assert p.low <= value <= p.high and dist.log is p.log


def test_parameters_belong_to_their_method_only():
    seen = {}
    for seed in range(12):
        trial, returned = ask(["sd", "esd", "ifvd"], sampler=optuna.samplers.RandomSampler(seed=seed))
        seen[returned["method"]] = set(trial.params)
        assert trial.params["method"] == returned["method"]
    assert seen["esd"] >= {"esd.r", "esd.split_point"} and "sd.r" not in seen["sd"]
    assert not any("split_point" in name for name in seen["ifvd"])
    assert all(name.startswith(("ifvd.", "method")) for name in seen["ifvd"])


def test_weights_and_rates_are_log_uniform_r_and_temperature_are_not():
    trial, _ = ask(["ifvd"])
    assert trial.distributions["ifvd.lambda_kd"].log is True
    assert trial.distributions["ifvd.lr"].log is True
    assert trial.distributions["ifvd.temperature"].log is False
    trial, _ = ask(["esd"])
    assert trial.distributions["esd.r"].log is False
    assert (trial.distributions["esd.r"].low, trial.distributions["esd.r"].high) == (0.0, 10.0)


def test_tpe_runs_over_the_conditional_space():
    space = define_by_run(list(RECIPES), POINTS)

    def objective(trial):
        method = space(trial)["method"]
        return sum(v for k, v in trial.params.items() if k.startswith(method + ".") and isinstance(v, float))

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=10))
    study.optimize(objective, n_trials=30)
    assert len(study.trials) == 30
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_a_fixed_value_leaves_the_trial_but_reaches_the_overrides():
    values = {"esd": {"feature_lr": 3e-3, "split_point": "stage5"}}
    trial, returned = ask(["esd"], values)
    assert set(trial.params) == {"esd.frozen_lr", "esd.r"}
    method, overrides, point = trial_overrides({**returned, **trial.params}, POINTS, values)
    assert method == "esd" and point == "stage5"
    assert overrides["feature.optimizer.lr"] == 3e-3 and overrides["r"] == trial.params["esd.r"]


def test_ranges_choices_and_tables_narrow():
    values = {"esd": {"r": [0.0, 3.0], "split_point": ["stage5", "stage7"],
                      "frozen_lr": {"low": 2e-3, "high": 3e-2}},
              "cwd": {"temperature": {"choices": [1.0, 4.0]}}}
    space = space_for("esd", POINTS, values)
    assert space["r"] == Float(0.0, 3.0, target="r", default=1.0)
    assert space["split_point"].choices == ("stage5", "stage7")
    assert (space["frozen_lr"].low, space["frozen_lr"].high, space["frozen_lr"].log) == (2e-3, 3e-2, True)
    for seed in range(5):
        trial, _ = ask(["esd", "cwd"], values, optuna.samplers.RandomSampler(seed=seed))
        if trial.params["method"] == "esd":
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
        define_by_run(["esd", "ifvd", "sd"], POINTS, values)
    message = str(caught.value)
    for expected in ("esd.r must be >= 0", "'stage9' is not valid; valid: stage3, stage5, stage7",
                     "no parameter 'gamma'", "its parameters: split_point, groups, output_stride, head_width, feature_optimizer, feature_lr, frozen_lr, r",
                     "low < high", "ifvd.lambda_kd must be >= 0", "ifvd.lr must be > 0", "expected a number"):
        assert expected in message, expected


@pytest.mark.parametrize("methods, values, expected", [
    (["nope"], None, "unknown methods nope; choose among baseline, ftt"),
    (["sd"], {"esd": {"r": 1.0}}, "space settings for esd, which the study does not run"),
    (["sd"], {"sd": {"feature_lr": [0.0, 1e-2]}}, "log scale, so low must be > 0"),
    (["sd"], {"sd": {"feature_lr": [1e-3, 1e-2, 1e-1]}}, "a range is [low, high]"),
    (["cwd"], {"cwd": {"temperature": {"low": 2.0, "step": 1}}}, "a table has keys low, high, log"),
    ([], None, "no methods given"),
])
def test_other_bad_inputs(methods, values, expected):
    with pytest.raises(UserInputError) as caught:
        define_by_run(methods, POINTS, values)
    assert expected in str(caught.value)


def test_split_methods_need_split_points():
    with pytest.raises(UserInputError, match="offers no split points"):
        space_for("sd", [])
    assert "split_point" not in space_for("ifvd", [])


def test_resolve_alone():
    params = {"x": Float(0.1, 1.0, log=True, target="lambda_x")}
    assert resolve("m", params, {"x": 0.5}) == {"x": Fixed(0.5, "lambda_x")}
    with pytest.raises(UserInputError) as caught:
        resolve("m", params, {"y": 1, "x": [0.0, 1.0]})
    assert "method 'm' has no parameter 'y' (its parameters: x)" in str(caught.value)
    assert "m.x is sampled on a log scale, so low must be > 0" in str(caught.value)


@pytest.mark.parametrize("method", list(RECIPES))
def test_trial_overrides_build_valid_recipes(method):
    for seed in range(3):
        trial, returned = ask([method], sampler=optuna.samplers.RandomSampler(seed=seed))
        config = {**returned, **trial.params, "seeds": 3, "unrelated": "x"}
        name, overrides, point = trial_overrides(config, POINTS)
        assert name == method and (point in POINTS) == (method in SPLIT_METHODS)
        assert point is None or point == trial.params[f"{method}.split_point"]
        recipe_overrides, student = split_student_options(overrides)
        build_recipe(method, recipe_overrides)
        fixed = {"feature.optimizer": "adam"} if method in {"sd", "esd"} else {}  # unsearched, at its default
        assert len(recipe_overrides) == len(trial.params) - (point is not None) + len(fixed)
        assert fixed.items() <= recipe_overrides.items()
        # the SD student's capacity is fixed at the default variant unless a study asks to search it
        assert student == ({"groups": "table", "output_stride": "teacher", "head_width": 512}
                           if method in {"baseline", "sd", "esd"} else {})


def test_trial_overrides_notice_a_changed_space():
    with pytest.raises(UserInputError, match="lacks esd.feature_lr, esd.frozen_lr, esd.r"):
        trial_overrides({"method": "esd", "esd.split_point": "stage5"}, POINTS)


def test_grid_gives_the_papers_defaults():
    points = grid(list(RECIPES), POINTS, {"esd": {"r": 0.5}, "sd": {"split_point": "stage5"}})
    assert [p["method"] for p in points] == list(RECIPES)
    by_method = {p["method"]: p for p in points}
    for method, point in by_method.items():
        recipe = build_recipe(method, split_student_options(point["overrides"])[0])
        if method != "esd":  # grid defaults are the recipes' own values
            assert recipe == build_recipe(method), method
    assert by_method["esd"]["overrides"]["r"] == 0.5 and by_method["esd"]["split_point"] == "stage7"
    assert by_method["sd"]["split_point"] == "stage5" and by_method["ifvd"]["split_point"] is None
    assert "kd.temperature" not in by_method["ifvd"]["overrides"]  # no paper value: the kd term's own
    assert math.isclose(by_method["cwd"]["overrides"]["lambda_cwd"], 3.0)
    assert all(p["values"] == {} for p in points)  # fixed values are not crossed


def test_grid_crosses_the_choices_a_study_lists():
    points = grid(["baseline", "esd"], POINTS, {"esd": {"r": {"choices": [0, 0.5, 5]},
                                                        "split_point": ["stage5", "stage7"]}})
    assert [p["method"] for p in points] == ["baseline"] + ["esd"] * 6
    esd = [p for p in points if p["method"] == "esd"]
    assert sorted((p["values"]["r"], p["values"]["split_point"]) for p in esd) == sorted(
        (r, s) for r in (0.0, 0.5, 5.0) for s in ("stage5", "stage7"))
    for p in esd:  # the recorded values are the ones trained with
        assert p["overrides"]["r"] == p["values"]["r"] and p["split_point"] == p["values"]["split_point"]
        assert build_recipe("esd", split_student_options(p["overrides"])[0]).stages[0].ratio == p["values"]["r"]


def test_student_capacity_is_fixed_unless_a_study_lists_choices():
    assert isinstance(space_for("sd", POINTS)["groups"], Fixed)
    values = {"sd": {"groups": ["gcd", "dense"], "output_stride": {"choices": [8, "teacher"]}, "head_width": 256}}
    space = space_for("sd", POINTS, values)
    assert space["groups"].choices == ("gcd", "dense") and space["output_stride"].choices == (8, "teacher")
    assert space["head_width"] == Fixed(256, "student.head_width")
    trial, returned = ask(["sd"], values)
    assert trial.params["sd.groups"] in ("gcd", "dense")
    _, overrides, _ = trial_overrides({**returned, **trial.params}, POINTS, values)
    assert split_student_options(overrides)[1]["head_width"] == 256
    # a grid crosses them: does distillation help small students more than large ones?
    points = grid(["sd"], POINTS, {"sd": {"groups": {"choices": ["gcd", "table", "dense"]}}})
    assert [split_student_options(p["overrides"])[1]["groups"] for p in points] == ["gcd", "table", "dense"]
    assert [p["values"] for p in points] == [{"groups": g} for g in ("gcd", "table", "dense")]
    with pytest.raises(UserInputError, match="'huge' is not valid; valid: gcd, table"):
        space_for("sd", POINTS, {"sd": {"groups": "huge"}})
