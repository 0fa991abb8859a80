"""Search-space parameters as plain data, and what is done with them.

A method's space is a dict `{name: Param}`. Each Param names its `target`: the
`kd.methods` override key it sets ("r", "lambda_kd", "kd.temperature",
"feature.optimizer.lr", ...), "split_point", or "student.<option>" (an option of the SD
student's capacity: groups, output_stride, head_width, head_groups). `default` is the value a grid
uses. A method's defaults have one home, its recipe: a Float's or Int's default left None is
resolved to the recipe's value at its target (Recipe.value), and stays None where the recipe leaves
it to a loss term's own default; a Choice's None is its last choice.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from kd.errors import UserInputError
from kd.models.sd import SD_CAPACITIES
from kd.models.sd import sd_capacity as default_capacity
from kd.registry import register as register_in

# kd.methods is imported inside the functions that use it: importing it loads the installed
# plugins (kd.registry), which import this package's names, not all bound yet while it loads.


@dataclass(frozen=True)
class Float:
    low: float
    high: float
    log: bool = False
    target: str = ""
    default: float | None = None


@dataclass(frozen=True)
class Int:
    low: int
    high: int
    log: bool = False
    target: str = ""
    default: int | None = None


@dataclass(frozen=True)
class Choice:
    """`search=False`: offered to study files (a list of choices searches them, a value fixes
    it) but, left alone, fixed at its default rather than searched."""

    choices: tuple
    target: str = ""
    default: Any = None
    search: bool = True


@dataclass(frozen=True)
class Fixed:
    value: Any
    target: str = ""


Param = Float | Int | Choice | Fixed

# method -> params(split_points): filled by @register next to each space
SPACES: dict[str, Callable[[list[str]], dict[str, Param]]] = {}


def register(method: str):
    """Decorator: `params(split_points)` is the search space of the recipe `method` (kd.registry's
    rule: a name names one thing). A plugin (kd.registry) registers its own the same way."""
    return lambda params: register_in(SPACES, "search space", method, params)


def split_point(split_points: list[str]) -> Choice:
    """The teacher's split point, for methods whose student is built from the teacher's front."""
    return Choice(tuple(split_points), target="split_point")


STUDENT = "student."  # targets under this prefix build the student (kd.models.sd.SDCapacity), not the recipe


def sd_capacity() -> dict[str, Param]:
    """The SD student's capacity (kd.models.sd.SDCapacity), fixed at the default variant ("table")
    unless a study file lists choices: `groups = ["gcd", "table", "dense"]` searches it, a grid crosses
    `groups = {choices = [...]}`."""
    default = default_capacity()
    return {
        "groups": Choice(
            ("gcd", "table", "cap:8", "cap:4", "cap:2", "dense"),
            f"{STUDENT}groups",
            default.groups,
            search=False,
        ),
        "output_stride": Choice(
            ("teacher", 8, 16, 32),
            f"{STUDENT}output_stride",
            default.output_stride or "teacher",
            search=False,
        ),
        "head_width": Choice(
            tuple(sorted({v.head_width for v in SD_CAPACITIES.values()} | {128, 256})),
            f"{STUDENT}head_width",
            default.head_width,
            search=False,
        ),
        "head_groups": Choice(
            ("gcd", "cap:16", "cap:8", "table", "dense"),  # every head conv is 3x3: "table" = at most 4
            f"{STUDENT}head_groups",
            default.head_groups,
            search=False,
        ),
    }


def default_value(param: Param) -> Any:
    if isinstance(param, Fixed):
        return param.value
    if isinstance(param, Choice):
        return param.default if param.default in param.choices else param.choices[-1]
    return param.default


def resolve(method: str, params: dict[str, Param], study_values: dict | None) -> dict[str, Param]:
    """`params` with a study file's entries for `method` applied; every problem in one UserInputError."""
    resolved, problems = resolve_problems(method, params, study_values)
    if problems:
        raise UserInputError(report(problems))
    return resolved


def report(problems: list[str]) -> str:
    return "search space problems:\n" + "\n".join(f"  - {problem}" for problem in problems)


def resolve_problems(method: str, params: dict[str, Param], study_values: dict | None):
    """Like resolve, but returns (params, problems) so callers can gather problems of several methods."""
    resolved, problems = _with_recipe_defaults(method, params), []
    for name, given in (study_values or {}).items():
        if name not in params:
            problems.append(
                f"method {method!r} has no parameter {name!r} (its parameters: {', '.join(params) or 'none'})"
            )
            continue
        try:
            resolved[name] = _apply(resolved[name], given)
        except ValueError as error:
            problems.append(f"{method}.{name}: {error}")
    for name, p in resolved.items():
        if isinstance(p, Choice) and not p.search:
            resolved[name] = p = Fixed(default_value(p), p.target)
        found = [f"{method}.{name} {message}" for message in _check(p)]
        problems += found or _recipe_problems(method, name, p)
    return resolved, problems


