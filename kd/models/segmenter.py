"""A segmentation network as named backbone stages followed by a head.

Every model in kd.models is a `Segmenter`: `stages` (an ordered ModuleDict; the names are
the split points) feed `head`, whose logits are upsampled to the input size. Splitting at
a point gives the activation map generator (AMG: the stages up to and including the point)
and the teacher head (the remaining stages plus the head). Both share the model's modules
(no copies, no rewiring), so `tail(amg(x), x.shape[-2:]) == model(x)`.

Intermediate features for distillation losses are taken with forward hooks on named
modules (`FeatureTap`), not by changing forward(). An optional `aux_head` on the output of
stage `aux_point` (PSPNet's deep supervision) is trained through `forward_parts` only; forward()
and the split never run it.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from kd.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from kd.errors import UserInputError
from kd.models.backbones import stage_channels

CHANNEL_ORDERS = ("rgb", "bgr")


def upsample(logits: torch.Tensor, size, align_corners: bool = False) -> torch.Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=align_corners)


class Tail(nn.Module):
    """The part of a Segmenter after a split point: remaining stages, head, upsampling."""

    def __init__(self, stages: OrderedDict[str, nn.Module], head: nn.Module, align_corners: bool = False):
        super().__init__()
        self.stages = nn.ModuleDict(stages)
        self.head = head
        self.align_corners = align_corners

    def forward(self, features: torch.Tensor, size) -> torch.Tensor:
        for stage in self.stages.values():
            features = stage(features)
        return upsample(self.head(features), size, self.align_corners)


class Segmenter(nn.Module):
    """`input_mean`/`input_std` (0..1 pixel units, in the order of `input_channels`) are the
    normalisation the weights expect, `input_channels` the channel order ("bgr": networks trained on
    OpenCV-decoded images); `align_corners` is how forward() upsamples the logits to the input, as the
    weights' own code does it. `aux_head`, if any, reads the output of stage `aux_point`
    (forward_parts' "aux_logits"). `head_stages` name stages that belong to the head although they
    are split points (PSPNet's "psp"): they start untrained, so training "the head only" trains them
    too. `checkpoint_layouts` name the published files' key layouts the network loads (kd.models.layouts)."""

    def __init__(
        self,
        stages: OrderedDict[str, nn.Module],
        head: nn.Module,
        num_classes: int,
        name: str = "segmenter",
        input_mean: tuple[float, float, float] = IMAGENET_MEAN,
        input_std: tuple[float, float, float] = IMAGENET_STD,
        aux_head: nn.Module | None = None,
        aux_point: str | None = None,
        head_stages: tuple[str, ...] = (),
        input_channels: str = "rgb",
        align_corners: bool = False,
        checkpoint_layouts: tuple[str, ...] = (),
    ):
        super().__init__()
        self.stages = nn.ModuleDict(stages)
        self.head = head
        self.num_classes = num_classes
        self.name = name
        self.input_mean, self.input_std = tuple(input_mean), tuple(input_std)
        if (aux_head is None) != (aux_point is None) or (aux_point is not None and aux_point not in stages):
            raise ValueError(f"aux_head needs aux_point, one of the stages {list(stages)}; got {aux_point!r}")
        self.aux_head, self.aux_point = aux_head, aux_point
        unknown = set(head_stages) - set(stages)
        if unknown:
            raise ValueError(f"head_stages {sorted(unknown)} are not stages of {list(stages)}")
        self.head_stages = tuple(head_stages)
        if input_channels not in CHANNEL_ORDERS:
            raise ValueError(f"input_channels must be one of {CHANNEL_ORDERS}, got {input_channels!r}")
        self.input_channels, self.align_corners = input_channels, bool(align_corners)
        self.checkpoint_layouts = tuple(checkpoint_layouts)

    @property
    def split_points(self) -> list[str]:
        return list(self.stages.keys())

    def check_split_point(self, point: str) -> str:
        if point not in self.stages:
            raise UserInputError(
                f"{self.name} has no split point {point!r}; "
                f"valid split points: {', '.join(self.split_points)}."
            )
        return point

    def features(self, x: torch.Tensor, point: str) -> torch.Tensor:
        """Output of the stages up to and including `point`."""
        self.check_split_point(point)
        for name, stage in self.stages.items():
            x = stage(x)
            if name == point:
                return x
        raise AssertionError("unreachable")

    def split(self, point: str) -> tuple[nn.Sequential, Tail]:
        """(AMG, tail) at `point`; both share this model's modules."""
        self.check_split_point(point)
        names = self.split_points
        cut = names.index(point) + 1
        amg = nn.Sequential(OrderedDict((n, self.stages[n]) for n in names[:cut]))
        tail = Tail(OrderedDict((n, self.stages[n]) for n in names[cut:]), self.head, self.align_corners)
        return amg, tail

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (N,3,H,W) normalised the way this model's weights expect.

        Distillation feeds one batch to a student and a teacher whose weights may expect
        different normalisations (EfficientNet-Lite's 127/128 against ImageNet's), so the
        batch stays in [0, 1] and each model normalises its own copy.
        """
        if self.input_channels == "bgr":
            images = images.flip(1)
        mean = images.new_tensor(self.input_mean).view(1, -1, 1, 1)
        std = images.new_tensor(self.input_std).view(1, -1, 1, 1)
        return (images - mean) / std

    def forward_parts(self, x: torch.Tensor, point: str | None = None, want=("features", "logits")) -> dict:
        """The outputs distillation needs from one pass: `features` at `point`, `logits`,
        `aux_logits` (the aux head's, on stage `aux_point`).

        Both logits are the heads' output before upsampling to the input size (cheaper to
        store for a teacher cache; callers upsample). With `logits` not wanted the pass
        stops at the last stage wanted, so a feature loss never pays for the rest of the network.
        """
        want = set(want)
        if not want <= {"features", "logits", "aux_logits"}:
            raise ValueError(
                f"forward_parts gives 'features', 'logits' and 'aux_logits', asked for {sorted(want)}"
            )
        if "aux_logits" in want and self.aux_point is None:
            raise UserInputError(
                f"{self.name} has no auxiliary head on a stage: it cannot give 'aux_logits'."
            )
        point = self.check_split_point(point) if point is not None else self.split_points[-1]
        names = self.split_points
        last = point
        if "aux_logits" in want and names.index(self.aux_point) > names.index(point):
            last = self.aux_point
        outputs = {}
        for name, stage in self.stages.items():
            x = stage(x)
            if name == point and "features" in want:
                outputs["features"] = x
            if name == self.aux_point and "aux_logits" in want:
                outputs["aux_logits"] = self.aux_head(x)
            if name == last and "logits" not in want:
                return outputs
        outputs["logits"] = self.head(x)
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        for stage in self.stages.values():
            x = stage(x)
        return upsample(self.head(x), size, self.align_corners)

    def stage_channels(self, size: tuple[int, int] = (64, 64)) -> OrderedDict[str, int]:
        """Output channels of every stage, from one forward pass on a small input."""
        return stage_channels(self.stages, size)


class FeatureTap:
    """Captures outputs of named submodules during forward passes, with forward hooks.

    with FeatureTap(model, ["stages.layer2", "head"]) as tap:
        logits = model(x)
    tap.outputs["stages.layer2"]
    """

    def __init__(self, model: nn.Module, names: list[str]):
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise UserInputError(
                f"no module named {', '.join(missing)} in the model; names look like 'stages.layer2'."
            )
        self.modules = {n: modules[n] for n in names}
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = []

    def __enter__(self) -> FeatureTap:
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name: str):
        def store(module, inputs, output):
            self.outputs[name] = output

        return store

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
