"""A study's configuration: defaults < preset < study file (TOML) < command line, validated at once.

Every problem (unknown method or parameter, r < 0, a missing data path, a split point the
teacher lacks, GPUs that are not there) is collected and reported in one UserInputError
before Ray starts. The resolved configuration is saved in the run directory as
`config.json`, so `--resume` and the report know exactly what ran.

A study file holds the same keys as `StudyConfig`, plus a `none` list (the settings it sets to
None, which TOML cannot write: `none = ["epochs"]` for the recipes' own epochs), `[space.<method>]`
tables (fixed values, ranges or choices for that method's search space, see search_spaces), a
`[students]` table (the student per method) and a `[student_weights]` table (a backbone weights
file per method). A teacher checkpoint trained on another label set (Cityscapes' 19 classes for a
CamVid study) distils through `teacher_class_map`, a map of its classes onto the study's (README:
Teachers from another label set). The presets are study files too (study/presets/NAME.toml), a
starting point to copy:

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

import copy
import dataclasses
import json
import math
import os
import re
import tomllib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from kd.data.class_maps import CLASS_MAPS
from kd.data.transforms import FRESH
from kd.engine import AMP, EVALUATE
from kd.errors import UserInputError
from kd.metrics import OBJECTIVES
from kd.models.teacher_training import TRAINABLE as TEACHER_TRAINABLE

TEACHER_INITS = ("pretrained", "random")
SAMPLERS = ("tpe", "nsga2", "gp", "grid")
SCHEDULERS = ("none", "asha")
GROUPS = ("study", "data", "models", "training", "resources")  # --help's groups of settings, in order


def setting(default, group: str, help: str, *, choices=None, least: int | None = None, note: str = ""):
    """A StudyConfig field with everything about it: its default; its --help group and text; the
    simple check study files and flags are held to, one of `choices` or a whole number >= `least`
    (`note` says what its least means; None passes where the type allows it)."""
    metadata = {"group": group, "help": help, "choices": choices, "least": least, "note": note}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class StudyConfig:
    name: str = setting("default", "study", "the study's name: its folder under --out")
    out: str = setting("runs", "study", "where run folders go (default runs/)")
    methods: list[str] = setting(
        ["baseline", "sd", "esd", "ifvd_paper"],
        "study",
        "comma-separated recipes, e.g. baseline,sd,esd,ifvd (python -m kd.methods lists them)",
    )
    # Optuna trials over all methods, shared equally (a multiple of the number of methods; grid: ignored)
    trials: int = setting(
        12,
        "study",
        "Optuna trials over all methods, which take turns: a multiple of the number of methods",
        least=1,
    )
    # training seeds per trial; metrics are their mean and standard deviation
    seeds: int = setting(2, "study", "training seeds per trial (mean and std are reported)", least=1)
    seed: int = setting(0, "study", "the sampler's seed")
    # grid: an ablation, every method once at its defaults, no search
    sampler: str = setting(
        "tpe",
        "study",
        "tpe, nsga2 or gp (multi-objective), grid (every grid point once, no search)",
        choices=SAMPLERS,
    )
    objectives: list[str] = setting(
        ["miou_img"], "study", "comma-separated metrics to optimise (several: multi-objective)"
    )
    # asha: early stopping on the first seed's per-epoch metric
    scheduler: str = setting(
        "none", "study", "asha: stop poor trials early (one objective)", choices=SCHEDULERS
    )
    max_concurrent: int = setting(
        0,
        "resources",
        "at most this many trials at once (0: as resources allow)",
        least=0,
        note="0: no limit",
    )
    retries: int = setting(1, "resources", "runs again a trial whose worker or node died", least=0)
    # data
    data: str = setting(
        "synthetic",
        "data",
        "synthetic, camvid:PATH, cityscapes:PATH, kitti:PATH or folder:IMAGES_DIR,MASKS_DIR",
    )
    label_set: str = setting("binary", "data", "full (every class) or binary (road against the rest)")
    classes: list[str] | None = setting(None, "data", "folder data: comma-separated class names")
    image_size: list[int] = setting(
        [64, 128], "data", "HEIGHT,WIDTH: synthetic images are drawn at it, files resized to it"
    )
    crop: list[int] | None = setting(None, "data", "HEIGHT,WIDTH of the random training crop")
    hflip: bool = setting(True, "data", "random horizontal flips in training")
    # How many images each role gets (study.roles says which; None: every image its rule leaves)
    source_images: int | None = setting(
        64,
        "data",
        "images the teacher's head trains on (default: every one its rule leaves)",
        least=1,
        note="or left out for all",
    )
    target_images: int | None = setting(
        16, "data", "the few labelled target images students train on", least=1, note="or left out for all"
    )
    proximity_images: int | None = setting(
        32, "data", "ESD's unlabelled proximity images", least=1, note="or left out for all"
    )
    # selection: objectives, ASHA, the best trial
    val_images: int | None = setting(
        16,
        "data",
        "images that select: objectives, ASHA, each variant's chosen trial",
        least=1,
        note="or left out for all",
    )
    # the reported results, scored once the selection is made
    test_images: int | None = setting(
        16,
        "data",
        "images the chosen trials are reported on, once, at the end",
        least=1,
        note="or left out for all",
    )
    split_seed: int = setting(
        0, "data", "kitti and folder data: the shuffle that deals images to roles", least=0
    )
    # models
    teacher: str = setting(
        "deeplabv3_efficientnet_lite0",
        "models",
        "the teacher (python -m kd.models lists them; any named network)",
    )
    # A teacher axis: every method that uses a teacher runs once per teacher listed here (names as
    # `teacher` takes them); the first also shapes the students of the methods without one, and is
    # the study's `teacher`. None: the one `teacher`
    teachers: list[str] | None = setting(
        None,
        "models",
        "comma-separated teachers: a teacher axis, every method that uses a teacher run with each "
        "(the first is --teacher; README: Teacher strength as a study axis)",
    )
    teacher_checkpoint: str | None = setting(
        None,
        "models",
        "a trained teacher's weights, in SegKD's layout or a published one (torchvision, CIRKD, IFVD, "
        "SKD: README, Bring your own teacher); otherwise its head is trained",
    )
    # A checkpoint trained on another label set: the kd.data.class_maps map of its classes onto the
    # study's (e.g. "cityscapes-camvid11"); None: the checkpoint predicts the study's classes
    teacher_class_map: str | None = setting(
        None,
        "models",
        "a checkpoint trained on another label set: the map of its classes onto the study's, one of "
        f"{', '.join(CLASS_MAPS)} (README: Teachers from another label set)",
    )
    teacher_epochs: int = setting(3, "models", "epochs of the teacher's training", least=1)
    # "head" keeps the pretrained backbone frozen, "all" fine-tunes it
    teacher_trainable: str = setting(
        "head",
        "models",
        "what the teacher's training updates: head (backbone frozen) or all",
        choices=TEACHER_TRAINABLE,
    )
    # "random" is a control: its weights as initialised from `seed` (no pretrained file, no
    # training), so a method's gain from mimicking it is what more images or more steps alone
    # give, not the teacher's knowledge
    teacher_init: str = setting(
        "pretrained",
        "models",
        "pretrained (trained as teacher_trainable says) or random: a control teacher, initialised "
        "from the seed and never trained",
        choices=TEACHER_INITS,
    )
    # The teacher is trained only for methods that distil from it or start from its weights
    teacher_reference: bool = setting(
        False,
        "models",
        "train and score the teacher as the report's reference even when no method needs it",
    )
    # default: the recipe's student
    students: dict[str, str] = setting(
        {}, "models", "METHOD=STUDENT pairs, comma-separated: the student per method"
    )
    # Say, torchvision's ImageNet ResNet-18, saved where there is internet (README); nothing is
    # downloaded
    student_weights: dict[str, str] = setting(
        {}, "models", "METHOD=FILE pairs: backbone weights a method's student starts from"
    )
    # training
    # Each method's epochs in all, its stages sharing them in the recipe's proportions, so that
    # methods get the same number of optimiser steps (None: the recipes' own, 100 for every one)
    epochs: int | None = setting(
        20,
        "training",
        "each method's epochs over all its stages (an equal budget); default: the preset's",
        least=1,
        note="or left out for the recipes' own",
    )
    batch_size: int = setting(4, "training", "the (global) batch size", least=1)
    # "fresh" is how the reference scripts train; a bank is cheaper where the teacher's forward is
    # dear (CPUs)
    views: int | str = setting(
        FRESH,
        "training",
        "fresh (a new augmentation of every image at every epoch, the teacher online) or N (a fixed "
        "bank of N views per image, the teacher's outputs cached)",
    )
    # "stage": after every stage that trains the head, so the curves show what stage 3 adds
    evaluate: str = setting(
        "stage",
        "training",
        "when trials score the validation images: epoch, stage or end",
        choices=EVALUATE,
    )
    # One family for every method (kd.methods.recipes.AUGMENTATIONS), so that methods compared in
    # the study see the same training views
    augmentation: str | None = setting(
        None, "training", "one augmentation family for every method (default: each recipe's own)"
    )
    # resources: a trial runs on `workers_per_trial` workers, each with these CPUs and GPUs
    cpus_per_trial: float = setting(1.0, "resources", "CPU cores per trial worker")
    gpus_per_trial: float = setting(
        0.0, "resources", "GPUs per trial worker; fractions share a GPU (0.5: two trials each)"
    )
    # Ray Train's TorchTrainer (NCCL on GPUs, gloo on CPU): each worker takes a slice of every
    # batch, so batch_size is the global batch and must divide among them
    workers_per_trial: int = setting(
        1, "resources", "data-parallel workers per trial (Ray Train, DDP)", least=1
    )
    # pinned memory on CUDA
    num_workers: int = setting(
        0,
        "training",
        "DataLoader processes per trial worker (for data kept off the device)",
        least=0,
        note="0: load in the trial",
    )
    # CPU: always off; fp16 runs with a gradient scaler
    amp: str = setting(
        "bf16",
        "training",
        "mixed precision on CUDA: bf16, fp16 (with a gradient scaler) or off",
        choices=AMP,
    )
    device_data_share: float = setting(
        0.25,
        "training",
        "data taking at most this share of a trial device's memory is decoded there once and augmented "
        "there (0: DataLoader workers decode it every epoch)",
    )
    channels_last: bool = setting(
        False, "training", "channels-last memory format for the networks and images"
    )
    # minutes of compiling
    compile: bool = setting(False, "training", "torch.compile the student and the teacher")
    address: str | None = setting(
        None, "resources", "join an existing Ray cluster: 'auto' or HOST:PORT (default: a local Ray)"
    )
    # None: $SEGKD_CACHE, else ~/.cache/segkd, per machine; on a cluster, a folder every node sees,
    # filled once
    cache_dir: str | None = setting(
        None,
        "resources",
        "trained teachers and teacher-output caches (default $SEGKD_CACHE); shared on a cluster",
    )
    resource_wait_s: float = setting(
        300, "resources", "say so when trials have waited this many seconds for resources"
    )
    # false for a cluster an autoscaler grows: Ray does not say how far
    check_resources: bool = setting(
        True, "resources", "refuse trials no node can hold (--no-check-resources: a cluster that grows)"
    )
    space: dict[str, dict] = setting(
        {}, "study", "search-space settings as a TOML inline table: 'esd = {r = [0.0, 5.0]}'"
    )
    # Modules imported in the driver and in every trial before anything is built: a place for your
    # own students, teachers or loss terms (they register themselves in kd's dicts)
    imports: list[str] = setting(
        [], "study", "comma-separated Python modules imported first (your own parts)"
    )
    # Ray's loggers added to every study's TensorBoard event files (optional extras)
    callbacks: list[str] = setting(
        [], "study", "comma-separated loggers besides TensorBoard: mlflow, wandb (optional extras)"
    )

    @property
    def kind(self) -> str:
        return self.data.partition(":")[0].strip().lower()

    @property
    def teacher_names(self) -> list[str]:
        """Every teacher of the study, the study's `teacher` first."""
        return list(self.teachers) if self.teachers else [self.teacher]

    def for_teacher(self, name: str | None) -> StudyConfig:
        """This configuration as a study of the one teacher `name` (None: the study's own): what
        builds, trains, caches and scores that teacher."""
        return self if name is None or name == self.teacher else dataclasses.replace(self, teacher=name)

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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