def _with_recipe_defaults(method: str, params: dict[str, Param]) -> dict[str, Param]:
    """`params` with each Float's and Int's missing default read from the recipe `method`. A
    recipe or target that is not there is left to the values' checks, which report it."""
    from kd.methods import RECIPES, build_recipe

    resolved = dict(params)
    for name, p in params.items():
        if method in RECIPES and isinstance(p, (Float, Int)) and p.default is None and _recipe_target(p):
            try:
                resolved[name] = replace(p, default=build_recipe(method).value(p.target))
            except UserInputError:
                pass
    return resolved


def _recipe_target(p: Param) -> bool:
    """Whether `p` sets the recipe (not the split point or the student's capacity)."""
    return p.target != "split_point" and not p.target.startswith(STUDENT)


def _recipe_problems(method: str, name: str, p: Param) -> list[str]:
    """The recipe a parameter targets judges its values (each end of a range, each choice): one
    rule and one message per value, whether it comes from a search, a grid or a recipe override."""
    if not _recipe_target(p):  # a split point or the student's capacity: Choice lists the valid ones
        return []
    from kd.methods import build_recipe

    values = (
        [p.value] if isinstance(p, Fixed) else list(p.choices) if isinstance(p, Choice) else [p.low, p.high]
    )
    for value in values:
        try:
            build_recipe(method, {p.target: value})
        except UserInputError as err:
            return [f"{method}.{name} = {value!r}: {str(err).rstrip('.')}"]
    return []


# The largest magnitude a searched or fixed number may have: a trial's arithmetic with values
# near float's limit (a share of a batch, a sampler's range width) overflows, and no loss weight,
# temperature, ratio or learning rate needs more.
LARGEST = 1e12


def is_finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _typed(param: Param, value):
    """`value` as the param's kind of number within +-LARGEST, or ValueError."""
    if isinstance(param, Int):
        if not (isinstance(value, int) and not isinstance(value, bool)):
            raise ValueError(f"expected a whole number, got {value!r}")
    elif not is_finite_number(value):
        raise ValueError(f"expected a number, got {value!r}")
    if abs(value) > LARGEST:
        raise ValueError(
            f"{value!r} is beyond {LARGEST:g} in size, which a trial's arithmetic cannot use; "
            "give a number within it"
        )
    return value if isinstance(param, Int) else float(value)


def _apply(param: Param, given) -> Param:
    """The param a study file's entry makes of `param`: a fixed value, a range, choices or a table."""
    if isinstance(param, Fixed):
        return Fixed(given, param.target)
    if isinstance(param, Choice):
        if isinstance(given, dict) and set(given) == {"choices"}:  # as a Float's {choices = [...]} is written
            given = given["choices"] if isinstance(given["choices"], list) else [given["choices"]]
        picked = []
        for choice in given if isinstance(given, list) else [given]:
            picked += [] if choice in picked else [choice]
        invalid = [c for c in picked if c not in param.choices]
        if invalid or not picked:
            raise ValueError(
                f"{', '.join(map(repr, invalid)) or 'an empty list'} is not valid; "
                f"valid: {', '.join(map(str, param.choices)) or 'none'}"
            )
        return (
            Choice(tuple(picked), param.target, param.default)
            if isinstance(given, list)
            else Fixed(given, param.target)
        )
    if isinstance(given, list):
        if len(given) != 2:
            raise ValueError(
                f"a range is [low, high], got {given!r} (a table {{choices = [...]}} lists values)"
            )
        return replace(param, low=_typed(param, given[0]), high=_typed(param, given[1]))
    if isinstance(given, dict):
        unknown = sorted(set(given) - {"low", "high", "log", "choices"})
        if unknown or ("choices" in given and len(given) > 1):
            raise ValueError(
                f"a table has keys low, high, log, or only choices; got {', '.join(map(str, given))}"
            )
        if "choices" in given:
            if not isinstance(given["choices"], list) or not given["choices"]:
                raise ValueError(f"choices must be a non-empty list, got {given['choices']!r}")
            return Choice(tuple(_typed(param, c) for c in given["choices"]), param.target, param.default)
        low, high = (_typed(param, given.get(k, getattr(param, k))) for k in ("low", "high"))
        log = given.get("log", param.log)
        if not isinstance(log, bool):
            raise ValueError(f"log must be true or false, got {log!r}")
        return replace(param, low=low, high=high, log=log)
    return Fixed(_typed(param, given), param.target)


def _check(p: Param) -> list[str]:
    """What is wrong with a resolved param's range or choices (messages follow "<method>.<name>")."""
    if isinstance(p, Choice) and not p.choices:
        return [
            "has no choices" + (" (the teacher offers no split points)" if p.target == "split_point" else "")
        ]
    found = []
    if isinstance(p, (Float, Int)):
        if p.low > p.high or (isinstance(p, Float) and p.low == p.high):
            found.append(
                f"range needs low {'<=' if isinstance(p, Int) else '<'} high, got [{p.low}, {p.high}]"
            )
        if p.log and p.low <= 0:
            found.append(f"is sampled on a log scale, so low must be > 0, got {p.low}")
    return found
