"""Every check of a study's configuration, each a named function returning the problems it
finds: the simple ones each field states (`field_problems`), then those across settings and
against the machine, the data and the registered methods and models. study.config.validate
runs them all and reports every problem at once.
"""

from __future__ import annotations

import functools
import math
import os
import re
import typing
from pathlib import Path

from kd.data.transforms import FRESH
from kd.errors import UserInputError
from kd.metrics import OBJECTIVES
from search_spaces.base import is_finite_number
from study.settings import FIELDS, TYPES, StudyConfig, flag


def _whole(value, low: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _finite_at_least(value, low: float = 0.0) -> bool:
    return is_finite_number(value) and value >= low


def field_problems(config: StudyConfig) -> list[str]:
    """The check each setting's field states (`setting`): one of its choices, a whole number >= its
    least (None where its type allows it), true or false for a switch."""
    found = []
    for name, spec in FIELDS.items():
        value, choices, least = getattr(config, name), spec.metadata["choices"], spec.metadata["least"]
        optional = type(None) in typing.get_args(TYPES[name])
        if choices is not None and value not in choices:
            found.append(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        elif least is not None and not (value is None and optional) and not _whole(value, least):
            note = f" ({spec.metadata['note']})" if spec.metadata["note"] else ""
            found.append(f"{name} must be a whole number >= {least}{note}, got {value!r}")
        elif TYPES[name] is bool and not isinstance(value, bool):
            found.append(f"{name} must be true or false, got {value!r}")
        elif (most := spec.metadata["most"]) is not None and _whole(value, 0) and value > most:
            found.append(
                f"{name} must be at most {most:,}, the most a study can reach in practice, got {value!r}"
            )
    return found


def problems(config: StudyConfig) -> list[str]:
    """Every problem with the configuration, cheapest checks first; nothing is trained or started."""
    found = import_plugins(config) + field_problems(config)  # plugins first: they add methods, models
    for check in (
        _study_problems,
        _training_problems,
        data_problems,
        _teacher_problems,
        teachers_problems,
        class_map_problems,
        _student_problems,
        _logger_problems,
        _resource_problems,
        _machine_memory_problems,
    ):
        found += check(config)
    return found


def _study_problems(config: StudyConfig) -> list[str]:
    """The name, the methods, and how trials are searched and stopped."""
    from kd.methods import RECIPES

    found = []
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", str(config.name)):
        found.append(f"name {config.name!r} must be a plain folder name (letters, digits, '_', '-', '.')")
    unknown = [m for m in config.methods if m not in RECIPES]
    if unknown or not config.methods:
        found.append(
            f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(RECIPES)}"
        )
    if (
        config.sampler != "grid"
        and _whole(config.trials)
        and config.methods
        and config.trials % len(config.methods)
    ):
        share = -(-config.trials // len(config.methods)) * len(config.methods)
        found.append(
            f"trials = {config.trials} cannot be shared equally by {len(config.methods)} methods; "
            f"give a multiple of {len(config.methods)} (e.g. {share}), so each method gets as many trials"
        )
    bad_objectives = [o for o in config.objectives if o not in OBJECTIVES]
    if bad_objectives or not config.objectives:
        found.append(f"objectives must be some of {', '.join(OBJECTIVES)}, got {config.objectives!r}")
    if config.scheduler == "asha" and (len(config.objectives) != 1 or config.sampler == "grid"):
        found.append(
            "scheduler 'asha' stops trials on one metric: "
            "use it with a single objective and a searching sampler"
        )
    if config.scheduler == "asha" and config.workers_per_trial != 1:
        found.append(
            "scheduler 'asha' reads every epoch's scores from a trial, which data-parallel trials do not "
            "send: use workers_per_trial = 1 with asha, or scheduler 'none'"
        )
    return found


def _training_problems(config: StudyConfig) -> list[str]:
    """Views, the data kept on the device, the shared augmentation and the epoch budget."""
    from kd.methods import RECIPES
    from kd.methods.recipes import AUGMENTATIONS

    found = []
    if config.views != FRESH and not _whole(config.views):
        found.append(f"views must be {FRESH!r} or a whole number >= 1, got {config.views!r}")
    if not (_finite_at_least(config.device_data_share) and config.device_data_share <= 1):
        found.append(f"device_data_share must be within [0, 1], got {config.device_data_share!r}")
    if config.augmentation is not None and config.augmentation not in AUGMENTATIONS:
        found.append(
            f"augmentation must be one of {', '.join(AUGMENTATIONS)} (or left out: each recipe's own), "
            f"got {config.augmentation!r}"
        )
    if _whole(config.epochs):  # a budget shared by the stages: each needs one epoch at least
        stages = {m: len(RECIPES[m]().stages) for m in config.methods if m in RECIPES}
        short = sorted(m for m, n in stages.items() if n > config.epochs)
        if short:
            found.append(
                f"epochs = {config.epochs} is each method's total over its stages, but "
                f"{', '.join(short)} need(s) {max(stages.values())} (one per stage); raise epochs"
            )
    return found


def _teacher_problems(config: StudyConfig) -> list[str]:
    """The one teacher: a known network, built from its seed or from a checkpoint that exists."""
    from kd.models.registry import STUDENTS, TEACHERS

    found = []
    if (
        not config.teachers
        and config.teacher not in TEACHERS
        and config.teacher not in STUDENTS
        and (":" not in config.teacher)
    ):
        found.append(
            f"unknown teacher {config.teacher!r}; choose from {', '.join(TEACHERS)}, a student network "
            f"({', '.join(STUDENTS)}) or HEAD:BACKBONE"
        )
    if config.teacher_init == "random" and config.teacher_checkpoint:
        found.append(
            "teacher_init = 'random' builds the teacher from its seed and ignores teacher_checkpoint: "
            "leave one of them out"
        )
    if config.teacher_checkpoint and not Path(config.teacher_checkpoint).is_file():
        found.append(f"teacher_checkpoint {config.teacher_checkpoint} does not exist")
    if not (_finite_at_least(config.teacher_jitter) and config.teacher_jitter <= 1):
        found.append(f"teacher_jitter must be within [0, 1] (0: none), got {config.teacher_jitter!r}")
    return found


def _student_problems(config: StudyConfig) -> list[str]:
    """`students` names known methods and students; `student_weights`, files that exist."""
    from kd.methods import RECIPES
    from kd.models.registry import STUDENTS, model_names

    found = []
    for method, student in config.students.items():
        if method not in RECIPES:
            found.append(f"[students] names unknown method {method!r}")
        if student not in model_names() and student not in STUDENTS and ":" not in student:
            found.append(
                f"[students] {method} = {student!r} is not a known student ({', '.join(STUDENTS)}, sd, ct)"
            )
    return found + _weights_problems(config, RECIPES)


def _logger_problems(config: StudyConfig) -> list[str]:
    from study.watch import logger_problems

    if not isinstance(config.callbacks, list):
        return [f"callbacks must be a list of logger names, got {config.callbacks!r}"]
    return logger_problems(config.callbacks, config.name)


def teachers_problems(config: StudyConfig) -> list[str]:
    """`teachers`: a list of known, distinct teacher names whose first is the study's `teacher`,
    each trained here (one checkpoint cannot be every teacher's)."""
    from kd.models.registry import STUDENTS, TEACHERS

    teachers = config.teachers
    if teachers is None:
        return []
    if not isinstance(teachers, list) or not teachers or not all(isinstance(t, str) for t in teachers):
        return [f'teachers must be a list of teacher names, e.g. teachers = ["a", "b"]; got {teachers!r}']
    found = []
    unknown = [t for t in teachers if t not in TEACHERS and t not in STUDENTS and ":" not in t]
    if unknown:
        found.append(
            f"teachers: unknown teacher(s) {', '.join(map(repr, unknown))}; choose from "
            f"{', '.join(TEACHERS)}, a student network ({', '.join(STUDENTS)}) or HEAD:BACKBONE"
        )
    twice = sorted({t for t in teachers if teachers.count(t) > 1})
    if twice:
        found.append(f"teachers names {', '.join(twice)} more than once; list each teacher once")
    if config.teacher != teachers[0]:
        found.append(
            f"teachers = {teachers!r} but teacher = {config.teacher!r}: the study's teacher is the first "
            "of teachers; leave teacher out"
        )
    if config.teacher_checkpoint and len(teachers) > 1:
        found.append(
            f"teachers lists {len(teachers)} teachers, but teacher_checkpoint is one teacher's weights: "
            "with several teachers each is trained here; leave teacher_checkpoint out, or study one teacher"
        )
    return found


def split_point_problems(config: StudyConfig, space) -> list[str]:
    """The split points a method's trials may pick come from the study's first teacher: each must
    exist in every teacher the method runs with."""
    from kd.models.registry import split_points

    found = []
    for method, teachers in space.teachers.items():
        wanted = [p for p in space.split_points(method) if p is not None]
        for teacher in teachers[1:]:
            missing = [p for p in wanted if p not in split_points(teacher)]
            if missing:
                found.append(
                    f"teachers: {teacher} has no split point {', '.join(missing)}, which {method}'s trials "
                    f"may pick (from {teachers[0]}); set [space.{method}] split_point to points every "
                    f"teacher offers ({teacher}: {', '.join(split_points(teacher))}), or choose teachers "
                    "of one family"
                )
    return found


def study_classes(config: StudyConfig) -> tuple[str, ...] | None:
    """The class names the study's data has, from its kind and label set (None: not known here)."""
    from kd.data.labels import BINARY_CLASSES, CAMVID, CITYSCAPES
    from kd.data.synthetic import SYNTHETIC_LABELS

    if config.label_set == "binary":
        return BINARY_CLASSES
    labels = {"synthetic": SYNTHETIC_LABELS, "camvid": CAMVID, "cityscapes": CITYSCAPES, "kitti": CITYSCAPES}
    if config.label_set != "full" or config.kind not in labels:
        return tuple(config.classes) if config.kind == "folder" and config.classes else None
    return labels[config.kind].classes


def class_map_problems(config: StudyConfig) -> list[str]:
    """teacher_class_map: a known map onto the study's classes, of a given checkpoint's classes; a
    checkpoint that predicts other classes than the study's (or the map's source) is named."""
    from kd.data.class_maps import CLASS_MAPS

    name, classes = config.teacher_class_map, study_classes(config)
    if name is not None and name not in CLASS_MAPS:
        return [
            f"teacher_class_map {name!r} is not a known class map; choose one of {', '.join(CLASS_MAPS)} "
            "(or register your own with kd.data.class_maps.register_class_map in a module of `imports`)"
        ]
    class_map = CLASS_MAPS.get(name)
    fitting = [n for n, m in CLASS_MAPS.items() if m.target == classes]
    found = []
    if class_map is not None and classes is not None and class_map.target != classes:
        found.append(
            f"teacher_class_map {name!r} maps onto {len(class_map.target)} classes "
            f"({', '.join(class_map.target)}), but the study's data has {len(classes)} "
            f"({', '.join(classes)}; label_set {config.label_set!r}): choose a map onto them "
            f"({', '.join(fitting) or 'none is shipped: register your own'})"
        )
    if class_map is not None and not config.teacher_checkpoint:
        found.append(
            f"teacher_class_map {name!r} maps the classes of a teacher trained elsewhere: give its "
            "weights as teacher_checkpoint (--teacher-checkpoint); a teacher trained here learns the "
            "study's classes and needs no map"
        )
    if not config.teacher_checkpoint or not Path(config.teacher_checkpoint).is_file() or classes is None:
        return found
    predicted = _checkpoint_classes(config, len(class_map.source) if class_map else len(classes))
    if isinstance(predicted, str) or predicted is None:
        return found + ([predicted] if predicted else [])
    if class_map is not None:
        found.append(
            f"teacher_class_map {name!r} maps {len(class_map.source)} classes, but teacher_checkpoint "
            f"{config.teacher_checkpoint} predicts {predicted}: "
            + (
                "the study's classes already, so leave teacher_class_map out"
                if predicted == len(classes)
                else "choose the map of its label set"
            )
        )
    elif readers := _logit_readers(config):
        fitting = [n for n in fitting if len(CLASS_MAPS[n].source) == predicted]
        found.append(
            f"teacher_checkpoint {config.teacher_checkpoint} predicts {predicted} classes, the study's data "
            f"has {len(classes)}: {', '.join(readers)} read the teacher's logits, which needs "
            f"teacher_class_map (--teacher-class-map), a map of its classes onto the study's "
            f"({', '.join(fitting) or 'shipped: ' + ', '.join(CLASS_MAPS)}); methods that distil "
            "features only (sd, esd, ifvd_ifv, ...) use such a teacher as it is"
        )
    return found


def _logit_readers(config: StudyConfig) -> list[str]:
    """The study's methods whose default recipe reads the teacher's logits, and "teacher_reference"
    when its scores are asked for: what a teacher of other classes cannot serve without a map."""
    from kd.methods import RECIPES, build_recipe

    readers = [
        method
        for method in config.methods
        if method in RECIPES
        and any("logits" in needs for needs in build_recipe(method).teacher_terms.values())
    ]
    return readers + ["teacher_reference"] * bool(config.teacher_reference)


def _checkpoint_classes(config: StudyConfig, expected: int) -> int | str | None:
    """How many classes the teacher checkpoint predicts when that is not `expected` (None: it fits,
    or differs in more than its classes, which loading it names); a problem (str) when the file
    cannot be read."""
    import torch

    from kd.models.checkpoints import checkpoint_classes
    from kd.models.registry import build_teacher, without_weights

    try:
        with torch.device("meta"):  # shapes only
            shell = build_teacher(config.teacher, expected, **without_weights(config.teacher))
    except UserInputError:
        return None  # an unknown teacher: named by its own problem
    try:
        return checkpoint_classes(shell, config.teacher_checkpoint)
    except UserInputError as err:
        return f"teacher_checkpoint: {str(err).rstrip('.')}"


def _weights_problems(config: StudyConfig, recipes) -> list[str]:
    if not isinstance(config.student_weights, dict):
        return [
            "student_weights must be a table of method = weights file, e.g. "
            f'[student_weights] ifvd = "resnet18_imagenet.pth"; got {config.student_weights!r}'
        ]
    found = []
    for method, path in config.student_weights.items():
        if method not in recipes:
            found.append(f"[student_weights] names unknown method {method!r}")
        if not isinstance(path, str) or not Path(path).is_file():
            found.append(
                f"[student_weights] {method} = {path!r}: no such file; give the path of a backbone's "
                "weights saved with torch.save(...state_dict(), PATH) (docs/guide/running.md: Student "
                "weights), or remove the entry to train that student from scratch"
            )
    return found


def import_plugins(config: StudyConfig) -> list[str]:
    """Import the study's `imports`; the problems, if any."""
    import importlib

    found = []
    for name in config.imports:
        try:
            importlib.import_module(name)
        except Exception as err:  # a plugin's own bug or a wrong name: both are the user's to fix
            found.append(
                f"imports: cannot import {name!r} ({type(err).__name__}: {err}); "
                "is its folder on PYTHONPATH on every node?"
            )
    return found


def data_problems(config: StudyConfig) -> list[str]:
    found = []
    from kd.data import DATA_KINDS

    if config.kind not in DATA_KINDS:
        kinds = ", ".join(DATA_KINDS)
        found.append(f"data {config.data!r}: the kind must be one of {kinds} (e.g. camvid:PATH)")
    elif config.kind != "synthetic":
        location = config.data.partition(":")[2]
        paths = location.split(",") if config.kind == "folder" else [location]
        if config.data.strip().lower() == "camvid":
            paths = []
            found.append(
                "data 'camvid' names no folder and none was found: set SEGKD_CAMVID=PATH or write "
                'data = "camvid:PATH" (the SegNet layout: train/, trainannot/, test/, ...)'
            )
        for path in paths:
            if not path or not Path(path).is_dir():
                found.append(f"data {config.data!r}: folder {path or '(none given)'} does not exist")
        if config.kind == "folder" and not config.classes:
            found.append("classes: folder data needs its class names, e.g. road,car,other")
    if config.label_set not in ("full", "binary"):
        found.append(f"label_set must be 'full' or 'binary', got {config.label_set!r}")
    for key in ("image_size", "crop"):
        value = getattr(config, key)
        if value is not None and not (
            isinstance(value, list) and len(value) == 2 and all(_whole(v) for v in value)
        ):
            found.append(f"{key} must be [height, width] in pixels, got {value!r}")
    return found


def _resource_problems(config: StudyConfig) -> list[str]:
    """What trials run on: the global batch split among workers, and CPUs, GPUs and waits as numbers."""
    found = []
    if (
        _whole(config.workers_per_trial)
        and _whole(config.batch_size)
        and config.batch_size % config.workers_per_trial
    ):
        found.append(
            f"batch_size = {config.batch_size} is the global batch, split equally among "
            f"workers_per_trial = {config.workers_per_trial} workers: make batch_size a multiple of "
            f"{config.workers_per_trial} (--batch-size) or change --workers-per-trial"
        )
    if not _finite_at_least(config.connect_timeout_s) or config.connect_timeout_s <= 0:
        found.append(f"connect_timeout_s must be a number of seconds > 0, got {config.connect_timeout_s!r}")
    if not _finite_at_least(config.resource_wait_s) or config.resource_wait_s <= 0:
        found.append(f"resource_wait_s must be a number of seconds > 0, got {config.resource_wait_s!r}")
    if config.cache_dir is not None and not isinstance(config.cache_dir, str):
        found.append(f"cache_dir must be a folder path, got {config.cache_dir!r}")
    if not _finite_at_least(config.cpus_per_trial) or config.cpus_per_trial <= 0:
        found.append(
            f"cpus_per_trial must be a number > 0 (fractions allowed), got {config.cpus_per_trial!r}"
        )
    if not _finite_at_least(config.gpus_per_trial):
        found.append(
            f"gpus_per_trial must be a number >= 0 (fractions allowed), got {config.gpus_per_trial!r}"
        )
    return found + _gpu_problems(config)


def _gpu_problems(config: StudyConfig) -> list[str]:
    """GPUs asked of a local Ray that this machine has not."""
    if (
        not _finite_at_least(config.gpus_per_trial)
        or config.gpus_per_trial <= 0
        or config.address is not None
    ):
        return []
    import torch

    available = torch.cuda.device_count()
    if available == 0:
        return [
            f"gpus_per_trial = {config.gpus_per_trial} but this machine has no GPU; "
            "use gpus_per_trial = 0 (CPU) or --address to join a cluster with GPUs"
        ]
    if config.gpus_per_trial > available:
        return [f"gpus_per_trial = {config.gpus_per_trial} but this machine has {available} GPU(s)"]
    return []


def with_flag(problem: str) -> str:
    """A problem that starts with a setting's name, told where to change it."""
    name = re.match(r"\[?([a-z_]+)", problem)
    name = name.group(1) if name else ""
    if name not in FIELDS or flag(name) in problem:
        return problem
    return f"{problem} [{flag(name)}, or {name} in the study file]"


PIXEL_BYTES = 4  # a decoded image's pixel: three uint8 channels and its uint8 label


def machine_memory() -> int:
    """This machine's physical memory in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _machine_memory_problems(config: StudyConfig) -> list[str]:
    """A local study's images, views and batch against this machine's memory, and a GPU trial's
    batch against its GPU's (a cluster's nodes are weighed once Ray has joined it:
    study.cluster.resource_problems)."""
    if config.address is not None:
        return []
    found = memory_problems(config, machine_memory(), "this machine")
    if _on_gpu(config) and not found:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_properties(0).total_memory * min(config.gpus_per_trial, 1)
            found = memory_problems(config, gpu, "a trial's share of the GPU", data=False)
    return found


def _on_gpu(config: StudyConfig) -> bool:
    return _finite_at_least(config.gpus_per_trial) and config.gpus_per_trial > 0


def memory_problems(config: StudyConfig, available: float, where: str, data: bool = True) -> list[str]:
    """Settings whose memory, estimated before anything is decoded or built, exceeds `available`
    bytes: the decoded images of every role in every view (`data`), and one forward of the teacher
    on a worker's share of the batch, which a GPU trial holds on its GPU instead. Both are lower
    bounds (students, optimisers and caches come on top), so what is refused can never fit."""
    if not (
        isinstance(config.image_size, list)
        and len(config.image_size) == 2
        and all(_whole(v) for v in config.image_size)
        and _whole(config.batch_size)
        and _whole(config.workers_per_trial)
    ):
        return []  # named by their own checks
    height, width = config.image_size
    counts = [getattr(config, f"{role}_images") for role in ("source", "target", "proximity", "val", "test")]
    images = max(1, sum(n for n in counts if _whole(n)))  # roles left at "all": not known before reading
    views = config.views if _whole(config.views) and config.views <= FIELDS["views"].metadata["most"] else 1
    decoded = images * height * width * PIXEL_BYTES * views if data else 0
    crop = config.crop if isinstance(config.crop, list) and all(_whole(v) for v in config.crop) else None
    batch = max(1, config.batch_size // config.workers_per_trial)
    forward = 0.0
    if not (data and _on_gpu(config)):
        forward = _forward_bytes_per_pixel(config.teacher) * math.prod(crop or config.image_size) * batch
    if decoded + forward <= available:
        return []
    gb = lambda n: f"{n / 1e9:,.1f} GB"  # noqa: E731
    parts = [f"{gb(forward)} for one forward of the teacher on a batch of {batch}"] if forward else []
    if data:
        parts.insert(
            0,
            f"{gb(decoded)} for {images} decoded images x {height} x {width} x {PIXEL_BYTES} bytes "
            f"x {views} view(s)",
        )
    return [
        f"image_size = {config.image_size!r} with batch_size = {config.batch_size} and views = "
        f"{config.views} needs at least {gb(decoded + forward)} of memory ({', '.join(parts)}), more than "
        f"{where}'s {gb(available)}: lower image_size (--image-size), batch_size (--batch-size) or "
        "views (--views)"
    ]


@functools.cache
def _forward_bytes_per_pixel(teacher: str) -> float:
    """Bytes per input pixel that one forward of `teacher` must hold at once, at the least: the
    largest layer's input and output together (a forward without gradients frees the rest as it
    goes). Measured on the meta device (shapes only, nothing allocated) at a small size;
    activations grow with the pixels. 0 where the teacher cannot be built here (its own check
    names it)."""
    import torch

    from kd.models.registry import build_teacher, without_weights

    size, total = (64, 64), [0]

    def nbytes(tensors) -> int:
        return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))

    def count(module, inputs, output):
        total[0] = max(total[0], nbytes(inputs) + nbytes([output]))

    try:
        with torch.device("meta"):
            model = build_teacher(teacher, 2, **without_weights(teacher)).eval()
        for module in model.modules():
            if not list(module.children()):
                module.register_forward_hook(count)
        with torch.no_grad():
            model(torch.zeros(1, 3, *size, device="meta"))
    except Exception:  # an unknown teacher or an operation without a meta kernel: no estimate
        return 0.0
    return total[0] / math.prod(size)
