"""SKD (structured KD): pixel KD + pairwise similarity + holistic (adversarial) distillation;
`skd` (the official code) and `skd_paper` share the space: their weights are the same.

lambda_kd, lambda_adv, temperature and lr as for IFVD (search_spaces.ifvd: Liu et al. use
the same pixel KD weight 10 and adversarial weight 0.1, SGD at 1e-2).
lambda_skd in [0.1, 10], log-uniform: the pairwise-similarity weight, paper 1.
"""

from __future__ import annotations

from search_spaces.base import Float, Param, register
from search_spaces.ifvd import LAMBDA_ADV, LAMBDA_KD, LR, TEMPERATURE


@register("skd_paper")  # decorators apply bottom-up: "skd" registers first, in kd.methods' order
@register("skd")
def params(split_points: list[str]) -> dict[str, Param]:
    return {
        "lambda_kd": LAMBDA_KD,
        "lambda_skd": Float(0.1, 10.0, log=True, target="lambda_skd"),
        "lambda_adv": LAMBDA_ADV,
        "temperature": TEMPERATURE,
        "lr": LR,
    }
