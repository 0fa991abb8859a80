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


def _mismatches(own: dict, state: dict) -> list[str]:
    """What keeps `state` from loading strictly into a module whose state dict is `own`."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_some(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_some(unexpected)})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches, file vs model ({_some(shapes, 3)})")
    return problems


def load_checkpoint(model: nn.Module, path: str | Path, expected: str | None = None) -> dict:
    """Load `path` into `model` strictly and return its metadata; a mismatch is a UserInputError
    saying what differs."""
    expected = expected or getattr(model, "name", type(model).__name__)
    state, meta = read_checkpoint(path)
    problems = _mismatches(model.state_dict(), state)
    if problems:
        raise UserInputError(
            f"checkpoint {path} does not fit {expected}: {'; '.join(problems)}. "
            f"Pass a checkpoint saved from that model."
        )
    model.load_state_dict(state, strict=True)
    return meta


# An ImageNet classifier: a segmenter's backbone has none.
CLASSIFIER_KEYS = ("fc.", "classifier.")


def backbone_keys(state: dict[str, torch.Tensor], stage_names: list[str]) -> dict[str, torch.Tensor]:
    """A torchvision classification model's state dict renamed to a Segmenter's backbone stages
    (kd.models.backbones): ResNets' conv1.* and bn1.* become stem.conv1.* and stem.bn1.* (layer1-4
    keep their names); features.<i>.* becomes <the i-th stage>.*, which fits backbones with one stage
    per `features` child (EfficientNet: stem, stage1-7, top; VGG, ConvNeXt, ...: features<i>), not
    MobileNetV3, whose stages group several; fc.* and classifier.* are dropped. Keys already named
    by stage (torch.save(student.stages.state_dict(), ...)) pass unchanged."""
    renamed = {}
    for key, value in state.items():
        if key.startswith(CLASSIFIER_KEYS):
            continue
        if key.startswith(("conv1.", "bn1.")):
            key = f"stem.{key}"
        elif key.startswith("features."):
            index, _, rest = key[len("features.") :].partition(".")
            if index.isdigit() and int(index) < len(stage_names):
                key = f"{stage_names[int(index)]}.{rest}"
        renamed[key] = value
    return renamed


def load_backbone_weights(model: nn.Module, path: str | Path) -> None:
    """Load a classification backbone's weights (say, torchvision's ImageNet ResNet-18) into
    `model.stages` strictly, named as backbone_keys says. The backbone is the stages from the first
    to the last one the file names: stages after it (PSPNet's "psp") and the head keep their own
    initialisation. A file that does not fit is a UserInputError naming the keys that differ."""
    names = list(model.stages)
    state = backbone_keys(read_state_dict(path), names)
    named = [names.index(key.split(".")[0]) for key in state if key.split(".")[0] in names]
    backbone = nn.ModuleDict({n: model.stages[n] for n in names[: max(named) + 1 if named else None]})
    problems = _mismatches(backbone.state_dict(), state)
    if problems:
        model_name = getattr(model, "name", type(model).__name__)
        raise UserInputError(
            f"weights file {path} does not fit the backbone of {model_name}: {'; '.join(problems)}. "
            "Expected the state dict of a torchvision classification model of the same architecture, "
            "e.g. torch.save(torchvision.models.resnet18(weights='IMAGENET1K_V1').state_dict(), PATH) "
            "for a ResNet-18 backbone (fc.* and classifier.* are ignored), or "
            "torch.save(student.stages.state_dict(), PATH)."
        )
    backbone.load_state_dict(state, strict=True)
