"""Loss terms against hand-computed tiny examples; the weighted sum; the registry."""

import math
import pickle

import pytest
import torch

from kd.errors import NonFiniteLossError, UserInputError
from kd.losses import (
    IFV,
    TERMS,
    Adversarial,
    ChannelWise,
    CrossEntropy,
    Discriminator,
    FeatureMSE,
    LossTerm,
    PairwiseSimilarity,
    PixelKD,
    WeightedSum,
    build_term,
    channel_wise,
    cross_entropy,
    feature_mse,
    gradient_penalty,
    ifv_loss,
    ifv_map,
    pairwise_similarity,
    pixel_kd,
)
from kd.models.adapters import FeatureAdapter

T = torch.tensor
VOID = 255
LN2, LN3 = math.log(2), math.log(3)
# p_t = (3/4, 1/4) against p_s = (1/2, 1/2): the KL divergence used by several hand examples.
KL_34 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)


pytestmark = pytest.mark.usefixtures("one_thread")


def logits_2x(*pixels):
    """[1,2,1,P] logits from per-pixel (class 0, class 1) pairs."""
    return T(pixels, dtype=torch.float32).T.reshape(1, 2, 1, len(pixels))


# ---- cross-entropy ----


def test_ce_by_hand():
    logits = logits_2x((0.0, 0.0), (LN3, 0.0)).requires_grad_(True)  # p = (1/2,1/2), (3/4,1/4)
    # pixel 0 label 0: -log 1/2 = ln 2; pixel 1 label 1: -log 1/4 = 2 ln 2
    assert cross_entropy(logits, T([[[0, 1]]])).item() == pytest.approx(1.5 * LN2)
    assert cross_entropy(logits, T([[[0, VOID]]])).item() == pytest.approx(LN2)
    weighted = cross_entropy(logits, T([[[0, 1]]]), class_weights=T([1.0, 3.0]))
    assert weighted.item() == pytest.approx((1 * LN2 + 3 * 2 * LN2) / (1 + 3))


def test_ce_all_ignored_is_zero_and_backward_works():
    logits = torch.randn(2, 3, 4, 5, requires_grad=True)
    value = CrossEntropy()({"logits": logits}, {}, {"mask": torch.full((2, 4, 5), VOID)})
    assert value.item() == 0.0
    value.backward()
    assert logits.grad is not None and torch.all(logits.grad == 0)


def test_ce_other_ignore_index_via_bind_and_weights_checked():
    logits = logits_2x((0.0, 0.0), (LN3, 0.0))
    term = CrossEntropy().bind(ignore_index=11)
    assert term({"logits": logits}, {}, {"mask": T([[[0, 11]]])}).item() == pytest.approx(LN2)
    with pytest.raises(UserInputError, match="one weight per class"):
        CrossEntropy(class_weights=[1.0, 2.0]).bind(num_classes=3)
    with pytest.raises(UserInputError, match="class_weights"):
        CrossEntropy(class_weights=[1.0, -2.0])


# ---- feature MSE ----


def test_feature_mse_by_hand():
    fs = T([[[[1.0, 2.0], [3.0, 4.0]]]])
    assert feature_mse(fs, torch.zeros_like(fs)).item() == pytest.approx((1 + 4 + 9 + 16) / 4)
    assert FeatureMSE()({"features": fs}, {"features": fs + 1}, {}).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="differ in shape"):
        feature_mse(torch.zeros(2, 3, 1, 1), torch.zeros(2, 3, 4, 4))


def test_feature_mse_adapter_for_different_shapes():
    fs = torch.randn(2, 3, 4, 4, requires_grad=True)
    ft = torch.randn(2, 5, 2, 2)
    with pytest.raises(RuntimeError, match="differ in shape.*bind"):
        FeatureMSE()({"features": fs}, {"features": ft}, {})
    term = FeatureMSE().bind(student_features_shape=fs.shape, teacher_features_shape=ft.shape)
    assert isinstance(term.adapter, FeatureAdapter)
    assert term.adapter(fs, teacher_size=ft.shape[-2:]).shape == ft.shape
    term({"features": fs}, {"features": ft}, {}).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in term.student_parameters())
    assert fs.grad is not None
    adapter = term.adapter
    assert (
        term.bind(student_features_shape=fs.shape, teacher_features_shape=ft.shape).adapter is adapter
    )  # kept
    same = FeatureMSE().bind(student_features_shape=ft.shape, teacher_features_shape=ft.shape)
    assert list(same.parameters()) == []


