"""What a study's configuration (its run folder's config.json) implies, from the recipes and the
search spaces the study itself reads: how many points a grid runs."""

from __future__ import annotations

import math

from kd import methods
from kd.models.registry import split_points
from search_spaces import Choice, space_problems


def grid_size(config: dict) -> int:
    """How many points a grid study runs, as study.space.StudySpace.grid makes them: per method, one
    for each combination of the choices the study lists for its parameters, times its teachers when
    it uses one."""
    try:
        listed = config.get("space") or {}
        spaces, problems = space_problems(config["methods"], split_points(config["teacher"]), listed)
        if problems:
            raise ValueError(problems)
        users = methods.teacher_users(config["methods"], config.get("students"))
        teachers = len(config.get("teachers") or [config["teacher"]])
        return sum(
            math.prod(
                len(p.choices)
                for name, p in params.items()
                if name in (listed.get(method) or {}) and isinstance(p, Choice)
            )
            * (teachers if method in users else 1)
            for method, params in spaces.items()
        )
    except Exception:  # a study from another version, or a plugin not imported here: the lower bound
        return len(config.get("methods") or [])
