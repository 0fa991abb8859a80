"""Reading checkpoint files strictly, with errors that say what does not fit."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from kd.errors import UserInputError


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, metadata) from a torch checkpoint file.

    Accepts a plain state dict or one wrapped as {"state_dict": ...} or {"model": ...};
    metadata is the wrapper's "meta" entry (teacher checkpoints keep their recipe there).
    """
    path = Path(path)
    if not path.is_file():
        raise UserInputError(
            f"checkpoint {path} does not exist (or is not a file); pass the path of a .pth file."
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds (pickle, zip, EOF) for a bad file
        raise UserInputError(
            f"checkpoint {path} is not a readable PyTorch checkpoint ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); "
            "pass a file written by torch.save(model.state_dict(), ...)."
        ) from error
    meta = data.get("meta", {}) if isinstance(data, dict) and isinstance(data.get("meta"), dict) else {}
    if isinstance(data, dict):
        for key in ("state_dict", "model"):
            if isinstance(data.get(key), dict):
                data = data[key]
                break
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise UserInputError(
            f"checkpoint {path} holds a {type(data).__name__}, not a state dict of tensors; "
            f"save it with torch.save(model.state_dict(), ...)."
        )
    return data, meta


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)[0]


def _some(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_checkpoint(model: nn.Module, path: str | Path, expected: str | None = None) -> dict:
    """Load `path` into `model` strictly and return its metadata; a mismatch is a UserInputError
    saying what differs."""
    expected = expected or getattr(model, "name", type(model).__name__)
    state, meta = read_checkpoint(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing keys ({_some(missing)})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys ({_some(unexpected)})")
        if shapes:
            problems.append(f"{len(shapes)} shape mismatches, checkpoint vs model ({_some(shapes, 3)})")
        raise UserInputError(
            f"checkpoint {path} does not fit {expected}: {'; '.join(problems)}. "
            f"Pass a checkpoint saved from that model."
        )
    model.load_state_dict(state, strict=True)
    return meta
