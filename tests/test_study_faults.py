"""Faults caused for real: a trial's worker process killed, a run folder that cannot be written."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from study.run import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_the_study_completes(tmp_path):
    study_file = tmp_path / "study.toml"
    study_file.write_text('name = "killed"\nmethods = ["esd"]\ntrials = 2\nmax_concurrent = 1\nepochs = 20\nretries = 1\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with (tmp_path / "log").open("w") as log:
        study = subprocess.Popen([sys.executable, "-m", "study.run", "--preset", "smoke", "--config", str(study_file),
                                  "--out", str(tmp_path)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    killed, deadline = None, time.time() + 240
    while killed is None and time.time() < deadline and study.poll() is None:
        found = subprocess.run(["pgrep", "-f", "ray::ImplicitFunc.train"], capture_output=True, text=True).stdout.split()
        if found:
            killed = int(found[0])
            os.kill(killed, signal.SIGKILL)  # the trial's worker dies mid-training
        time.sleep(0.2)
    assert killed, "no trial worker appeared: " + (tmp_path / "log").read_text()[-2000:]
    assert study.wait(timeout=300) == 0, (tmp_path / "log").read_text()[-3000:]
    trials = pd.read_parquet(tmp_path / "killed" / "trials.parquet")
    assert len(trials) == 2 and (trials["status"] == "completed").all()


def test_a_run_folder_that_cannot_be_written_is_refused_before_training(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["--preset", "smoke", "--out", str(blocker / "runs")]) == 2
    err = capsys.readouterr().err
    assert f"cannot write the study's results to {blocker / 'runs' / 'smoke'}" in err and "Traceback" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere: folder permissions cannot stop it")
def test_a_read_only_run_folder_is_refused(tmp_path, capsys):
    tmp_path.chmod(0o555)
    try:
        assert main(["--preset", "smoke", "--out", str(tmp_path / "runs")]) == 2
    finally:
        tmp_path.chmod(0o755)
    assert "cannot write the study's results" in capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(Exception, match="unknown method"):
        main(["--preset", "smoke", "--methods", "distil", "--out", str(tmp_path), "--debug"])
