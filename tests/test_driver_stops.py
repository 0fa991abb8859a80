"""A driver stopped while it prepares: Ctrl-C ends it with a word on how to continue and leaves a
folder --resume reads; a driver killed outright takes its local Ray's processes along.

Real `python -m study.run` processes, each with its own local Ray, signalled once they print the
line that opens the teacher's preparation (after Ray started, before any trial).
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from study import config as study_config
from study.reaper import MARK, RayProcesses

ROOT = Path(__file__).resolve().parents[1]
STUDY = 'name = "prep"\nmethods = ["esd"]\ntrials = 1\n'
PREPARING = "teacher deeplabv3_efficientnet_lite0: needed by esd"


def _launch(tmp_path: Path, log: str, *flags: str) -> subprocess.Popen:
    (tmp_path / "study.toml").write_text(STUDY)
    with (tmp_path / log).open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "study.run", "--out", str(tmp_path / "runs"), *flags],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _wait_for(driver: subprocess.Popen, log: Path, line: str) -> None:
    deadline = time.time() + 240
    while line not in log.read_text() and driver.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert line in log.read_text() and driver.poll() is None, log.read_text()[-3000:]


def _started(pid: int) -> str | None:
    """When process `pid` started (its /proc stat field), or None when it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ").strip()
    except OSError:  # gone meanwhile
        return ""


def _descendants(root: int) -> dict[int, str]:
    """Every live process below `root`, with its start time (so a reused pid is not taken for it)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (ValueError, OSError):
            continue
    below, found = {root}, True
    while found:
        found = {pid for pid, parent in parents.items() if parent in below and pid not in below}
        below |= found
    return {pid: started for pid in below - {root} if (started := _started(pid))}


@pytest.mark.slow
def test_ctrl_c_in_preparation_then_resume_then_a_killed_driver_takes_its_ray_along(tmp_path):
    first = _launch(tmp_path, "first.log", "--preset", "smoke", "--config", str(tmp_path / "study.toml"))
    _wait_for(first, tmp_path / "first.log", PREPARING)
    first.send_signal(signal.SIGINT)  # Ctrl-C while the teacher is trained or its outputs cached
    code, said = first.wait(timeout=120), (tmp_path / "first.log").read_text()
    assert code == 130 and "interrupted: continue with --resume" in said, said[-3000:]
    assert "Traceback" not in said
    run_dir = tmp_path / "runs" / "prep"
    assert study_config.load(run_dir).methods == ["esd"]  # what --resume reads: the study as started
    assert not (run_dir / "trials.parquet").exists()  # and no trial taken for finished

    second = _launch(tmp_path, "second.log", "--name", "prep", "--resume")
    _wait_for(second, tmp_path / "second.log", PREPARING)  # it read the folder and prepares again
    ray = _descendants(second.pid)
    assert any("raylet" in _command(pid) for pid in ray)
    second.kill()  # kill -9: no atexit, no ray.shutdown
    second.wait()
    deadline = time.time() + 30  # Ray's own agents and workers would linger for a minute or more
    while (
        left := [pid for pid, started in ray.items() if _started(pid) == started]
    ) and time.time() < deadline:
        time.sleep(0.2)
    assert not left, [_command(pid) for pid in left]


def test_the_watcher_ends_only_what_started_inside_once_its_driver_is_killed(tmp_path):
    driver = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess\n"
            "from study.reaper import ending_with_this_process\n"
            "with ending_with_this_process():\n"
            "    inside = subprocess.Popen(['sleep', '600'])\n"
            "outside = subprocess.Popen(['sleep', '600'])\n"
            "print(inside.pid, outside.pid, flush=True)\n"
            "subprocess.Popen(['sleep', '600']).wait()\n",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    inside, outside = (int(pid) for pid in driver.stdout.readline().split())
    started = _started(inside), _started(outside)
    try:
        driver.kill()
        driver.wait()
        deadline = time.time() + 30
        while _started(inside) == started[0] and time.time() < deadline:
            time.sleep(0.05)
        assert _started(inside) != started[0]  # ended with its driver
        assert _started(outside) == started[1]  # not the study's Ray: left alone
    finally:
        for pid in (inside, outside):
            if _started(pid) in started:
                os.kill(pid, signal.SIGKILL)


def test_a_ray_s_processes_are_those_carrying_its_mark_and_those_below_them():
    # below the marked shell, a process whose environment shows no mark (as a retitled Ray agent's)
    ours = subprocess.Popen(
        ["sh", "-c", f"env -u {MARK} sleep 600; :"], env={**os.environ, MARK: "this-study"}
    )
    other = subprocess.Popen(["sleep", "600"], env={**os.environ, MARK: "another-study"})
    ray = RayProcesses("this-study")
    try:
        deadline = time.time() + 10
        while len(ray.update()) < 2 and time.time() < deadline:  # until the shell started its child
            time.sleep(0.05)
        below = [pid for pid in ray.update() if pid != ours.pid]
        assert ours.pid in ray.update() and len(below) == 1 and _command(below[0]) == "sleep 600"
        ray.end()
        assert ours.wait(timeout=10) == -signal.SIGTERM and _started(below[0]) is None
        assert other.poll() is None
    finally:
        ours.kill()
        other.kill()
