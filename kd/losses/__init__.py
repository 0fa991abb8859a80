"""Loss terms for distillation, one per file, all called as `term(student, teacher, batch) -> scalar`.

name      | class              | per-element formula (p = softmax)          | divided by
----------|--------------------|--------------------------------------------|--------------------------------
"ce"      | CrossEntropy       | -w[y] log p_s[y]                           | sum of w[y] over labelled pixels
"feature" | FeatureMSE         | (adapter(f_s) - f_t)^2 (SD eq. 2)          | N C h w (teacher's shape)
"kd"      | PixelKD            | T^2 p_t log(p_t/p_s), over classes, z/T    | N H W (every pixel)
"ifv"     | IFV                | (M_s - M_t)^2, M = cos(f, class prototype) | labelled pixels (teacher's h w)
"skd"     | PairwiseSimilarity | (S_s - S_t)^2, S = cos of pooled positions | N P P
"cwd"     | ChannelWise        | T^2 p_t log(p_t/p_s), over positions, z/T  | N C
"adv"     | Adversarial        | -D(image, p_s) at 1/8 size; WGAN-GP critic | N (D averages over positions)
"dsn"     | DeepSupervision    | -log p_aux[y], aux head's logits upsampled | labelled pixels

Each term returns a float32 scalar; "ce", "dsn" and "ifv" give 0 (not NaN) when no pixel is labelled.
A new term is one module, here or in a plugin (kd.registry), needing no line elsewhere: a
LossTerm subclass decorated with `@register_term("name")`.

    from kd.losses import build_term, WeightedSum
    loss = WeightedSum({"ce": build_term("ce"), "kd": build_term("kd", temperature=4.0)},
                       {"ce": 1.0, "kd": 10.0}).bind(num_classes=19)
    total, values = loss(student, teacher, batch, where="stage 'kd', epoch 2, step 13")
"""

from __future__ import annotations

import inspect

from kd.errors import UserInputError
from kd.losses.base import TERMS, LossTerm, register_term
from kd.registry import discover

# The published terms' public names; importing them first lists TERMS in the table's order (error
# messages). discover() below imports every other module of this package, registering its terms.
# isort: off
from kd.losses.ce import CrossEntropy, cross_entropy
from kd.losses.feature_mse import FeatureMSE, feature_mse
from kd.losses.pixel_kd import PixelKD, pixel_kd
from kd.losses.ifv import IFV, ifv_loss, ifv_map
from kd.losses.skd import PairwiseSimilarity, pairwise_similarity
from kd.losses.adversarial import Adversarial, Discriminator, gradient_penalty
from kd.losses.cwd import ChannelWise, channel_wise
from kd.losses.dsn import DeepSupervision

# isort: on
from kd.losses.weighted import WeightedSum


def build_term(name: str, **options) -> LossTerm:
    """The registered term `name` built with `options` (its constructor's keyword arguments)."""
    if name not in TERMS:
        raise UserInputError(f"unknown loss term {name!r}; choose one of: {', '.join(TERMS)}")
    cls = TERMS[name]
    signature = inspect.signature(cls)
    try:
        signature.bind(**options)
    except TypeError as error:
        accepted = ", ".join(signature.parameters) or "none"
        raise UserInputError(
            f"loss term {name!r} ({cls.__name__}): {error}; its options are: {accepted}"
        ) from None
    return cls(**options)


discover(__name__)

__all__ = [
    "IFV",
    "TERMS",
    "Adversarial",
    "ChannelWise",
    "CrossEntropy",
    "DeepSupervision",
    "Discriminator",
    "FeatureMSE",
    "LossTerm",
    "PairwiseSimilarity",
    "PixelKD",
    "WeightedSum",
    "build_term",
    "channel_wise",
    "cross_entropy",
    "feature_mse",
    "gradient_penalty",
    "ifv_loss",
    "ifv_map",
    "pairwise_similarity",
    "pixel_kd",
    "register_term",
]
