"""The one rule for kd's tables of named parts (loss terms, recipes, models, search spaces).

A part registers itself where it is defined, so a new one is one file: a package imports
every module of its own (discover), and an installed plugin is found through its entry point
(load_plugins); a study's `imports` names further modules. A name names one thing: taking a
registered name for another thing is refused, naming both. Registering the same thing again
changes nothing, and a module reloaded in a notebook replaces its own definitions.

A plugin is a separately installed package that declares, in its pyproject.toml,

    [project.entry-points."segkd.plugins"]
    my_method = "my_package.parts"

and registers its loss terms, recipes, models and search spaces in that module as kd does.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import sys
from importlib.metadata import entry_points

from kd.errors import UserInputError

PLUGINS = "segkd.plugins"  # the entry-point group of plugins


def _origin(thing) -> str:
    if isinstance(thing, functools.partial):  # a builder with some arguments given
        return f"{_origin(thing.func)}{thing.args}{thing.keywords}"
    qualname = getattr(thing, "__qualname__", None)
    return f"{thing.__module__}.{qualname}" if qualname else repr(thing)


def register(table: dict, kind: str, name: str, thing):
    """Put `thing` in `table` under `name` and return it."""
    if not isinstance(name, str) or not name:
        raise UserInputError(f"a {kind} needs a non-empty name, got {name!r}")
    known = table.get(name)
    if known is not None and known is not thing and _origin(known) != _origin(thing):
        raise UserInputError(
            f"{kind} {name!r} is registered already ({_origin(known)}); {_origin(thing)} "
            "cannot take its name: choose another"
        )
    table[name] = thing
    return thing


def discover(package: str) -> None:
    """Import every module of `package` (not `__main__` or private ones): each registers its parts."""
    for module in pkgutil.iter_modules(importlib.import_module(package).__path__, f"{package}."):
        if not module.name.rpartition(".")[2].startswith("_"):
            importlib.import_module(module.name)


def load_plugins() -> None:
    """Import the module of every entry point in PLUGINS that is not imported yet.

    kd.methods and search_spaces call it once their names are bound, so a study or a notebook sees
    installed plugins without naming them; a plugin importing them while it loads is not imported
    twice (it is in sys.modules from its first line)."""
    for point in entry_points(group=PLUGINS):
        if point.module in sys.modules:
            continue
        try:
            point.load()
        except Exception as err:
            where = f"{point.dist.name}'s " if point.dist else ""
            err.add_note(f"while importing plugin {point.name!r} ({where}entry point {point.value!r})")
            raise
