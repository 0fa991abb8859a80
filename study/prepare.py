"""What a study prepares once, on the driver, for all its trials.

The datasets (every file decoded once, so a corrupt one stops the study before Ray starts), the
teacher (loaded from a checkpoint or its head trained on the source images, content-hashed and
reused across studies), a check that every `student_weights` file fits its student, the
validation samples the report draws, the teacher-output caches of
every (method, split point) the study may pick, and the teacher's own scores. A study with several
`teachers` does all of this once per teacher. Trials get the teachers' weights through Ray's object
store and find the caches filled.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import kd.methods
from kd.data import PairedTransform
from kd.data.class_maps import CLASS_MAPS
from kd.engine import Engine, RunData, RunSettings, evaluate
from kd.errors import UserInputError
from kd.io import atomic_write
from kd.methods import build_recipe
from kd.methods.recipes import AUGMENTATIONS
from kd.metrics import count_flops, count_parameters
from kd.models import build_student, build_teacher, fit_teacher, load_checkpoint
from kd.models.checkpoints import checkpoint_classes, load_backbone_weights, state_classes
from kd.models.class_map import with_class_map
from kd.models.registry import SPLIT_STUDENTS, without_weights
from kd.models.teacher_training import TeacherTraining
from kd.run_folder import ROLES, SAMPLES, TEACHER
from study.config import StudyConfig
from study.contract import TrialChoice
from study.roles import open_roles
from study.space import StudySpace

DISPLAY_WIDTH = 256  # samples and predictions are stored at most this wide: enough to look at, small on disk


@dataclass(frozen=True)
class Shared:
    """What every trial receives: the study's teacher's weights and the number of classes.
    `teacher_trained`: False when no method needed the teacher's weights (its state is then an
    untrained shell's, which split students read only for their architecture). `teacher_states`:
    the weights of every other teacher of the study's `teachers`, by name."""

    teacher_state: dict
    num_classes: int
    teacher_trained: bool = True
    teacher_states: dict[str, dict] = field(default_factory=dict)

    def state_of(self, teacher: str | None) -> dict:
        """The weights of `teacher` (None: the study's teacher)."""
        return self.teacher_states.get(teacher, self.teacher_state) if teacher else self.teacher_state


def teacher_users(config: StudyConfig) -> list[str]:
    """The study's methods that need the teacher's trained weights (kd.methods.teacher_users)."""
    return kd.methods.teacher_users(config.methods, config.students)


def teacher_needed(config: StudyConfig) -> bool:
    """Some method needs its weights, its reference scores are asked for, or a checkpoint of it is
    given (loading one costs no training, and a broken file should be named, not ignored)."""
    return bool(teacher_users(config)) or config.teacher_reference or bool(config.teacher_checkpoint)


def _resize(config: StudyConfig):
    # Synthetic images are drawn at image_size; files are resized to it.
    return None if config.kind == "synthetic" or not config.image_size else tuple(config.image_size)


def recipe_for(config: StudyConfig, method: str, overrides: dict | None = None):
    """The method's recipe with the study's budget (each method's epochs in all), its augmentation
    when the study sets one for all, and `overrides`."""
    recipe = build_recipe(
        method, ({"total_epochs": config.epochs} if config.epochs else {}) | (overrides or {})
    )
    return dataclasses.replace(recipe, augmentation=config.augmentation) if config.augmentation else recipe


def needed_roles(config: StudyConfig) -> tuple[str, ...]:
    """Target, val and test; proximity when some method's recipe reads the mixed stream; source
    when the teacher's head is trained here."""
    mixed = any(recipe_for(config, method).needs_proximity for method in config.methods)
    trains_teacher = (
        teacher_needed(config) and not config.teacher_checkpoint and config.teacher_init != "random"
    )
    return ("target", "val", "test") + ("proximity",) * mixed + ("source",) * trains_teacher


