"""Every ```python block of the README runs as written; its study times come from the benchmark suite."""

import importlib.util
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _readme_times():
    """benchmarks/ is no installed package: load its module from the file."""
    path = README.parent / "benchmarks" / "readme_times.py"
    spec = importlib.util.spec_from_file_location("readme_times", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


times = _readme_times()


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


def test_times_block_is_what_the_newest_results_render():
    """A hand edit of the block, or results committed without `--readme`, fails here."""
    block = times.block_of(README.read_text())
    assert block is not None, f"README.md needs {times.BEGIN} and {times.END}, once each"
    assert block == times.render(times.newest_results()), (
        "the README's times table is not the newest results': run python -m benchmarks.suite --readme"
    )


def test_times_block_has_measured_rows():
    found = times.newest_results()
    assert found is not None, "no results with study_times: run python -m benchmarks.suite --only study_times"
    assert "| `python -m study.run` (the embedded default)" in times.render(found)


def test_no_hand_typed_study_times_outside_the_block():
    found = times.hand_typed(README.read_text())
    assert not found, "study times typed by hand; refer to the Measured times table instead:\n" + "\n".join(
        found
    )


@pytest.mark.parametrize(
    "line",
    [  # the README's own hand-typed times before they were measured
        "python -m study.run  # the embedded default on synthetic road scenes (about 5 min on 2 idle CPUs)",
        "python -m study.run --preset smoke       # 4 tiny trials, about a minute: is everything in place?",
        "python -m study.run --preset camvid-sd   # real CamVid (about 7 h on 2 CPUs; --resume continues it)",
        "`python -m study.run`: 11 min 26 s on 2 CPU cores shared with a long CamVid study",
        "(about 5\nminutes on idle cores: 10 trials took 4 min 10 s)",
        "the teacher's head trains in 8 s the first time",
        "the default study takes about 3 minutes",
    ],
)
def test_hand_typed_patterns_catch_study_times(line):
    assert times.hand_typed(line)


def test_hand_typed_patterns_leave_the_benchmarks_and_the_block_alone():
    text = (
        "python benchmarks/learning_parity.py --seeds 0,1,2   # every entry: about 3 h on 2 cores\n"
        "[3/8] 4c1b6910 esd (split_point=stage5): miou_img 0.612 (41 s)\n"
        f"{times.BEGIN}\n| `python -m study.run` | 4 min 48 s | 2 cores |\n{times.END}\n"
    )
    assert times.hand_typed(text) == []


def test_block_of_refuses_missing_or_repeated_markers():
    assert times.block_of("no markers") is None
    assert times.block_of(f"{times.BEGIN}\n{times.END}\n{times.BEGIN}\n{times.END}") is None
    assert times.block_of(f"{times.END}\n{times.BEGIN}") is None
    assert times.block_of(f"a\n{times.BEGIN}\nrow\n{times.END}\nb") == "row\n"
