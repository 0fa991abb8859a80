"""Loss terms against the official code of their papers, ported here line by line as oracles
(YukangWang/IFVD utils/criterion.py and networks/sagan_models.py)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kd.losses import PixelKD
from kd.losses.adversarial import LogitCritic, SelfAttention


def official_kd(pred: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """IFVD's CriterionKD (upsample=False, temperature 1): nn.KLDivLoss() with its default mean."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that "mean" divides by every element
        return nn.KLDivLoss()(F.log_softmax(pred, dim=1), F.softmax(soft, dim=1))


def test_kd_element_reduction_is_the_official_kldiv_mean():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 11, 23, 30), torch.randn(2, 11, 23, 30)
    official = official_kd(student, teacher)
    code = PixelKD(reduction="element")({"logits": student}, {"logits": teacher}, {})
    paper = PixelKD(reduction="pixel")({"logits": student}, {"logits": teacher}, {})
    assert code.item() == pytest.approx(official.item(), abs=1e-6)
    assert paper.item() == pytest.approx(11 * official.item(), rel=1e-5)  # the paper's KD is K times stronger


def test_kd_reduction_is_checked():
    with pytest.raises(Exception, match="reduction must be one of pixel, element"):
        PixelKD(reduction="sum")


def official_self_attention(layer: SelfAttention, x: torch.Tensor) -> torch.Tensor:
    """Self_Attn.forward of sagan_models.py on our layer's weights."""
    b, c, w, h = x.size()
    q = layer.query(x).view(b, -1, w * h).permute(0, 2, 1)
    k = layer.key(x).view(b, -1, w * h)
    attention = torch.softmax(torch.bmm(q, k), dim=-1)
    out = torch.bmm(layer.value(x).view(b, -1, w * h), attention.permute(0, 2, 1)).view(b, c, w, h)
    return layer.gamma * out + x


def test_self_attention_is_the_official_layer():
    torch.manual_seed(0)
    layer = SelfAttention(64)
    with torch.no_grad():
        layer.gamma.fill_(0.7)  # the official layer starts at 0 too: make the attention count
    x = torch.randn(2, 64, 5, 7)
    assert torch.allclose(layer(x), official_self_attention(layer, x), atol=1e-6)


def test_logit_critic_has_the_official_shape():
    critic = LogitCritic(19)
    convs = [m for m in critic.net if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    assert [hasattr(c, "parametrizations") for c in convs] == [True] * 4 + [False]  # spectral norm
    assert isinstance(critic.net[0], nn.BatchNorm2d)  # preprocess mode 1
    assert [m.query.in_channels for m in critic.net if isinstance(m, SelfAttention)] == [256, 512]
    # 65x65 (512x512 crops at stride 8) gives one score per image; smaller maps are grown to it
    assert critic(None, torch.randn(2, 19, 65, 65)).shape == (2,)
    assert critic(None, torch.randn(2, 19, 23, 30)).shape == (2,)
