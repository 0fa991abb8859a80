"""The ESD stage-1 stream mixes target and proximity images at exactly ratio r."""

from collections import Counter
from fractions import Fraction

import pytest

from kd.data import MixedDataset, SyntheticRoadScenes, mixed_stream, stream_counts
from kd.errors import UserInputError


def counts(stream):
    c = Counter(domain for domain, _ in stream)
    return c["target"], c["proximity"]


@pytest.mark.parametrize("r", [0.2, 0.5, 1, 3, 5, 10])
def test_paper_ratios_are_exact(r):
    stream = mixed_stream(n_target=60, n_proximity=500, r=r, seed=0)
    n_t, n_p = counts(stream)
    assert n_t == 60
    assert Fraction(n_t, n_p) == Fraction(r).limit_denominator(100)


def test_r_zero_is_proximity_only():
    stream = mixed_stream(n_target=60, n_proximity=80, r=0)
    assert counts(stream) == (0, 80)
    assert sorted(i for _, i in stream) == list(range(80))


@pytest.mark.parametrize("r, expected", [(0, (0, 120)), (0.5, (40, 80)), (1, (60, 60)), (3, (90, 30))])
def test_fixed_length_keeps_the_budget_equal_across_r(r, expected):
    assert counts(mixed_stream(10, 50, r, length=120)) == expected


def test_images_appear_equally_often_and_entries_are_shuffled():
    stream = mixed_stream(n_target=10, n_proximity=7, r=0.5, seed=3)  # 10 target, 20 proximity
    target = Counter(i for d, i in stream if d == "target")
    proximity = Counter(i for d, i in stream if d == "proximity")
    assert set(target.values()) == {1} and len(target) == 10
    assert max(proximity.values()) - min(proximity.values()) <= 1 and len(proximity) == 7
    domains = [d for d, _ in stream]
    assert domains != sorted(domains), "target and proximity entries must be interleaved"


def test_stream_is_deterministic_per_seed_and_epoch():
    assert mixed_stream(8, 20, 0.5, seed=1, epoch=2) == mixed_stream(8, 20, 0.5, seed=1, epoch=2)
    assert mixed_stream(8, 20, 0.5, seed=1, epoch=2) != mixed_stream(8, 20, 0.5, seed=1, epoch=3)
    assert mixed_stream(8, 20, 0.5, seed=1) != mixed_stream(8, 20, 0.5, seed=2)


@pytest.mark.parametrize("r", [-1, float("nan"), float("inf")])
def test_a_bad_r_here_is_a_bug_not_a_user_error(r):
    # users hear of a bad r from the recipe's validation (tests/test_methods.py), before any stream is made
    with pytest.raises(ValueError, match="r must be a finite number >= 0") as raised:
        stream_counts(10, 10, r)
    assert not isinstance(raised.value, UserInputError)


@pytest.mark.parametrize(
    "args, message",
    [
        ((10, 10, 25), "leaves no proximity image"),
        ((10, 0, 1), "proximity dataset is empty"),
        ((0, 10, 1, 20), "target dataset is empty"),
        ((10, 10, 1, 0), "length must be at least 1"),
    ],
)
def test_streams_the_data_cannot_fill_are_refused(args, message):
    with pytest.raises(UserInputError, match=message):
        stream_counts(*args)


def test_mixed_dataset_serves_both_domains():
    target = SyntheticRoadScenes("target", size=4, image_size=(32, 64))
    proximity = SyntheticRoadScenes("proximity", size=6, image_size=(32, 64))
    data = MixedDataset(target, proximity, r=0.5, seed=0)
    assert len(data) == 12
    samples = [data[k] for k in range(len(data))]
    assert Counter(s["domain"] for s in samples) == {"target": 4, "proximity": 8}
    assert all(s["id"].startswith(s["domain"]) for s in samples)
    first = list(data.stream)
    data.set_epoch(1)
    assert data.stream != first
