"""A study's search space, resolved and validated once, and the TrialChoices it gives.

    space = resolve_space(["baseline", "esd"], split_points, study_values)   # every problem raised here
    space.grid()          # an ablation grid: one TrialChoice per point
    space.suggest(trial)  # a search: Optuna asks the method, then its parameters

Optuna knows a parameter as "<method>.<name>" ("esd.r"): a distribution exists only in trials of
its method, so two methods' ranges never clash. Everything outside the searcher uses the name alone.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any

from kd.errors import UserInputError
from kd.methods import teacher_users
from search_spaces import Choice, Fixed, Float, Int, Param, default_value, report, space_problems
from study.contract import TrialChoice, short


@dataclass(frozen=True)
class StudySpace:
    """`params`: each method's resolved parameters. `listed`: per method, the parameters the study
    file gives choices for, which a grid crosses. `teachers`: per method that uses a teacher, the
    teachers it runs with (a grid crosses them, a search asks for one); methods not listed use
    none. `named`: variant names carry the teacher ("kd @ NAME"): the study has a teacher axis."""

    params: dict[str, dict[str, Param]]
    listed: dict[str, tuple[str, ...]]
    teachers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    named: bool = False

    @property
    def methods(self) -> list[str]:
        return list(self.params)

    def choice(
        self, method: str, values: dict[str, Any], variant: str = "", teacher: str | None = None
    ) -> TrialChoice:
        """The trial for `values` (by name; Fixed parameters need not be given) with `teacher`
        (None: the method's only teacher, or none)."""
        mine = self.teachers.get(method, ())
        teacher = teacher or (mine[0] if mine else None)
        if teacher is not None and self.named:
            variant = f"{variant or method} @ {teacher}"
        overrides, point = {}, None
        for name, p in self.params[method].items():
            value = p.value if isinstance(p, Fixed) else values[name]
            if value is None:  # no paper value: the recipe keeps its own default
                continue
            if p.target == "split_point":
                point = value
            else:
                overrides[p.target] = value
        return TrialChoice(method, overrides, point, values, variant, teacher)

    def grid(self) -> list[TrialChoice]:
        """Per method, the papers' defaults or fixed values, crossed with every parameter the study
        lists choices for (`r = {choices = [0, 0.5, 1, 5]}` gives four ESD points), then with the
        method's teachers (a method without a teacher runs once)."""
        points = []
        for method, params in self.params.items():
            crossed = [n for n, p in params.items() if n in self.listed[method] and isinstance(p, Choice)]
            defaults = {n: default_value(p) for n, p in params.items()}
            for combination in itertools.product(*(params[n].choices for n in crossed)):
                values = dict(zip(crossed, combination, strict=True))
                variant = (
                    f"{method} " + ", ".join(f"{k}={short(v)}" for k, v in values.items()) if values else ""
                )
                for teacher in self.teachers.get(method) or (None,):
                    choice = self.choice(method, defaults | values, variant, teacher)
                    points.append(replace(choice, values=values))
        return points

    def suggest(self, trial) -> TrialChoice:
        """An Optuna trial's method, then each of its searched parameters, asked of the trial.

        Methods take turns by the trial's number, so that each gets the same number of trials
        (an equal budget): the sampler chooses parameters, never how often a method is tried."""
        method = self.methods[trial.number % len(self.methods)]
        trial.set_user_attr("method", method)
        values = {}
        for name, p in self.params[method].items():
            key = f"{method}.{name}"
            if isinstance(p, Float):
                values[name] = trial.suggest_float(key, p.low, p.high, log=p.log)
            elif isinstance(p, Int):
                values[name] = trial.suggest_int(key, p.low, p.high, log=p.log)
            elif isinstance(p, Choice):
                values[name] = trial.suggest_categorical(key, p.choices)
        mine = self.teachers.get(method, ())
        # the searcher picks the teacher like any categorical: per method, so methods stay apart
        teacher = trial.suggest_categorical(f"{method}.teacher", list(mine)) if len(mine) > 1 else None
        return self.choice(method, values, teacher=teacher)

    def __call__(self, trial) -> dict:
        """Ray's OptunaSearch define-by-run: the trial's whole configuration is its TrialChoice."""
        return {"choice": self.suggest(trial)}

    def split_points(self, method: str) -> list[str | None]:
        """Every split point a trial of `method` may use (None: the method has none)."""
        p = self.params[method].get("split_point")
        return list(p.choices) if isinstance(p, Choice) else [p.value] if isinstance(p, Fixed) else [None]


def with_teachers(space: StudySpace, config) -> StudySpace:
    """`space` with the study's teachers for each method that uses one (kd.methods.teacher_users):
    every teacher of `teachers`, else the study's one `teacher`."""
    mine, users = tuple(config.teacher_names), teacher_users(config.methods, config.students)
    return replace(space, teachers={m: mine for m in users}, named=config.teachers is not None)


def resolve_space(
    methods: list[str], split_points: list[str], study_values: dict | None = None
) -> StudySpace:
    """The study's space; every problem of every method in one UserInputError."""
    space, problems = resolve_space_problems(methods, split_points, study_values)
    if problems:
        raise UserInputError(report(problems))
    return space


def resolve_space_problems(
    methods: list[str], split_points: list[str], study_values: dict | None = None
) -> tuple[StudySpace, list[str]]:
    params, problems = space_problems(methods, split_points, study_values)
    listed = {m: tuple(n for n in ((study_values or {}).get(m) or {}) if n in params[m]) for m in params}
    return StudySpace(params, listed), problems