FIELDS = {f.name: f for f in dataclasses.fields(StudyConfig)}
TYPES = typing.get_type_hints(StudyConfig)


def read_study_file(path: str | Path) -> dict:
    path = Path(path)
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


def _whole(value, low: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _number(value, low: float = 0.0) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= low
    )


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
    if not (_number(config.device_data_share) and config.device_data_share <= 1):
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
                "weights saved with torch.save(...state_dict(), PATH) (README: A study file), or remove "
                "the entry to train that student from scratch"
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
    if not _number(config.resource_wait_s) or config.resource_wait_s <= 0:
        found.append(f"resource_wait_s must be a number of seconds > 0, got {config.resource_wait_s!r}")
    if config.cache_dir is not None and not isinstance(config.cache_dir, str):
        found.append(f"cache_dir must be a folder path, got {config.cache_dir!r}")
    if not _number(config.cpus_per_trial) or config.cpus_per_trial <= 0:
        found.append(
            f"cpus_per_trial must be a number > 0 (fractions allowed), got {config.cpus_per_trial!r}"
        )
    if not _number(config.gpus_per_trial):
        found.append(
            f"gpus_per_trial must be a number >= 0 (fractions allowed), got {config.gpus_per_trial!r}"
        )
    return found + _gpu_problems(config)


