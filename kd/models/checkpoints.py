"""Reading checkpoint files strictly, with errors that say what does not fit.

Published files load as their authors saved them: the layouts of kd.models.layouts, a DDP
`module.` prefix, `state_dict`/`model` wrappers, and the `argparse.Namespace` torchvision's
reference scripts keep beside the weights. Nothing else in a file is unpickled.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch
from torch import nn

from kd.errors import UserInputError
from kd.models.layouts import LAYOUTS

DDP_PREFIX = "module."
OWN_LAYOUT = "segkd"  # keys as a Segmenter's state_dict() names them
# BatchNorm's batch counter (absent from InPlace-ABN's state and from files of torch < 0.4.1, and
# read only with momentum=None) and the scratch buffers of CSAIL's synchronised BatchNorm, which its
# resnet18-imagenet.pth carries: neither is a weight, so neither decides whether a file fits.
COUNTERS = ("num_batches_tracked", "_tmp_running_mean", "_tmp_running_var", "_running_iter")


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, metadata) from a torch checkpoint file.

    Accepts a plain state dict or one wrapped as {"state_dict": ...} or {"model": ...} (beside an
    optimizer state, an epoch, an argparse.Namespace of arguments); metadata is the wrapper's "meta"
    entry (teacher checkpoints keep their recipe there).
    """
    path = Path(path)
    if not path.is_file():
        raise UserInputError(
            f"checkpoint {path} does not exist (or is not a file); pass the path of a .pth file."
        )
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds (pickle, zip, EOF) for a bad file
        raise UserInputError(
            f"checkpoint {path} is not a readable PyTorch checkpoint ({_cause(error)}); pass a file "
            "written by torch.save(model.state_dict(), ...). Only tensors, plain containers and "
            "argparse.Namespace are read from a file: other Python objects are never unpickled. A "
            "file from a source you trust can be converted with a trusted tool that saves its "
            "state dict alone; never load an untrusted file with its objects."
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


def _cause(error: Exception) -> str:
    """What went wrong, without torch's advice to unpickle arbitrary objects (never safe for a
    downloaded file): the object the file asked for, or the error's first line."""
    text = str(error)
    unsupported = re.search(r"GLOBAL ([\w.]+)", text)
    if unsupported:
        return f"it holds a {unsupported.group(1)} object"
    lines = [line for line in text.splitlines() if line.strip() and "weights_only" not in line]
    return f"{type(error).__name__}: {lines[0] if lines else 'a Python object it may not unpickle'}"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)[0]


def without_ddp_prefix(state: dict) -> dict:
    """A state dict saved from a DistributedDataParallel wrapper, with its `module.` prefix removed."""
    if state and all(key.startswith(DDP_PREFIX) for key in state):
        return {key[len(DDP_PREFIX) :]: value for key, value in state.items()}
    return state


def _counters_as_held(own: dict, state: dict) -> dict:
    """`state` with COUNTERS entries the module does not hold dropped, and those it holds but the
    file lacks taken from the module."""
    kept = {k: v for k, v in state.items() if k in own or not k.endswith(COUNTERS)}
    return kept | {k: v for k, v in own.items() if k.endswith(COUNTERS) and k not in kept}


def readings(model: nn.Module, state: dict) -> dict[str, tuple[dict, dict]]:
    """`state` renamed by each layout `model` loads (its own keys first), keyed by layout name, each
    with the file's name of every renamed key."""
    state = without_ddp_prefix(state)
    found = {OWN_LAYOUT: (state, {})}
    for name in getattr(model, "checkpoint_layouts", ()):
        file_keys = {LAYOUTS[name].key(key): key for key in state}
        found[name] = ({new: state[old] for new, old in file_keys.items()}, file_keys)
    return found


