"""The published recipes, as data. Defaults are the papers' settings except lengths and
SD's stage-1 optimiser (below).

Lengths are ours (the papers train for tens of thousands of iterations on full datasets):
every recipe trains EPOCHS epochs of the target images in all, so that methods compared in
one study get the same number of optimiser steps; SD and ESD share them 40/40/20 over their
stages. Weight decay is SD's 3e-3 for the SD family and IFVD's 5e-4 for the IFVD family.

SD's stage 1, two readings (OPTIMIZER_READINGS). The paper states SGD lr 3e-3, momentum
0.99 ("sd-paper"). With our short schedules and small batches that reading leaves the
student's features far from the teacher's, where Adam at 1e-3 ("adam") brings them close:
the default is "adam", and a study can still ask for the paper's. Both use eq. 2 as written
(feature_mse's "channel_sum"). Precise BatchNorm statistics (Stage.batchnorm) after stages 1
and 2: at batch 4 the running averages lag the weights, so the features in eval mode would
be judged with statistics of earlier weights.
"""

from __future__ import annotations

import dataclasses
import functools

from kd.data.transforms import IMAGENET_MEAN, Augmentation
from kd.methods.recipe import (
    AUGMENTATIONS,
    DEFAULT_CRITIC,
    OPTIMIZER_READINGS,
    Optimizer,
    Recipe,
    Stage,
    register_recipe,
)
from kd.registry import register

SD_DECAY = 3e-3
IFVD_DECAY = 5e-4
EPOCHS = 100  # every recipe's total; a study's `epochs` replaces it (recipe shorthand "total_epochs")
SD_STAGE_EPOCHS = (40, 40, 20)  # feature mimicking, frozen-FE head training, fine-tuning: EPOCHS in all
# Stage 3 trains the whole student at 5e-5 with the BatchNorm statistics of stages 1 and 2 kept
# ("frozen"). ESD's stage 1 computes the FE's statistics over target and proximity images, and
# stage 3 reads target images only: recomputing them there ("precise", or "train") would undo
# what ESD's stage 1 learnt from the proximity images. One handling for SD and ESD, so that they
# differ only in stage 1's images, though SD, whose stages all read the target images, would
# gain a little from recomputing them (benchmarks/sd_stage3.py measures both).
FINETUNE_BATCHNORM = "frozen"
ADAM = register(  # SD stage 1 default (see above)
    OPTIMIZER_READINGS,
    "named optimiser",
    "adam",
    Optimizer(kind="adam", lr=1e-3, momentum=0.0, weight_decay=0.0),
)
register(  # SD stage 1 as the paper states it
    OPTIMIZER_READINGS,
    "named optimiser",
    "sd-paper",
    Optimizer(lr=3e-3, momentum=0.99, weight_decay=SD_DECAY),
)

# Augmentation families (Recipe.augmentation), as each reference trains. The crop size is the
# study's `crop` (kd.data.transforms.Augmentation; study.prepare.train_transform).
# SD's paper: random crop and horizontal flip. Its "2x max-pool input" is left out: what is
# pooled, and whether evaluated images are too, is not stated, and a student trained at half
# resolution but scored at full resolution would be another experiment (PairedTransform's
# max_pool is one reading).
register(AUGMENTATIONS, "augmentation", "sd", Augmentation(hflip=True))
# IFVD's and SKD's code (CWD's mmseg configs alike): random scale 0.5-2 (their code draws
# 0.5, 0.6, ..., 2.0; here uniform), a crop, padded where the scaled image is smaller, and a
# flip. They subtract the mean pixel and then pad with 0, so the padding is the mean pixel.
register(
    AUGMENTATIONS,
    "augmentation",
    "ifvd",
    Augmentation(scale=(0.5, 2.0), hflip=True, fill=tuple(round(255 * m) for m in IMAGENET_MEAN)),
)


