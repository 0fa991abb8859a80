"""CWD: channel-wise distillation of logits (Shu et al. 2021).

lambda_cwd in [0.3, 30], log-uniform: a decade either side of the paper's 3.
temperature in [1, 8], uniform: the paper uses 4 for segmentation.
lr as for IFVD (search_spaces.ifvd): SGD at 1e-2, in [1e-3, 5e-2].
"""

from __future__ import annotations

from search_spaces.base import Float, Param, register
from search_spaces.ifvd import LR


@register("cwd")
def params(split_points: list[str]) -> dict[str, Param]:
    return {
        "lambda_cwd": Float(0.3, 30.0, log=True, target="lambda_cwd"),
        "temperature": Float(1.0, 8.0, target="cwd.temperature"),
        "lr": LR,
    }
