"""The code's layering: the import contracts in pyproject.toml hold, no two modules import each other
(imports inside functions count), no module reads another's private names, the study's uses of
Ray's private API still find what they change, and analysis, which may not import the study, counts a
grid's points as the study makes them."""

import ast
import json
from pathlib import Path

import grimp
import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kd", "search_spaces", "study", "analysis")
LITE0, OS16 = "deeplabv3_efficientnet_lite0", "deeplabv3_efficientnet_lite0_os16"


def test_the_import_contracts_hold(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    code = lint_imports(no_cache=True, no_logo=True)
    assert code == 0, capsys.readouterr().out


def cycles(graph) -> list[set[str]]:
    """The groups of modules that import each other, directly or through others (Tarjan)."""
    index, low, stack, found = {}, {}, [], []

    def visit(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph.find_modules_directly_imported_by(module):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = set()
            while not group or module not in group:
                group.add(stack.pop())
            if len(group) > 1:
                found.append(group)

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_cycles_are_found_through_other_modules():
    graph = grimp.ImportGraph()
    for importer, imported in (("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("e", "e")):
        graph.add_import(importer=importer, imported=imported)
    assert cycles(graph) == [{"a", "b", "c"}]


def test_no_modules_import_each_other():
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    found = [sorted(group) for group in cycles(graph)]
    assert found == [], f"modules that import each other (imports inside functions count): {found}"


def private_uses(path: Path) -> list[str]:
    """Where `path` reads a private (_underscore) name of another module of the project."""
    tree = ast.parse(path.read_text(), filename=str(path))
    modules, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PACKAGES:
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{path}:{node.lineno} imports {node.module}.{alias.name}")
                modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            modules.update(
                a.asname or a.name.split(".")[0] for a in node.names if a.name.split(".")[0] in PACKAGES
            )
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
        ):
            found.append(f"{path}:{node.lineno} reads {node.value.id}.{node.attr}")
    return found


def test_private_uses_are_found(tmp_path):
    path = tmp_path / "user.py"
    path.write_text("from analysis import report\nfrom kd.io import _hidden\nreport._note('x')\n")
    assert private_uses(path) == [
        f"{path}:2 imports kd.io._hidden",
        f"{path}:3 reads report._note",
    ]


def test_no_module_reads_another_modules_private_names():
    found = [
        use
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for use in private_uses(path)
    ]
    assert found == []


# ---------------------------------------------------------------- Ray's private API, each use in one function


def test_ray_still_has_the_flag_that_keeps_a_local_node_on_loopback():
    from study.cluster import ray_cluster_flag

    flag = ray_cluster_flag()
    assert flag is not None and isinstance(flag.ENABLE_RAY_CLUSTER, bool), (
        "this Ray has no ray._private.ray_constants.ENABLE_RAY_CLUSTER: a local study's Ray would listen "
        "on every interface; study.cluster.ray_cluster_flag needs this Ray's way to bind to loopback"
    )


def test_a_restored_tuners_configs_can_still_be_changed(tmp_path):
    from ray import tune

    from study.tuner import restored_configs

    tune_config = tune.TuneConfig(num_samples=1, max_concurrent_trials=2)
    tuner = tune.Tuner(
        lambda config: None,
        tune_config=tune_config,
        run_config=tune.RunConfig(name="x", storage_path=str(tmp_path)),
    )
    try:
        restored, run_config = restored_configs(tuner)
    except AttributeError as error:
        pytest.fail(
            f"this Ray's Tuner no longer has the private attributes study.tuner.restored_configs reads "
            f"({error}): a resumed study would keep the limits and callbacks it started with"
        )
    assert restored is tune_config and isinstance(run_config, tune.RunConfig) and run_config.name == "x"


# ------------------------------------------------ what analysis knows of a study without its code


@pytest.mark.parametrize(
    "changes",
    [
        {"methods": ["baseline", "sd", "esd"], "space": {"esd": {"r": {"choices": [0.0, 0.5, 1.0]}}}},
        {"methods": ["baseline", "sd"], "teachers": [LITE0, OS16]},
        {"methods": ["baseline", "ftt"], "students": {"baseline": "ct"}, "teachers": [LITE0, OS16]},
    ],
)
def test_analysis_counts_a_grids_points_as_the_study_makes_them(changes):
    from analysis.configuration import grid_size
    from study import config as study_config

    config = study_config.resolve("smoke", overrides={"sampler": "grid", **changes})
    saved = json.loads(json.dumps(config.to_dict()))  # as config.json holds it
    assert grid_size(saved) == len(study_config.validate(config).grid())
