"""A study interrupted midway (Ctrl-C, or its driver killed with SIGKILL) and resumed: exactly the
requested trials, none lost or run twice.

Both runs are real `python -m study.run` processes, each with its own local Ray (2 CPUs on
the CI machine), so no Ray instance of the test process is shared with them.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def launch(args, log: Path) -> subprocess.Popen:
    """The study from the log's folder, so that a relative --out means a folder there."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "study.run", *args],
            cwd=log.parent,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_interrupted_study_resumes_to_exactly_the_requested_trials(stop, tmp_path):
    name, trials = "resume", 2  # the first recorded, the second stopped in flight
    common = ["--name", name, "--out", "runs"]  # relative: the driver and every trial mean tmp_path/runs
    # the tables are what is checked: the resumed study keeps --no-report from its saved settings
    run_dir = tmp_path / "runs" / name
    first = launch(
        ["--preset", "smoke", *common, "--trials", str(trials), "--max-concurrent", "1", "--no-report"],
        tmp_path / "first.log",
    )
    table = run_dir / "trials.parquet"
    deadline, in_flight = time.time() + 240, []
    while time.time() < deadline and first.poll() is None and not (table.is_file() and in_flight):
        # a running trial's engine checkpoints are in the run folder, not in Ray's trial folder
        in_flight = list((run_dir / "scratch").glob("*/seed0/engine.pt"))
        time.sleep(0.05)
    assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    assert in_flight
    first.send_signal(stop)  # a person pressing Ctrl-C, or the driver killed outright
    first.wait(timeout=120)
    before = pd.read_parquet(table)  # written atomically: readable whatever the moment of the kill
    assert 1 <= len(before) < trials
    if stop == signal.SIGINT:
        assert "--resume" in (tmp_path / "first.log").read_text()  # it says how to continue
        assert first.returncode == 130  # a script can tell an interrupted study from a finished one

    # it may continue on other resources: here every trial it runs gets both cores
    second = launch([*common, "--resume", "--cpus-per-trial", "2"], tmp_path / "second.log")
    code = second.wait(timeout=300)
    logs = [(tmp_path / f"{run}.log").read_text()[-3000:] for run in ("first", "second")]
    assert code == 0, "\n--- resumed:\n".join(logs)
    after = pd.read_parquet(table)
    assert len(after) == trials and after["trial_id"].is_unique
    assert set(before["trial_id"]) <= set(after["trial_id"])  # nothing finished was lost or run again
    assert (after["status"] == "completed").all()
    rerun = ~after["trial_id"].isin(before["trial_id"])
    assert (after.loc[rerun, "cpus"] == 2.0).all() and (before["cpus"] == 1.0).all()
    assert (after["precision"] == "fp32").all()  # amp bf16 is autocast on GPUs only: CPUs train in fp32
    if stop == signal.SIGINT:  # a graceful stop records its session's time; SIGKILL leaves none
        timing = json.loads((run_dir / "timing.json").read_text())
        assert len(timing["sessions"]) == 2 and timing["sessions"][-1]["trials_recorded"] == trials
        assert timing["total_s"] == pytest.approx(
            sum(s["prepare_s"] + s["fit_s"] for s in timing["sessions"])
        )
