"""Copy a run folder's tables into the repository, written as the project's, not a machine's.

    python tools/publish_run.py runs/NAME docs/results/SUBJECT/NAME

A study writes absolute paths into config.json (Ray runs each trial in a folder of its own, where
a relative path names nothing). A folder committed beside the code names its data relative to the
repository root, its run folders' root as `runs` and the default cache folder, so that it reads the
same on every clone. Copied: the resolved configuration and the tables and records
`analysis.report` reads; not copied: students, predictions, caches, Ray's and TensorBoard's records.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from kd import run_folder

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = (
    run_folder.TRIALS,
    run_folder.FINAL,
    run_folder.PER_IMAGE,
    run_folder.CURVES,
    run_folder.TEACHER,
    run_folder.ROLES,
    run_folder.TIMING,
    run_folder.MERGED,
)


def _relative(path: str) -> str:
    return os.path.relpath(path, ROOT) if os.path.isabs(path) else path


def portable(config: dict) -> dict:
    """config.json with every machine path relative to the repository root."""
    config = {**config, "out": "runs", "cache_dir": None}
    kind, colon, location = str(config.get("data") or "").partition(":")
    if colon:
        config["data"] = f"{kind}:" + ",".join(_relative(p) if p else p for p in location.split(","))
    for key in ("teacher_checkpoint", "student_weights"):
        if isinstance(config.get(key), str):
            config[key] = _relative(config[key])
    return config


def publish(source: Path, destination: Path) -> list[str]:
    config_file = source / run_folder.CONFIG
    if not config_file.is_file():
        raise SystemExit(f"{source} holds no {run_folder.CONFIG}: give a study's run folder (runs/NAME)")
    destination.mkdir(parents=True, exist_ok=True)
    (destination / run_folder.CONFIG).write_text(
        json.dumps(portable(json.loads(config_file.read_text())), indent=2) + "\n"
    )
    copied = [run_folder.CONFIG]
    for name in PUBLISHED:
        if (source / name).is_file():
            shutil.copyfile(source / name, destination / name)
            copied.append(name)
    return copied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path, help="the study's run folder")
    parser.add_argument("destination", type=Path, help="where its tables go, e.g. docs/results/SUBJECT/NAME")
    args = parser.parse_args(argv)
    copied = publish(args.source, args.destination)
    print(f"{args.destination}: {', '.join(copied)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