# ---- pixel KD ----


def test_pixel_kd_by_hand():
    teacher = logits_2x((LN3, 0.0), (1.0, 2.0))  # p_t = (3/4, 1/4) at pixel 0
    student = logits_2x((0.0, 0.0), (1.0, 2.0))  # pixel 1 equal: KL 0
    assert pixel_kd(student, teacher).item() == pytest.approx(KL_34 / 2)  # averaged over the 2 pixels
    assert pixel_kd(teacher, teacher).item() == pytest.approx(0.0, abs=1e-7)


def test_pixel_kd_temperature_scales_by_t_squared():
    teacher = logits_2x((2 * LN3, 0.0))  # softmax(z / 2) = (3/4, 1/4)
    student = logits_2x((0.0, 0.0))
    assert pixel_kd(student, teacher, temperature=2.0).item() == pytest.approx(4 * KL_34)


def test_pixel_kd_counts_ignored_pixels():
    teacher, student = logits_2x((LN3, 0.0)), logits_2x((0.0, 0.0))
    batch = {"mask": torch.full((1, 1, 1), VOID)}
    assert PixelKD()({"logits": student}, {"logits": teacher}, batch).item() == pytest.approx(KL_34)


def test_pixel_kd_and_cwd_scale_independent_of_batch_and_image_size():
    torch.manual_seed(0)
    s, t = torch.randn(1, 3, 4, 5), torch.randn(1, 3, 4, 5)
    for loss in (pixel_kd, channel_wise):
        one = loss(s, t).item()
        assert loss(s.repeat(4, 1, 1, 1), t.repeat(4, 1, 1, 1)).item() == pytest.approx(one, rel=1e-5)
    # Tiled to twice the size: pixel KD's per-pixel content is unchanged. (CWD's distributions over
    # positions change when tiled, so only its batch independence is checked.)
    assert pixel_kd(s.repeat(1, 1, 2, 2), t.repeat(1, 1, 2, 2)).item() == pytest.approx(
        pixel_kd(s, t).item(), rel=1e-5
    )


# ---- IFV ----

# Features 2 channels x 2x2; labels: class 0 at the top row, class 1 at one pixel, one ignored,
# class 2 absent.
IFV_FEATURES = T(
    [
        [
            [[1.0, 0.0], [1.0, 5.0]],  # channel 0
            [[0.0, 1.0], [1.0, 5.0]],
        ]
    ]
)  # channel 1
IFV_LABELS = T([[[0, 0], [1, VOID]]])
A = 1 / math.sqrt(2)


def test_ifv_map_by_hand():
    # class 0 prototype (1/2, 1/2): cos((1,0), .) = cos((0,1), .) = 1/sqrt 2; class 1: one pixel, cos 1.
    m = ifv_map(IFV_FEATURES, IFV_LABELS, num_classes=3, ignore_index=VOID)
    assert m.shape == (1, 2, 2)
    assert m.flatten().tolist() == pytest.approx([A, A, 1.0, 1.0])  # ignored pixel: 1


def test_ifv_map_downsamples_labels_nearest():
    labels = torch.full((1, 4, 4), 2)  # positions nearest-sampling skips hold another class
    labels[:, ::2, ::2] = IFV_LABELS
    m = ifv_map(IFV_FEATURES, labels, num_classes=3, ignore_index=VOID)
    assert m.flatten().tolist() == pytest.approx([A, A, 1.0, 1.0])


def test_ifv_loss_by_hand():
    student = T(
        [[[[1.0, 1.0], [2.0, 7.0]], [[0.0, 0.0], [3.0, -1.0]]]]
    )  # class 0 pixels equal: M_s = 1 there
    expected = ((1 - A) ** 2 + (1 - A) ** 2 + 0.0) / 3  # 3 evaluable pixels; the ignored one left out
    assert ifv_loss(student, IFV_FEATURES, IFV_LABELS, 3, VOID).item() == pytest.approx(expected)
    term = IFV().bind(num_classes=3)
    value = term({"features": student}, {"features": IFV_FEATURES}, {"mask": IFV_LABELS})
    assert value.item() == pytest.approx(expected)
    assert ifv_loss(IFV_FEATURES, IFV_FEATURES, IFV_LABELS, 3, VOID).item() == 0.0