def eval_transform(config: StudyConfig) -> PairedTransform:
    """How every scored image is prepared: resized to the study's size, never augmented."""
    return PairedTransform(resize=_resize(config), normalize=False)


def family_views(config: StudyConfig, family: str):
    """An augmentation family's random steps (kd.methods.recipes.AUGMENTATIONS) in this study. The
    crop is the study's `crop`; a family with a random scale crops to `image_size` when `crop` is
    unset, so every view has one size. `hflip = false` turns every family's flip off."""
    augmentation = AUGMENTATIONS[family]
    crop = augmentation.crop or config.crop or (config.image_size if augmentation.scale else None)
    return dataclasses.replace(
        augmentation, crop=tuple(crop) if crop else None, hflip=augmentation.hflip and config.hflip
    )


def train_transform(config: StudyConfig, recipe) -> PairedTransform:
    """How `recipe` sees its training images: resized to the study's size, then its augmentation
    family's random steps (family_views)."""
    views = family_views(config, recipe.augmentation)
    return PairedTransform.from_augmentation(views, resize=_resize(config), normalize=False)


def teacher_training(config: StudyConfig, teacher, family: str | None = None):
    """How the study trains its teacher: (TeacherTraining, the transform of its source images:
    resized, flipped unless `hflip = false`, jittered by `teacher_jitter`). `family`: an augmentation
    family's random steps instead, for benchmarks/teacher_strength.py to ask whether they help."""
    settings = TeacherTraining(
        trainable=config.teacher_trainable, epochs=config.teacher_epochs, batch_size=config.batch_size
    )
    normalise = {"mean": teacher.input_mean, "std": teacher.input_std, "channels": teacher.input_channels}
    if family is None:
        return settings, PairedTransform(
            resize=_resize(config), hflip=config.hflip, jitter=config.teacher_jitter, **normalise
        )
    views = dataclasses.replace(family_views(config, family), jitter=config.teacher_jitter)
    return settings, PairedTransform.from_augmentation(views, resize=_resize(config), **normalise)


def open_data(config: StudyConfig, roles: dict | None = None) -> RunData:
    """The study's datasets and eval transform (each model normalises its own copy). Methods train
    with their own augmentation, so the train transform here is the eval one until recipe_data
    gives a recipe its own."""
    roles = roles or open_roles(config, needed_roles(config))
    return RunData(
        target=roles["target"],
        val=roles["val"],
        proximity=roles.get("proximity"),
        train_transform=eval_transform(config),
        eval_transform=eval_transform(config),
        test=roles.get("test"),  # only the feature ratio reads it in trials (kd.engine.RunData)
    )


def recipe_data(config: StudyConfig, data: RunData, recipe) -> RunData:
    """`data` with `recipe`'s train transform."""
    return dataclasses.replace(data, train_transform=train_transform(config, recipe))


def verify_data(data: RunData, say=print, test=None) -> None:
    """Decode every image and mask from files now (`test`: that role's dataset too): a corrupt file
    stops the study before Ray starts, named."""
    for dataset in (data.target, data.val, data.proximity, test):
        if dataset is not None and hasattr(dataset, "verify"):
            started = time.perf_counter()
            dataset.verify()
            say(f"checked {len(dataset)} {dataset.name} images in {time.perf_counter() - started:.1f} s")


def teacher_classes(config: StudyConfig, num_classes: int, state: dict | None = None) -> int:
    """How many classes the study's teacher weights predict: its class map's source classes, else
    those of `state` or of `teacher_checkpoint` when they differ from the study's `num_classes` only
    in the classifiers (a teacher of another label set, which feature-level terms distil from as it
    is), else `num_classes`."""
    if config.teacher_class_map:
        return len(CLASS_MAPS[config.teacher_class_map].source)
    if state is None and not config.teacher_checkpoint:
        return num_classes
    with torch.device("meta"):  # shapes only
        shell = build_teacher(config.teacher, num_classes=num_classes, **without_weights(config.teacher))
    found = (
        state_classes(shell, state)
        if state is not None
        else checkpoint_classes(shell, config.teacher_checkpoint)
    )
    return found or num_classes


