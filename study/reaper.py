"""A local study's Ray processes end with its driver, however the driver ends.

Ray ties only its GCS and raylet to the driver that started them; the agents and workers the
raylet starts poll for it and live on a minute or two after a driver killed outright (one of
them listening on a port). What ray.init starts in a local study inherits a mark in its
environment; a small watcher process, started before Ray, learns which processes carry the mark
or descend from one, and waits on a pipe that only the driver holds open. When the driver is gone
(exit, crash or SIGKILL alike) it ends those processes: this study's Ray and nothing else. A
cluster's processes (--address) are never marked.

    python -I study/reaper.py MARK   # the watcher; the driver holds its stdin open
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

MARK = "SEGKD_RAY_OWNER"  # the environment variable every process of a local study's Ray carries
GRACE_S = 3.0  # how long the processes get to end on SIGTERM before SIGKILL
LOOK_EVERY_S = 1.0  # how often the watcher learns the processes of its Ray (a few ms each time)

_watchers: list[subprocess.Popen] = []  # held so that their pipes stay open while the driver lives


@contextlib.contextmanager
def ending_with_this_process():
    """Inside: processes started (Ray's, by ray.init) carry a fresh mark, and a watcher ends them,
    and those they start, once this process is gone. Linux only (it reads /proc); elsewhere a no-op."""
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


def _processes() -> dict[int, tuple[int, str]]:
    """pid: (its parent's pid, when it started) for every live process (zombies are dead)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:  # ended meanwhile
            continue
        if fields[0] != "Z":
            table[int(entry.name)] = (int(fields[1]), fields[19])
    return table


class RayProcesses:
    """The processes of one local Ray: those whose environment carries its mark (the GCS and the
    raylet, started from the driver) and every process below one of them. Ray's agents and workers
    retitle themselves, which overwrites the environment /proc shows, so their place in the tree
    is what marks them; it is learnt while the driver lives (once the raylet is gone, its children
    have another parent). A pid is known with its start time, so a reused one is never taken."""

    def __init__(self, mark: str):
        self.wanted = f"{MARK}={mark}".encode()
        self.known: dict[int, str] = {}  # pid: start time
        self.looked: set[tuple[int, str]] = set()  # read and found without the mark

    def update(self) -> dict[int, str]:
        """The live processes of this Ray, found anew."""
        table = _processes()
        self.known = {pid: t for pid, t in self.known.items() if table.get(pid, (0, None))[1] == t}
        self.looked &= {(pid, t) for pid, (_, t) in table.items()}
        grown = True
        while grown:  # a child found may be the parent of another
            grown = False
            for pid, (parent, started) in table.items():
                if pid in self.known or pid == os.getpid():
                    continue
                if parent in self.known or self._carries(pid, started):
                    self.known[pid], grown = started, True
        return self.known

    def _carries(self, pid: int, started: str) -> bool:
        if (pid, started) in self.looked:
            return False
        try:
            if self.wanted in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                return True
        except OSError:  # ended meanwhile, or another user's
            pass
        self.looked.add((pid, started))
        return False

    def end(self, grace_s: float = GRACE_S) -> None:
        """SIGTERM every one, then SIGKILL those left after `grace_s`."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.update():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace_s
            while sig == signal.SIGTERM and self.update() and time.monotonic() < deadline:
                time.sleep(0.1)


def watch(mark: str) -> None:
    """Follow the marked Ray's processes until the driver is gone (end of file on stdin: it held
    the only write end), then end them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ray = RayProcesses(mark)
    while True:
        ray.update()
        ready, _, _ = select.select([sys.stdin], [], [], LOOK_EVERY_S)
        if ready and not os.read(sys.stdin.fileno(), 4096):
            break
    ray.end()


if __name__ == "__main__":
    watch(sys.argv[1])