def test_ifv_student_at_another_size():
    # Student features = teacher's nearest-upsampled 2x: its map is block constant, and the bilinear
    # resize back to 2x2 samples each block's centre, so the loss is 0.
    big = IFV_FEATURES.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    labels = IFV_LABELS.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    assert ifv_loss(big, IFV_FEATURES, labels, 3, VOID).item() == pytest.approx(0.0, abs=1e-7)
    big[0, :, 0, 0] = T([0.0, 3.0])
    assert ifv_loss(big, IFV_FEATURES, labels, 3, VOID).item() > 0


def test_ifv_no_nan_with_single_pixel_or_zero_class_and_all_ignored():
    student = IFV_FEATURES.clone()
    student[0, :, 0, :] = 0  # class 0's features all zero: prototype 0
    student.requires_grad_(True)
    m = ifv_map(student, IFV_LABELS, 3, VOID)
    assert torch.isfinite(m).all() and m[0, 0].tolist() == [0.0, 0.0]
    ifv_loss(student, IFV_FEATURES, IFV_LABELS, 3, VOID).backward()
    assert torch.isfinite(student.grad).all()
    void = torch.full_like(IFV_LABELS, VOID)
    loss = ifv_loss(student, IFV_FEATURES, void, 3, VOID)
    assert loss.item() == 0.0 and loss.requires_grad


def test_ifv_needs_num_classes():
    with pytest.raises(RuntimeError, match="num_classes"):
        IFV()({"features": IFV_FEATURES}, {"features": IFV_FEATURES}, {"mask": IFV_LABELS})


# ---- SKD pairwise similarity ----


def test_pairwise_similarity_by_hand():
    # 1x4 maps, scale 0.5: patches of 1x2, so P = 2 positions, each the channel-wise max of 2 columns.
    student = T([[[[1.0, 0.0, 0.0, 0.0]], [[0.0, 0.0, 2.0, 1.0]]]])  # pooled (1,0), (0,2): S = identity
    teacher = T([[[[1.0, 0.0, 1.0, 0.0]], [[0.0, 0.0, 0.0, 1.0]]]])  # pooled (1,0), (1,1): S_01 = 1/sqrt 2
    expected = (0 + A**2 + A**2 + 0) / 4  # mean over N P P = 1 * 2 * 2
    assert pairwise_similarity(student, teacher).item() == pytest.approx(expected)
    assert pairwise_similarity(teacher, teacher).item() == pytest.approx(0.0, abs=1e-7)


def test_pairwise_similarity_odd_and_different_sizes():
    torch.manual_seed(0)
    fs = torch.randn(2, 3, 7, 13, requires_grad=True)
    ft = torch.randn(2, 5, 4, 4)
    term = PairwiseSimilarity()
    value = term({"features": fs}, {"features": ft}, {})
    value.backward()
    assert torch.isfinite(value) and fs.grad is not None
    assert term({"features": ft}, {"features": ft}, {}).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(UserInputError, match="scale"):
        PairwiseSimilarity(scale=2.0)


# ---- channel-wise ----


def test_channel_wise_by_hand():
    # Channel 0: softmax over the 2 positions of z/2: teacher (3/4, 1/4), student (1/2, 1/2); channel 1 equal.
    teacher = T([[[[2 * LN3, 0.0]], [[1.0, 3.0]]]])
    student = T([[[[0.0, 0.0]], [[1.0, 3.0]]]])
    expected = 2.0**2 * (KL_34 + 0.0) / (1 * 2)  # T^2, divided by N C
    assert channel_wise(student, teacher, temperature=2.0).item() == pytest.approx(expected)
    term = ChannelWise(temperature=2.0)
    assert term({"logits": student}, {"logits": teacher}, {}).item() == pytest.approx(expected)
    assert channel_wise(teacher, teacher).item() == pytest.approx(0.0, abs=1e-7)


# ---- adversarial ----


def _pair(n, k, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g), torch.randn(n, k, h, w, generator=g).softmax(1)


@pytest.mark.parametrize("size", [(8, 8), (17, 23), (64, 128), (3, 5)])
def test_discriminator_any_size(size):
    image, probs = _pair(2, 4, *size)
    score = Discriminator(4, width=8)(image, probs)
    assert score.shape == (2,) and torch.isfinite(score).all()


def test_discriminator_resizes_the_image_to_the_map():
    _, probs = _pair(1, 4, 20, 24)
    score = Discriminator(4, width=8)(torch.rand(1, 3, 40, 48), probs)
    assert score.shape == (1,)