def teacher_shell(config: StudyConfig, num_classes: int, state: dict | None = None):
    """The study's teacher: `state` (the weights prepare_teacher gives) loaded, then the study's
    teacher_class_map applied, so that it predicts the study's `num_classes`; without a map, a
    teacher of another label set keeps its own classes (feature-level terms only)."""
    # The ImageNet weights would be overwritten at once by the study's teacher weights.
    options = without_weights(config.teacher)
    teacher = build_teacher(
        config.teacher, num_classes=teacher_classes(config, num_classes, state), **options
    )
    if state is not None:
        teacher.load_state_dict(state)
    if config.teacher_class_map:
        with_class_map(teacher, CLASS_MAPS[config.teacher_class_map])
    return teacher


def cache_folders(config: StudyConfig) -> tuple[Path | None, Path | None]:
    """(trained teachers, teacher-output caches) under the study's `cache_dir`; (None, None): kd's
    defaults under $SEGKD_CACHE."""
    if not config.cache_dir:
        return None, None
    return Path(config.cache_dir) / "teachers", Path(config.cache_dir) / "teacher_outputs"


def prepare_teacher(
    config: StudyConfig, num_classes: int, say=print, source=None, device: str = "cpu"
) -> dict:
    """The teacher's weights: from `teacher_checkpoint`, else trained (its head, or all of it) on the
    source images (cached; `source`: that role's dataset when the caller has it open). With a
    teacher_class_map they predict the map's source classes (teacher_shell maps them)."""
    torch.manual_seed(config.seed)  # the head's initial weights are part of the teacher's content hash
    if config.teacher_init == "random":
        teacher = build_teacher(
            config.teacher,
            num_classes=teacher_classes(config, num_classes),
            **without_weights(config.teacher),
        )
        say(f"teacher {config.teacher}: random weights from seed {config.seed}, never trained (a control)")
        return {name: value.detach().cpu() for name, value in teacher.state_dict().items()}
    teacher = build_teacher(config.teacher, num_classes=teacher_classes(config, num_classes))
    if config.teacher_checkpoint:
        load_checkpoint(teacher, config.teacher_checkpoint)
        say(f"teacher {config.teacher}: loaded {config.teacher_checkpoint}")
    else:
        source = open_roles(config, ("source",))["source"] if source is None else source
        settings, transform = teacher_training(config, teacher)
        fit_teacher(
            teacher,
            source,
            settings,
            transform=transform,
            cache_dir=cache_folders(config)[0],
            device=device,
            progress=say,
        )
    return {name: value.detach().cpu() for name, value in teacher.state_dict().items()}


def student_for(
    config: StudyConfig, choice: TrialChoice, recipe, teacher, num_classes: int, load_weights: bool = False
):
    """The student `choice` trains: the study's per-method student, else the recipe's; the SD
    student's capacity comes from the choice's "student.<option>" overrides. `load_weights`: the
    study's `student_weights` for the method, if any, loaded into its backbone (callers that load a
    trained student's weights afterwards leave it off)."""
    name = config.students.get(choice.method, recipe.student)
    if name in SPLIT_STUDENTS:
        options = choice.student_options if name == "sd" else {}
        student = build_student(
            name,
            num_classes,
            teacher=teacher,
            split_point=choice.split_point or teacher.split_points[-1],
            **options,
        )
    else:
        student = build_student(name, num_classes)
    path = config.student_weights.get(choice.method)
    if load_weights and path:
        try:
            load_backbone_weights(student, path)
        except UserInputError as err:
            raise UserInputError(f"[student_weights] {choice.method}: {err}") from None
    return student


def check_student_weights(config: StudyConfig, teacher, num_classes: int) -> None:
    """Load every method's `student_weights` once: a file that does not fit its student stops the
    study here, before any trial runs."""
    for method in config.methods:
        if method in config.student_weights:
            recipe = recipe_for(config, method)
            student_for(config, TrialChoice(method, {}), recipe, teacher, num_classes, load_weights=True)


