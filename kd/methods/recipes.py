"""The published recipes, as data. Defaults are the papers' settings except lengths.

Epoch counts are ours (the papers train for tens of thousands of iterations on full
datasets); studies set them. Weight decay is SD's 3e-3 for the SD family and IFVD's 5e-4
for the IFVD family.
"""
from __future__ import annotations

from kd.methods.recipe import Optimizer, Recipe, Stage

SD_DECAY = 3e-3
IFVD_DECAY = 5e-4
# IFVD's official code: Adam for the discriminator, lr 4e-4, betas (0.9, 0.99).
IFVD_CRITIC = Optimizer(kind="adam", lr=4e-4, momentum=0.0, weight_decay=0.0, betas=(0.9, 0.99))


def baseline(epochs: int = 30, student: str = "sd") -> Recipe:
    """The student trained directly on the labelled target images (SD's baseline S)."""
    return Recipe("baseline", (
        Stage("train", {"ce": 1.0}, train=("student",), epochs=epochs,
              optimizer=Optimizer(lr=1e-2, momentum=0.9, weight_decay=SD_DECAY)),
    ), student=student, description="student alone, pixel cross-entropy")


def ftt(epochs: int = 30) -> Recipe:
    """Fine-tuning-based transfer: the constructed teacher CT (frozen AMG + trainable SD head)."""
    return Recipe("ftt", (
        Stage("train", {"ce": 1.0}, train=("head",), epochs=epochs,
              optimizer=Optimizer(lr=1e-2, momentum=0.9, weight_decay=SD_DECAY)),
    ), student="ct", description="constructed teacher: frozen AMG + SD head trained with cross-entropy")


def sd(epochs: tuple[int, int, int] = (20, 20, 10)) -> Recipe:
    """Spirit Distillation's three stages with the paper's optimiser settings."""
    feature, frozen, finetune = epochs
    return Recipe("sd", (
        Stage("feature", {"feature": 1.0}, train=("fe",), epochs=feature,
              optimizer=Optimizer(lr=3e-3, momentum=0.99, weight_decay=SD_DECAY)),
        Stage("frozen", {"ce": 1.0}, train=("head",), epochs=frozen,
              optimizer=Optimizer(lr=1e-2, momentum=0.9, weight_decay=SD_DECAY)),
        Stage("finetune", {"ce": 1.0}, train=("student",), epochs=finetune,
              optimizer=Optimizer(lr=5e-5, momentum=0.99, weight_decay=SD_DECAY)),
    ), student="sd", description="SD: feature mimicking, frozen-FE head training, fine-tuning")


def esd(r: float = 1.0, epochs: tuple[int, int, int] = (20, 20, 10)) -> Recipe:
    """Enhanced SD: stage 1 reads target and proximity images shuffled at ratio r (0 = proximity only)."""
    base = sd(epochs)
    feature = base.stages[0]
    mixed = Stage(feature.name, feature.losses, feature.train, feature.epochs, feature.optimizer, stream="mix", ratio=r)
    return Recipe("esd", (mixed, *base.stages[1:]), student="sd",
                  description="ESD: SD with target + proximity images in stage 1 at ratio r")


def _one_stage(name: str, losses: dict, epochs: int, student: str, description: str, options=None) -> Recipe:
    return Recipe(name, (
        Stage("train", losses, train=("student",), epochs=epochs,
              optimizer=Optimizer(lr=1e-2, momentum=0.9, weight_decay=IFVD_DECAY),
              loss_options=options or {}, critic=IFVD_CRITIC if losses.get("adv") else None),
    ), student=student, description=description)


def ifvd(lambda_kd: float = 10.0, lambda_adv: float = 0.1, lambda_ifv: float = 50.0, epochs: int = 30,
         student: str = "pspnet_resnet18", name: str = "ifvd") -> Recipe:
    """IFVD: L = L_ce + 10 L_kd + 0.1 L_adv + 50 L_ifv (the paper's weights; the code uses 200 for IFV)."""
    return _one_stage(name, {"ce": 1.0, "kd": lambda_kd, "adv": lambda_adv, "ifv": lambda_ifv}, epochs, student,
                      "IFVD: cross-entropy + pixel KD + adversarial + intra-class feature variation")


def skd(lambda_kd: float = 10.0, lambda_skd: float = 1.0, lambda_adv: float = 0.1, epochs: int = 30,
        student: str = "pspnet_resnet18") -> Recipe:
    """Structured KD: pixel KD + pairwise similarity + holistic (adversarial) distillation."""
    return _one_stage("skd", {"ce": 1.0, "kd": lambda_kd, "skd": lambda_skd, "adv": lambda_adv}, epochs, student,
                      "SKD: cross-entropy + pixel KD + pairwise similarity + adversarial")


def cwd(lambda_cwd: float = 3.0, temperature: float = 4.0, epochs: int = 30, student: str = "pspnet_resnet18") -> Recipe:
    """Channel-wise distillation on logits (Shu et al. 2021: weight 3, temperature 4)."""
    return _one_stage("cwd", {"ce": 1.0, "cwd": lambda_cwd}, epochs, student,
                      "CWD: cross-entropy + channel-wise distillation of logits", {"cwd": {"temperature": temperature}})


def _ablation(name: str, kd: bool, adv: bool, ifv: bool) -> Recipe:
    recipe = ifvd(lambda_kd=10.0 * kd, lambda_adv=0.1 * adv, lambda_ifv=50.0 * ifv, name=name)
    switched = ", ".join(t for t, on in (("kd", kd), ("adv", adv), ("ifv", ifv)) if on)
    return Recipe(name, recipe.stages, recipe.student, f"IFVD ablation (Table 1): cross-entropy + {switched}")


RECIPES = {
    "baseline": baseline,
    "ftt": ftt,
    "sd": sd,
    "esd": esd,
    "ifvd": ifvd,
    "skd": skd,
    "cwd": cwd,
    # IFVD's Table 1: terms switched off (weight 0: never computed); lambda_<term> switches one back on.
    "ifvd_kd": lambda: _ablation("ifvd_kd", kd=True, adv=False, ifv=False),
    "ifvd_adv": lambda: _ablation("ifvd_adv", kd=False, adv=True, ifv=False),
    "ifvd_ifv": lambda: _ablation("ifvd_ifv", kd=False, adv=False, ifv=True),
    "ifvd_kd_adv": lambda: _ablation("ifvd_kd_adv", kd=True, adv=True, ifv=False),
}
