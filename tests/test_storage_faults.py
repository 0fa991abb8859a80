"""A disk that fills is a fault of the run, not of its trials: the study stops naming the folder
and the free space, exits non-zero, keeps its tables, and --resume runs the interrupted trials.

Real small file systems (tmpfs) where the test may mount them (root); everywhere, the same fault
injected at the one write that saves a trial's students.
"""

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import smoke, trial

from kd.errors import StorageError
from kd.io import atomic_write, save_torch

ROOT = Path(__file__).resolve().parents[1]
# Two trials at once: the fault stops the study with both in flight, and resume runs both
STUDY = 'name = "full"\nmethods = ["baseline"]\ntrials = 2\nmax_concurrent = 2\nepochs = 1\nreport = false\n'


def _study(tmp_path: Path, *flags: str, text: str = STUDY, path: str = "") -> subprocess.CompletedProcess:
    study_file = tmp_path / "study.toml"
    study_file.write_text(text)
    argv = ["--preset", "smoke", "--config", str(study_file), "--out", str(tmp_path / "runs"), *flags]
    return subprocess.run(
        [sys.executable, "-m", "study.run", *argv, "--quiet"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [path])])},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _mount_tmpfs(folder: Path, size: str) -> str | None:
    """Mount a tmpfs of `size` at `folder`; None when done, else why it cannot be."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
    )
    return (
        None
        if mounted.returncode == 0
        else f"mount -t tmpfs is not allowed here: {mounted.stderr.decode().strip()}"
    )


def _tmpfs(folder: Path, size: str) -> None:
    """Mount a tmpfs of `size` at `folder`, or skip the test saying why it cannot."""
    why = _mount_tmpfs(folder, size)
    if why:
        pytest.skip(why)


def _stopped_then_resumed(tmp_path: Path, stopped, resume) -> None:
    said = stopped.stdout + stopped.stderr
    assert stopped.returncode == 1, said[-3000:]
    assert "could not write" in said and "No space left on device" in said and "Traceback" not in said
    run_dir = tmp_path / "runs" / "full"
    assert f"to {run_dir}, which has" in said and "free: free space there" in said
    assert "--name full" in said and "--resume" in said
    trials = run_dir / "trials.parquet"
    assert not trials.exists() or "failed" not in set(pd.read_parquet(trials)["status"])
    resumed = resume()
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert len(trials) == 2 and (trials["status"] == "completed").all()
    assert len(pd.read_parquet(run_dir / "final.parquet")) == 1


# Each fills the disk at one write while the marker file exists: a trial's students (in a Ray
# worker), or the driver's trials table.
FULL_DISK = {
    "trial": ("study.trial", "save_torch", "state, path", "path"),
    "driver": (
        "study.results",
        "atomic_write",
        "path, write",
        "path if Path(path).name == 'trials.parquet' else None",
    ),
}
PLUGIN = """
import errno
from pathlib import Path

import {module}

_write = {module}.{name}


def _full_disk({arguments}):
    failing = {failing}
    if failing and Path({marker!r}).exists():
        raise OSError(errno.ENOSPC, "No space left on device", str(failing))
    return _write({arguments})


