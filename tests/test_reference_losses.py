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


def official_dsn(preds, target):
    """CriterionDSN: CE of the main and the auxiliary logits, the second weighted 0.4."""
    h, w = target.shape[1:]
    main = F.interpolate(preds[0], size=(h, w), mode="bilinear", align_corners=True)
    aux = F.interpolate(preds[1], size=(h, w), mode="bilinear", align_corners=True)
    ce = nn.CrossEntropyLoss(ignore_index=255)
    return ce(main, target) + 0.4 * ce(aux, target)


def official_ifv(feat_s, feat_t, target, num_classes):
    """CriterionIFV, line by line."""
    size = feat_s.shape[2:]
    tar_s = nn.Upsample(size, mode="nearest")(target.unsqueeze(1).float()).expand(feat_s.size())
    tar_t = nn.Upsample(size, mode="nearest")(target.unsqueeze(1).float()).expand(feat_t.size())
    center_s, center_t = feat_s.clone(), feat_t.clone()
    for i in range(num_classes):
        mask_s, mask_t = (tar_s == i).float(), (tar_t == i).float()
        mean_s = (mask_s * feat_s).sum(-1).sum(-1) / (mask_s.sum(-1).sum(-1) + 1e-6)
        mean_t = (mask_t * feat_t).sum(-1).sum(-1) / (mask_t.sum(-1).sum(-1) + 1e-6)
        center_s = (1 - mask_s) * center_s + mask_s * mean_s.unsqueeze(-1).unsqueeze(-1)
        center_t = (1 - mask_t) * center_t + mask_t * mean_t.unsqueeze(-1).unsqueeze(-1)
    cos = nn.CosineSimilarity(dim=1)
    return nn.MSELoss()(cos(feat_s, center_s), cos(feat_t, center_t))


def ifvd_inputs(void: bool = False):
    """One training step's tensors at 65x65, the official critic's size (no resizing anywhere)."""
    torch.manual_seed(0)
    n, k, size = 2, 5, (65, 65)
    student = {
        "logits": torch.randn(n, k, *size),
        "aux_logits": torch.randn(n, k, *size),
        "features": torch.randn(n, 16, *size),
    }
    teacher = {"logits": torch.randn(n, k, *size), "features": torch.randn(n, 32, *size)}
    mask = torch.randint(0, k, (n, *size))
    if void:
        mask[:, :10] = 255
    return student, teacher, {"image": torch.rand(n, 3, *size), "mask": mask}, k


def our_losses(recipe_name: str, k: int):
    """The stage's WeightedSum as the engine builds it, its critic fixed (eval mode: no spectral-norm
    update, BatchNorm statistics as they are) so that each call sees the same network."""
    from kd.losses import WeightedSum, build_term
    from kd.methods import build_recipe

    stage = build_recipe(recipe_name).stages[0]
    terms = {name: build_term(name, **stage.loss_options.get(name, {})) for name in stage.losses}
    losses = WeightedSum(terms, stage.losses).bind(num_classes=k, ignore_index=255)
    if "adv" in losses.terms:
        losses.terms["adv"].discriminator.eval()
    return losses


def test_ifvd_total_is_the_official_weighted_sum():
    student, teacher, batch, k = ifvd_inputs()
    losses = our_losses("ifvd", k)
    total, values = losses(student, teacher, batch)
    critic = losses.terms["adv"].discriminator
    official = (
        official_dsn([student["logits"], student["aux_logits"]], batch["mask"])
        + 10 * official_kd(student["logits"], teacher["logits"])
        + 0.001 * -critic.net(student["logits"]).mean()  # CriterionAdvForG on the same critic
        + 200 * official_ifv(student["features"], teacher["features"], batch["mask"], k)
    )
    assert total.item() == pytest.approx(official.item(), abs=1e-5)
    assert values["adv"] != 0 and values["ifv"] > 0  # every term took part
    assert set(values) == {"ce", "dsn", "kd", "adv", "ifv"}


