"""The project speaks of itself: no tracked file holds an absolute path of a machine it ran on, and
none narrates how the project was made (the rented machines and their allowances) instead of what
it does and measured."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SELF = Path(__file__).resolve().relative_to(ROOT).as_posix()

# A path that starts at a machine's own folders. Written after a word character, a dot, a tilde or
# a dash it is not one: a URL's path, ~/.cache, ../shared.
_START = r"(?<![\w.~-])"
MACHINE_PATHS = re.compile(rf"{_START}/(?:work|root)/|{_START}/(?:home|Users)/[\w.-]+")
# In a command or a script's default a temporary folder is an example; in a run's record it is
# where that one run happened to write.
RECORDED_TMP = re.compile(rf"{_START}/tmp/")
RECORDS = ("docs/results/", "benchmarks/results/")
# How the project was made rather than what it is: its machines' rental and their limits.
NARRATION = re.compile(
    r"\b(?:the sandbox|lease[sd]?|device time|development machine"
    r"|replaced between (?:sessions|commands)"
    r"|carried (?:by|into) (?:a|the|each|every) (?:command|job))\b",
    re.IGNORECASE,
)


def machine_paths(name: str, text: str) -> list[str]:
    """The absolute machine paths in the text of the tracked file `name`."""
    found = MACHINE_PATHS.findall(text)
    if name.startswith(RECORDS):
        found += RECORDED_TMP.findall(text)
    return found


def narration(text: str) -> list[str]:
    return [match.group(0) for match in NARRATION.finditer(text)]


def tracked_texts():
    """(name, text) of every tracked text file but this one."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no tracked files to read")
    for name in listed.stdout.decode().split("\0"):
        file = ROOT / name
        if not name or name == SELF or not file.is_file():
            continue
        data = file.read_bytes()
        if b"\0" in data:  # binary: tables, images, event logs
            continue
        try:
            yield name, data.decode()
        except UnicodeDecodeError:
            continue


def test_no_tracked_file_holds_an_absolute_path_of_a_machine():
    texts = dict(tracked_texts())
    assert "README.md" in texts and "docs/results/camvid-sd/config.json" in texts  # the scan reads them
    found = {name: hits for name, text in texts.items() if (hits := machine_paths(name, text))}
    assert found == {}, "write paths relative to the repository, the run folder or ~: " + repr(found)


def test_no_tracked_file_narrates_how_the_project_was_made():
    found = {name: hits for name, text in tracked_texts() if (hits := narration(text))}
    assert found == {}, "say what the project does and measured: " + repr(found)


@pytest.mark.parametrize(
    "name, text",
    [
        ("docs/results/a/config.json", '"out": "/work/runs",'),
        ("README.md", "teacher: reusing /root/.cache/segkd/teachers/t.pt"),
        ("kd/data/x.py", 'ROOT = "/home/alice/camvid"'),
        ("README.md", "see /Users/bob/runs/default"),
        ("docs/results/a/study.log", "results: /tmp/c11runs/camvid-11/trials.parquet"),
        ("benchmarks/results/2026.json", '"checkpoint": "/tmp/gput/t.pt"'),
    ],
)
def test_a_planted_machine_path_is_found(name, text):
    assert machine_paths(name, text)


@pytest.mark.parametrize(
    "name, text",
    [
        ("docs/results/a/config.json", '"out": "runs", "data": "camvid:../shared/data/camvid"'),
        ("docs/results/a/study.log", "reusing ~/.cache/segkd/teachers/t.pt"),
        ("README.md", "python -m kd.data.resize camvid:../shared/data/camvid /tmp/camvid-180x240"),
        ("tools/offline_gpu/run.sh", "site=${SITE:-/tmp/segkd-site}"),
        ("README.md", "https://example.org/home/page and https://example.org/work/x"),
        ("README.md", "runs/NAME/ray/TRIAL/checkpoint_000000/seed0.pt"),
    ],
)
def test_paths_of_the_project_or_examples_are_not_machine_paths(name, text):
    assert machine_paths(name, text) == []


@pytest.mark.parametrize(
    "text",
    [
        "An earlier lease ran the same study",
        "592 s of device time up to its end",
        "The study ran on the development machine as eight parts",
        "folders carried by each command",
        "a checkout replaced between commands",
        "The sandbox has no GPU",
    ],
)
def test_planted_narration_is_found(text):
    assert narration(text)


@pytest.mark.parametrize(
    "text",
    [
        "the kernel releases the lock when the driver exits",
        "the disk under Ray's session folder",
        "It is a guard, not a sandbox",
        "chromium --headless --no-sandbox",
        "gpus_per_trial = 1.0 but this machine has no GPU",
        "the tables of finished trials are kept",
    ],
)
def test_the_project_s_own_words_are_not_narration(text):
    assert narration(text) == []
