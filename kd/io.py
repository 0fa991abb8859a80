"""Files written so that a crash never leaves a half-written one, and names derived from content.

atomic_write(path, lambda tmp: frame.to_parquet(tmp))    # readers see the old file or the new one
save_torch(state, path)                                  # the same for tensors
content_key({"teacher": "lite0", "split_point": "top"})  # the same description, the same name
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from kd.errors import StorageError


def content_key(description, length: int = 16) -> str:
    """The first `length` hex digits of the sha256 of `description` as canonical JSON (keys sorted;
    values JSON cannot hold are written with str)."""
    text = json.dumps(description, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` on a temporary sibling of `path`, then rename it onto `path`.

    The rename is atomic on one file system: a crash or a full disk mid-write leaves the previous
    file intact, and the temporary file is removed when `write` raises. An OSError (disk full,
    quota, the folder gone) is raised as a StorageError naming `path` and the free space left.
    """
    path = Path(path)
    partial = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        write(partial)
        os.replace(partial, path)
    except BaseException as err:
        try:
            partial.unlink(missing_ok=True)
        except OSError:  # the folder itself is gone
            pass
        if isinstance(err, OSError) and not isinstance(err, StorageError):
            raise storage_error(path, err) from err
        raise
    return path


def make_folder(folder: str | Path) -> Path:
    """mkdir -p `folder`, an OSError raised as a StorageError."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise storage_error(folder / ".", err) from err
    return folder


def save_torch(state, path: str | Path) -> Path:
    """torch.save `state` to `path` atomically. Serialised in memory first: torch's own file writer
    turns a failed write into a RuntimeError that does not say why, Python's write says ENOSPC."""
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write(path, lambda partial: Path(partial).write_bytes(buffer.getbuffer()))


def free_bytes(folder: str | Path) -> int:
    """The free space of the file system holding `folder` (its nearest existing parent)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def megabytes(size: float) -> str:
    return f"{size / 1e6:,.1f} MB"


# What an OSError says when the disk, not the code, is at fault: full, over quota, read-only
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def storage_error(path: str | Path, err: OSError) -> StorageError:
    """`err`, met writing `path`, as a StorageError that says how much space is left there."""
    try:
        left = f"; {megabytes(free_bytes(Path(path).parent))} free in {Path(path).parent}"
    except OSError:
        left = ""
    return StorageError(path, f"{err.strerror or err}{left}", err.errno)
