"""A local study's Ray processes end with its driver, however the driver ends.

Ray ties only its GCS and raylet to the driver that started them; the agents, log monitor and
workers they start poll for them and live on a minute or two after a driver killed outright (one
of them listening on a port). Every process of a local study's Ray inherits a mark in its
environment; a small watcher process, started before Ray, waits on a pipe that only the driver
holds open and, when the driver is gone (exit, crash or SIGKILL alike), ends every process that
carries the mark: this study's Ray and nothing else. A cluster's processes (--address) never carry it.

    python -I study/reaper.py MARK   # the watcher; the driver holds its stdin open
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

MARK = "SEGKD_RAY_OWNER"  # the environment variable every process of a local study's Ray carries
GRACE_S = 3.0  # how long the marked processes get to end on SIGTERM before SIGKILL

_watchers: list[subprocess.Popen] = []  # held so that their pipes stay open while the driver lives


@contextlib.contextmanager
def ending_with_this_process():
    """Inside: processes started (Ray's, by ray.init) carry a fresh mark, and a watcher ends them
    once this process is gone. Linux only (it reads /proc); elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        yield
        return
    mark = f"{os.getpid()}-{secrets.token_hex(8)}"
    _watchers.append(
        subprocess.Popen(
            # -I: the standard library only, whatever the environment or this folder holds
            [sys.executable, "-I", str(Path(__file__).resolve()), mark],
            stdin=subprocess.PIPE,  # its write end is this process's alone (Python's pipes close on exec)
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C at the terminal is the driver's to handle, not its
        )
    )
    before = os.environ.get(MARK)
    os.environ[MARK] = mark
    try:
        yield
    finally:  # only what was started inside carries the mark
        if before is None:
            os.environ.pop(MARK, None)
        else:
            os.environ[MARK] = before


def marked(mark: str) -> list[int]:
    """The processes whose environment carries `mark` (ours to read: the same user's)."""
    wanted = f"{MARK}={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # ended meanwhile, or another user's
            continue
        if wanted in environment:
            found.append(int(entry.name))
    return found


def end_marked(mark: str, grace_s: float = GRACE_S) -> None:
    """SIGTERM every process carrying `mark`, then SIGKILL those left after `grace_s`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in marked(mark):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while sig == signal.SIGTERM and marked(mark) and time.monotonic() < deadline:
            time.sleep(0.1)


def watch(mark: str) -> None:
    """Wait until the driver is gone (end of file on stdin: it held the only write end), then end
    its Ray's processes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while sys.stdin.buffer.read(4096):
        pass
    end_marked(mark)


if __name__ == "__main__":
    watch(sys.argv[1])
