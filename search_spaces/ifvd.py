"""IFVD: cross-entropy + 10 pixel KD + 0.1 adversarial + 50 intra-class feature variation.

Each weight spans a decade either side of the paper's value, log-uniform (weights act
multiplicatively on the loss scale):
lambda_kd in [1, 100] (paper 10); lambda_adv in [0.01, 1] (paper 0.1);
lambda_ifv in [5, 500] (paper 50; the official code uses 200, inside the range).
temperature in [1, 4], uniform: pixel KD's softmax temperature; IFVD uses 1 (the kd term's
own default, left to the recipe in grids), CWD-style distillation goes up to 4.
lr in [1e-3, 5e-2], log-uniform: IFVD trains with SGD at 1e-2 (momentum 0.9); the top is
kept lower than the SD family's because the distillation terms add to the gradient's scale.
"""

from __future__ import annotations

from search_spaces.base import Float, Param, register

LAMBDA_KD = Float(1.0, 100.0, log=True, target="lambda_kd")
LAMBDA_ADV = Float(0.01, 1.0, log=True, target="lambda_adv")  # around the papers' 0.1 (SKD's code too)
TEMPERATURE = Float(1.0, 4.0, target="kd.temperature")
LR = Float(1e-3, 5e-2, log=True, target="train.optimizer.lr")


@register("ifvd_student")
def student(split_points: list[str]) -> dict[str, Param]:
    return {"lr": LR}


@register("ifvd")
def params(split_points: list[str]) -> dict[str, Param]:
    return {
        "lambda_kd": LAMBDA_KD,
        "lambda_adv": Float(1e-4, 1e-2, log=True, target="lambda_adv"),
        "lambda_ifv": Float(20.0, 2000.0, log=True, target="lambda_ifv"),
        "temperature": TEMPERATURE,
        "lr": LR,
    }


@register("ifvd_paper")
def paper(split_points: list[str]) -> dict[str, Param]:
    return {
        **params(split_points),
        "lambda_adv": LAMBDA_ADV,
        "lambda_ifv": Float(5.0, 500.0, log=True, target="lambda_ifv"),
    }