def _some(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def _mismatches(own: dict, state: dict, file_keys: dict | None = None) -> list[str]:
    """What keeps `state` from loading strictly into a module whose state dict is `own`; `file_keys`
    gives a renamed key's name in the file, which is how unexpected keys and shapes are shown."""
    file_keys = file_keys or {}
    missing = [k for k in own if k not in state]
    unexpected = [file_keys.get(k, k) for k in state if k not in own]
    shapes = [
        f"{file_keys.get(k, k)} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
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
    """Load `path` into `model` strictly, in whichever layout it knows fits exactly (its own keys,
    or a published file's: kd.models.layouts), and return the file's metadata. A file that fits
    none is a UserInputError naming the layouts tried and what still differs in the closest."""
    expected = expected or getattr(model, "name", type(model).__name__)
    state, meta = read_checkpoint(path)
    own = model.state_dict()
    tried = {}
    for name, (renamed, file_keys) in readings(model, state).items():
        renamed = _counters_as_held(own, renamed)
        tried[name] = (renamed, _mismatches(own, renamed, file_keys))
    fitting = [name for name, (_, problems) in tried.items() if not problems]
    if not fitting and len(tried) == 1:
        raise UserInputError(
            f"checkpoint {path} does not fit {expected}: {'; '.join(tried[OWN_LAYOUT][1])}. "
            "Pass a checkpoint saved from that model (a `module.` prefix is removed by itself)."
        )
    if not fitting:
        closest = min(tried, key=lambda name: _distance(own, tried[name][0]))
        layouts = ", ".join(
            f"{name} ({LAYOUTS[name].source})" if name in LAYOUTS else f"{name} (its own state_dict)"
            for name in tried
        )
        raise UserInputError(
            f"checkpoint {path} does not fit {expected} in any layout it loads: {layouts}. "
            f"Read in the closest, {closest}: {'; '.join(tried[closest][1])}. "
            "Pass a checkpoint of that network (a `module.` prefix is removed by itself)."
        )
    model.load_state_dict(tried[fitting[0]][0], strict=True)
    return meta


def _distance(own: dict, state: dict) -> int:
    return len(own.keys() ^ state.keys()) + sum(
        1 for k in own.keys() & state.keys() if own[k].shape != state[k].shape
    )


# An ImageNet classifier: a segmenter's backbone has none.
CLASSIFIER_KEYS = ("fc.", "classifier.")


def _features_names(stages) -> dict[int, str]:
    """features.<i> of a torchvision classifier -> the stage key prefix it becomes: one stage per
    child, or for stages that group several children (MobileNetV3: `features_group`), a position
    inside the stage."""
    items = stages.items() if hasattr(stages, "items") else ((name, None) for name in stages)
    names: dict[int, str] = {}
    for name, stage in items:
        group = getattr(stage, "features_group", None)
        for position in range(group or 1):
            names[len(names)] = f"{name}.{position}" if group else name
    return names


def backbone_keys(state: dict[str, torch.Tensor], stages) -> dict[str, torch.Tensor]:
    """A classification model's state dict renamed to a Segmenter's backbone `stages` (the
    ModuleDict, or its names; kd.models.backbones): a ResNet's conv1-3.* and bn1-3.* become
    stem.<name>.* (torchvision's one stem conv, or the deep stem of CSAIL's resnet18-imagenet.pth),
    layer1-4 keep their names; features.<i>.* becomes the stage holding the i-th `features` child
    (EfficientNet: stem, stage1-7, top; MobileNetV3's grouped stages; VGG, ConvNeXt, ...:
    features<i>); fc.* and classifier.* are dropped, and a DDP `module.` prefix. Keys already named
    by stage (torch.save(student.stages.state_dict(), ...)) pass unchanged."""
    features = _features_names(stages)
    renamed = {}
    for key, value in without_ddp_prefix(state).items():
        if key.startswith(CLASSIFIER_KEYS):
            continue
        if re.match(r"(conv|bn)[123]\.", key):
            key = f"stem.{key}"
        elif key.startswith("features."):
            index, _, rest = key[len("features.") :].partition(".")
            if index.isdigit() and int(index) in features:
                key = f"{features[int(index)]}.{rest}"
        renamed[key] = value
    return renamed


def load_backbone_weights(model: nn.Module, path: str | Path) -> None:
    """Load a classification backbone's weights (say, torchvision's ImageNet ResNet-18) into
    `model.stages` strictly, named as backbone_keys says. The backbone is the stages from the first
    to the last one the file names: stages after it (PSPNet's "psp") and the head keep their own
    initialisation. A file that does not fit is a UserInputError naming the keys that differ."""
    names = list(model.stages)
    state = backbone_keys(read_state_dict(path), model.stages)
    named = [names.index(key.split(".")[0]) for key in state if key.split(".")[0] in names]
    backbone = nn.ModuleDict({n: model.stages[n] for n in names[: max(named) + 1 if named else None]})
    state = _counters_as_held(backbone.state_dict(), state)
    problems = _mismatches(backbone.state_dict(), state)
    if problems:
        model_name = getattr(model, "name", type(model).__name__)
        raise UserInputError(
            f"weights file {path} does not fit the backbone of {model_name}: {'; '.join(problems)}. "
            "Expected the state dict of a classification model of the same architecture: "
            "torchvision's (e.g. torch.save(torchvision.models.resnet18(weights='IMAGENET1K_V1')"
            ".state_dict(), PATH) for a ResNet-18 backbone), CSAIL's deep-stem resnet18-imagenet.pth "
            "for the deep-stem students (cirkd_*, ifvd_*), or torch.save(student.stages.state_dict(), "
            "PATH); fc.* and classifier.* are ignored."
        )
    backbone.load_state_dict(state, strict=True)


def checkpoint_classes(model: nn.Module, path: str | Path) -> int | None:
    """How many classes the file at `path` predicts, when it is `model`'s network with another number
    of classes (a COCO or Cityscapes teacher for a study of other classes): the only differences are
    the classifiers' output rows. None when it fits `model` as it is, or differs in more than that
    (load_checkpoint then says what)."""
    return state_classes(model, read_checkpoint(path)[0])


def state_classes(model: nn.Module, state: dict) -> int | None:
    """checkpoint_classes for a state dict in hand (any layout `model` loads)."""
    own = model.state_dict()
    classes = getattr(model, "num_classes", None)
    for renamed, _ in readings(model, state).values():
        renamed = _counters_as_held(own, renamed)
        if renamed.keys() != own.keys():
            continue
        differ = [k for k in own if own[k].shape != renamed[k].shape]
        rows = {renamed[k].shape[0] for k in differ}
        if (
            differ
            and len(rows) == 1
            and all(own[k].shape[0] == classes and own[k].shape[1:] == renamed[k].shape[1:] for k in differ)
        ):
            return rows.pop()
    return None
