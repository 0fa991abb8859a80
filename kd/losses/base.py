"""The one call signature every loss term shares (CIRKD style).

    term = PixelKD(temperature=4.0).bind(num_classes=19)
    value = term(student, teacher, batch)      # a float32 scalar tensor

- `student` / `teacher`: `"logits"` float [N,K,H,W], upsampled to the input size (both sides the
  same size), or, for a term whose `logits_at` is "output", at the resolution the teacher's head
  gives them (IFVD's and SKD's code compare logits at 1/8; the student's are resized to the
  teacher's if they differ); `"features"` float [N,C,h,w] at the distillation point (student and
  teacher may differ in C and h,w); `"aux_logits"` the auxiliary head's, not upsampled.
- `batch`: `"image"` float [N,3,H,W] in [0,1] (not normalised), `"mask"` int64 [N,H,W] with the
  ignore index (an unlabelled image's mask is all ignore index).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator

import torch
from torch import nn

from kd.errors import UserInputError
from kd.registry import register

TERMS: dict[str, type[LossTerm]] = {}  # filled by @register_term where each term is defined


class LossTerm(nn.Module):
    """A loss term: `forward(student, teacher, batch) -> scalar`; shape-dependent parts made in bind()."""

    student_needs: tuple[str, ...] = ("logits",)  # subset of {"logits", "features", "aux_logits"}
    teacher_needs: tuple[str, ...] = ()  # () = no teacher needed
    logits_at: str = "input"  # or "output": the head's own resolution (see the module docstring)
    has_critic: bool = False  # True: the engine must also run critic steps (critic_loss, critic_parameters)

    def bind(
        self, *, student_features_shape=None, teacher_features_shape=None, num_classes=None, ignore_index=None
    ) -> LossTerm:
        """Build shape-dependent parts (adapters, discriminators) before the optimiser is made.

        ignore_index=None keeps the term's own. Default: nothing to build. Returns self.
        """
        return self

    def forward(self, student: dict, teacher: dict, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def critic_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters trained by a separate critic optimiser, never with the student."""
        return iter(())

    def student_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters trained with the student (adapters): all of the term's but the critic's."""
        critic = {id(p) for p in self.critic_parameters()}
        return (p for p in self.parameters() if id(p) not in critic)


def register_term(name: str):
    """Class decorator: the LossTerm becomes buildable by `name` (build_term, a stage's losses)."""

    def add(cls: type[LossTerm]) -> type[LossTerm]:
        if not (isinstance(cls, type) and issubclass(cls, LossTerm)):
            raise TypeError(f"register_term({name!r}) decorates a LossTerm subclass, not {cls!r}")
        return register(TERMS, "loss term", name, cls)

    return add


def float32(formula):
    """Run a loss formula in float32 with autocast off.

    Callers may train under autocast, which would run the formula's matmuls and einsums in half
    precision even on float32 inputs.
    """

    @functools.wraps(formula)
    def wrapper(*args, **kwargs):
        device = next(a.device.type for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor))
        if not torch.is_autocast_enabled(device):
            return formula(*args, **kwargs)
        with torch.autocast(device_type=device, enabled=False):
            return formula(*args, **kwargs)

    return wrapper


LOGITS_AT = ("input", "output")


def check_logits_at(term: str, value: str) -> str:
    if value not in LOGITS_AT:
        raise UserInputError(
            f"loss term {term!r}: logits_at must be 'input' (upsampled to the image, the papers' "
            f"equations) or 'output' (the head's resolution, as the official code), got {value!r}"
        )
    return value


def check_positive(term: str, **values: float) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise UserInputError(f"loss term {term!r}: {name} must be a finite number > 0, got {value!r}")