def settings_for(config: StudyConfig, seed: int, device: str, evaluate: str | None = None) -> RunSettings:
    return RunSettings(
        batch_size=config.batch_size,
        seed=seed,
        device=device,
        views=config.views,
        evaluate=evaluate or config.evaluate,
        amp=config.amp,
        num_workers=config.num_workers,
        device_data_share=config.device_data_share,
        channels_last=config.channels_last,
        compile=config.compile,
    )


def fill_caches(
    config: StudyConfig,
    teacher,
    data: RunData,
    choices: list[TrialChoice],
    num_classes: int,
    say=print,
    device: str = "cpu",
) -> int:
    """Compute, once per study, the teacher outputs that `choices` read from `teacher`: one cache
    per (method, split point, domain), shared by every trial that reads it. `config`: the study
    of that one teacher (StudyConfig.for_teacher)."""
    forwards, seen = 0, set()
    for method, point in dict.fromkeys((c.method, c.split_point) for c in choices):
        recipe = recipe_for(config, method)
        if not recipe.needs_teacher:
            continue
        student = student_for(config, TrialChoice(method, {}, point), recipe, teacher, num_classes)
        engine = Engine(
            recipe,
            student,
            teacher,
            recipe_data(config, data, recipe),
            settings_for(config, 0, device),
            progress=None,
            cache_root=cache_folders(config)[1],
        )
        for cache in engine.caches.values():
            if cache.key not in seen:
                seen.add(cache.key)
                if cache.missing:
                    forwards += cache.fill(batch_size=config.batch_size, progress=None)
    say(
        f"teacher-output caches: {len(seen)} (method x split point x domain) of {config.teacher}, "
        f"{forwards} teacher forwards"
    )
    return forwards


def cache_choices(config: StudyConfig, space: StudySpace) -> list[TrialChoice]:
    """One choice per (method, split point, teacher) the study may train: a grid's own points, or
    every point a search may pick."""
    if config.sampler == "grid":
        return space.grid()
    return [
        TrialChoice(m, {}, point, teacher=teacher)
        for m in space.methods
        for point in space.split_points(m)
        for teacher in space.teachers.get(m) or (None,)
    ]


def _display_size(height: int, width: int) -> tuple[int, int]:
    scale = min(1.0, DISPLAY_WIDTH / width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def to_display(labels: torch.Tensor) -> np.ndarray:
    """[N,H,W] class maps shrunk (nearest) to the display size, as uint8."""
    size = _display_size(*labels.shape[-2:])
    shrunk = F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0]
    return shrunk.to(torch.uint8).numpy()


