"""Loss terms for distillation, one per file, all called as `term(student, teacher, batch) -> scalar`.

The terms' formulas and normalisations, fixed here because published codebases differ; the
documentation's Distillation page shows this table with each term's class and options, read from
TERMS (tools/docs_tables.py, which refuses a term of this package without an entry):

term       what it is
           per element: (p = softmax)
           divided by:
`ce`       pixel cross-entropy (optional class weights)
           per element: -w[y] log p_s[y]
           divided by: labelled pixels (0, not NaN, when none)
`feature`  feature mimicking, SD eq. 2 (adapter when shapes differ)
           per element: (adapter(f_s) - f_t)^2
           divided by: N h w, summed over channels as eq. 2 is written (`reduction="channel_sum"`);
           `"mean"` divides by C too
`kd`       pixel-wise KD, temperature T
           per element: T^2 p_t log(p_t / p_s) over classes
           divided by: N H W (`reduction="pixel"`, the papers' equation); `"element"`: N K H W,
           `nn.KLDivLoss()`'s mean as IFVD's code
`ifv`      IFVD's intra-class feature variation
           per element: (M_s - M_t)^2, M = cos(f, its class prototype)
           divided by: non-ignored pixels
`skd`      SKD pairwise similarity (max-pooled, scale 0.5)
           per element: (S_s - S_t)^2, S = cos of pooled positions
           divided by: N P P
`cwd`      channel-wise distillation, T = 4
           per element: T^2 p_t log(p_t / p_s) over positions
           divided by: N C
`adv`      holistic distillation: a WGAN-GP critic on (image, segmentation map) pairs at 1/8 size
           (`critic="pairs"`), or on the logits alone (`critic="logits"`, the official code)
           per element: -D(image, p_s)
           divided by: N (D averages over positions)
`dsn`      deep supervision: cross-entropy of the auxiliary head's logits, upsampled
           per element: -log p_aux[y]
           divided by: labelled pixels

Each term returns a float32 scalar; "ce", "dsn" and "ifv" give 0 (not NaN) when no pixel is labelled.
A new term is one module, here (with its entry above) or in a plugin (kd.registry): a LossTerm
subclass decorated with `@register_term("name")`.

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
