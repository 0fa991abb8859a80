"""Every StudyConfig setting as a command-line flag, generated from the dataclass.

The flag is the setting's name with dashes (`target_images` -> `--target-images`); its value is
parsed from the setting's type: lists comma-separated (`--methods sd,esd`, `--image-size
180,240`), tables as KEY=VALUE pairs (`--students ifvd=pspnet_resnet18`), the search space as a
TOML inline table (`--space 'esd = {r = [0.0, 5.0]}'`), booleans as `--hflip` / `--no-hflip`.
SETTINGS says each setting's group in `--help` and what it does; a setting without an entry
fails the test suite, so every new setting gets a flag.
"""

from __future__ import annotations

import argparse
import tomllib
import types
import typing

from kd.data.class_maps import CLASS_MAPS
from kd.data.transforms import FRESH
from study.config import AMP, EVALUATE, SAMPLERS, SCHEDULERS, TEACHER_INITS, StudyConfig, flag

SETTINGS: dict[str, tuple[str, str]] = {
    "name": ("study", "the study's name: its folder under --out"),
    "out": ("study", "where run folders go (default runs/)"),
    "methods": (
        "study",
        "comma-separated recipes, e.g. baseline,sd,esd,ifvd (python -m kd.methods lists them)",
    ),
    "trials": (
        "study",
        "Optuna trials over all methods, which take turns: a multiple of the number of methods",
    ),
    "seeds": ("study", "training seeds per trial (mean and std are reported)"),
    "seed": ("study", "the sampler's seed"),
    "sampler": ("study", "tpe, nsga2 or gp (multi-objective), grid (every grid point once, no search)"),
    "objectives": ("study", "comma-separated metrics to optimise (several: multi-objective)"),
    "scheduler": ("study", "asha: stop poor trials early (one objective)"),
    "space": ("study", "search-space settings as a TOML inline table: 'esd = {r = [0.0, 5.0]}'"),
    "imports": ("study", "comma-separated Python modules imported first (your own parts)"),
    "callbacks": ("study", "comma-separated loggers besides TensorBoard: mlflow, wandb (optional extras)"),
    "data": ("data", "synthetic, camvid:PATH, cityscapes:PATH, kitti:PATH or folder:IMAGES_DIR,MASKS_DIR"),
    "label_set": ("data", "full (every class) or binary (road against the rest)"),
    "classes": ("data", "folder data: comma-separated class names"),
    "image_size": ("data", "HEIGHT,WIDTH: synthetic images are drawn at it, files resized to it"),
    "crop": ("data", "HEIGHT,WIDTH of the random training crop"),
    "hflip": ("data", "random horizontal flips in training"),
    "source_images": ("data", "images the teacher's head trains on (default: every one its rule leaves)"),
    "target_images": ("data", "the few labelled target images students train on"),
    "proximity_images": ("data", "ESD's unlabelled proximity images"),
    "val_images": ("data", "images that select: objectives, ASHA, each variant's chosen trial"),
    "test_images": ("data", "images the chosen trials are reported on, once, at the end"),
    "split_seed": ("data", "kitti and folder data: the shuffle that deals images to roles"),
    "teacher": ("models", "the teacher (python -m kd.models lists them; any named network)"),
    "teachers": (
        "models",
        "comma-separated teachers: a teacher axis, every method that uses a teacher run with each "
        "(the first is --teacher; README: Teacher strength as a study axis)",
    ),
    "teacher_checkpoint": (
        "models",
        "a trained teacher's weights, in SegKD's layout or a published one (torchvision, CIRKD, IFVD, "
        "SKD: README, Bring your own teacher); otherwise its head is trained",
    ),
    "teacher_class_map": (
        "models",
        "a checkpoint trained on another label set: the map of its classes onto the study's, one of "
        f"{', '.join(CLASS_MAPS)} (README: Teachers from another label set)",
    ),
    "teacher_epochs": ("models", "epochs of the teacher's training"),
    "teacher_trainable": ("models", "what the teacher's training updates: head (backbone frozen) or all"),
    "teacher_init": (
        "models",
        "pretrained (trained as teacher_trainable says) or random: a control teacher, initialised "
        "from the seed and never trained",
    ),
    "teacher_reference": (
        "models",
        "train and score the teacher as the report's reference even when no method needs it",
    ),
    "students": ("models", "METHOD=STUDENT pairs, comma-separated: the student per method"),
    "student_weights": ("models", "METHOD=FILE pairs: backbone weights a method's student starts from"),
    "epochs": (
        "training",
        "each method's epochs over all its stages (an equal budget); default: the preset's",
    ),
    "batch_size": ("training", "the (global) batch size"),
    "views": (
        "training",
        "fresh (a new augmentation of every image at every epoch, the teacher online) or N (a fixed "
        "bank of N views per image, the teacher's outputs cached)",
    ),
    "evaluate": ("training", "when trials score the validation images: epoch, stage or end"),
    "augmentation": ("training", "one augmentation family for every method (default: each recipe's own)"),
    "amp": ("training", "mixed precision on CUDA: bf16, fp16 (with a gradient scaler) or off"),
    "num_workers": ("training", "DataLoader processes per trial worker (for data kept off the device)"),
    "device_data_share": (
        "training",
        "data taking at most this share of a trial device's memory is decoded there once and augmented "
        "there (0: DataLoader workers decode it every epoch)",
    ),
    "channels_last": ("training", "channels-last memory format for the networks and images"),
    "compile": ("training", "torch.compile the student and the teacher"),
    "cpus_per_trial": ("resources", "CPU cores per trial worker"),
    "gpus_per_trial": ("resources", "GPUs per trial worker; fractions share a GPU (0.5: two trials each)"),
    "workers_per_trial": ("resources", "data-parallel workers per trial (Ray Train, DDP)"),
    "max_concurrent": ("resources", "at most this many trials at once (0: as resources allow)"),
    "retries": ("resources", "runs again a trial whose worker or node died"),
    "address": ("resources", "join an existing Ray cluster: 'auto' or HOST:PORT (default: a local Ray)"),
    "cache_dir": (
        "resources",
        "trained teachers and teacher-output caches (default $SEGKD_CACHE); shared on a cluster",
    ),
    "resource_wait_s": ("resources", "say so when trials have waited this many seconds for resources"),
    "check_resources": (
        "resources",
        "refuse trials no node can hold (--no-check-resources: a cluster that grows)",
    ),
}
GROUPS = ("study", "data", "models", "training", "resources")
CHOICES = {
    "sampler": SAMPLERS,
    "scheduler": SCHEDULERS,
    "evaluate": EVALUATE,
    "amp": AMP,
    "teacher_init": TEACHER_INITS,
}


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _numbers(text: str) -> list[int]:
    try:
        return [int(item) for item in _items(text.replace("x", ","))]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHT,WIDTH in pixels, got {text!r}") from None


