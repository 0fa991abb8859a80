"""Method "calm": cross-entropy plus a penalty on the size of the student's logits.

Its loss term, its recipe and its search space, each registered where it is defined; the
space's defaults are the recipe's (lambda_logit_norm 0.1, lr 1e-2).
"""

from __future__ import annotations

from kd.losses import LossTerm, register_term
from kd.methods import Optimizer, Recipe, Stage, register_recipe
from search_spaces import Float, Param, register


@register_term("logit_norm")
class LogitNorm(LossTerm):
    """Mean |z|^power of the student's logits: it needs no teacher."""

    def __init__(self, power: float = 2.0):
        super().__init__()
        self.power = power

    def forward(self, student, teacher, batch):
        return student["logits"].abs().pow(self.power).mean()


@register_recipe("calm")
def calm(lambda_logit_norm: float = 0.1, epochs: int = 3) -> Recipe:
    stage = Stage(
        "train",
        {"ce": 1.0, "logit_norm": lambda_logit_norm},
        epochs=epochs,
        optimizer=Optimizer(lr=1e-2, momentum=0.9),
    )
    return Recipe(
        "calm", (stage,), student="pspnet_resnet18_half", description="cross-entropy + small logits"
    )


@register("calm")
def params(split_points: list[str]) -> dict[str, Param]:
    return {
        "lambda_logit_norm": Float(0.01, 1.0, log=True, target="lambda_logit_norm"),
        "lr": Float(1e-3, 1e-1, log=True, target="train.optimizer.lr"),
    }
