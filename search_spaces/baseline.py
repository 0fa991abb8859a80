"""Baseline: the SD student trained alone on the labelled target images.

split_point: the teacher's valid points (the student's feature extractor copies the
teacher's front up to it); default the last one.
lr in [1e-3, 1e-1], log-uniform: SD trains the student with SGD at 1e-2, in the middle
(in decades) of the range, which spans the rates that SGD with momentum 0.9 tolerates.
"""

from __future__ import annotations

from search_spaces.base import Float, Param, register, sd_capacity, split_point


@register("baseline")
def params(split_points: list[str]) -> dict[str, Param]:
    return {
        "split_point": split_point(split_points),
        **sd_capacity(),
        "lr": Float(1e-3, 1e-1, log=True, target="train.optimizer.lr"),
    }
