"""ESD: SD whose stage 1 also reads unlabelled proximity-domain images.

SD's parameters (see search_spaces.sd), plus
r in [0, 10], uniform: the ratio of target to proximity images in stage 1. The paper tries
r in {0, 0.2, 0.5, 1, 3, 5, 10}; r = 0 means proximity images only, so the range includes 0
and cannot be log-scaled. Default 1 (equal shares). To search the paper's grid exactly,
a study file can say `r = {choices = [0, 0.2, 0.5, 1, 3, 5, 10]}`.
"""

from __future__ import annotations

from search_spaces import sd
from search_spaces.base import Float, Param, register


@register("esd")
def params(split_points: list[str]) -> dict[str, Param]:
    return {**sd.params(split_points), "r": Float(0.0, 10.0, target="r")}


@register("sd_adabn")
def adabn_params(split_points: list[str]) -> dict[str, Param]:
    """ESD's control (kd.methods.recipes.sd_adabn) takes ESD's parameters: r sets whose images
    its BatchNorm statistics come from."""
    return params(split_points)