def _gpu_problems(config: StudyConfig) -> list[str]:
    """GPUs asked of a local Ray that this machine has not."""
    if not _number(config.gpus_per_trial) or config.gpus_per_trial <= 0 or config.address is not None:
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


def flag(name: str) -> str:
    """A setting's command-line flag: `target_images` -> `--target-images`."""
    return "--" + name.replace("_", "-")


def with_flag(problem: str) -> str:
    """A problem that starts with a setting's name, told where to change it."""
    name = re.match(r"\[?([a-z_]+)", problem)
    name = name.group(1) if name else ""
    if name not in FIELDS or flag(name) in problem:
        return problem
    return f"{problem} [{flag(name)}, or {name} in the study file]"


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


# What --resume may change: where and how fast trials run, never what they compute (amp and
# augmentation-affecting settings are not here).
RESUMABLE = (
    "cpus_per_trial",
    "gpus_per_trial",
    "workers_per_trial",
    "address",
    "max_concurrent",
    "num_workers",
    "cache_dir",
    "resource_wait_s",
    "check_resources",
    "callbacks",
)


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
    path = run_dir / "config.json"
    path.write_text(json.dumps({"run_format": RUN_FORMAT, **config.to_dict()}, indent=2) + "\n")
    return path


def load(run_dir: Path) -> StudyConfig:
    """The configuration a study was started with, to resume it."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise UserInputError(f"{run_dir} holds no study (no config.json); start it without --resume.")
    values = json.loads(path.read_text())
    found = values.pop("run_format", 1)
    if found != RUN_FORMAT:
        raise UserInputError(
            f"{run_dir} was started by another version of SegKD Study (run format {found}; this one resumes "
            f"format {RUN_FORMAT}): continue it with the version that started it, or start a new study. "
            "Its tables stay readable: python -m analysis.report works on it."
        )
    return StudyConfig(**values)
