"""A study's configuration: defaults < preset < study file (TOML) < command line, validated at once.

Every problem (unknown method or parameter, r < 0, a missing data path, a split point the
teacher lacks, GPUs that are not there) is collected and reported in one UserInputError
before Ray starts (each setting is declared in study.settings, each check is a function of
study.checks). The resolved configuration is saved in the run directory as
`config.json`, so `--resume` and the report know exactly what ran.

A study file holds the same keys as `StudyConfig`, plus a `none` list (the settings it sets to
None, which TOML cannot write: `none = ["epochs"]` for the recipes' own epochs), `[space.<method>]`
tables (fixed values, ranges or choices for that method's search space, see search_spaces), a
`[students]` table (the student per method) and a `[student_weights]` table (a backbone weights
file per method). A teacher checkpoint trained on another label set (Cityscapes' 19 classes for a
CamVid study) distils through `teacher_class_map`, a map of its classes onto the study's
(docs/guide/teachers.md: Teachers from another label set). The presets are study files too
(study/presets/NAME.toml), a starting point to copy. A study file:

    name = "esd-r"
    methods = ["sd", "esd"]
    trials = 24
    seeds = 3
    data = "camvid:../shared/data/camvid"
    [space.esd]
    r = [0.0, 5.0]
    [students]
    ifvd = "pspnet_resnet18"
    [student_weights]
    ifvd = "resnet18_imagenet.pth"
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from importlib import resources
from itertools import takewhile
from pathlib import Path

from kd.errors import UserInputError
from kd.run_folder import CONFIG, RESUMABLE
from study.checks import class_map_problems as class_map_problems  # read as study.config.* too
from study.checks import problems, split_point_problems, with_flag
from study.checks import study_classes as study_classes  # read as study.config.* too
from study.settings import FIELDS, StudyConfig

PRESET_FOLDER = resources.files("study") / "presets"


def _with_nones(values: dict, where: str) -> dict:
    """A study file's settings with those its `none` list names set to None (TOML has no null)."""
    names = values.pop("none", [])
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise UserInputError(
            f'{where}: none must be a list of setting names, e.g. none = ["epochs"]; got {names!r}.'
        )
    both = sorted(set(names) & set(values))
    if both:
        raise UserInputError(f"{where}: {', '.join(both)} both given a value and listed in none; keep one.")
    return {**values, **dict.fromkeys(names)}


def _load_presets() -> dict[str, dict]:
    """study/presets/NAME.toml, each a study file: the presets by NAME."""
    files = {f.name.removesuffix(".toml"): f for f in PRESET_FOLDER.iterdir() if f.name.endswith(".toml")}
    return {
        name: _with_nones(tomllib.loads(files[name].read_text()), f"preset {files[name].name}")
        for name in sorted(files)
    }


PRESETS = _load_presets()


def preset_summaries() -> dict[str, str]:
    """Each preset's first sentence, from the comment its file opens with ("# NAME: what it is.")."""
    summaries = {}
    for name in PRESETS:
        lines = (PRESET_FOLDER / f"{name}.toml").read_text().splitlines()
        opening = " ".join(line.lstrip("# ") for line in takewhile(lambda line: line.startswith("#"), lines))
        summaries[name] = opening.removeprefix(f"{name}:").split(". ")[0].strip().rstrip(".")
    return summaries


