"""Files written so that a crash never leaves a half-written one, and names derived from content.

atomic_write(path, lambda tmp: torch.save(state, tmp))   # readers see the old file or the new one
content_key({"teacher": "lite0", "split_point": "top"})  # the same description, the same name
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path


def content_key(description, length: int = 16) -> str:
    """The first `length` hex digits of the sha256 of `description` as canonical JSON (keys sorted;
    values JSON cannot hold are written with str)."""
    text = json.dumps(description, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` on a temporary sibling of `path`, then rename it onto `path`.

    The rename is atomic on one file system: a crash or a full disk mid-write leaves the previous
    file intact, and the temporary file is removed when `write` raises.
    """
    path = Path(path)
    partial = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        write(partial)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path