def save_samples(data: RunData, path) -> None:
    """The validation images and ground truth as trials see them, for the report's segmentation figures."""
    samples = [data.eval_transform(data.val[i]) for i in range(len(data.val))]
    images = torch.stack([s["image"].as_subclass(torch.Tensor) for s in samples])
    masks = torch.stack([s["mask"].as_subclass(torch.Tensor) for s in samples])
    size = _display_size(*images.shape[-2:])
    small = F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)
    pixels = (small.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    arrays = {
        "ids": np.array([s["id"] for s in samples]),
        "images": pixels,
        "masks": to_display(masks.clamp(0, 255)),
        "classes": np.array(data.val.classes),
    }

    def write(partial: Path) -> None:
        with open(partial, "wb") as handle:  # a handle: given a name, numpy would add ".npz" to it
            np.savez_compressed(handle, **arrays)

    atomic_write(path, write)


def save_roles(roles: dict, path: Path) -> None:
    """Which images played which role: {role: {"dataset", "ids"}}, for readers to check the protocol."""
    record = {role: {"dataset": data.name, "ids": data.ids} for role, data in roles.items()}
    path.write_text(json.dumps(record, indent=1) + "\n")


def evaluate_teacher(config: StudyConfig, teacher, data: RunData, device: str = "cpu") -> dict:
    """The teacher's own scores on the validation images, the reference every student is read against."""
    metrics, _ = evaluate(teacher, data.val, data.eval_transform, config.batch_size, device)
    size = data.val[0]["image"].shape[-2:]
    return {
        "name": teacher.name,
        **metrics,
        "params": count_parameters(teacher),
        "flops": count_flops(teacher, (1, 3, *size)),
    }


def write_teacher_scores(config: StudyConfig, records: dict[str, dict], run_dir) -> None:
    """run_dir/teacher.json: the study's teacher's record; with a teacher axis (`teachers`), every
    teacher's under "teachers", by name, as well (readers of one teacher keep reading the first)."""
    if not records:
        return
    first = records.get(config.teacher, next(iter(records.values())))
    record = {**first, "teachers": records} if config.teachers else first
    (Path(run_dir) / TEACHER).write_text(json.dumps(record, indent=2) + "\n")


def check_files(config: StudyConfig, say=print) -> None:
    """Decode every file the study reads: on the driver, seconds, before Ray starts."""
    roles = open_roles(config, needed_roles(config))
    verify_data(open_data(config, roles), say, roles["test"])


def prepare(
    config: StudyConfig,
    space: StudySpace,
    run_dir: Path,
    verified: bool = False,
    say=print,
    device: str = "cpu",
) -> Shared:
    """Check the data, train (or load) the teacher, save samples, fill the teacher-output caches,
    score the teacher, on `device`. The datasets and the teacher are dropped when this returns, so
    the driver does not hold them while the trials run (study.tasks runs this as a Ray task on GPUs).
    `verified`: check_files has decoded every file already."""
    roles = open_roles(config, needed_roles(config))
    data = open_data(config, roles)
    if not verified:
        verify_data(data, say, roles["test"])
    save_roles(roles, run_dir / ROLES)
    num_classes = data.target.num_classes
    save_samples(data, run_dir / SAMPLES)
    if not teacher_needed(config):
        say(
            f"teacher {config.teacher}: not trained: no method distils from it or starts from its weights "
            "(teacher_reference = true, --teacher-reference, trains and scores it as the report's reference)"
        )
        teacher = teacher_shell(config, num_classes)
        check_student_weights(config, teacher, num_classes)
        return Shared(teacher.state_dict(), num_classes, teacher_trained=False)
    users, choices = teacher_users(config), cache_choices(config, space)
    states, records = {}, {}
    for name in config.teacher_names:  # each teacher once: trained or loaded, cached, scored
        mine = config.for_teacher(name)
        say(
            f"teacher {name}: needed by {', '.join(users)}"
            if users
            else "teacher: the report's reference" + (f" ({name})" if config.teachers else "")
        )
        states[name] = prepare_teacher(mine, num_classes, say=say, source=roles.get("source"), device=device)
        teacher = teacher_shell(mine, num_classes, states[name]).to(device).eval()
        if name == config.teacher:
            check_student_weights(config, teacher, num_classes)
        theirs = [c for c in choices if (c.teacher or config.teacher) == name]
        fill_caches(mine, teacher, data, theirs, num_classes, say=say, device=device)
        if teacher.num_classes != num_classes:
            say(
                f"teacher {teacher.name}: predicts {teacher.num_classes} classes, the study's data has "
                f"{num_classes}; without a teacher_class_map its scores on them are undefined: not scored"
            )
            continue
        records[name] = scores = evaluate_teacher(mine, teacher, data, device)
        say(
            f"teacher {name} on the validation images: miou {scores['miou']:.3f}, miou_img "
            f"{scores['miou_img']:.3f}, hp_acc {scores['hp_acc']:.2f}, var {scores['var']:.4f}"
        )
    write_teacher_scores(config, records, run_dir)
    others = {name: state for name, state in states.items() if name != config.teacher}
    return Shared(states[config.teacher], num_classes, teacher_states=others)
