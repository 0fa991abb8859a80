"""A recipe is data: ordered stages, each naming its loss terms and weights, what trains,
its optimiser and schedule, its length and the data stream it reads.

    Stage("feature", losses={"feature": 1.0}, train=("fe",), epochs=20,
          optimizer=Optimizer(lr=3e-3, momentum=0.99), stream="mix", r=1.0)

Module groups a stage can train (everything else is frozen and kept in eval mode, so
BatchNorm statistics do not drift): "fe" (the student's stages up to its feature point;
for the SD student, its feature extractor), "head" (the rest: remaining stages and head),
"student" (both). Student-side parts of loss terms (feature adapters) train with them;
critics (the adversarial discriminator) train with the stage's `critic` optimiser,
alternately with the student.

Overrides address any field by a dotted path; a few shorthands cover what studies sweep:

    recipe.override({"feature.epochs": 5, "frozen.optimizer.lr": 2e-2,
                     "lambda_kd": 10, "r": 0.5, "epochs": 3, "kd.temperature": 2})

"epochs" sets every stage's length; "total_epochs" is a budget: the stages share it in the
recipe's own proportions (SD's 40/40/20 of 100), so methods with one stage and methods with
three train for the same number of epochs. "<stage>.optimizer" also takes a named optimiser
from OPTIMIZER_READINGS, e.g. SD's stage 1 as the paper's text states it.

A recipe is registered next to its function, in any module of kd.methods or in a plugin
(kd.registry). Its defaults are the values it builds; its search space reads them there
(Recipe.value), so they are written once:

    @register_recipe("mine")
    def mine(lambda_my_term: float = 0.5) -> Recipe:  # build_recipe calls it without arguments
        return Recipe("mine", (Stage("train", {"ce": 1.0, "my_term": lambda_my_term}),))
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from kd.data.transforms import Augmentation
from kd.errors import UserInputError
from kd.losses import TERMS
from kd.registry import register

STREAMS = ("target", "mix")
GROUPS = ("fe", "head", "student")
OPTIMIZERS = ("sgd", "adam")
# "train": batch statistics in training, running averages kept (PyTorch's default); "precise" (the
# default): the same, then the statistics recomputed over the stage's images once it ends (batches
# of 4 leave running averages that lag the weights); "frozen": statistics fixed, scale and shift train.
BATCHNORM = ("train", "precise", "frozen")
# How long one epoch of the mixed stream is: "target" holds as many images as the target set, so
# SD and ESD at every r take the same optimiser steps per epoch (equal budgets); "paper" holds
# every target image once plus n_target / r proximity images, so its length depends on r.
MIX_EPOCHS = ("target", "paper")


@dataclass(frozen=True)
class Optimizer:
    """SGD with momentum (or Adam: `betas`); the learning rate decays as
    lr * (1 - step/steps) ** poly_power."""

    kind: str = "sgd"
    lr: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 3e-3
    betas: tuple[float, float] = (0.9, 0.99)
    poly_power: float = 0.9

    def problems(self, where: str) -> list[str]:
        found = []
        if self.kind not in OPTIMIZERS:
            found.append(f"{where}.kind must be one of {', '.join(OPTIMIZERS)}, got {self.kind!r}")
        for name in ("lr", "momentum", "weight_decay", "poly_power"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                found.append(f"{where}.{name} must be a finite number >= 0, got {value!r}")
        if self.lr == 0:
            found.append(f"{where}.lr must be positive, got 0")
        return found


# Named optimisers a "<stage>.optimizer" override may give, and the augmentation families a recipe
# names (Recipe.augmentation): registered beside the recipes that use them (kd.methods.recipes).
OPTIMIZER_READINGS: dict[str, Optimizer] = {}
AUGMENTATIONS: dict[str, Augmentation] = {}

# The critic of the papers' readings: Adam, lr 4e-4, betas (0.9, 0.99) as IFVD's code, at a
# constant lr (poly_power 0); a stage's critic=None means it. The code readings decay it (recipes.py).
DEFAULT_CRITIC = Optimizer(
    kind="adam", lr=4e-4, momentum=0.0, weight_decay=0.0, betas=(0.9, 0.99), poly_power=0.0
)


@dataclass(frozen=True)
class Stage:
    """One stage. `epochs` is its length, or its maximum when `patience` is set: then it stops
    once the epoch's mean training loss has not fallen below (1 - min_delta) x its best for
    `patience` epochs ("until convergence"). `batchnorm` says what happens to the BatchNorm
    statistics of the modules it trains (BATCHNORM)."""

    name: str
    losses: dict[str, float]
    train: tuple[str, ...] = ("student",)
    epochs: int = 10
    optimizer: Optimizer = Optimizer()
    stream: str = "target"  # "mix": ESD's target + proximity stream
    r: float | None = None  # the mixed stream's target images per proximity image (0: proximity only)
    loss_options: dict[str, dict] = field(default_factory=dict)  # {"kd": {"temperature": 1.0}}
    critic: Optimizer | None = None  # for terms with a critic (adv); None: DEFAULT_CRITIC
    patience: int | None = None
    min_delta: float = 0.01
    batchnorm: str = "precise"
    mix_epoch: str = "target"
    # The stream the precise-BatchNorm pass reads when it is not the stage's own: "mix" recomputes
    # the statistics over ESD's target + proximity stream at ratio r (an AdaBN control for ESD).
    batchnorm_stream: str | None = None

    @property
    def mixed(self) -> bool:
        """Whether the stage reads ESD's mixed stream, to train or to recompute BatchNorm."""
        return "mix" in (self.stream, self.batchnorm_stream)

    def active_losses(self) -> dict[str, float]:
        return {name: weight for name, weight in self.losses.items() if weight != 0}


