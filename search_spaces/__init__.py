"""Search spaces: which hyperparameters each method searches, over which ranges.

One module per method (its docstring gives the ranges and the papers' values); each
`params(split_points)` returns `{name: Float | Int | Choice | Fixed}` (search_spaces.base).
A study file narrows or fixes them per method:

```toml
[space.esd]
r = [0.0, 3.0]        # a range
split_point = ["stage5", "stage7"]
feature_lr = 3e-3     # fixed
frozen_lr = {low = 1e-3, high = 3e-2, log = true}

[space.cwd]
temperature = {choices = [1.0, 4.0]}
```

With Ray Tune and Optuna:

    space = define_by_run(["sd", "esd"], split_points, study["space"])   # every problem raised here
    search = OptunaSearch(space=space, metric="miou", mode="max")
    # in the trainable:
    method, overrides, point = trial_overrides(config, split_points, study["space"])
    recipe = kd.methods.build_recipe(method, overrides)

Optuna's (and Tune's config) names are "<method>.<name>" ("esd.r"), so a parameter
exists only in trials of its method and two methods' distributions never clash.
"""
from __future__ import annotations

from collections.abc import Callable

from kd.errors import UserInputError
from search_spaces import ablations, baseline, cwd, esd, ftt, ifvd, sd, skd
from search_spaces.base import (
    Choice, Fixed, Float, Int, Param, default_value, report, resolve, resolve_problems, split_student_options, suggest,
    to_overrides,
)

SPACES: dict[str, Callable[[list[str]], dict[str, Param]]] = {
    "baseline": baseline.params,
    "ftt": ftt.params,
    "sd": sd.params,
    "esd": esd.params,
    "ifvd": ifvd.params,
    "skd": skd.params,
    "cwd": cwd.params,
    "ifvd_kd": ablations.ifvd_kd,
    "ifvd_adv": ablations.ifvd_adv,
    "ifvd_ifv": ablations.ifvd_ifv,
    "ifvd_kd_adv": ablations.ifvd_kd_adv,
}


def spaces_for(methods: list[str], split_points: list[str], study_values: dict | None = None) -> dict[str, dict]:
    """{method: resolved params}; every problem of every method in one UserInputError.

    `study_values` is the study file's `[space]` table: {method: {name: value, range or choices}}.
    """
    problems, spaces = [], {}
    if not methods:
        problems.append("no methods given")
    unknown = [m for m in methods if m not in SPACES]
    if unknown:
        problems.append(f"unknown methods {', '.join(unknown)}; choose among {', '.join(SPACES)}")
    # settings for a method outside the study would silently do nothing
    stray = [m for m in (study_values or {}) if m not in methods]
    if stray:
        problems.append(f"space settings for {', '.join(stray)}, which the study does not run "
                        f"(its methods: {', '.join(methods)})")
    for method in dict.fromkeys(m for m in methods if m in SPACES):
        given = (study_values or {}).get(method)
        if given is not None and not isinstance(given, dict):
            problems.append(f"space settings for {method} must be a table of parameters, got {given!r}")
            given = None
        spaces[method], found = resolve_problems(method, SPACES[method](list(split_points)), given)
        problems += found
    if problems:
        raise UserInputError(report(problems))
    return spaces


def space_for(method: str, split_points: list[str], study_values: dict | None = None) -> dict[str, Param]:
    """One method's resolved params; `study_values` as for spaces_for (other methods' entries ignored)."""
    mine = {method: study_values[method]} if study_values and method in study_values else None
    return spaces_for([method], split_points, mine)[method]


def define_by_run(methods: list[str], split_points: list[str], study_values: dict | None = None):
    """A define-by-run function for Optuna (and Ray's OptunaSearch); validates everything now."""
    spaces = spaces_for(methods, split_points, study_values)
    names = list(spaces)

    def space(trial) -> dict:
        method = trial.suggest_categorical("method", names) if len(names) > 1 else names[0]
        suggest(trial, method, spaces[method])
        # Ray adds the suggested values to the config itself; constants must be returned
        return {"method": method}

    return space


def trial_overrides(config: dict, split_points: list[str], study_values: dict | None = None):
    """(method, recipe overrides, split point or None) from a trial's config ("esd.r": 0.5, ...)."""
    method = config.get("method")
    if method not in SPACES:
        raise UserInputError(f"trial config has method {method!r}; choose among {', '.join(SPACES)}.")
    params = space_for(method, split_points, study_values)
    missing = [f"{method}.{n}" for n, p in params.items() if not isinstance(p, Fixed) and f"{method}.{n}" not in config]
    if missing:
        raise UserInputError(f"trial config lacks {', '.join(missing)}: was the study's search space changed?")
    values = {n: config.get(f"{method}.{n}") for n in params}
    overrides, point = to_overrides(params, values)
    return method, overrides, point


def grid(methods: list[str], split_points: list[str], study_values: dict | None = None) -> list[dict]:
    """The points of an ablation grid (no search): per method, the papers' defaults or fixed values,
    crossed with every parameter the study lists choices for (`r = {choices = [0, 0.5, 1, 5]}` gives
    four ESD points). A param without a default is left out, so the recipe keeps its own value.

    Each point is {"method", "overrides", "split_point", "values"}; `values` holds the crossed
    parameters by name, so results can be told apart (and plotted against r).
    """
    import itertools

    points = []
    for method, params in spaces_for(methods, split_points, study_values).items():
        given = (study_values or {}).get(method) or {}
        crossed = [n for n, p in params.items() if isinstance(p, Choice) and n in given]
        chosen = {n: default_value(p) for n, p in params.items()}
        for combination in itertools.product(*(params[n].choices for n in crossed)):
            chosen.update(zip(crossed, combination))
            kept = {n: p for n, p in params.items() if chosen[n] is not None}
            overrides, point = to_overrides(kept, chosen)
            points.append({"method": method, "overrides": overrides, "split_point": point,
                           "values": dict(zip(crossed, combination))})
    return points


__all__ = [
    "SPACES", "Choice", "Fixed", "Float", "Int", "Param", "define_by_run", "grid", "resolve", "space_for",
    "spaces_for", "split_student_options", "suggest", "to_overrides", "trial_overrides",
]
