"""Every model by name: teachers, students, and SD students built from a teacher's split.

A plain dict per role, no framework, filled where each model is defined (kd.models finds every
module of its package; a plugin, kd.registry, or a study's `imports` adds its own). Names are
what study files and the CLI use; the roles share one set of names:

    @register_student("my_student")
    def my_student(num_classes: int) -> Segmenter: ...
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch

from kd.errors import UserInputError
from kd.models.backbones import list_backbones
from kd.models.segmenter import Segmenter
from kd.registry import register

DEFAULT_TEACHER = "deeplabv3_efficientnet_lite0"

TEACHERS: dict[str, Callable[..., Segmenter]] = {}
STUDENTS: dict[str, Callable[..., Segmenter]] = {}
# Built from a teacher split at a point: SD's group-conv student and the constructed teacher (CT).
SPLIT_STUDENTS: dict[str, Callable[..., Segmenter]] = {}
# Any torchvision classification backbone under a DeepLabV3 or PSP head: "deeplabv3:resnet34", "pspnet:vgg11".
HEADS: dict[str, Callable[..., Segmenter]] = {}


def register_teacher(name: str):
    """Decorator: `build(num_classes, **options) -> Segmenter` becomes teacher `name`."""
    return _registration(TEACHERS, "teacher", name)


def register_student(name: str):
    """Decorator: `build(num_classes, **options) -> Segmenter` becomes student `name`."""
    return _registration(STUDENTS, "student", name)


def register_split_student(name: str):
    """Decorator: `build(teacher, split_point, num_classes, **options) -> Segmenter` becomes
    student `name`, built from a teacher split at a point (as "sd" and "ct")."""
    return _registration(SPLIT_STUDENTS, "student", name)


def register_head(name: str):
    """Decorator: `build(backbone, num_classes, **options) -> Segmenter` builds "`name`:BACKBONE"
    for every torchvision backbone."""
    return lambda build: register(HEADS, "head", name, build)


def _registration(table: dict, role: str, name: str):
    def add(build: Callable[..., Segmenter]) -> Callable[..., Segmenter]:
        # One name, one model across the roles: model_names() and split_points() look in all of them.
        if any(other is not table and name in other for other in (TEACHERS, STUDENTS, SPLIT_STUDENTS)):
            raise UserInputError(
                f"{role} {name!r}: a model of another kind has that name already; choose another"
            )
        return register(table, role, name, build)

    return add


def model_names() -> dict[str, str]:
    names = {name: "teacher" for name in TEACHERS}
    names.update({name: "student" for name in STUDENTS})
    names.update({name: "student" for name in SPLIT_STUDENTS})
    return names


def _unknown(name: str, role: str) -> UserInputError:
    known = (
        list(TEACHERS) + list(STUDENTS)
        if role == "model"
        else list(TEACHERS if role == "teacher" else STUDENTS)
    )
    return UserInputError(
        f"unknown {role} {name!r}; choose one of {', '.join(known)}, or HEAD:BACKBONE with HEAD in "
        f"{', '.join(HEADS)} and a torchvision backbone ({', '.join(list_backbones())})."
    )


def _build_named(name: str, num_classes: int, table: dict, role: str, **options) -> Segmenter:
    if num_classes < 1:
        raise UserInputError(f"num_classes must be at least 1, got {num_classes}.")
    # A name is one network in every role: a teacher may be distilled into, a student may teach.
    other = STUDENTS if table is TEACHERS else TEACHERS
    if name in table or name in other:
        return (table if name in table else other)[name](num_classes, **options)
    head, colon, backbone = name.partition(":")
    if colon and head in HEADS:
        if backbone not in list_backbones():
            raise _unknown(name, role)
        return HEADS[head](backbone, num_classes, **options)
    raise _unknown(name, role)


def build_teacher(name: str = DEFAULT_TEACHER, num_classes: int = 2, **options) -> Segmenter:
    """A teacher by name; options go to its builder (e.g. checkpoint=PATH, pretrained=False)."""
    return _build_named(name, num_classes, TEACHERS, "teacher", **options)


def without_weights(teacher: str) -> dict:
    """The options that build `teacher` without reading its pretrained file: for shapes, FLOPs, or
    weights about to be replaced by a trained teacher's."""
    build = TEACHERS.get(teacher)
    return {"pretrained": False} if build and "pretrained" in inspect.signature(build).parameters else {}


def build_student(
    name: str, num_classes: int, teacher: Segmenter | None = None, split_point: str | None = None, **options
) -> Segmenter:
    """A student by name. "sd" and "ct" are built from `teacher` split at `split_point`; the SD
    student takes its capacity as options (capacity=, groups=, output_stride=, head_width=, head_groups=)."""
    if name in SPLIT_STUDENTS:
        if teacher is None or split_point is None:
            raise UserInputError(
                f"student {name!r} is built from a teacher's split: pass teacher= and split_point=."
            )
        return SPLIT_STUDENTS[name](teacher, split_point, num_classes, **options)
    return _build_named(name, num_classes, STUDENTS, "student", **options)


def split_points(name: str) -> list[str]:
    """The split points of a teacher or student architecture (built on the meta device: no memory,
    no weights)."""
    builder = _builder(name)
    if builder is None:  # unknown: building it raises the error that names the choices
        return _split_points(name)
    key = (name, builder)
    if key not in _SPLIT_POINTS:
        _SPLIT_POINTS[key] = tuple(_split_points(name))
    return list(_SPLIT_POINTS[key])


# A network's split points, per name and builder: building one (dilating a teacher) takes a
# good part of a second, and validation asks for the same few again and again. Keyed on the
# builder too, so that a name registered again is built again.
_SPLIT_POINTS: dict[tuple[str, Callable], tuple[str, ...]] = {}


def _builder(name: str) -> Callable | None:
    """What builds `name`: its registered builder, or for HEAD:BACKBONE its head's."""
    for table in (TEACHERS, STUDENTS):
        if name in table:
            return table[name]
    head, colon, _ = name.partition(":")
    return HEADS.get(head) if colon else None


def _split_points(name: str) -> list[str]:
    options = without_weights(name)
    with torch.device("meta"):
        return _build_named(name, 2, TEACHERS, "model", **options).split_points
