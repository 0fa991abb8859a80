"""The hierarchical bootstrap of the comparison tables (analysis/tables.py), its blocks of frames, the
multiplicity family of a page and the verdict's wording, on synthetic per-image differences and on
run folders made by hand as in test_analysis.py."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
from helpers import make_run
from statsmodels.stats.multitest import multipletests

import analysis
from analysis import tables
from analysis.report import export_tables

SEEDS, FRAMES = 5, 200


def frame_ids(sequence: str, count: int) -> list[str]:
    return [f"{sequence}_f{30 * k:05d}" for k in range(count)]


def interval_width(result: dict) -> float:
    return result["boot_ci_high"] - result["boot_ci_low"]


@pytest.fixture(scope="module")
def hand_run(tmp_path_factory):
    """The hand-made study of test_analysis.py with a teacher 0.005 better than its baseline."""
    run = make_run(
        tmp_path_factory.mktemp("hand"), curves=False, samples=False, predictions=False, with_journal=False
    )
    baseline = tables.chosen_trials(analysis.load(run)).set_index("variant").loc["baseline", "miou_img"]
    (run / "teacher.json").write_text(json.dumps({"name": "t", "miou_img": baseline + 0.005}))
    return run


def test_same_inputs_give_the_same_numbers_and_the_seed_matters():
    d = np.random.default_rng(3).normal(0.01, 0.05, size=(SEEDS, FRAMES))
    blocks = tables.frame_blocks(frame_ids("Seq05VD", FRAMES))
    first = tables.hierarchical_bootstrap(d, blocks)
    assert tables.hierarchical_bootstrap(d.copy(), blocks.copy()) == first
    assert tables.hierarchical_bootstrap(d, blocks, seed=1) != first
    assert first["boot_diff"] == pytest.approx(d.mean())
    assert first["boot_ci_low"] < first["boot_diff"] < first["boot_ci_high"]


def test_correlated_frames_widen_the_interval():
    rng = np.random.default_rng(0)
    blocks = tables.frame_blocks(frame_ids("0001TP", FRAMES))

    def differences(per_image: np.ndarray) -> np.ndarray:
        """An image's difference is mostly its own (the same under every seed), a little the seed's."""
        return per_image + rng.normal(0.0, 0.005, size=(SEEDS, FRAMES))

    independent = differences(rng.normal(0.0, 0.05, size=FRAMES))
    # every frame of a block alike: 20 independent values behind 200 images
    correlated = differences(np.repeat(rng.normal(0.0, 0.05, size=FRAMES // 10), 10))
    wide = tables.hierarchical_bootstrap(correlated, blocks)
    assert interval_width(wide) > 2 * interval_width(tables.hierarchical_bootstrap(independent, blocks))
    # resampling single images of the correlated frames would hide it
    one_per_block = tables.hierarchical_bootstrap(correlated, np.arange(FRAMES))
    assert interval_width(wide) > 2 * interval_width(one_per_block)


def test_p_for_a_large_and_for_no_difference():
    rng = np.random.default_rng(1)
    blocks = tables.frame_blocks(frame_ids("Seq05VD", FRAMES))
    noise = rng.normal(0.0, 0.05, size=(SEEDS, FRAMES))
    large = tables.hierarchical_bootstrap(0.2 + noise, blocks)
    assert large["boot_p"] < 0.01 and large["boot_ci_low"] > 0
    none = tables.hierarchical_bootstrap(noise - noise.mean(), blocks)
    assert none["boot_p"] > 0.5 and none["boot_ci_low"] < 0 < none["boot_ci_high"]
    assert tables.hierarchical_bootstrap(np.zeros((SEEDS, FRAMES)), blocks)["boot_p"] == 1.0
    swapped = tables.hierarchical_bootstrap(-0.2 - noise, blocks)  # the sign does not change the evidence
    assert swapped["boot_p"] == large["boot_p"] and swapped["boot_ci_high"] == -large["boot_ci_low"]


def test_missing_pairs_are_left_out_and_no_pairs_give_nan():
    d = np.full((2, 20), 0.1)
    d[1, :5] = np.nan
    assert tables.hierarchical_bootstrap(d, tables.frame_blocks(frame_ids("a", 20)))["boot_diff"] == 0.1
    assert np.isnan(tables.hierarchical_bootstrap(np.full((2, 3), np.nan), [0, 0, 1])["boot_p"])


def test_2000_resamples_of_5_seeds_and_233_images_take_well_under_a_second():
    d = np.random.default_rng(2).normal(size=(5, 233))
    blocks = tables.frame_blocks(frame_ids("Seq05VD", 171) + frame_ids("0001TP", 62))
    start = time.perf_counter()
    tables.hierarchical_bootstrap(d, blocks, resamples=2000)
    assert time.perf_counter() - start < 0.5


def test_blocks_never_cross_sequences():
    ids = frame_ids("0001TP", 13) + frame_ids("Seq05VD", 7) + ["Seq05VD_f99990"]
    shuffled = list(np.random.default_rng(0).permutation(ids))
    blocks = pd.Series(tables.frame_blocks(shuffled), index=shuffled)
    for _, members in blocks.groupby(blocks):
        assert len({i.split("_")[0] for i in members.index}) == 1 and len(members) <= tables.BLOCK_LENGTH
    # consecutive frames: the first ten of 0001TP, then its last three
    assert blocks[ids[:10]].nunique() == 1 and blocks[ids[10:13]].nunique() == 1
    assert blocks[ids[9]] != blocks[ids[10]] and blocks.nunique() == 3
    # CamVid ids without the "f" and synthetic ids parse too; ids without a frame keep the dataset's order
    assert list(tables.frame_blocks(["0001TP_008550", "0006R0_f01140", "0001TP_008580"])) == [0, 1, 0]
    assert list(tables.frame_blocks([f"img{k}" for k in range(12)])) == [0] * 10 + [1] * 2
    assert list(tables.frame_blocks(["source_00011", "source_00001"], length=1)) == [1, 0]


def test_the_camvid_test_images_form_blocks_within_their_sequences():
    ids = analysis.load("docs/results/camvid-sd").test_per_image["image_id"].drop_duplicates()
    blocks = pd.Series(tables.frame_blocks(ids), index=ids.to_numpy())
    sequences = blocks.groupby(blocks).apply(lambda b: b.index.str.rsplit("_", n=1).str[0].nunique())
    assert (sequences == 1).all() and blocks.nunique() == 25  # 0001TP: 62 images, Seq05VD: 171


def test_the_exported_family_is_every_comparison_on_the_page(hand_run, monkeypatch):
    study, computed = analysis.load(hand_run), {}

    def keep(*args, **kwargs):  # the tables behind the text, without computing them twice
        computed.update(compare(*args, **kwargs))
        return computed

    compare = tables.comparisons
    monkeypatch.setattr(tables, "comparisons", keep)
    text = export_tables(study, ("baseline", "sd"))
    # sd against baseline and baseline against sd are one comparison: 2 + 2 rows, 3 tests
    family = "Holm over 3 comparisons: every method against every reference on this page (4 rows"
    assert text.count(family) == 2 and [f.attrs["family"] for f in computed.values()] == [3, 3]
    rows = pd.concat(computed.values(), ignore_index=True)
    distinct = rows.drop_duplicates("p_value")
    assert len(distinct) == 3
    for raw, column in tables.ADJUSTED.items():
        holm = dict(zip(distinct[raw], multipletests(distinct[raw], method="holm")[1], strict=True))
        assert rows[column].tolist() == pytest.approx([holm[p] for p in rows[raw]])
    # the teacher is 0.005 better than the student alone: no row reads as a result
    assert rows["teacher_margin"].iloc[:2].tolist() == pytest.approx([0.005, 0.005])
    uninformative = (
        "uninformative: the teacher is not stronger than the student alone on validation (margin +0.005)"
    )
    assert rows["verdict"].iloc[:2].tolist() == [uninformative] * 2
    assert text.split("## Against sd")[0].count(f"| {uninformative} |") == 2


def test_verdict_wording():
    row = {"teacher_margin": 0.2, "p_adjusted": 0.01, "boot_p_holm": 0.02, "better": "sd"}
    assert tables.verdict(row, "baseline") == "sd better (paired t and bootstrap; Holm, α = 0.05)"
    assert (
        tables.verdict(row | {"p_adjusted": 0.3}, "baseline")
        == "not shown: the bootstrap alone favours sd (Holm, α = 0.05)"
    )
    assert tables.verdict(row | {"p_adjusted": 0.3, "boot_p_holm": 0.06}, "baseline").startswith(
        "no difference shown"
    )
    assert tables.verdict(row | {"teacher_margin": np.nan}, "baseline").startswith(
        "sd better"
    )  # no teacher recorded
    weak = tables.verdict(row | {"teacher_margin": -0.02}, "sd")
    assert (
        weak == "uninformative: the teacher is not stronger than the reference on validation (margin -0.020)"
    )