@dataclass(frozen=True)
class Recipe:
    name: str
    stages: tuple[Stage, ...]
    student: str = "sd"  # the student it was published with: "sd", "ct" or a kd.models name
    description: str = ""
    # Its training images' random steps, a name in AUGMENTATIONS: methods of one family see the
    # same views for the same seed.
    augmentation: str = "sd"

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise UserInputError(
            f"recipe {self.name!r} has no stage {name!r}; stages: {', '.join(self.stage_names)}."
        )

    @property
    def stage_names(self) -> list[str]:
        return [stage.name for stage in self.stages]

    def loss_names(self) -> set[str]:
        return {name for stage in self.stages for name in stage.active_losses()}

    @property
    def needs_proximity(self) -> bool:
        """Whether some stage reads the mixed stream, i.e. needs proximity images."""
        return any(stage.mixed for stage in self.stages)

    @property
    def teacher_terms(self) -> dict[str, tuple[str, ...]]:
        """The active loss terms that read teacher outputs, each with the outputs it reads
        (the terms' `teacher_needs`; unknown terms are left to validate())."""
        return {
            name: TERMS[name].teacher_needs
            for name in sorted(self.loss_names())
            if name in TERMS and TERMS[name].teacher_needs
        }

    @property
    def needs_teacher(self) -> bool:
        return bool(self.teacher_terms)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self, known_losses) -> Recipe:
        """Every problem at once, as one UserInputError; returns self when there are none."""
        problems = []
        if not self.stages:
            problems.append("it has no stages")
        if self.augmentation not in AUGMENTATIONS:
            problems.append(
                f"augmentation must be one of {', '.join(AUGMENTATIONS)}, got {self.augmentation!r}"
            )
        if len(set(self.stage_names)) != len(self.stages):
            problems.append(f"stage names repeat: {', '.join(self.stage_names)}")
        for stage in self.stages:
            where = f"stage {stage.name!r}"
            unknown = sorted(set(stage.losses) - set(known_losses))
            if unknown:
                problems.append(
                    f"{where} names unknown loss terms {', '.join(unknown)} "
                    f"(known: {', '.join(known_losses)})"
                )
            for term, weight in stage.losses.items():
                if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
                    problems.append(
                        f"{where}: weight of {term!r} must be a finite number >= 0, got {weight!r}"
                    )
            if not stage.active_losses():
                problems.append(f"{where} has no loss term with a non-zero weight")
            bad_groups = sorted(set(stage.train) - set(GROUPS))
            if bad_groups or not stage.train:
                problems.append(
                    f"{where}: train must name some of {', '.join(GROUPS)}, got {list(stage.train)}"
                )
            if not (isinstance(stage.epochs, int) and stage.epochs >= 1):
                problems.append(f"{where}: epochs must be a whole number >= 1, got {stage.epochs!r}")
            if stage.stream not in STREAMS:
                problems.append(f"{where}: stream must be one of {', '.join(STREAMS)}, got {stage.stream!r}")
            # The one user-facing check of r: kd.data.esd only asserts it.
            if stage.batchnorm_stream is not None and (
                stage.batchnorm_stream not in STREAMS or stage.batchnorm != "precise"
            ):
                problems.append(
                    f"{where}: batchnorm_stream must be one of {', '.join(STREAMS)} with batchnorm "
                    f"'precise' (the pass that reads it), got {stage.batchnorm_stream!r} with "
                    f"{stage.batchnorm!r}"
                )
            if stage.mixed and not (
                isinstance(stage.r, (int, float))
                and not isinstance(stage.r, bool)
                and math.isfinite(stage.r)
                and stage.r >= 0
            ):
                problems.append(
                    f"{where}: r, the mixed stream's target images per proximity image, must be a "
                    f"finite number >= 0 (0 = proximity only), got {stage.r!r}"
                )
            if stage.patience is not None and not (isinstance(stage.patience, int) and stage.patience >= 1):
                problems.append(
                    f"{where}: patience must be a whole number of epochs >= 1 (or None), "
                    f"got {stage.patience!r}"
                )
            if not (isinstance(stage.min_delta, (int, float)) and 0 <= stage.min_delta < 1):
                problems.append(f"{where}: min_delta must be a fraction in [0, 1), got {stage.min_delta!r}")
            if stage.batchnorm not in BATCHNORM:
                problems.append(
                    f"{where}: batchnorm must be one of {', '.join(BATCHNORM)}, got {stage.batchnorm!r}"
                )
            if stage.mix_epoch not in MIX_EPOCHS:
                problems.append(
                    f"{where}: mix_epoch must be one of {', '.join(MIX_EPOCHS)}, got {stage.mix_epoch!r}"
                )
            problems += stage.optimizer.problems(f"{where}: optimizer")
            if stage.critic is not None:
                problems += stage.critic.problems(f"{where}: critic")
            stray = sorted(set(stage.loss_options) - set(stage.losses))
            if stray:
                problems.append(f"{where} has loss_options for terms it does not use: {', '.join(stray)}")
            for term, options in stage.loss_options.items():
                if term in known_losses and not isinstance(known_losses, (list, tuple, set)):
                    accepted = list(inspect.signature(known_losses[term]).parameters)
                    unknown = [o for o in options if o not in accepted]
                    if unknown:
                        fields = ", ".join(f.name for f in dataclasses.fields(Stage))
                        problems.append(
                            f"{where}: no field or option {', '.join(map(repr, unknown))}: loss term "
                            f"{term!r} takes {', '.join(accepted) or 'no options'}; stage fields: {fields}"
                        )
                    else:
                        try:  # terms check their option values when built (cheap: shapes come later)
                            known_losses[term](**options)
                        except UserInputError as err:
                            problems.append(f"{where}: {str(err).rstrip('.')}")
        if problems:
            raise UserInputError(f"recipe {self.name!r}: " + "; ".join(problems) + ".")
        return self

    def value(self, key: str):
        """What an override `key` would replace (in the first stage it reaches); None where the
        recipe leaves it to a loss term's own default. Search spaces read their defaults here."""
        indices, path = _address(self, key)
        found = self.stages[indices[0]]
        for name in path:
            found = found.get(name) if isinstance(found, dict) else getattr(found, name, None)
            if found is None and name == "critic":
                found = DEFAULT_CRITIC
            if found is None:
                return None
        return found

    def override(self, overrides: dict) -> Recipe:
        """A copy with fields replaced; see the module docstring for the keys."""
        recipe = self
        for key, value in overrides.items():
            recipe = _override_one(recipe, key, value)
        return recipe


