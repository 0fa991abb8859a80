"""Every code block of the README and of docs/ holds: ```python blocks run as written, each
command of a ```bash block is parsed by the real argument parser of what it runs (a study command
is also validated as a configuration, without starting it), ```toml blocks parse and, where they
are study files, validate. The README's generated blocks (measured times, presets) are what their
generators render."""

from __future__ import annotations

import argparse
import importlib.util
import re
import runpy
import shlex
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
# A fenced block, also indented under a list item: (indent, language, body)
FENCE = re.compile(r"^( *)```(\S*)\n(.*?)^\1```[ \t]*$", re.S | re.M)
LANGUAGES = {"python", "bash", "toml", "text"}


def _name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _blocks() -> list[tuple[str, int, str, str]]:
    """(page, index on its page, language, body) of every fenced block."""
    found = []
    for page in PAGES:
        for index, match in enumerate(FENCE.finditer(page.read_text())):
            indent, language, body = match.groups()
            found.append((_name(page), index, language, textwrap.dedent(body) if indent else body))
    return found


BLOCKS = _blocks()


def _of(language: str) -> list:
    return [
        pytest.param(body, id=f"{page}:{index}") for page, index, lang, body in BLOCKS if lang == language
    ]


def _load(name: str, path: Path):
    """A file of benchmarks/ or tools/, which are no installed packages."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


times = _load("readme_times", ROOT / "benchmarks" / "readme_times.py")
tables = _load("docs_tables", ROOT / "tools" / "docs_tables.py")


def test_every_block_names_its_language():
    """An output sample is ```text, so that no block is left unchecked by accident."""
    unnamed = [f"{page} block {index}: ```{lang}" for page, index, lang, _ in BLOCKS if lang not in LANGUAGES]
    assert not unnamed, "give each block one of " + ", ".join(sorted(LANGUAGES)) + ":\n" + "\n".join(unnamed)


def test_the_readme_fits_on_a_few_screens_and_links_to_what_exists():
    text = README.read_text()
    assert len(text.splitlines()) <= 250, "the README is a front page: move detail into docs/"
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    missing = [link for link in links if not link.startswith("http") and not (ROOT / link).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"
    assert "docs/glossary.md" in links and "docs/RESULTS.md" in links


def test_the_pages_have_examples():
    counts = {lang: sum(1 for *_, language, _ in BLOCKS if language == lang) for lang in LANGUAGES}
    assert counts["python"] >= 5 and counts["bash"] >= 20 and counts["toml"] >= 3, counts


# ---- python blocks -------------------------------------------------------------------------------


@pytest.fixture
def registries():
    """The examples register parts of their own: later tests see kd's tables as they were."""
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


@pytest.mark.parametrize("body", _of("python"))
def test_python_block_runs(body, capsys, registries, request):
    exec(compile(body, request.node.callspec.id, "exec"), {})


# ---- bash blocks ---------------------------------------------------------------------------------

# Programs the pages show that are not this project's and are not run here: why each is left alone.
OTHERS = {
    "pip": "installs packages",
    "ruff": "the style checker (tests/test_style.py runs it)",
    "mkdocs": "builds this site (.ci/run runs it)",
    "tensorboard": "TensorBoard's own viewer",
    "optuna-dashboard": "Optuna's own viewer",
    "mlflow": "MLflow's own server",
    "ray": "Ray's cluster command",
    "ss": "a system tool",
    "chmod": "a system tool",
    "export": "the shell's",
    "echo": "the shell's",
    "nvidia-cuda-mps-control": "NVIDIA's MPS daemon",
    "ssh": "a system tool",
}
ENVIRONMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")


def _commands(body: str) -> list[list[str]]:
    """The block's commands as words: continued lines joined, a quoted string over several lines
    kept whole, comments dropped, only the first program of a pipe."""
    commands, pending = [], ""
    for line in body.splitlines():
        pending += line
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        try:
            words = shlex.split(pending, comments=True)
        except ValueError:  # an open quote: the string goes on on the next line
            pending += "\n"
            continue
        pending = ""
        if "|" in words:
            words = words[: words.index("|")]
        if words and not all(ENVIRONMENT.match(word) for word in words):
            commands.append(words)
    assert not pending.strip(), f"a command is left open at the end of the block: {pending!r}"
    return commands


def _bash_commands() -> list:
    return [
        pytest.param(words, id=f"{page}:{index}:{' '.join(words)[:60]}")
        for page, index, lang, body in BLOCKS
        if lang == "bash"
        for words in _commands(body)
    ]


@pytest.fixture(scope="module")
def split_points_once():
    """A network's split points, built once per name for this module's many validations: the
    architecture of a name does not change, and building one (dilating a teacher) takes seconds."""
    import functools

    import kd.models.registry

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kd.models.registry, "split_points", functools.cache(kd.models.registry.split_points))
        yield


class _Parsed(Exception):
    """Raised in place of running a command once its parser has read the arguments."""


