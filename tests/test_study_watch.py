"""Watching a sweep: every epoch reaches Tune, TensorBoard event files per trial, the Optuna
journal served by optuna-dashboard, --quiet, and loggers that need a package say which."""

import json
from io import BytesIO
from wsgiref.util import setup_testing_defaults

import pytest

from study import config as study_config
from study.run import main
from study.watch import logger_problems


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("watch")
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["--preset", "smoke", "--out", str(out), "--quiet"])
    return code, out / "smoke", printed.getvalue()


@pytest.mark.slow
def test_a_quiet_study_says_only_where_its_results_are(smoke_study):
    code, run_dir, printed = smoke_study
    assert code == 0, printed  # every requested trial recorded
    assert "report:" in printed and "teacher" not in printed and "trial " not in printed


@pytest.mark.slow
def test_tensorboard_has_every_epoch_of_every_trial(smoke_study):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run_dir, _ = smoke_study
    folders = sorted(p for p in (run_dir / "tensorboard").iterdir() if p.is_dir())
    assert len(folders) == 4  # the smoke study's trials
    epochs = study_config.resolve("smoke").epochs
    for folder in folders:
        events = EventAccumulator(str(folder))
        events.Reload()
        losses = events.Scalars("loss/seed0")
        assert [e.step for e in losses] == list(range(1, epochs + 1)), folder.name


@pytest.mark.slow
def test_optuna_dashboard_serves_the_study_s_journal(smoke_study):
    import optuna_dashboard
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    _, run_dir, _ = smoke_study
    app = optuna_dashboard.wsgi(JournalStorage(JournalFileBackend(str(run_dir / "optuna.journal"))))
    environ = {"PATH_INFO": "/api/studies", "REQUEST_METHOD": "GET", "wsgi.input": BytesIO()}
    setup_testing_defaults(environ)
    answer = []
    body = b"".join(app(environ, lambda status, headers, exc_info=None: answer.append(status)))
    assert answer[0].startswith("200")
    studies = json.loads(body)["study_summaries"]
    assert [s["study_name"] for s in studies] == ["smoke"]


def test_loggers_that_need_a_package_say_how_to_get_it():
    import importlib.util

    for name in ("mlflow", "wandb"):
        found = logger_problems([name])
        if importlib.util.find_spec(name) is None:
            assert found == [
                f"callbacks: {name!r} needs the {name} package: pip install -e '.[{name}]' "
                f"(or pip install {name}), or remove it from callbacks"
            ]
    assert "unknown logger 'tensorboardx'" in logger_problems(["tensorboardx"])[0]
