"""SD: feature mimicking, frozen-extractor head training, fine-tuning.

split_point: the teacher's front that the student's feature extractor mimics; default the last.
feature_optimizer: stage 1's optimiser, "adam" (default) or "sd-paper" (SGD, momentum 0.99,
the paper's text); not searched unless a study lists choices (kd.methods.recipes says why).
feature_lr in [1e-4, 1e-2], log-uniform: stage 1's rate, default 1e-3 (Adam's); the paper's
SGD uses 3e-3: a study that picks "sd-paper" sets `feature_lr = 3e-3` with it.
frozen_lr in [1e-3, 1e-1], log-uniform: stage 2's head rate, paper 1e-2 (momentum 0.9).
Stage 3 (fine-tuning at 5e-5) keeps the paper's rate: it only polishes.
"""

from __future__ import annotations

from search_spaces.base import Choice, Float, Param, register, sd_capacity, split_point


@register("sd")
def params(split_points: list[str]) -> dict[str, Param]:
    return {
        "split_point": split_point(split_points),
        **sd_capacity(),
        "feature_optimizer": Choice(
            ("adam", "sd-paper"), target="feature.optimizer", default="adam", search=False
        ),
        "feature_lr": Float(1e-4, 1e-2, log=True, target="feature.optimizer.lr"),
        "frozen_lr": Float(1e-3, 1e-1, log=True, target="frozen.optimizer.lr"),
    }