def _adv_inputs(n=2, k=3, h=16, w=16):
    g = torch.Generator().manual_seed(1)
    student = {"logits": torch.randn(n, k, h, w, generator=g, requires_grad=True)}
    teacher = {"logits": 4 * torch.randn(n, k, h, w, generator=g)}
    return student, teacher, {"image": torch.rand(n, 3, h, w, generator=g)}


def test_adversarial_gradients_go_where_they_belong():
    torch.manual_seed(0)
    term = Adversarial(width=8).bind(num_classes=3)
    student, teacher, batch = _adv_inputs()
    term(student, teacher, batch).backward()
    assert student["logits"].grad.abs().sum() > 0
    assert all(p.grad is None for p in term.critic_parameters())  # the student's loss leaves the critic alone
    assert list(term.student_parameters()) == []
    term.critic_loss(student, teacher, batch).backward()
    assert all(p.grad is not None for p in term.critic_parameters())
    assert all(p.requires_grad for p in term.critic_parameters())
    critic = term.discriminator
    assert term.bind(num_classes=3).discriminator is critic  # binding again keeps the trained critic
    with pytest.raises(RuntimeError, match="bind"):
        Adversarial()(student, teacher, batch)


def test_gradient_penalty_non_negative():
    torch.manual_seed(0)
    image, real = _pair(2, 3, 9, 11)
    fake = torch.full_like(real, 1 / 3)
    assert gradient_penalty(Discriminator(3, width=8), image, real, fake).item() >= 0


def test_critic_judges_maps_pooled_to_an_eighth_by_default():
    seen = []
    for scale, expected in ((0.125, (8, 12)), (1, (64, 96))):
        term = Adversarial(width=8, scale=scale).bind(num_classes=3)
        term.discriminator.register_forward_pre_hook(
            lambda module, args: seen.append(tuple(args[1].shape[-2:]))
        )
        student, teacher, batch = _adv_inputs(h=64, w=96)
        term(student, teacher, batch)
        term.critic_loss(student, teacher, batch)
        assert set(seen) == {expected}
        seen.clear()
    with pytest.raises(UserInputError, match="scale must be within"):
        Adversarial(scale=0)


def test_critic_learns_to_separate_real_from_fake():
    torch.manual_seed(0)
    term = Adversarial(width=8, scale=1).bind(num_classes=3)
    student, teacher, batch = _adv_inputs(n=4)
    critic = term.discriminator

    def margin():
        with torch.no_grad():
            real, fake = teacher["logits"].softmax(1), student["logits"].softmax(1)
            return (critic(batch["image"], real) - critic(batch["image"], fake)).mean().item()

    before = margin()
    optimiser = torch.optim.Adam(term.critic_parameters(), lr=1e-3, betas=(0.5, 0.9))
    for _ in range(15):
        optimiser.zero_grad()
        term.critic_loss(student, teacher, batch).backward()
        optimiser.step()
    assert margin() > before + 0.05


# ---- weighted sum ----


class Const(LossTerm):
    def __init__(self, value, needs=("logits",)):
        super().__init__()
        self.value, self.teacher_needs = value, needs

    def forward(self, student, teacher, batch):
        return student["logits"].sum() * 0 + self.value


class Boom(LossTerm):
    student_needs = ("features",)

    def bind(self, **shapes):
        raise AssertionError("an inactive term must not be bound")

    def forward(self, student, teacher, batch):
        raise AssertionError("an inactive term must not be called")


def test_weighted_sum_total_values_and_skipped_terms():
    logits = torch.zeros(1, 2, 1, 1, requires_grad=True)
    loss = WeightedSum(
        {"a": Const(2.0), "b": Const(3.0, needs=("features",)), "off": Boom()}, {"a": 0.5, "b": 2.0, "off": 0}
    )
    assert loss.active == ["a", "b"]
    assert loss.student_needs == ("logits",) and loss.teacher_needs == ("features", "logits")
    loss.bind(num_classes=2)
    total, values = loss({"logits": logits}, {}, {})
    assert values == {"a": 2.0, "b": 3.0}
    assert total.item() == pytest.approx(0.5 * 2.0 + 2.0 * 3.0)
    total.backward()
    assert loss.critic_terms() == {}


