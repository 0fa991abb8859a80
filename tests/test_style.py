"""The tree is formatted and linted by ruff (pyproject.toml: line length 110)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def ruff(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "ruff"] if shutil.which("ruff") is None else ["ruff"]
    return subprocess.run([*command, *args], cwd=ROOT, capture_output=True, text=True)


@pytest.fixture(scope="module", autouse=True)
def ruff_installed():
    if ruff("--version").returncode != 0:
        pytest.fail('ruff is missing: install the test extra, pip install -e ".[test]"')


def test_the_tree_is_formatted():
    done = ruff("format", "--check", ".")
    assert done.returncode == 0, f"run `ruff format .`:\n{done.stdout}{done.stderr}"


def test_the_tree_passes_the_linter():
    done = ruff("check", ".")
    assert done.returncode == 0, f"run `ruff check --fix .` and fix the rest:\n{done.stdout}{done.stderr}"
