"""FTT: the constructed teacher CT (frozen teacher front + SD head trained with cross-entropy).

split_point: where the teacher's front ends and the trainable head starts; default the last.
lr in [1e-3, 1e-1], log-uniform: SD trains CT's head at 1e-2 (SGD, momentum 0.9), one
decade inside either end.
"""

from __future__ import annotations

from search_spaces.base import Float, Param, register, split_point


@register("ftt")
def params(split_points: list[str]) -> dict[str, Param]:
    return {
        "split_point": split_point(split_points),
        "lr": Float(1e-3, 1e-1, log=True, target="train.optimizer.lr"),
    }
