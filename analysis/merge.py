"""One study from its parts: `python -m analysis.merge OUT PART [PART ...]`.

A long grid study can be run in parts, one or a few grid points each (`--methods sd`, `--space
'esd = {r = {choices = [1.0]}}'`), on several machines or in several sessions, each part a whole
study with its own test scoring. Merging checks that the parts are one protocol: the same
configuration except which grid points each ran (name, methods, space, and per-method settings
such as `students` for methods a part did not run) and where it ran (the settings `--resume` may
change), the same images in every role, the same teacher, and no variant
run twice. Parts of a study with a teacher axis (`teachers`) may each run some of the teachers:
every teacher that two parts share must be the same network and weights, and the merged
teacher.json holds every part's teachers. The merged folder then reads as one study:
`python -m analysis.report OUT --export DIR`.

What is merged: config.json (the methods and the ESD-style choice lists joined), trials.parquet,
per_image.parquet, curves.parquet, final.parquet, teacher.json and roles.json; merged.json names
the parts. Images (samples.npz) and predictions are not copied: they hold data, and the tables do
not need them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from kd.errors import UserInputError
from kd.metrics import METRICS
from kd.run_folder import (
    CONFIG,
    CURVES,
    FINAL,
    MERGED,
    PER_IMAGE,
    RESUMABLE,
    ROLES,
    TEACHER,
    TRIALS,
    read_table,
    variants,
)

TABLES = (TRIALS, PER_IMAGE, CURVES, FINAL)
# What a part may set differently from the others: which grid points it ran and where it ran them.
PER_PART = ("name", "out", "methods", "space", "trials", *RESUMABLE)
# Which teachers a part ran, where every part has a teacher axis.
TEACHER_AXIS = ("teachers", "teacher")
# Settings per method: each part's entries for the methods it ran must agree with the other parts'.
PER_METHOD = ("students", "student_weights")


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def check_parts(parts: list[Path]) -> list[dict]:
    """Each part's config.json, or a UserInputError naming every part that is not a finished-or-running
    study folder, and every setting on which the parts differ."""
    missing = [str(p) for p in parts if not (p / CONFIG).is_file() or not (p / TRIALS).is_file()]
    if missing:
        raise UserInputError(
            f"not a study's run folder ({CONFIG} and {TRIALS} needed): {', '.join(missing)}."
        )
    if len(set(p.resolve() for p in parts)) < len(parts):
        raise UserInputError("the same part is given twice; give each part's run folder once.")
    configs = [_json(p / CONFIG) for p in parts]
    first = configs[0]
    axis = all(config.get("teachers") for config in configs)
    per_part = PER_PART + (TEACHER_AXIS if axis else ())
    differ = sorted(
        key
        for config in configs[1:]
        for key in set(first) | set(config)
        if key not in per_part + PER_METHOD and first.get(key) != config.get(key)
    )
    if differ:
        listing = "; ".join(
            f"{k}: " + ", ".join(repr(c.get(k)) for c in configs) for k in dict.fromkeys(differ)
        )
        raise UserInputError(
            f"the parts are not one protocol; they differ in {listing}. Merge only parts started with "
            "the same settings except --methods and --space."
        )
    teachers = {p: _json(p / TEACHER) for p in parts if (p / TEACHER).is_file()}
    if axis:
        records: dict = {}
        for path, record in teachers.items():
            for name, scores in (record.get("teachers") or {}).items():
                if not same_teacher(records.setdefault(name, scores), scores):
                    raise UserInputError(
                        f"teacher {name} differs between the parts ({path} has other weights or "
                        "scores): another teacher under one name, so their scores are not comparable."
                    )
    else:
        first_teacher = next(iter(teachers.values()), None)
        if any(not same_teacher(first_teacher, t) for t in teachers.values()):
            raise UserInputError(
                f"the parts' {TEACHER} differ ({', '.join(map(str, teachers))}): another teacher, so "
                "their scores are not comparable."
            )
    merged_roles(parts)
    for key in PER_METHOD:
        per_method(configs, key)
    return configs


def same_teacher(a: dict, b: dict, tolerance: float = 1e-3) -> bool:
    """The same network and weights: equal name and size, and scores equal up to what another machine's
    arithmetic (threads, a GPU) changes."""
    if any(a.get(k) != b.get(k) for k in ("name", "params", "flops")):
        return False
    scores = ((a, b), (a.get("test") or {}, b.get("test") or {}))
    return all(abs(x[m] - y[m]) <= tolerance for x, y in scores for m in set(x) & set(y) if m in METRICS)


def per_method(configs: list[dict], key: str) -> dict:
    """A per-method setting (students, student_weights) joined over the parts, each method's entry
    as the part that ran it set it; a method set differently by two parts that ran it is refused."""
    joined: dict = {}
    for config in configs:
        for method, value in (config.get(key) or {}).items():
            if method in config["methods"] and joined.setdefault(method, value) != value:
                raise UserInputError(
                    f"two parts ran {method} with different {key} ({joined[method]!r} and {value!r}); "
                    "merge parts that ran each method with the same settings."
                )
    return joined


def merged_roles(parts: list[Path]) -> dict:
    """Every role any part used (a part without ESD deals no proximity images), each the same images
    in every part that has it."""
    roles: dict = {}
    for part in parts:
        for role, images in (_json(part / ROLES) or {}).items():
            if roles.setdefault(role, images) != images:
                raise UserInputError(
                    f"the parts' {ROLES} differ: other {role} images in {part} than in an earlier part, "
                    "so their scores are not comparable."
                )
    return roles


def merged_space(configs: list[dict]) -> dict:
    """Each method's space; a method in several parts (ESD at one r each) joins their choice lists."""
    space: dict = {}
    for config in configs:
        for method, params in (config.get("space") or {}).items():
            if method not in space:
                space[method] = json.loads(json.dumps(params))
                continue
            for name, value in params.items():
                have = space[method].get(name)
                if isinstance(have, dict) and isinstance(value, dict) and "choices" in have | value:
                    have["choices"] = list(
                        dict.fromkeys([*have.get("choices", []), *value.get("choices", [])])
                    )
                elif have != value:
                    raise UserInputError(
                        f"two parts set {method}'s {name} differently ({have!r} and {value!r}) "
                        "without choices to join; merge parts that differ only in listed choices."
                    )
    return space


