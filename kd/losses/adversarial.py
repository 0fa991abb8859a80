"""Holistic distillation (SKD, IFVD): a WGAN-GP critic judges (image, segmentation map) pairs.

Real pairs carry the teacher's softmax, fake ones the student's. Two losses, two optimisers:

    critic:   L_D = mean D(x, p_s) - mean D(x, p_t) + gp_weight * mean (||grad_p D(x, p_hat)||_2 - 1)^2
              (p_hat a random per-image mix of p_t and p_s; both detached), minimised over D's
              parameters only, by critic_loss() and a separate optimiser on critic_parameters();
    student:  L = -mean D(x, p_s), this term's forward(): the papers' "- lambda_adv L_adv" written
              as a loss, so a positive weight makes the student fool the critic.

D's score is averaged over positions, so neither loss grows with batch or image size.

Two critics, two readings:
- critic "pairs" (the papers' text: SKD's holistic loss judges the segmentation map with the
  image as its condition): `Discriminator` on concat(image, softmax), plain convs, the maps
  average-pooled to `scale` (default 1/8) of the input size, as IFVD judges 1/8-resolution
  outputs: at full resolution it would cost more than a small student's own step.
- critic "logits" (IFVD's and SKD's code): `LogitCritic` on the logits alone at the head's
  resolution (give `logits_at="output"`), BatchNorm'd, spectral norm and self-attention. The
  code scales the critic's loss by lambda_d = 0.1 (`critic_weight`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kd.errors import UserInputError
from kd.losses.base import LossTerm, check_logits_at, check_positive, register_term

MIN_SIDE = 16  # four stride-2 convs (k=4, p=1) halve a side four times: 16 -> 1


class Discriminator(nn.Module):
    """Fully convolutional critic: concat(image, probabilities) -> one score per image [N].

    No BatchNorm: the gradient penalty is per sample, and batch statistics would mix samples.
    """

    def __init__(self, num_classes: int, image_channels: int = 3, width: int = 64):
        super().__init__()
        layers, channels = [], num_classes + image_channels
        for out in (width, 2 * width, 4 * width, 8 * width):
            layers += [nn.Conv2d(channels, out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            channels = out
        layers.append(nn.Conv2d(channels, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
        size = probabilities.shape[-2:]
        if image.shape[-2:] != size:
            image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        x = torch.cat([image.to(probabilities.dtype), probabilities], dim=1)
        # A side under 16 px would shrink to 0 in the strided convs: upsample tiny inputs instead of
        # changing the architecture with their size, so every input meets the same critic.
        if min(size) < MIN_SIDE:
            grown = (max(size[0], MIN_SIDE), max(size[1], MIN_SIDE))
            x = F.interpolate(x, size=grown, mode="bilinear", align_corners=False)
        return self.net(x).float().mean(dim=(1, 2, 3))


class SelfAttention(nn.Module):
    """SAGAN's self-attention (Zhang et al. 2019), as IFVD's critic uses it: x + gamma * attention(x),
    gamma starting at 0 so the critic begins as a plain conv net."""

    def __init__(self, channels: int):
        super().__init__()
        self.query = nn.Conv2d(channels, channels // 8, 1)
        self.key = nn.Conv2d(channels, channels // 8, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        query = self.query(x).flatten(2).transpose(1, 2)  # [N, hw, c/8]
        attention = torch.softmax(query @ self.key(x).flatten(2), dim=-1)  # [N, hw, hw]
        out = (self.value(x).flatten(2) @ attention.transpose(1, 2)).view(n, c, h, w)
        return self.gamma * out + x


class LogitCritic(nn.Module):
    """IFVD's official critic (networks/sagan_models.py): it sees the logits alone, BatchNorm'd
    (preprocess mode 1), through four spectrally normalised 4x4 stride-2 convs with LeakyReLU 0.1
    and self-attention after the third and fourth, then a 4x4 conv to one score per position.

    The official critic is built for 65x65 maps (512x512 crops at output stride 8); a smaller map
    is upsampled to a shortest side of 65 so that every input meets the same network.
    """

    side = 65

    def __init__(self, num_classes: int, width: int = 64):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        layers, channels = [nn.BatchNorm2d(num_classes)], num_classes
        for index, out in enumerate((width, 2 * width, 4 * width, 8 * width)):
            layers += [sn(nn.Conv2d(channels, out, 4, stride=2, padding=1)), nn.LeakyReLU(0.1)]
            if index >= 2:
                layers.append(SelfAttention(out))
            channels = out
        layers.append(nn.Conv2d(channels, 1, 4))
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        size = logits.shape[-2:]
        if min(size) < self.side:
            scale = self.side / min(size)
            grown = (max(self.side, round(size[0] * scale)), max(self.side, round(size[1] * scale)))
            logits = F.interpolate(logits, size=grown, mode="bilinear", align_corners=False)
        return self.net(logits.float()).mean(dim=(1, 2, 3))


def gradient_penalty(
    discriminator: nn.Module, image: torch.Tensor, real: torch.Tensor, fake: torch.Tensor
) -> torch.Tensor:
    """WGAN-GP: mean over images of (||grad of D w.r.t. the map at a random real/fake mix||_2 - 1)^2."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    mixed = (alpha * real + (1 - alpha) * fake).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(image, mixed).sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


