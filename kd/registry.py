"""The one rule for kd's tables of named parts (loss terms, recipes, models).

A part registers itself where it is defined, so a new one is one file (imported by kd, or
by a study's `imports`). A name names one thing: taking a registered name for another thing
is refused, naming both. Registering the same thing again changes nothing, and a module
reloaded in a notebook replaces its own definitions.
"""

from __future__ import annotations

from kd.errors import UserInputError


def _origin(thing) -> str:
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