def _tables(parts: list[Path]) -> dict[str, pd.DataFrame]:
    frames = {name: [read_table(p / name) for p in parts if (p / name).is_file()] for name in TABLES}
    trials = pd.concat(frames[TRIALS], ignore_index=True)  # every part has one (check_parts)
    twice = trials["trial_id"][trials["trial_id"].duplicated()].tolist()
    if twice:
        raise UserInputError(f"trial ids {', '.join(twice)} appear in more than one part.")
    arithmetic = sorted(set(trials.get("precision", pd.Series(dtype=object)).dropna()))
    if len(arithmetic) > 1:  # a part that recorded no precision passes
        raise UserInputError(
            f"the parts trained in different arithmetic ({', '.join(arithmetic)}): their differences "
            "would mix methods and precision; run every part on one kind of machine, or all with --amp off."
        )
    owners = pd.DataFrame(
        {"variant": variants(trials), "part": np.repeat(parts, [len(f) for f in frames[TRIALS]])}
    )
    shared = owners.groupby("variant")["part"].nunique()
    if (shared > 1).any():
        raise UserInputError(
            f"variants {', '.join(shared[shared > 1].index)} were run in more than one part: each "
            "variant's chosen trial must come from one study; leave the extra part out."
        )
    out = {TRIALS: trials.drop(columns=["predictions"], errors="ignore")}  # their files stay behind
    for name in (PER_IMAGE, CURVES, FINAL):
        if frames[name]:
            out[name] = pd.concat(frames[name], ignore_index=True)
    return out


def merge(out: str | Path, parts: list[str | Path]) -> Path:
    out, parts = Path(out), [Path(p) for p in parts]
    if len(parts) < 2:
        raise UserInputError("give two or more parts to merge.")
    if out.exists() and any(out.iterdir()):
        raise UserInputError(f"{out} is not empty; give a new folder for the merged study.")
    configs = check_parts(parts)
    tables = _tables(parts)
    config = dict(configs[0])
    config["name"], config["out"] = out.name, str(out.parent)
    config["methods"] = list(dict.fromkeys(m for c in configs for m in c["methods"]))
    config["space"] = merged_space(configs)
    config.update({key: per_method(configs, key) for key in PER_METHOD})
    if all(c.get("teachers") for c in configs):
        config["teachers"] = list(dict.fromkeys(t for c in configs for t in c["teachers"]))
        config["teacher"] = config["teachers"][0]
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.to_parquet(out / name, index=False)
    (out / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    (out / ROLES).write_text(json.dumps(merged_roles(parts), indent=2) + "\n")
    # equal where present (check_parts); a part whose methods distil from no teacher trains none
    teachers = [p / TEACHER for p in parts if (p / TEACHER).is_file()]
    if teachers and config.get("teachers"):
        joined = {
            name: scores for path in teachers for name, scores in (_json(path).get("teachers") or {}).items()
        }
        first = joined.get(config["teacher"]) or _json(teachers[0])
        (out / TEACHER).write_text(json.dumps({**first, "teachers": joined}, indent=2) + "\n")
    elif teachers:
        (out / TEACHER).write_text(teachers[0].read_text())
    record = [
        {"part": str(p), "name": c["name"], "methods": c["methods"], "space": c.get("space")}
        for p, c in zip(parts, configs, strict=True)
    ]
    (out / MERGED).write_text(json.dumps({"parts": record}, indent=2) + "\n")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.merge",
        description="Merge a study run in parts (each a whole study of some of the grid points, started "
        "with the same settings) into one run folder that the report reads as one study.",
    )
    parser.add_argument("out", metavar="OUT", help="a new folder for the merged study, e.g. runs/camvid-sd")
    parser.add_argument("parts", nargs="+", metavar="PART", help="the parts' run folders")
    args = parser.parse_args(argv)
    try:
        print(merge(args.out, args.parts))
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
