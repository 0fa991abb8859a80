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
    """The smoke study cut to 2 trials, quiet, logged to MLflow (mlflow-skinny, in the test extra) in
    a database."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("watch")
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as env, contextlib.redirect_stdout(printed):
        env.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{out / 'mlflow.db'}")
        code = main(
            ["--preset", "smoke", "--trials", "2", "--out", str(out), "--quiet", "--callbacks", "mlflow"]
            + ["--no-report"]  # what is watched is the trials; the report would only add its seconds
        )
    return code, out / "smoke", printed.getvalue()


@pytest.mark.slow
def test_a_quiet_study_says_only_where_its_results_are(smoke_study):
    code, run_dir, printed = smoke_study
    assert code == 0, printed  # every requested trial recorded
    assert "results:" in printed and "report: not written (--no-report)" in printed
    assert "teacher" not in printed and "trial " not in printed


@pytest.mark.slow
def test_tensorboard_has_every_epoch_of_every_trial(smoke_study):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run_dir, _ = smoke_study
    folders = sorted(p for p in (run_dir / "tensorboard").iterdir() if p.is_dir())
    assert len(folders) == 2  # the study's trials
    epochs = study_config.resolve("smoke").epochs
    for folder in folders:
        events = EventAccumulator(str(folder))
        events.Reload()
        losses = events.Scalars("loss/seed0")
        assert [e.step for e in losses] == list(range(1, epochs + 1)), folder.name


@pytest.mark.slow
def test_mlflow_has_every_epoch_of_every_trial(smoke_study):
    import mlflow

    _, run_dir, _ = smoke_study
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{run_dir.parent / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smoke")  # the study's name
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    epochs = study_config.resolve("smoke").epochs
    for run in runs:
        assert len(client.get_metric_history(run.info.run_id, "loss")) == epochs


def test_a_logger_that_cannot_start_is_refused_before_the_study_starts(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nowhere://tracking")
    assert main(["--preset", "smoke", "--out", str(tmp_path), "--callbacks", "mlflow"]) == 2
    err = capsys.readouterr().err
    assert "callbacks: 'mlflow' could not start" in err and "set MLFLOW_TRACKING_URI" in err
    assert "Traceback" not in err
    assert not (tmp_path / "smoke").exists()  # nothing started


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

    for name in ("mlflow", "wandb"):  # the test extra has mlflow: wandb is the one missing there
        if importlib.util.find_spec(name) is None:
            assert logger_problems([name]) == [
                f"callbacks: {name!r} needs the {name} package: pip install -e '.[{name}]' "
                f"(or pip install {name}), or remove it from callbacks"
            ]
    assert "unknown logger 'tensorboardx'" in logger_problems(["tensorboardx"])[0]


def _trial(trial_id: str, choice):
    from ray.tune.experiment import Trial

    return Trial("trial", config={"choice": choice}, trial_id=trial_id, stub=True)


def _epoch(seed: int, epoch: int, loss: float, **scores) -> dict:
    return {"seed": seed, "seeds": 2, "epoch": epoch, "epochs": 5, "stage": "stage 2", "loss": loss, **scores}


def test_a_running_trial_s_bar_shows_where_it_is_and_its_last_score(monkeypatch):
    from study.contract import TrialChoice
    from study.watch import LiveProgress

    monkeypatch.setenv("COLUMNS", "120")  # a bar is cut at the terminal's width

    trial = _trial("abc_00001", TrialChoice("esd", {"r": 0.5}, "top", {"r": 0.5}))
    progress = LiveProgress("miou_img", bars=True)
    progress.on_trial_result(0, [], trial, _epoch(0, 5, 0.25, miou_img=0.5))
    progress.on_trial_result(0, [], trial, _epoch(1, 2, 0.125, miou_img=float("nan")))  # not evaluated
    bar = progress.bars["abc_00001"]
    shown = str(bar)
    assert shown.startswith("abc_00001 esd: 7/10 epochs, ETA ")  # epochs done over both seeds
    assert shown.endswith(", seed 2/2, stage 2, loss 0.125, miou_img 0.500")  # the last score is kept
    progress.on_trial_complete(0, [], trial)
    assert not progress.bars


def test_without_a_terminal_a_trial_says_where_it_is_when_a_seed_ends_and_now_and_then():
    from study.contract import TrialChoice
    from study.watch import LiveProgress

    lines = []
    trial = _trial("abc_00002", TrialChoice("esd", {"r": 1.0}, None, {"r": 1.0}, variant="esd r=1"))
    progress = LiveProgress("miou_img", bars=False, say=lines.append, every_s=3600)
    for epoch in range(1, 6):
        progress.on_trial_result(0, [], trial, _epoch(0, epoch, 1.0 / epoch, miou_img=0.1 * epoch))
    assert lines == []  # the first seed, within the hour
    progress.on_trial_result(0, [], trial, _epoch(1, 1, 0.5))
    assert len(lines) == 1
    assert lines[0].startswith(
        "  abc_00002 esd (r=1): epoch 6/10, seed 2/2, stage 2, loss 0.5, miou_img 0.500"
    )
    assert "ETA" in lines[0]
    progress.every_s = 0  # every report is past due
    progress.on_trial_result(0, [], trial, _epoch(1, 2, 0.25))
    assert len(lines) == 2 and "epoch 7/10" in lines[1]


@pytest.mark.slow
def test_on_a_terminal_each_running_trial_has_a_bar(tmp_path):
    """A real study on a pseudo-terminal that does not say its size (as under `script` or some CI
    runners): the bars are drawn, and a finished trial's line stays."""
    import os
    import pty
    import subprocess
    import sys
    import threading
    from pathlib import Path

    controller, terminal = pty.openpty()
    small = ["--trials", "2", "--methods", "baseline"]  # bars are the same for any method: no teacher
    small += ["--no-report"]
    study = subprocess.Popen(
        [sys.executable, "-m", "study.run", "--preset", "smoke", *small, "--out", str(tmp_path)],
        cwd=Path(__file__).resolve().parents[1],
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    shown = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the study closed the terminal
                return
            if not chunk:
                return
            shown.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    assert study.wait(timeout=600) == 0
    reader.join(timeout=30)
    os.close(controller)
    text = shown.decode(errors="replace")
    assert "epochs, ETA" in text, text[-3000:]
    assert "[2/2]" in text