RECIPES: dict[str, Callable[[], Recipe]] = {}  # filled by @register_recipe


def register_recipe(name: str):
    """Decorator: a function returning a Recipe, callable without arguments, becomes recipe
    `name` (build_recipe, a study's `methods`). RECIPES lists them in registration order."""

    def add(build: Callable[[], Recipe]) -> Callable[[], Recipe]:
        return register(RECIPES, "recipe", name, build)

    return add


def _replace_stage(recipe: Recipe, index: int, stage: Stage) -> Recipe:
    stages = list(recipe.stages)
    stages[index] = stage
    return dataclasses.replace(recipe, stages=tuple(stages))


def _set_path(obj, path: list[str], value, key: str):
    """obj with the field at `path` replaced (dataclasses and dicts, copied, never mutated)."""
    head, rest = path[0], path[1:]
    if isinstance(obj, dict):
        if rest:
            return {**obj, head: _set_path(obj.get(head, {}), rest, value, key)}
        return {**obj, head: value}
    if not dataclasses.is_dataclass(obj) or head not in {f.name for f in dataclasses.fields(obj)}:
        names = [f.name for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj) else []
        raise UserInputError(f"override {key!r}: no field {head!r} here; fields: {', '.join(names)}.")
    current = getattr(obj, head)
    if rest:
        if current is None and head == "critic":
            current = DEFAULT_CRITIC
        return dataclasses.replace(obj, **{head: _set_path(current, rest, value, key)})
    if isinstance(current, tuple) and isinstance(value, list):
        value = tuple(value)
    return dataclasses.replace(obj, **{head: value})


