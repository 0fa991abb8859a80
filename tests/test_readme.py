"""Every ```python block of the README runs as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 5


@pytest.fixture
def registries():
    """The README registers parts of its own: later tests see kd's tables as they were."""
    import search_spaces
    from kd.losses import TERMS
    from kd.methods import RECIPES
    from kd.models.registry import SPLIT_STUDENTS, STUDENTS, TEACHERS

    tables = [TERMS, RECIPES, STUDENTS, SPLIT_STUDENTS, TEACHERS, search_spaces.SPACES]
    saved = [dict(table) for table in tables]
    yield
    for table, before in zip(tables, saved, strict=True):
        table.clear()
        table.update(before)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, capsys, registries):
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), {})