@register_recipe("baseline")
def baseline(epochs: int = EPOCHS, student: str = "sd") -> Recipe:
    """The student trained directly on the labelled target images (SD's baseline S)."""
    return Recipe(
        "baseline",
        (
            Stage(
                "train",
                {"ce": 1.0},
                train=("student",),
                epochs=epochs,
                optimizer=Optimizer(lr=1e-2, momentum=0.9, weight_decay=SD_DECAY),
            ),
        ),
        student=student,
        description="student alone, pixel cross-entropy",
    )


@register_recipe("ftt")
def ftt(epochs: int = EPOCHS) -> Recipe:
    """Fine-tuning-based transfer: the constructed teacher CT (frozen AMG + trainable SD head)."""
    return Recipe(
        "ftt",
        (
            Stage(
                "train",
                {"ce": 1.0},
                train=("head",),
                epochs=epochs,
                optimizer=Optimizer(lr=1e-2, momentum=0.9, weight_decay=SD_DECAY),
            ),
        ),
        student="ct",
        description="constructed teacher: frozen AMG + SD head trained with cross-entropy",
    )


@register_recipe("sd")
def sd(epochs: tuple[int, int, int] = SD_STAGE_EPOCHS) -> Recipe:
    """Spirit Distillation's three stages: the paper's settings, except stage 1's optimiser
    (module docstring)."""
    feature, frozen, finetune = epochs
    return Recipe(
        "sd",
        (
            Stage(
                "feature",
                {"feature": 1.0},
                train=("fe",),
                epochs=feature,
                optimizer=ADAM,
                batchnorm="precise",
            ),
            Stage(
                "frozen",
                {"ce": 1.0},
                train=("head",),
                epochs=frozen,
                optimizer=Optimizer(lr=1e-2, momentum=0.9, weight_decay=SD_DECAY),
                batchnorm="precise",
            ),
            Stage(
                "finetune",
                {"ce": 1.0},
                train=("student",),
                epochs=finetune,
                optimizer=Optimizer(lr=5e-5, momentum=0.99, weight_decay=SD_DECAY),
                batchnorm=FINETUNE_BATCHNORM,
            ),
        ),
        student="sd",
        description="SD: feature mimicking, frozen-FE head training, fine-tuning",
    )


@register_recipe("esd")
def esd(r: float = 1.0, epochs: tuple[int, int, int] = SD_STAGE_EPOCHS) -> Recipe:
    """Enhanced SD: stage 1 reads target and proximity images shuffled at ratio r (0 = proximity only)."""
    base = sd(epochs)
    mixed = dataclasses.replace(base.stages[0], stream="mix", r=r)
    return Recipe(
        "esd",
        (mixed, *base.stages[1:]),
        student="sd",
        description="ESD: SD with target + proximity images in stage 1 at ratio r",
    )


@register_recipe("sd_adabn")
def sd_adabn(r: float = 1.0, epochs: tuple[int, int, int] = SD_STAGE_EPOCHS) -> Recipe:
    """A control for ESD: SD's stage 1 mimics the teacher on target images only, as SD's does,
    and its BatchNorm statistics are then recomputed over ESD's target + proximity stream at
    ratio r. ESD's feature extractor gets both from the proximity images; this one only the
    statistics, so ESD's margin over it is what mimicking the teacher on them adds."""
    base = sd(epochs)
    adapted = dataclasses.replace(base.stages[0], batchnorm_stream="mix", r=r)
    return Recipe(
        "sd_adabn",
        (adapted, *base.stages[1:]),
        student="sd",
        description="SD with stage 1's BatchNorm statistics recomputed on target + proximity images",
    )


