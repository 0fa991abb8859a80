"""Faults caused for real: a trial's worker process killed, a run folder that cannot be written."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import write_png

from study.run import main

ROOT = Path(__file__).resolve().parents[1]


def _descends_from(pid: int, ancestor: int) -> bool:
    """Whether `ancestor` is among the parents of `pid` (Linux /proc)."""
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat[stat.rindex(")") + 2 :].split()[1])
    return False


def _start_study(tmp_path: Path, study_text: str, *flags: str) -> subprocess.Popen:
    study_file = tmp_path / "study.toml"
    study_file.write_text(study_text)
    argv = [sys.executable, "-m", "study.run", "--preset", "smoke", "--config", str(study_file)]
    with (tmp_path / "log").open("a") as log:
        return subprocess.Popen(
            [*argv, "--out", str(tmp_path), *flags],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _kill_a_trial_worker(study: subprocess.Popen, log: Path) -> None:
    """SIGKILL the first trial worker of `study` (not another study's on the machine) mid-training."""
    killed, deadline = None, time.time() + 240
    while killed is None and time.time() < deadline and study.poll() is None:
        found = subprocess.run(
            ["pgrep", "-f", "ray::ImplicitFunc.train"], capture_output=True, text=True
        ).stdout.split()
        found = [pid for pid in found if _descends_from(int(pid), study.pid)]
        if found:
            killed = int(found[0])
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    assert killed, "no trial worker appeared: " + log.read_text()[-2000:]


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_the_study_completes(tmp_path):
    text = (
        # one trial: its only worker is the one killed, so it completes only if it was retried
        'name = "killed"\nmethods = ["esd"]\ntrials = 1\nepochs = 3\nretries = 1\nreport = false\n'
    )
    study = _start_study(tmp_path, text)
    _kill_a_trial_worker(study, tmp_path / "log")
    assert study.wait(timeout=300) == 0, (tmp_path / "log").read_text()[-3000:]
    trials = pd.read_parquet(tmp_path / "killed" / "trials.parquet")
    assert trials["status"].tolist() == ["completed"]


@pytest.mark.slow
def test_a_trial_that_crashed_out_of_retries_runs_again_on_resume(tmp_path):
    text = (
        # one trial: that a study goes on past a failed trial is the failing-components test's claim
        'name = "crashed"\nmethods = ["esd"]\ntrials = 1\nepochs = 3\nretries = 0\nreport = false\n'
    )
    study = _start_study(tmp_path, text)
    _kill_a_trial_worker(study, tmp_path / "log")
    study.wait(timeout=300)
    trials = pd.read_parquet(tmp_path / "crashed" / "trials.parquet")
    assert trials["status"].tolist() == ["failed"], (tmp_path / "log").read_text()[-3000:]
    assert "died run again with: python -m study.run --name crashed" in (tmp_path / "log").read_text()
    (crashed,) = trials["trial_id"]
    assert _start_study(tmp_path, text, "--resume").wait(timeout=300) == 0, (tmp_path / "log").read_text()
    trials = pd.read_parquet(tmp_path / "crashed" / "trials.parquet").set_index("trial_id")
    assert list(trials.index) == [crashed] and trials.loc[crashed, "status"] == "completed"
    assert pd.isna(trials.loc[crashed, "error"])  # its failed row was replaced, not kept beside it


def test_a_run_folder_that_cannot_be_written_is_refused_before_training(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["--preset", "smoke", "--out", str(blocker / "runs")]) == 2
    err = capsys.readouterr().err
    assert (
        f"cannot write the study's results to {blocker / 'runs' / 'smoke'}" in err and "Traceback" not in err
    )


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


PLUGIN = '''
"""A user's own students, registered the way kd's are: one runs out of GPU memory, one has a bug."""
import torch
from kd.models.pspnet import pspnet
from kd.models.registry import STUDENTS


def _failing(message, error):
    def build(num_classes):
        model = pspnet("resnet18_half", num_classes)

        def broken_head(features):
            raise error(message)

        model.head.forward = broken_head
        return model
    return build


# Out of memory cannot be caused on a CPU-only machine: this raises the error CUDA would.
STUDENTS["oom_student"] = _failing("CUDA out of memory (simulated)", torch.cuda.OutOfMemoryError)
STUDENTS["buggy_student"] = _failing("my head has a bug", ValueError)
'''


@pytest.mark.slow
def test_failing_components_fail_their_trial_with_the_reason_and_the_study_goes_on(tmp_path):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "faulty_parts.py").write_text(PLUGIN)
    study_file = tmp_path / "study.toml"
    study_file.write_text(
        'name = "faulty"\nmethods = ["baseline", "ifvd", "cwd"]\nsampler = "grid"\n'
        'imports = ["faulty_parts"]\nreport = false\nepochs = 1\n'  # the failures come at the first step
        '[students]\nifvd = "oom_student"\ncwd = "buggy_student"\n'
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path / 'plugins'}"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "study.run",
            "--preset",
            "smoke",
            "--config",
            str(study_file),
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    trials = pd.read_parquet(tmp_path / "faulty" / "trials.parquet").set_index("method")
    assert trials.loc["baseline", "status"] == "completed"
    assert trials.loc["ifvd", "status"] == "failed"
    assert trials.loc["ifvd", "error"].startswith("OutOfMemoryError: CUDA out of memory (simulated)")
    assert (
        trials.loc["cwd", "status"] == "failed"
        and trials.loc["cwd", "error"] == "ValueError: my head has a bug"
    )
    assert "FAILED: ValueError: my head has a bug" in done.stdout


