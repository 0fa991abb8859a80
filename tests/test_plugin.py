"""A separately installed package adds a whole method (loss term, recipe, search space) with no
edit to the project: its entry point in the segkd.plugins group is all that finds it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import train_alone

import search_spaces
from kd.losses import TERMS, build_term
from kd.methods import RECIPES, build_recipe, describe
from kd.registry import PLUGINS, load_plugins
from study.space import resolve_space

# The example plugin's source; the test installs it as pip would: the package on the path, and
# beside it a dist-info whose entry_points.txt names its module.
SOURCE = Path(__file__).parent / "plugin_example"
PROJECT = Path(__file__).parents[1]
MODULE = "segkd_example.method"


def install(site: Path) -> str:
    """`site` made an installation folder holding the example plugin's distribution; its path list."""
    info = site / "segkd_example-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: segkd-example\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{PLUGINS}]\nexample = {MODULE}\n")
    return os.pathsep.join([str(site), str(SOURCE)])


@pytest.fixture
def installed(tmp_path, monkeypatch):
    for folder in install(tmp_path).split(os.pathsep):
        monkeypatch.syspath_prepend(folder)
    assert "calm" not in RECIPES  # nothing names it: only the entry point finds it
    load_plugins()
    yield sys.modules[MODULE]
    # Other test modules list every recipe, term and space: leave the tables as they were.
    TERMS.pop("logit_norm", None)
    RECIPES.pop("calm", None)
    search_spaces.SPACES.pop("calm", None)
    for name in (MODULE, "segkd_example"):
        sys.modules.pop(name, None)


def test_a_plugin_method_is_listed_and_its_space_resolves(installed):
    assert list(RECIPES)[-1] == "calm" and list(search_spaces.SPACES)[-1] == "calm"
    assert isinstance(build_term("logit_norm", power=1.0), installed.LogitNorm)
    assert "calm: cross-entropy + small logits" in describe(build_recipe("calm"))
    # the space's defaults are the recipe's own: written once, in the recipe
    space = search_spaces.space_for("calm", [], {"calm": {"lr": [1e-3, 3e-2]}})
    assert space["lambda_logit_norm"].default == 0.1 and space["lr"].default == 1e-2
    assert resolve_space(["calm"], []).grid()[0].overrides == {
        "lambda_logit_norm": 0.1,
        "train.optimizer.lr": 1e-2,
    }
    load_plugins()  # again: nothing is imported twice
    assert sys.modules[MODULE] is installed


def test_a_plugin_method_trains(installed, one_thread):
    trial = resolve_space(["calm"], [], {"calm": {"lambda_logit_norm": 0.5}}).grid()[0]
    recipe = build_recipe("calm", {**trial.recipe_overrides, "epochs": 1})
    assert recipe.stages[0].losses == {"ce": 1.0, "logit_norm": 0.5} and not recipe.needs_teacher
    result = train_alone(recipe)
    assert result.history[0]["loss_logit_norm"] > 0


@pytest.mark.parametrize("first", ["search_spaces", "kd.methods"])
def test_importing_the_project_finds_an_installed_plugin(tmp_path, first):
    """In a fresh interpreter, whichever registry is imported first; the plugin imports both."""
    code = (
        f"import {first}\n"
        "import search_spaces\n"
        "from kd.losses import TERMS\n"
        "from kd.methods import RECIPES\n"
        "print(list(RECIPES)[-1], list(search_spaces.SPACES)[-1], 'logit_norm' in TERMS)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([install(tmp_path), str(PROJECT)])}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["calm", "calm", "True"]