CRITICS = {"pairs": Discriminator, "logits": LogitCritic}


@register_term("adv")
class Adversarial(LossTerm):
    """The student's (generator's) side of the holistic loss; the critic is trained via critic_loss()."""

    teacher_needs = ("logits",)
    has_critic = True

    def __init__(
        self,
        gp_weight: float = 10.0,
        width: int = 64,
        scale: float = 0.125,
        critic: str = "pairs",
        critic_weight: float = 1.0,
        logits_at: str = "input",
    ):
        super().__init__()
        check_positive("adv", width=width, critic_weight=critic_weight)
        if critic not in CRITICS:
            raise UserInputError(
                f"loss term 'adv': critic must be one of {', '.join(CRITICS)} (pairs: image + softmax, "
                f"the papers' text; logits: the logits alone, their code), got {critic!r}"
            )
        self.critic, self.critic_weight = critic, float(critic_weight)
        self.logits_at = check_logits_at("adv", logits_at)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 1:
            raise UserInputError(
                f"loss term 'adv': scale must be within (0, 1] (1 = full resolution), got {scale!r}"
            )
        self.scale = float(scale)
        if (
            isinstance(gp_weight, bool)
            or not isinstance(gp_weight, (int, float))
            or not 0 <= gp_weight < math.inf
        ):
            raise UserInputError(
                f"loss term 'adv': gp_weight must be a finite number >= 0, got {gp_weight!r}"
            )
        self.gp_weight, self.width = gp_weight, int(width)
        self.discriminator, self.num_classes = None, None

    def bind(
        self, *, student_features_shape=None, teacher_features_shape=None, num_classes=None, ignore_index=None
    ) -> Adversarial:
        if (
            num_classes is not None and num_classes != self.num_classes
        ):  # binding again keeps a trained critic
            self.discriminator, self.num_classes = (
                CRITICS[self.critic](num_classes, width=self.width),
                num_classes,
            )
        return self

    def _critic(self) -> nn.Module:
        if self.discriminator is None:
            raise RuntimeError(
                "loss term 'adv' has no discriminator yet: call bind(num_classes=...) before "
                "making the optimisers"
            )
        return self.discriminator

    def critic_parameters(self):
        return iter(()) if self.discriminator is None else self.discriminator.parameters()

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 1:
            return x
        size = (max(1, math.ceil(x.shape[-2] * self.scale)), max(1, math.ceil(x.shape[-1] * self.scale)))
        return F.adaptive_avg_pool2d(x, size)

    def _judged(self, logits: torch.Tensor) -> torch.Tensor:
        """What the critic sees of a segmentation: pooled probabilities, or the logits as they are."""
        return self._pooled(F.softmax(logits.float(), dim=1)) if self.critic == "pairs" else logits.float()

    def forward(self, student: dict, teacher: dict, batch: dict) -> torch.Tensor:
        critic = self._critic()
        fake = self._judged(student["logits"])
        # The critic is not trained by the student's loss: keep its .grad untouched by this backward.
        critic.requires_grad_(False)
        try:
            return -critic(self._pooled(batch["image"].float()), fake).mean()
        finally:
            critic.requires_grad_(True)

    def critic_loss(self, student: dict, teacher: dict, batch: dict) -> torch.Tensor:
        critic = self._critic()
        image = self._pooled(batch["image"].float())
        fake = self._judged(student["logits"].detach())
        real = self._judged(teacher["logits"].detach())
        wasserstein = critic(image, fake).mean() - critic(image, real).mean()
        return self.critic_weight * (
            wasserstein + self.gp_weight * gradient_penalty(critic, image, real, fake)
        )