# IFVD and SKD in two readings each. Their official code (YukangWang/IFVD,
# irfanICMLL/structure_knowledge_distillation) is what the published numbers came from, and it
# differs from the papers' text: the default names (`ifvd`, `skd`, the ablations) are the code,
# `ifvd_paper` and `skd_paper` the text.
# - code: deep supervision (0.4 x the auxiliary head's cross-entropy, CriterionDSN); KD and the
#   critic on the logits at the head's resolution (1/8), not upsampled; IFVD's KD is
#   nn.KLDivLoss()'s mean over N*K*H*W ("element", K times weaker than the paper's per-pixel
#   KL); the critic sees the logits alone (spectral norm, self-attention, BatchNorm'd input), its
#   loss scaled by lambda_d = 0.1, its lr poly-decayed as the student's; IFVD weights 10 / 0.001
#   (adv) / 200 (ifv), SKD 10 / 1 (pairwise) / 0.1 (adv: lambda_d serves both sides).
# - paper: L = ce + 10 kd + 0.1 adv + 50 ifv (IFVD) or ce + 10 kd + 1 skd + 0.1 adv (SKD), KD per
#   pixel on logits upsampled to the input, the critic judging (image, softmax) pairs
#   (DEFAULT_CRITIC, constant lr), no deep supervision.
# IFV and SKD's pairwise term read the students' last split point: PSPNet's "psp" (the PSP
# module's output, x_feat_after_psp in both codes), at output stride 8.
AUX_WEIGHT = 0.4  # CriterionDSN: loss1 + 0.4 * loss2
IFVD_CODE_CRITIC = Optimizer(kind="adam", lr=4e-4, momentum=0.0, weight_decay=0.0, betas=(0.9, 0.99))
SKD_DECAY = 1e-4
SKD_CODE_CRITIC = Optimizer(lr=4e-4, momentum=0.9, weight_decay=SKD_DECAY)
CODE_OPTIONS = {
    "kd": {"logits_at": "output"},
    "adv": {"critic": "logits", "critic_weight": 0.1, "logits_at": "output"},
}


def _one_stage(
    name: str,
    losses: dict,
    epochs: int,
    student: str,
    description: str,
    options=None,
    critic: Optimizer | None = None,
    decay: float = IFVD_DECAY,
) -> Recipe:
    return Recipe(
        name,
        (
            Stage(
                "train",
                losses,
                train=("student",),
                epochs=epochs,
                optimizer=Optimizer(lr=1e-2, momentum=0.9, weight_decay=decay),
                loss_options=options or {},
                # kept with adv switched off too: lambda_adv switches an ablation's term back on
                critic=(critic or DEFAULT_CRITIC) if "adv" in losses else None,
            ),
        ),
        student=student,
        description=description,
        augmentation="ifvd",
    )


@register_recipe("ifvd_student")
def ifvd_student(epochs: int = EPOCHS, student: str = "pspnet_resnet18") -> Recipe:
    """The PSPNet student alone as IFVD's and SKD's code train it (their tables' first row)."""
    return _one_stage(
        "ifvd_student",
        {"ce": 1.0, "dsn": AUX_WEIGHT},
        epochs,
        student,
        "the student alone: cross-entropy + 0.4 auxiliary cross-entropy, IFVD's training",
    )


@register_recipe("ifvd")
def ifvd(
    lambda_kd: float = 10.0,
    lambda_adv: float = 0.001,
    lambda_ifv: float = 200.0,
    epochs: int = EPOCHS,
    student: str = "pspnet_resnet18",
    name: str = "ifvd",
) -> Recipe:
    """IFVD as its official code runs it: ce + 0.4 aux ce + 10 kd (KLDiv mean, 1/8 logits) + 0.001
    adv (logit critic) + 200 ifv."""
    return _one_stage(
        name,
        {"ce": 1.0, "dsn": AUX_WEIGHT, "kd": lambda_kd, "adv": lambda_adv, "ifv": lambda_ifv},
        epochs,
        student,
        "IFVD (official code): cross-entropy + aux + pixel KD + adversarial + intra-class feature variation",
        {"kd": {**CODE_OPTIONS["kd"], "reduction": "element"}, "adv": CODE_OPTIONS["adv"]},
        critic=dataclasses.replace(IFVD_CODE_CRITIC, poly_power=0.9),
    )


