"""Training recipes as data: baseline, FTT (CT), SD, ESD, IFVD, SKD, CWD and IFVD's ablations.

    from kd.methods import build_recipe, describe
    recipe = build_recipe("esd", {"r": 0.5, "feature.epochs": 5})
    print(describe(recipe))   # every stage, loss weight and optimiser setting

`python -m kd.methods` prints every recipe with its defaults. A new recipe is a function
decorated with `@register_recipe("name")` (kd.methods.recipe), in any module of this package
or in a plugin (kd.registry); its defaults are its function's, which its search space reads.
"""

from __future__ import annotations

from kd.errors import UserInputError
from kd.losses import TERMS
from kd.methods.recipe import (
    AUGMENTATIONS,
    DEFAULT_CRITIC,
    GROUPS,
    OPTIMIZER_READINGS,
    RECIPES,
    STREAMS,
    Optimizer,
    Recipe,
    Stage,
    register_recipe,
)
from kd.registry import discover, load_plugins


def build_recipe(name: str, overrides: dict | None = None) -> Recipe:
    """A recipe by name with its defaults, then `overrides` (see kd.methods.recipe), validated."""
    if name not in RECIPES:
        raise UserInputError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}.")
    return RECIPES[name]().override(overrides or {}).validate(TERMS)


# Students that start from the teacher's own weights (CT: a frozen copy of its backbone); the SD
# student copies only the architecture.
COPIES_TEACHER_WEIGHTS = ("ct",)


def teacher_users(methods: list[str], students: dict[str, str] | None = None) -> list[str]:
    """Of `methods`, those that need the teacher's trained weights: their recipe distils from it,
    or their student (`students[method]`, else the recipe's own) starts from its weights."""
    users = []
    for method in methods:
        recipe = build_recipe(method)
        if recipe.needs_teacher or (students or {}).get(method, recipe.student) in COPIES_TEACHER_WEIGHTS:
            users.append(method)
    return users


def _optimizer_text(opt: Optimizer) -> str:
    moment = f"betas {opt.betas}" if opt.kind == "adam" else f"momentum {opt.momentum:g}"
    return f"{opt.kind} lr {opt.lr:g} {moment} wd {opt.weight_decay:g} poly {opt.poly_power:g}"


def describe(recipe: Recipe) -> str:
    lines = [
        f"{recipe.name}: {recipe.description} (student: {recipe.student}; "
        f"augmentation: {recipe.augmentation})"
    ]
    for stage in recipe.stages:
        losses = " + ".join(f"{w:g}*{t}" for t, w in stage.losses.items())
        stream = f"mix r={stage.r:g}" if stage.stream == "mix" else stage.stream
        lines.append(
            f"  {stage.name}: {losses}; trains {'+'.join(stage.train)}; {stage.epochs} epochs on {stream}; "
            + _optimizer_text(stage.optimizer)
            + (f"; batchnorm {stage.batchnorm}" if stage.batchnorm != "train" else "")
            + (f" over mix r={stage.r:g}" if stage.batchnorm_stream == "mix" else "")
            + (
                f"; stops after {stage.patience} epochs without a {stage.min_delta:g} gain"
                if stage.patience
                else ""
            )
        )
        for term, options in stage.loss_options.items():
            lines.append(f"    {term}: {', '.join(f'{k}={v}' for k, v in options.items())}")
        if stage.critic is not None:
            lines.append(f"    critic: {_optimizer_text(stage.critic)} (one step after every student step)")
    return "\n".join(lines)


# Every module here registers its recipes when imported; then the installed plugins register theirs.
discover(__name__)
load_plugins()

__all__ = [
    "AUGMENTATIONS",
    "COPIES_TEACHER_WEIGHTS",
    "DEFAULT_CRITIC",
    "GROUPS",
    "OPTIMIZER_READINGS",
    "RECIPES",
    "STREAMS",
    "Optimizer",
    "Recipe",
    "Stage",
    "build_recipe",
    "describe",
    "register_recipe",
    "teacher_users",
]