def test_ifvd_official_ifv_counts_void_pixels_ours_leaves_them_out():
    # The one deliberate difference (kd/losses/ifv.py): the official mean runs over every pixel,
    # void ones contributing 0; ours over the labelled ones, so it does not shrink with void.
    student, teacher, batch, k = ifvd_inputs(void=True)
    _, values = our_losses("ifvd", k)(student, teacher, batch)
    official = official_ifv(student["features"], teacher["features"], batch["mask"], k)
    labelled = (batch["mask"] != 255).float().mean().item()
    assert values["ifv"] * labelled == pytest.approx(official.item(), rel=1e-4)


def test_the_code_critic_loss_is_the_officials_scaled_by_lambda_d():
    student, teacher, batch, k = ifvd_inputs()
    losses = our_losses("ifvd", k)
    critic = losses.terms["adv"].discriminator
    torch.manual_seed(1)
    ours = losses.critic_loss(student, teacher, batch)
    fake, real = critic.net(student["logits"]).mean(), critic.net(teacher["logits"]).mean()
    torch.manual_seed(1)  # the same random mix for the gradient penalty
    from kd.losses.adversarial import gradient_penalty

    penalty = gradient_penalty(critic, batch["image"], teacher["logits"], student["logits"])
    # kd_model.py: d_loss = lambda_d * (wgan-gp critic loss) + lambda_d * lambda_gp * penalty
    assert ours.item() == pytest.approx((0.1 * (fake - real) + 0.1 * 10 * penalty).item(), rel=1e-4)


def official_skd_pixel(pred_s, pred_t):
    """SKD's CriterionPixelWise: the teacher-softmax cross-entropy summed, divided by W H only."""
    n, c, w, h = pred_s.shape
    soft_t = F.softmax(pred_t.permute(0, 2, 3, 1).reshape(-1, c), dim=1)
    log_s = F.log_softmax(pred_s.permute(0, 2, 3, 1).reshape(-1, c), dim=1)
    return (-soft_t * log_s).sum() / w / h


def official_pairwise(feat_s, feat_t, scale=0.5):
    """SKD's CriterionPairWiseforWholeFeatAfterPool with utils.sim_dis_compute."""

    def similarity(feat):
        feat = feat / ((feat**2).sum(dim=1, keepdim=True) ** 0.5 + 1e-8).detach()
        feat = feat.reshape(feat.shape[0], feat.shape[1], -1)
        return torch.einsum("icm,icn->imn", feat, feat)

    w, h = feat_t.shape[2:]
    kernel = (int(w * scale), int(h * scale))
    pool = nn.MaxPool2d(kernel_size=kernel, stride=kernel, padding=0, ceil_mode=True)
    ps, pt = pool(feat_s), pool(feat_t)
    return ((similarity(pt) - similarity(ps)) ** 2 / (pt.shape[-1] * pt.shape[-2]) ** 2 / pt.shape[0]).sum()


def test_skd_total_is_the_official_weighted_sum_up_to_the_teachers_entropy():
    # At one image per GPU (the code's DataParallel criterion), SKD's pixel term is our per-pixel
    # KL plus the teacher's mean entropy: a constant, the same gradient.
    student, teacher, batch, k = ifvd_inputs()
    student, teacher = ({name: v[:1] for name, v in side.items()} for side in (student, teacher))
    batch = {name: v[:1] for name, v in batch.items()}
    losses = our_losses("skd", k)
    total, _ = losses(student, teacher, batch)
    critic = losses.terms["adv"].discriminator
    official = (
        official_dsn([student["logits"], student["aux_logits"]], batch["mask"])
        + 10 * official_skd_pixel(student["logits"], teacher["logits"])
        + 1 * official_pairwise(student["features"], teacher["features"])
        + 0.1 * -critic.net(student["logits"]).mean()
    )
    p_t = F.softmax(teacher["logits"], dim=1)
    entropy = -(p_t * F.log_softmax(teacher["logits"], dim=1)).sum(dim=1).mean()
    assert (total + 10 * entropy).item() == pytest.approx(official.item(), abs=1e-4)
