"""One driver per study: a second start or --resume while a driver runs is refused, named."""

import socket
import subprocess
import sys
from pathlib import Path

from study import config as study_config
from study.lock import RunLock
from study.run import main

ROOT = Path(__file__).resolve().parents[1]
HOLD = "import sys, time; from study.lock import RunLock; lock = RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(120)"  # noqa: E501


def test_a_second_driver_is_refused_until_the_first_dies(tmp_path, capsys):
    config = study_config.resolve("smoke", overrides={"out": str(tmp_path), "name": "busy"})
    study_config.save(config, config.run_dir)
    first = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(config.run_dir)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert first.stdout.readline().strip() == "locked"
        assert main(["--name", "busy", "--out", str(tmp_path), "--resume"]) == 2
        err = capsys.readouterr().err
        assert f"host {socket.gethostname()}, pid {first.pid}" in err and "being run by another driver" in err
        assert "Traceback" not in err
    finally:
        first.kill()
        first.wait()
    # the kernel released the dead driver's lock: the study can be resumed at once
    RunLock(config.run_dir).acquire().release()
