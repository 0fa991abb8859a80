"""One driver per study: the run folder is locked while a driver runs it.

An OS file lock (flock) on run_dir/driver.lock: the kernel releases it when the driver exits or
dies, so a killed study can be resumed at once, and a second start or --resume while the first
runs is refused with the first driver's host and process id. The file's text is only a label.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path

from kd.errors import UserInputError
from kd.run_folder import LOCK


class RunLock:
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self.handle = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise UserInputError(
                f"{self.path.parent} is being run by another driver ({holder}); wait for it to finish or "
                "stop it (Ctrl-C), then --resume. Watch it with: python -m analysis.report "
                f"{self.path.parent}"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"host {socket.gethostname()}, pid {os.getpid()}\n")
        handle.flush()
        self.handle = handle
        return self

    def release(self, failed: bool = False) -> None:
        """`failed`: the driver stops on an error or Ctrl-C; a folder that then holds nothing but
        the lock has no study in it (--resume would refuse it) and is removed."""
        if self.handle is None:
            return
        folder = self.path.parent
        if failed and [p.name for p in folder.iterdir()] == [LOCK]:
            self.path.unlink()  # while still locked: no other driver can be inside
            with contextlib.suppress(OSError):  # something appeared meanwhile: keep it
                folder.rmdir()
        self.handle.close()  # closing releases the lock
        self.handle = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, kind, *exc) -> None:
        self.release(failed=kind is not None)