{module}.{name} = _full_disk
"""


def _with_full_disk(tmp_path: Path, where: str) -> None:
    marker = tmp_path / "disk-is-full"
    marker.touch()
    module, name, arguments, failing = FULL_DISK[where]
    plugin = PLUGIN.format(module=module, name=name, arguments=arguments, failing=failing, marker=str(marker))
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "full_disk.py").write_text(plugin)
    text = STUDY + 'imports = ["full_disk"]\n'
    path = str(tmp_path / "plugins")
    stopped = _study(tmp_path, text=text, path=path)
    marker.unlink()
    _stopped_then_resumed(tmp_path, stopped, lambda: _study(tmp_path, "--resume", text=text, path=path))


@pytest.mark.slow
def test_a_disk_that_fills_under_a_trial_stops_the_study_and_resume_runs_its_trials(tmp_path):
    # A real 1 MB tmpfs under the engine's checkpoints where this test may mount one; elsewhere
    # the fault is injected at the trial's write of its students.
    scratch = tmp_path / "runs" / "full" / "scratch"
    if _mount_tmpfs(scratch, "1m") is not None:
        shutil.rmtree(tmp_path / "runs")  # the empty folders made for the mount
        _with_full_disk(tmp_path, "trial")
        return
    try:
        stopped = _study(tmp_path)
    finally:
        subprocess.run(["umount", str(scratch)], check=True)
    _stopped_then_resumed(tmp_path, stopped, lambda: _study(tmp_path, "--resume"))


@pytest.mark.slow
def test_a_table_the_driver_cannot_write_stops_the_study_and_resume_runs_its_trials(tmp_path):
    _with_full_disk(tmp_path, "driver")


@pytest.mark.slow
def test_a_disk_too_small_for_the_study_is_refused_with_the_estimate(tmp_path):
    out = tmp_path / "runs"
    _tmpfs(out, "2m")
    try:
        done = _study(tmp_path)
    finally:
        subprocess.run(["umount", str(out)], check=True)
    said = done.stdout + done.stderr
    assert done.returncode == 2, said[-3000:]
    assert "the study writes about" in said and f"to {out / 'full'}, which has" in said
    assert "choose another --out" in said and "Traceback" not in said


def test_a_study_close_to_the_free_space_is_warned_and_beyond_it_refused(tmp_path, monkeypatch):
    import study.trial
    from kd.errors import UserInputError

    config = smoke(tmp_path)
    needed = study.trial.written_bytes(config, 2, 4)
    said = []
    monkeypatch.setattr(study.trial, "free_bytes", lambda folder: needed * 1.2)
    study.trial.check_free_space(config, tmp_path, 2, 4, said.append)
    assert len(said) == 1 and said[0].startswith("warning: the study writes about")
    monkeypatch.setattr(study.trial, "free_bytes", lambda folder: needed * 3)
    study.trial.check_free_space(config, tmp_path, 2, 4, said.append)
    assert len(said) == 1
    monkeypatch.setattr(study.trial, "free_bytes", lambda folder: needed - 1)
    with pytest.raises(UserInputError, match=f"writes about .* to {tmp_path}, which has .* free"):
        study.trial.check_free_space(config, tmp_path, 2, 4, said.append)


def test_on_resume_the_estimate_counts_only_the_trials_still_to_run(tmp_path, monkeypatch):
    import study.trial
    from kd.errors import UserInputError
    from kd.io import megabytes

    config = smoke(tmp_path)
    one, four = study.trial.written_bytes(config, 2, 1), study.trial.written_bytes(config, 2, 4)
    monkeypatch.setattr(study.trial, "free_bytes", lambda folder: (one + four) / 2)
    with pytest.raises(UserInputError, match=f"writes about {megabytes(four)}"):
        study.trial.check_free_space(config, tmp_path, 2, 4)  # a new study: all four trials
    # resumed with two completed, one stopped early and one failed (a crashed trial runs again)
    rows = [
        trial("a", "baseline"),
        trial("b", "esd"),
        trial("c", "esd", "stopped"),
        trial("d", "esd", "failed"),
    ]
    pd.DataFrame(rows).to_parquet(tmp_path / "trials.parquet")
    said = []
    study.trial.check_free_space(config, tmp_path, 2, 4, said.append)
    assert said == []  # one trial's writes fit with margin
    assert f"writes about {megabytes(one)} to" in study.trial.space_advice(config, tmp_path, 2, 4)


def test_the_estimate_counts_every_seed_of_every_trial(tmp_path):
    from study.trial import written_bytes

    one = written_bytes(smoke(tmp_path, seeds=1), 2, 1)
    assert written_bytes(smoke(tmp_path, seeds=1), 2, 3) > 2 * one
    assert written_bytes(smoke(tmp_path, seeds=3), 2, 1) == pytest.approx(3 * one, rel=0.01)


def test_a_failed_write_is_a_storage_error_naming_the_file_and_the_free_space(tmp_path, monkeypatch):
    import torch

    path = tmp_path / "seed0.pt"
    save_torch({"w": torch.ones(2)}, path)

    def disk_full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    with pytest.raises(StorageError, match=f"could not write {path} .No space left on device; .* free in"):
        save_torch({"w": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.load(path)["w"].tolist() == [1.0, 1.0]  # the previous file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed0.pt"]
    with pytest.raises(StorageError, match="could not write .*gone"):
        atomic_write(tmp_path / "gone" / "x.txt", lambda partial: Path(partial).write_text("x"))


def test_a_storage_error_survives_the_trip_between_processes():
    import pickle

    error = StorageError("/runs/a/seed0.pt", "No space left on device", errno.ENOSPC, "free space")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.errno, str(copy)) == (error.path, errno.ENOSPC, str(error))