@register_recipe("ifvd_paper")
def ifvd_paper(
    lambda_kd: float = 10.0,
    lambda_adv: float = 0.1,
    lambda_ifv: float = 50.0,
    epochs: int = EPOCHS,
    student: str = "pspnet_resnet18",
) -> Recipe:
    """IFVD as the paper writes it: L = L_ce + 10 L_kd + 0.1 L_adv + 50 L_ifv."""
    return _one_stage(
        "ifvd_paper",
        {"ce": 1.0, "kd": lambda_kd, "adv": lambda_adv, "ifv": lambda_ifv},
        epochs,
        student,
        "IFVD (paper): cross-entropy + pixel KD + adversarial + intra-class feature variation",
    )


@register_recipe("skd")
def skd(
    lambda_kd: float = 10.0,
    lambda_skd: float = 1.0,
    lambda_adv: float = 0.1,
    epochs: int = EPOCHS,
    student: str = "pspnet_resnet18",
) -> Recipe:
    """Structured KD as its official code runs it: ce + 0.4 aux ce + 10 kd (1/8 logits) + 1 pairwise
    + 0.1 adv (logit critic, SGD)."""
    return _one_stage(
        "skd",
        {"ce": 1.0, "dsn": AUX_WEIGHT, "kd": lambda_kd, "skd": lambda_skd, "adv": lambda_adv},
        epochs,
        student,
        "SKD (official code): cross-entropy + aux + pixel KD + pairwise similarity + adversarial",
        CODE_OPTIONS,
        critic=dataclasses.replace(SKD_CODE_CRITIC, poly_power=0.9),
        decay=SKD_DECAY,
    )


@register_recipe("skd_paper")
def skd_paper(
    lambda_kd: float = 10.0,
    lambda_skd: float = 1.0,
    lambda_adv: float = 0.1,
    epochs: int = EPOCHS,
    student: str = "pspnet_resnet18",
) -> Recipe:
    """Structured KD as the paper writes it: pixel KD + pairwise similarity + holistic distillation."""
    return _one_stage(
        "skd_paper",
        {"ce": 1.0, "kd": lambda_kd, "skd": lambda_skd, "adv": lambda_adv},
        epochs,
        student,
        "SKD (paper): cross-entropy + pixel KD + pairwise similarity + adversarial",
    )


@register_recipe("cwd")
def cwd(
    lambda_cwd: float = 3.0, temperature: float = 4.0, epochs: int = EPOCHS, student: str = "pspnet_resnet18"
) -> Recipe:
    """Channel-wise distillation on the logits at the head's resolution, as CIRKD and mmrazor
    compute it (Shu et al. 2021: weight 3, temperature 4)."""
    return _one_stage(
        "cwd",
        {"ce": 1.0, "cwd": lambda_cwd},
        epochs,
        student,
        "CWD: cross-entropy + channel-wise distillation of logits",
        {"cwd": {"temperature": temperature, "logits_at": "output"}},
    )


def _ablation(name: str, kd: bool, adv: bool, ifv: bool) -> Recipe:
    """IFVD's Table 1 rows, from the code reading (its numbers came from the code)."""
    recipe = ifvd(lambda_kd=10.0 * kd, lambda_adv=0.001 * adv, lambda_ifv=200.0 * ifv, name=name)
    switched = ", ".join(t for t, on in (("kd", kd), ("adv", adv), ("ifv", ifv)) if on)
    return dataclasses.replace(
        recipe, description=f"IFVD ablation (Table 1, official code): cross-entropy + aux + {switched}"
    )


# IFVD's Table 1: terms switched off (weight 0: never computed); lambda_<term> switches one back on.
register_recipe("ifvd_kd")(functools.partial(_ablation, "ifvd_kd", kd=True, adv=False, ifv=False))
register_recipe("ifvd_adv")(functools.partial(_ablation, "ifvd_adv", kd=False, adv=True, ifv=False))
register_recipe("ifvd_ifv")(functools.partial(_ablation, "ifvd_ifv", kd=False, adv=False, ifv=True))
register_recipe("ifvd_kd_adv")(functools.partial(_ablation, "ifvd_kd_adv", kd=True, adv=True, ifv=False))
