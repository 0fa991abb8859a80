"""Search spaces: which hyperparameters each method searches, over which ranges.

One module per method (its docstring gives the ranges and the papers' values); each registers
`params(split_points) -> {name: Float | Int | Choice | Fixed}` (search_spaces.base) with
`@register("<method>")`, and is found without an import line here; installed plugins register
theirs too (kd.registry). A parameter's default is its recipe's value. A parameter's name is the
same in the study file, the searcher and the result tables. A study file narrows or fixes them per method:

```toml
[space.esd]
r = [0.0, 3.0]        # a range
split_point = ["stage5", "stage7"]
feature_lr = 3e-3     # fixed
frozen_lr = {low = 1e-3, high = 3e-2, log = true}

[space.cwd]
temperature = {choices = [1.0, 4.0]}
```

    spaces = spaces_for(["sd", "esd"], split_points, study["space"])   # every problem raised here

study.space turns resolved spaces into trials: grid points and Optuna's define-by-run.
"""

from __future__ import annotations

from kd.errors import UserInputError
from kd.registry import discover, load_plugins
from search_spaces.base import (
    SPACES,
    STUDENT,
    Choice,
    Fixed,
    Float,
    Int,
    Param,
    default_value,
    register,
    report,
    resolve,
    resolve_problems,
)


def spaces_for(
    methods: list[str], split_points: list[str], study_values: dict | None = None
) -> dict[str, dict]:
    """{method: resolved params}; every problem of every method in one UserInputError.

    `study_values` is the study file's `[space]` table: {method: {name: value, range or choices}}.
    """
    spaces, problems = space_problems(methods, split_points, study_values)
    if problems:
        raise UserInputError(report(problems))
    return spaces


def space_problems(methods: list[str], split_points: list[str], study_values: dict | None = None):
    """(resolved spaces, every problem): as spaces_for, for callers that list problems of their own too."""
    problems, spaces = [], {}
    if not methods:
        problems.append("no methods given")
    unknown = [m for m in methods if m not in SPACES]
    if unknown:
        problems.append(f"unknown methods {', '.join(unknown)}; choose among {', '.join(SPACES)}")
    # settings for a method outside the study would silently do nothing
    stray = [m for m in (study_values or {}) if m not in methods]
    if stray:
        problems.append(
            f"space settings for {', '.join(stray)}, which the study does not run "
            f"(its methods: {', '.join(methods)})"
        )
    for method in dict.fromkeys(m for m in methods if m in SPACES):
        given = (study_values or {}).get(method)
        if given is not None and not isinstance(given, dict):
            problems.append(f"space settings for {method} must be a table of parameters, got {given!r}")
            given = None
        spaces[method], found = resolve_problems(method, SPACES[method](list(split_points)), given)
        problems += found
    return spaces, problems


def space_for(method: str, split_points: list[str], study_values: dict | None = None) -> dict[str, Param]:
    """One method's resolved params; `study_values` as for spaces_for (other methods' entries ignored)."""
    mine = {method: study_values[method]} if study_values and method in study_values else None
    return spaces_for([method], split_points, mine)[method]


def _in_recipe_order() -> None:
    """SPACES listed as kd.methods lists the recipes: a space is its recipe's."""
    # Imported here, once this package's names are bound: importing kd.methods loads the plugins,
    # which import them.
    from kd.methods import RECIPES

    order = {name: i for i, name in enumerate(RECIPES)}
    for name in sorted(SPACES, key=lambda name: order.get(name, len(order))):
        SPACES[name] = SPACES.pop(name)


# Every module here registers its spaces when imported; then the installed plugins register theirs.
discover(__name__)
load_plugins()
_in_recipe_order()

__all__ = [
    "SPACES",
    "STUDENT",
    "Choice",
    "Fixed",
    "Float",
    "Int",
    "Param",
    "default_value",
    "register",
    "resolve",
    "space_for",
    "space_problems",
    "spaces_for",
]