def test_weighted_sum_non_finite_names_the_term_and_where():
    loss = WeightedSum({"ok": Const(1.0), "kd": Const(float("nan"))}, {"ok": 1, "kd": 1})
    with pytest.raises(
        NonFiniteLossError, match=r"'kd' is nan at stage 'feature', epoch 2, step 13.*learning rate"
    ):
        loss({"logits": torch.zeros(1)}, {}, {}, where="stage 'feature', epoch 2, step 13")
    error = NonFiniteLossError(term="kd", value=float("inf"), where="step 1")
    copy = pickle.loads(pickle.dumps(error))  # Ray ships exceptions between processes
    assert (copy.term, copy.value, copy.where, str(copy)) == ("kd", float("inf"), "step 1", str(error))


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ({"a": 1, "zz": 1}, "'zz'"),
        ({"a": -1}, "'a'.*>= 0"),
        ({"a": float("nan")}, "'a'.*finite"),
        ({"a": float("inf")}, "'a'.*finite"),
        ({}, "'a' has no weight"),
        ({"a": 0}, "every loss weight is 0"),
    ],
)
def test_weighted_sum_bad_weights(weights, match):
    with pytest.raises(UserInputError, match=match):
        WeightedSum({"a": Const(1.0)}, weights)


def test_weighted_sum_finds_critics_and_student_parameters():
    loss = WeightedSum(
        {"ce": CrossEntropy(), "feature": FeatureMSE(), "adv": Adversarial(width=8)},
        {"ce": 1, "feature": 1, "adv": 0.1},
    )
    loss.bind(student_features_shape=(1, 3, 4, 4), teacher_features_shape=(1, 5, 4, 4), num_classes=2)
    assert list(loss.critic_terms()) == ["adv"]
    student_ids = {id(p) for p in loss.student_parameters()}
    assert student_ids == {id(p) for p in loss.terms["feature"].adapter.parameters()}
    assert not student_ids & {id(p) for p in loss.terms["adv"].critic_parameters()}


# ---- registry ----


def test_build_term_errors():
    with pytest.raises(UserInputError, match="unknown loss term 'kl'.*ce, feature, kd"):
        build_term("kl")
    with pytest.raises(UserInputError, match="'kd'.*temprature.*temperature"):
        build_term("kd", temprature=2.0)
    with pytest.raises(UserInputError, match="temperature"):
        build_term("cwd", temperature=0)
    assert isinstance(build_term("skd", scale=0.25), PairwiseSimilarity)


def test_every_registered_term_runs_and_backpropagates():
    torch.manual_seed(0)
    n, k, h, w = 2, 3, 16, 16
    student = {
        "logits": torch.randn(n, k, h, w, requires_grad=True),
        "features": torch.randn(n, 4, 4, 4, requires_grad=True),
        "aux_logits": torch.randn(n, k, 4, 4, requires_grad=True),
    }
    teacher = {"logits": torch.randn(n, k, h, w), "features": torch.randn(n, 6, 2, 2)}
    batch = {"image": torch.rand(n, 3, h, w), "mask": torch.randint(0, k, (n, h, w))}
    for name in TERMS:
        options = {"width": 8} if name == "adv" else {}
        term = build_term(name, **options).bind(
            student_features_shape=student["features"].shape,
            teacher_features_shape=teacher["features"].shape,
            num_classes=k,
        )
        value = term(student, teacher, batch)
        assert value.dtype == torch.float32 and value.ndim == 0 and torch.isfinite(value), name
        value.backward()
        with torch.autocast("cpu", dtype=torch.bfloat16):  # callers may train under autocast
            low = term(student, teacher, batch)
        assert low.dtype == torch.float32, name
        if name not in ("feature", "adv"):  # no network inside: computed in float32 all the same
            assert low.item() == pytest.approx(value.item(), rel=1e-6), name


def test_ifv_map_matches_explicit_loops():
    torch.manual_seed(0)
    features = torch.randn(2, 3, 4, 5)
    labels = torch.randint(0, 3, (2, 4, 5))
    labels[0, 1, 2] = labels[1, 0, 0] = VOID
    expected = torch.ones(2, 4, 5)
    for n in range(2):
        for i in range(4):
            for j in range(5):
                k = labels[n, i, j].item()
                if k == VOID:
                    continue
                members = [features[n, :, a, b] for a in range(4) for b in range(5) if labels[n, a, b] == k]
                prototype = sum(members) / len(members)
                f = features[n, :, i, j]
                expected[n, i, j] = f.dot(prototype) / (f.norm() * prototype.norm())
    torch.testing.assert_close(ifv_map(features, labels, 4, VOID), expected)  # class 3 absent everywhere