def _parse_only(monkeypatch, run, argv: list[str]) -> argparse.Namespace:
    """Run a module or script until its argparse parser has read `argv`; a parse error fails."""
    parse = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, args=None, namespace=None):
        raise _Parsed(parse(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
    monkeypatch.setattr(sys, "argv", argv)
    try:
        run()
    except _Parsed as parsed:
        return parsed.args[0]
    except SystemExit as exit:
        assert exit.code in (0, None), f"`{' '.join(argv)}` is refused by its parser (status {exit.code})"
        return argparse.Namespace()  # --help
    pytest.fail(f"`{' '.join(argv)}` ran without parsing any arguments")


def _validate_study(args: argparse.Namespace, study_files: dict[str, Path]) -> None:
    """A study command's configuration, resolved and checked as `python -m study.run` does before
    it starts anything; one that needs absent data, files or GPUs is skipped, naming them."""
    from kd.errors import UserInputError
    from study import config as study_config
    from study.run import config_from_args

    if getattr(args, "resume", False) or not hasattr(args, "preset"):
        return  # --resume reads a saved study; --help prints and ends
    if args.config and not Path(args.config).is_file():
        args.config = str(study_files[args.config])  # a study file a toml block shows
    try:
        study_config.validate(config_from_args(args))
    except UserInputError as error:
        problems = [line for line in str(error).splitlines() if line.strip().startswith("- ")] or [str(error)]
        absent = ("does not exist", "no such file", "has no GPU")
        if all(any(word in problem for word in absent) for problem in problems):
            pytest.skip("needs what this machine lacks: " + "; ".join(p.strip("- ") for p in problems))
        raise


# runpy warns when it runs a module that its package imported already, as study.run's is
@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")
@pytest.mark.parametrize("words", _bash_commands())
def test_bash_command_parses(words, monkeypatch, tmp_path, registries, study_files, split_points_once):
    monkeypatch.chdir(ROOT)
    words = list(words)  # the parameter itself stays as collected
    while ENVIRONMENT.match(words[0]):  # VAR=value before the program: its environment
        name, _, value = words.pop(0).partition("=")
        monkeypatch.setenv(name, value)
    # a logger the validation starts writes its database here, not into the repository
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    program, args = words[0], words[1:]
    if program in OTHERS:
        return
    assert program == "python", f"`{' '.join(words)}`: unknown program {program!r}; add it to OTHERS with why"
    if args[0] == "-c":
        compile(args[1], "python -c", "exec")
        return
    if args[0] == "-m":
        module, rest = args[1], args[2:]
        if module == "pytest":
            return  # this very test run
        parsed = _parse_only(
            monkeypatch,
            lambda: runpy.run_module(module, run_name="__main__", alter_sys=True),
            [module, *rest],
        )
        if module == "study.run":
            _validate_study(parsed, study_files)
        return
    script = ROOT / args[0]
    assert script.is_file(), f"`{' '.join(words)}`: {args[0]} is not a file of the repository"
    _parse_only(
        monkeypatch, lambda: runpy.run_path(str(script), run_name="__main__"), [str(script), *args[1:]]
    )


# ---- toml blocks ---------------------------------------------------------------------------------

FILE_NAME = re.compile(r"^# ([\w.-]+\.toml):")


def _study_files(tmp: Path) -> dict[str, Path]:
    """The toml blocks that name their file (`# NAME.toml: ...`), written out for the commands."""
    files = {}
    for _, _, lang, body in BLOCKS:
        if lang == "toml" and (named := FILE_NAME.match(body)):
            files[named.group(1)] = tmp / named.group(1)
            files[named.group(1)].write_text(body)
    return files


@pytest.fixture(scope="module")
def study_files(tmp_path_factory):
    return _study_files(tmp_path_factory.mktemp("study-files"))


@pytest.mark.parametrize("body", _of("toml"))
def test_toml_block_parses_and_study_files_validate(body, tmp_path, monkeypatch, split_points_once):
    from kd.errors import UserInputError
    from study import config as study_config
    from study.settings import FIELDS

    values = tomllib.loads(body)
    if not set(values) <= set(FIELDS) | {"none"}:
        return  # not a study file (a package's pyproject.toml)
    monkeypatch.chdir(ROOT)
    path = tmp_path / "study.toml"
    path.write_text(body)
    try:
        study_config.validate(study_config.resolve("default", path))
    except UserInputError as error:
        if all(word in str(error) for word in ("does not exist",)):
            pytest.skip(f"needs data this machine lacks: {error}")
        raise


# ---- generated blocks ----------------------------------------------------------------------------


def test_readme_presets_table_is_what_the_presets_render():
    block = tables.readme_block(README.read_text(), "presets")
    assert block is not None, "README.md needs its <!-- table: presets --> ... <!-- /table --> block"
    assert block == tables.render("presets"), (
        "the README's presets table is stale: run python tools/docs_tables.py --readme"
    )


def test_every_table_marker_of_the_docs_names_a_table():
    markers = [m for page in PAGES[1:] for m in tables.MARKER.findall(page.read_text())]
    assert {"presets", "settings", "losses", "recipes"} <= set(markers)
    for name in markers:
        assert tables.render(name).startswith(("|", "###"))


def test_the_loss_table_refuses_a_term_of_kd_without_a_formula(registries):
    from kd.losses import TERMS, LossTerm

    class Unlisted(LossTerm):
        pass

    Unlisted.__module__ = "kd.losses.unlisted"
    TERMS["unlisted"] = Unlisted
    with pytest.raises(ValueError, match=r"terms without an entry \['unlisted'\]"):
        tables.render("losses")


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
    [  # hand-typed study times of the kind the block replaces
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