def _pairs(text: str) -> dict[str, str]:
    pairs = [item.partition("=") for item in _items(text)]
    if any(not key or not value for key, _, value in pairs):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE pairs, comma-separated, got {text!r}")
    return {key.strip(): value.strip() for key, _, value in pairs}


def _toml(text: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise argparse.ArgumentTypeError(f"expected TOML such as 'esd = {{r = [0.0, 5.0]}}': {err}") from None


def _views(text: str) -> int | str:
    if text.strip() == FRESH:
        return FRESH
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {FRESH!r} or a whole number of views, got {text!r}"
        ) from None


def _parser_for(kind) -> typing.Callable[[str], object]:
    if kind == int | str:
        return _views
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and args:
        return _parser_for(args[0])  # X | None: None is "not given"
    origin = typing.get_origin(kind)
    if origin is list:
        return _numbers if typing.get_args(kind) == (int,) else _items
    if origin is dict:
        return _toml if typing.get_args(kind)[1] is dict else _pairs
    return kind


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per StudyConfig setting, grouped; every default None (not given: the preset's)."""
    hints = typing.get_type_hints(StudyConfig)
    groups = {name: parser.add_argument_group(f"{name} settings") for name in GROUPS}
    for name, (group, text) in SETTINGS.items():
        options = {"dest": name, "default": None, "help": text}
        if hints[name] is bool:
            groups[group].add_argument(flag(name), action=argparse.BooleanOptionalAction, **options)
            continue
        groups[group].add_argument(
            flag(name),
            type=_parser_for(hints[name]),
            choices=CHOICES.get(name),
            metavar=_metavar(name),
            **options,
        )


def _metavar(name: str) -> str | None:
    return "{" + ",".join(CHOICES[name]) + "}" if name in CHOICES else name.upper()


def given(args: argparse.Namespace) -> dict:
    """The settings the command line gives (None: not given)."""
    return {name: getattr(args, name) for name in SETTINGS}