def _override_one(recipe: Recipe, key: str, value) -> Recipe:
    if key == "total_epochs":
        return dataclasses.replace(recipe, stages=_share(recipe.stages, value, key))
    head, _, rest = key.partition(".")
    if rest == "optimizer" and isinstance(value, str) and head in recipe.stage_names:
        if value not in OPTIMIZER_READINGS:
            raise UserInputError(
                f"override {key!r}: unknown optimiser {value!r}; named ones: {', '.join(OPTIMIZER_READINGS)}."
            )
        value = OPTIMIZER_READINGS[value]
    indices, path = _address(recipe, key)
    for i in indices:
        recipe = _replace_stage(recipe, i, _set_path(recipe.stages[i], path, value, key))
    return recipe


def _address(recipe: Recipe, key: str) -> tuple[list[int], list[str]]:
    """The stages an override key reaches, and the field path it sets in each."""
    stages = recipe.stages
    if key == "epochs":
        return list(range(len(stages))), ["epochs"]
    if key == "r":
        mixed = [i for i, s in enumerate(stages) if s.mixed]
        if not mixed:
            raise UserInputError(
                f"override 'r': recipe {recipe.name!r} has no stage reading the mixed ESD stream."
            )
        return mixed, ["r"]
    if key.startswith("lambda_"):
        term = key[len("lambda_") :]
        using = [i for i, s in enumerate(stages) if term in s.losses]
        if not using:
            raise UserInputError(
                f"override {key!r}: no stage of recipe {recipe.name!r} uses loss term {term!r}; "
                f"its terms: {', '.join(sorted({t for s in stages for t in s.losses}))}."
            )
        return using, ["losses", term]
    head, _, rest = key.partition(".")
    stage_fields = {f.name for f in dataclasses.fields(Stage)}
    term_stages = [i for i, s in enumerate(stages) if head in s.losses]
    # SD's stage "feature" uses the term "feature": "feature.epochs" is the stage's,
    # "feature.reduction" the term's
    if head in recipe.stage_names and rest and (rest.split(".")[0] in stage_fields or not term_stages):
        return [recipe.stage_names.index(head)], rest.split(".")
    if term_stages and rest:  # "kd.temperature": an option of that term in every stage that uses it
        return term_stages, ["loss_options", head, rest]
    raise UserInputError(
        f"unknown override {key!r} for recipe {recipe.name!r}; "
        "use 'epochs', 'total_epochs', 'r', 'lambda_<term>', "
        f"'<term>.<option>' or '<stage>.<field>' with stages {', '.join(recipe.stage_names)} "
        "(fields: losses.<term>, train, epochs, optimizer.lr, optimizer.momentum, ..., stream, r, critic.lr)."
    )


def _share(stages: tuple[Stage, ...], total, key: str) -> tuple[Stage, ...]:
    """Every stage's epochs scaled so that they add up to `total` (largest remainders; each >= 1)."""
    if not (isinstance(total, int) and not isinstance(total, bool) and total >= len(stages)):
        raise UserInputError(
            f"override {key!r}: needs a whole number of epochs >= {len(stages)} "
            f"(one per stage), got {total!r}."
        )
    weights = [max(s.epochs, 1) for s in stages]
    exact = [total * w / sum(weights) for w in weights]
    shares = [max(1, math.floor(x)) for x in exact]
    by_remainder = sorted(range(len(stages)), key=lambda i: exact[i] - math.floor(exact[i]), reverse=True)
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    while sum(shares) > total:  # a stage raised to 1 took an epoch from the largest
        shares[shares.index(max(shares))] -= 1
    return tuple(dataclasses.replace(s, epochs=n) for s, n in zip(stages, shares, strict=True))
