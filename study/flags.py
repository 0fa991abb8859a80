"""Every StudyConfig setting as a command-line flag, generated from the dataclass.

The flag is the setting's name with dashes (`target_images` -> `--target-images`); its value is
parsed from the setting's type: lists comma-separated (`--methods sd,esd`, `--image-size
180,240`), tables as KEY=VALUE pairs (`--students ifvd=pspnet_resnet18`), the search space as a
TOML inline table (`--space 'esd = {r = [0.0, 5.0]}'`), booleans as `--hflip` / `--no-hflip`.
Each setting's group in `--help`, its help text and its choices come from its StudyConfig field
(study.settings.setting), so every setting has a flag.
"""

from __future__ import annotations

import argparse
import tomllib
import types
import typing

from kd.data.transforms import FRESH
from study.settings import FIELDS, GROUPS, StudyConfig, flag

# Each setting's --help group and text, and its choices, from its field
SETTINGS = {name: (f.metadata["group"], f.metadata["help"]) for name, f in FIELDS.items()}
CHOICES = {name: f.metadata["choices"] for name, f in FIELDS.items() if f.metadata["choices"] is not None}


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _int_list(text: str) -> list[int]:
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
        return _int_list if typing.get_args(kind) == (int,) else _items
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
