"""What a study's configuration (its run folder's config.json) implies, as the study's own code
computes it: which methods use the teacher, how many points a grid runs, which settings a resume
may change. The one module of analysis that imports study: the run folder does not record these."""

from __future__ import annotations

from study.config import RESUMABLE as RESUMABLE


def study_config(config: dict):
    """A run folder's config.json as a StudyConfig, keys of other versions left out."""
    from study.config import FIELDS, StudyConfig

    return StudyConfig(**{k: v for k, v in config.items() if k in FIELDS})


def teacher_users(config: dict) -> list[str]:
    """The methods of a study's configuration that use its teacher (study.prepare.teacher_users)."""
    try:
        from study.prepare import teacher_users

        return teacher_users(study_config(config))
    except Exception:  # a configuration of another version, or a plugin's method not imported here
        return []


def grid_size(config: dict) -> int:
    """How many points a grid study runs: one per method, times the choices its space crosses."""
    try:
        from kd.models.registry import split_points
        from study.space import resolve_space, with_teachers

        space = resolve_space(config["methods"], split_points(config["teacher"]), config.get("space"))
        return len(with_teachers(space, study_config(config)).grid())
    except Exception:  # a study from another version, or a plugin not imported here: the lower bound
        return len(config.get("methods") or [])
