"""InPlace-ABN's arithmetic in plain PyTorch, for the networks whose published weights were trained with it.

IFVD's and SKD's networks (and the segmentation toolbox behind the SKD teacher) normalise with
InPlace-ABN (Rota Bulò et al. 2018), a CUDA extension. Its forward differs from BatchNorm2d in
two ways that change a loaded network's output: the scale is |weight| + eps, not weight (the
in-place inversion needs it positive), and the activation is fused (leaky ReLU, slope 0.01, unless
`activation="identity"`, which the ResNet trunks use before their own ReLUs). Its saved state has
no `num_batches_tracked`. Everything else (running statistics, momentum 0.1, unbiased running
variance) is BatchNorm's, so this is a BatchNorm2d subclass: BatchNorm freezing and recalibration
treat it as one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = ("leaky_relu", "identity")


class InPlaceABN(nn.BatchNorm2d):
    def __init__(
        self,
        num_features: int,
        activation: str = "leaky_relu",
        slope: float = 0.01,
        eps: float = 1e-5,
        momentum: float = 0.1,
    ):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        super().__init__(num_features, eps=eps, momentum=momentum)
        # The published files hold no batch counter; one is kept, unsaved, for momentum=None (a
        # cumulative average, as precise-BN recalibration asks for).
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long), persistent=False)
        self.activation, self.slope = activation, slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        momentum = self.momentum
        if self.training:
            self.num_batches_tracked.add_(1)
            momentum = 1.0 / float(self.num_batches_tracked) if momentum is None else momentum
        y = F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight.abs() + self.eps,
            self.bias,
            self.training,
            momentum,
            self.eps,
        )
        return F.leaky_relu(y, self.slope) if self.activation == "leaky_relu" else y

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # BatchNorm's loader would add a num_batches_tracked entry, which this module does not hold.
        nn.Module._load_from_state_dict(self, state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={self.activation}, slope={self.slope}"