def test_an_import_that_fails_is_a_configuration_error(tmp_path, capsys):
    assert (
        main(
            [
                "--preset",
                "smoke",
                "--out",
                str(tmp_path),
                "--config",
                str(_file(tmp_path, 'imports = ["nowhere_mod"]')),
            ]
        )
        == 2
    )
    assert "cannot import 'nowhere_mod'" in capsys.readouterr().err


def _file(tmp_path, text):
    path = tmp_path / "study.toml"
    path.write_text(text + "\n")
    return path


def test_a_corrupt_image_stops_the_study_before_ray_naming_the_file(tmp_path, capsys):
    import numpy as np

    noise = np.random.default_rng(0)
    for name in "abcdef":
        write_png(tmp_path / "img" / f"{name}.png", noise.integers(0, 255, (32, 48, 3), dtype=np.uint8))
        write_png(tmp_path / "ann" / f"{name}.png", np.zeros((32, 48), np.uint8))
    broken = tmp_path / "img" / "b.png"
    broken.write_bytes(broken.read_bytes()[:2000])  # the header survives, half the pixels do not
    data = f"folder:{tmp_path / 'img'},{tmp_path / 'ann'}"
    study = _file(
        tmp_path,
        f'data = "{data}"\nclasses = ["road", "other"]\nmethods = ["baseline"]\n'
        "target_images = 2\nval_images = 2\ntest_images = 2",  # every image in a role that is checked
    )
    assert main(["--preset", "smoke", "--config", str(study), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert f"cannot decode image file {broken}" in err and "Traceback" not in err
    import ray

    assert not ray.is_initialized()


def test_a_truncated_teacher_checkpoint_is_named(tmp_path, capsys):
    import torch

    from kd.models import build_teacher

    path = tmp_path / "teacher.pth"
    torch.save(build_teacher(num_classes=2, pretrained=False).state_dict(), path)
    path.write_bytes(path.read_bytes()[:1000])
    study = _file(tmp_path, f'teacher_checkpoint = "{path}"\nmethods = ["baseline"]')
    assert main(["--preset", "smoke", "--config", str(study), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "Traceback" not in err


def test_a_full_disk_leaves_the_previous_table_intact(tmp_path, monkeypatch):
    import errno

    from study.results import write_table

    table = tmp_path / "trials.parquet"
    write_table(pd.DataFrame({"trial_id": ["a"], "miou": [0.5]}), table)

    def disk_full(self, path, **kwargs):  # ENOSPC cannot be caused safely on a shared machine
        Path(path).write_bytes(b"PAR1 half a table")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", disk_full)
    with pytest.raises(OSError, match=f"could not write {table} .No space left on device.*--resume"):
        write_table(pd.DataFrame({"trial_id": ["a", "b"], "miou": [0.5, 0.6]}), table)
    monkeypatch.undo()
    assert pd.read_parquet(table)["trial_id"].tolist() == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trials.parquet"]  # no partial file left behind