def read_study_file(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise UserInputError(
            f"study file {path} is a folder; give a TOML study file, e.g. a copy of study/presets/smoke.toml."
        )
    if not path.is_file():
        raise UserInputError(f"study file {path} does not exist.")
    try:
        with path.open("rb") as handle:
            values = tomllib.load(handle)
    except tomllib.TOMLDecodeError as err:
        raise UserInputError(f"study file {path} is not valid TOML: {err}.") from None
    return _with_nones(values, f"study file {path}")


def resolve(
    preset: str = "default", study_file: str | Path | None = None, overrides: dict | None = None
) -> StudyConfig:
    """Defaults, then the preset, then the study file, then command-line values (None = not given)."""
    if preset not in PRESETS:
        raise UserInputError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    values = dict(PRESETS[preset])
    if study_file is not None:
        values.update(read_study_file(study_file))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    methods = values.get("methods") or StudyConfig().methods
    for key in ("space", "students", "student_weights"):
        if key in PRESETS[preset] and values.get(key) is PRESETS[preset][key]:
            # a preset's settings for a method the user left out are the preset's, not a mistake
            values[key] = {m: v for m, v in values[key].items() if m in methods}
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise UserInputError(f"unknown study setting(s) {', '.join(unknown)}; known: {', '.join(FIELDS)}.")
    values = _with_teacher_axis(values, preset, study_file, overrides or {})
    if str(values.get("data", "")).strip().lower() == "camvid":  # the presets' "camvid": wherever it is here
        from kd.data import locate_camvid

        found = locate_camvid()
        values["data"] = f"camvid:{found.resolve()}" if found else "camvid"
    return StudyConfig(**absolute_paths(values))


def _with_teacher_axis(values: dict, preset: str, study_file, overrides: dict) -> dict:
    """`teachers` makes its first the study's `teacher` (a preset's teacher gives way); a `teacher`
    the user gives as well is refused unless it is that first one: the two would disagree."""
    teachers = values.get("teachers")
    if not teachers or not isinstance(teachers, list) or not all(isinstance(t, str) for t in teachers):
        return values  # none given, or malformed: validation names it
    given = overrides.get("teacher")
    if given is None and study_file is not None:
        given = read_study_file(study_file).get("teacher")
    if given is not None and given != teachers[0]:
        raise UserInputError(
            f"teacher = {given!r} and teachers = {teachers!r} both given: teachers lists every teacher "
            "of the study (its first is the study's teacher); leave teacher out [--teacher, or teacher "
            "in the study file], or list it first in teachers."
        )
    return {**values, "teacher": teachers[0]}


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def absolute_paths(values: dict) -> dict:
    """The data folders, the teacher checkpoint, the student weights, the cache folder and the run
    folders' root (`out`) as absolute paths: Ray runs each trial in a folder of its own, where a
    path relative to the launching shell names nothing, or another folder (and a resumed study may
    be launched from elsewhere). Paths that are not strings are left to validation."""
    data, checkpoint = values.get("data"), values.get("teacher_checkpoint")
    weights, out = values.get("student_weights"), values.get("out", StudyConfig.out)
    if isinstance(out, str) and out:
        values = {**values, "out": _absolute(out)}
    if isinstance(data, str) and ":" in data:
        kind, _, location = data.partition(":")
        if location.strip():
            located = ",".join(_absolute(p) if p else p for p in location.split(","))
            values = {**values, "data": f"{kind}:{located}"}
    if isinstance(checkpoint, str) and checkpoint:
        values = {**values, "teacher_checkpoint": _absolute(checkpoint)}
    if isinstance(values.get("cache_dir"), str) and values["cache_dir"]:
        values = {**values, "cache_dir": _absolute(values["cache_dir"])}
    if isinstance(weights, dict):
        absolute = {m: _absolute(p) if isinstance(p, str) and p else p for m, p in weights.items()}
        values = {**values, "student_weights": absolute}
    return values


def validate(config: StudyConfig):
    """The study's search space (study.space.StudySpace), resolved once; every problem with the
    configuration and the space in one UserInputError."""
    found, space = problems(config), None
    if not found:  # the space needs known methods and known teachers
        from kd.models.registry import split_points
        from study.space import resolve_space_problems, with_teachers

        space, found = resolve_space_problems(config.methods, split_points(config.teacher), config.space)
        space = with_teachers(space, config)
        found += split_point_problems(config, space)
    if found:
        listing = "\n".join(f"  - {with_flag(problem)}" for problem in found)
        raise UserInputError(f"the study configuration has {len(found)} problem(s):\n{listing}")
    return space


def resumed(run_dir: Path, overrides: dict) -> StudyConfig:
    """The saved configuration of the study in `run_dir`, with the settings in RESUMABLE that
    `overrides` gives; another setting that differs from the saved one is refused, named."""
    saved = load(run_dir)
    given = {k: v for k, v in absolute_paths(overrides).items() if overrides.get(k) is not None}
    fixed = sorted(
        k for k, v in given.items() if k not in RESUMABLE and k in FIELDS and getattr(saved, k) != v
    )
    if fixed:
        listing = ", ".join(f"{k} (saved {getattr(saved, k)!r}, given {given[k]!r})" for k in fixed)
        raise UserInputError(
            f"--resume continues the study as it was started; it cannot change {listing}. "
            f"Resuming may change only {', '.join(RESUMABLE)}; start a new study (another --name) "
            "to change the rest."
        )
    return dataclasses.replace(saved, **{k: v for k, v in given.items() if k in RESUMABLE})


# How a run folder's trials are configured (2: each is a study.contract.TrialChoice). A study saved
# in another format is not resumed: Ray would restore trials configured in a way this code cannot read.
RUN_FORMAT = 2


def save(config: StudyConfig, run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CONFIG
    path.write_text(json.dumps({"run_format": RUN_FORMAT, **config.to_dict()}, indent=2) + "\n")
    return path


def load(run_dir: Path) -> StudyConfig:
    """The configuration a study was started with, to resume it."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise UserInputError(f"{run_dir} holds no study (no config.json); start it without --resume.")
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserInputError(
            f"{path} cannot be read ({err}): the file was cut short or is not the configuration a study "
            "writes; restore it from a copy, or start the study again under another --name."
        ) from None
    found = values.pop("run_format", 1)
    if found != RUN_FORMAT:
        raise UserInputError(
            f"{run_dir} was started by another version of SegKD Study (run format {found}; this one resumes "
            f"format {RUN_FORMAT}): continue it with the version that started it, or start a new study. "
            "Its tables stay readable: python -m analysis.report works on it."
        )
    return StudyConfig(**values)
