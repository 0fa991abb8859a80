"""The weighted sum of loss terms that a training stage minimises.

    total = sum_{active} weight[name] * term[name](student, teacher, batch)

A term with weight 0 is inactive: never bound, never called (its cost is skipped). Each active
term's unweighted value is reported, and a NaN or infinite one stops training with a
NonFiniteLossError naming the term and where it happened.

The caller hands over logits as the heads give them; each term sees them at its `logits_at`:
upsampled to the input size (once per call, shared by the terms that want it) or as they are.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kd.errors import NonFiniteLossError, UserInputError
from kd.losses.base import LossTerm
from kd.models.segmenter import upsample


class WeightedSum(nn.Module):
    def __init__(self, terms: dict[str, LossTerm], weights: dict[str, float]):
        super().__init__()
        names = ", ".join(terms) or "none"
        for name, weight in weights.items():
            if name not in terms:
                raise UserInputError(
                    f"a weight is given for loss term {name!r}, which this stage does not have "
                    f"(its terms: {names}); remove that weight or add the term"
                )
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < math.inf:
                raise UserInputError(
                    f"the weight of loss term {name!r} must be a finite number >= 0, got "
                    f"{weight!r}; set it to 0 to switch the term off"
                )
        for name in terms:
            if name not in weights:
                raise UserInputError(f"loss term {name!r} has no weight; give one (0 switches it off)")
        self.terms = nn.ModuleDict(terms)
        self.weights = {name: float(weights[name]) for name in terms}
        self.active = [name for name in terms if self.weights[name] != 0]
        if not self.active:
            raise UserInputError(
                f"every loss weight is 0 (terms: {names}); give at least one term a weight > 0"
            )

    @property
    def student_needs(self) -> tuple[str, ...]:
        return tuple(sorted({need for name in self.active for need in self.terms[name].student_needs}))

    @property
    def teacher_needs(self) -> tuple[str, ...]:
        return tuple(sorted({need for name in self.active for need in self.terms[name].teacher_needs}))

    def bind(self, **shapes) -> WeightedSum:
        for name in self.active:
            self.terms[name].bind(**shapes)
        return self

    def critic_terms(self) -> dict[str, LossTerm]:
        return {name: self.terms[name] for name in self.active if self.terms[name].has_critic}

    def student_parameters(self):
        """Parameters trained with the student (adapters), critics' left out."""
        return (p for name in self.active for p in self.terms[name].student_parameters())

    def forward(
        self, student: dict, teacher: dict, batch: dict, where: str = ""
    ) -> tuple[torch.Tensor, dict]:
        views = LogitViews(student, teacher, batch)
        total, values = None, {}
        for name in self.active:
            value = self.terms[name](*views.at(self.terms[name].logits_at), batch)
            values[name] = float(value.detach())
            if not math.isfinite(values[name]):
                raise NonFiniteLossError(term=name, value=values[name], where=where)
            weighted = self.weights[name] * value
            total = weighted if total is None else total + weighted
        return total, values

    def critic_loss(self, student: dict, teacher: dict, batch: dict) -> torch.Tensor:
        """The summed losses of the terms' critics, each seeing logits at its `logits_at`."""
        views = LogitViews(student, teacher, batch)
        return sum(
            term.critic_loss(*views.at(term.logits_at), batch) for term in self.critic_terms().values()
        )


class LogitViews:
    """(student, teacher) dicts with "logits" at the input size (the batch's images; logits left
    as they are without images) or at the teacher head's own size."""

    def __init__(self, student: dict, teacher: dict, batch: dict):
        image = batch.get("image")
        self.raw, self.made = (student, teacher), {}
        self.input_size = None if image is None else tuple(image.shape[-2:])

    def at(self, where: str) -> tuple[dict, dict]:
        if where not in self.made:
            student, teacher = self.raw
            size = self.input_size if where == "input" else None
            size = size or next(
                (side["logits"].shape[-2:] for side in (teacher, student) if "logits" in side), None
            )
            self.made[where] = tuple(
                {**side, "logits": upsample(side["logits"], size)} if "logits" in side and size else side
                for side in self.raw
            )
        return self.made[where]
