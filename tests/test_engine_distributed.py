"""Data-parallel training: two gloo processes on CPU train the model one process trains with the same
global batch; DataLoader workers change nothing."""

import datetime

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import tiny_data, tiny_student, tiny_teacher

from kd import distributed
from kd.engine import CHECKPOINT_NAME, Engine, RunSettings
from kd.errors import UserInputError
from kd.methods import build_recipe

CASES = {
    # CE, a mean over images, through a network without dropout whose BatchNorm keeps its statistics:
    # two ranks give one process's numbers up to float rounding.
    "exact": ("baseline", {"epochs": 2, "train.batchnorm": "frozen"}),
    # three stages, BatchNorm trained and recalibrated, teacher features from a cache, the feature ratio
    "sd": ("sd", {"epochs": 1}),
    # a PSPNet with BatchNorm and dropout, an auxiliary head, adapters and a critic; BatchNorm keeps
    # the running statistics of training, which each rank gathered on its own images
    "ifvd": ("ifvd", {"epochs": 2, "train.batchnorm": "train"}),
}
SETTINGS = RunSettings(batch_size=4, views=1, evaluate="end")

pytestmark = pytest.mark.usefixtures("one_thread")


def train(case, teacher, data, settings, seed=0, **kwargs):
    recipe = build_recipe(*CASES[case])
    student = tiny_student(recipe, teacher, seed)
    return student, Engine(recipe, student, teacher, data, settings, **kwargs).run()


def one_rank(rank, size, folder):
    torch.set_num_threads(1)
    # A deadlock (ranks stopping at different epochs) fails the test instead of hanging it.
    dist.init_process_group(
        "gloo",
        init_method=f"file://{folder}/rendezvous",
        rank=rank,
        world_size=size,
        timeout=datetime.timedelta(seconds=120),
    )
    try:
        data, teacher, said, out = tiny_data(), tiny_teacher(), [], {}
        for case in CASES:
            where = {"checkpoint_dir": folder / case, "cache_root": folder / "cache"}
            # other initial weights on rank 1: the engine starts every rank from rank 0's
            student, result = train(case, teacher, data, SETTINGS, seed=rank, progress=said.append, **where)
            _, again = train(case, teacher, data, SETTINGS, seed=7, progress=None, **where)
            out[case] = {"result": result, "again": again, "student": student.state_dict()}
        torch.save({**out, "said": said}, folder / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ranks")
    mp.spawn(one_rank, args=(2, folder), nprocs=2)
    return folder, [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(2)]


def same_rows(history):
    """What every rank reports alike: not its time, nor its teacher forwards (rank 0 fills the cache)."""
    return [{k: v for k, v in row.items() if k not in ("seconds", "teacher_forwards")} for row in history]


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_every_rank_ends_with_the_same_weights_and_numbers(case, two_ranks):
    _, ranks = two_ranks
    first, second = (rank[case] for rank in ranks)
    for key, value in first["student"].items():
        assert torch.equal(value, second["student"][key]), key
    assert first["result"].final == second["result"].final
    assert same_rows(first["result"].history) == same_rows(second["result"].history)


@pytest.mark.slow
def test_two_ranks_give_the_numbers_of_one_process(two_ranks, tmp_path):
    _, (first, _) = two_ranks
    two = first["exact"]
    student, alone = train("exact", tiny_teacher(), tiny_data(), SETTINGS, progress=None, cache_root=tmp_path)
    for key, value in student.state_dict().items():
        assert torch.allclose(value.double(), two["student"][key].double(), atol=1e-5), key
    losses = [row["loss"] for row in two["result"].history]
    assert losses == pytest.approx([row["loss"] for row in alone.history], rel=1e-4)
    assert two["result"].final["miou"] == pytest.approx(alone.final["miou"], abs=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["sd", "ifvd"])
def test_two_ranks_train_about_as_one_process_does(case, two_ranks, tmp_path):
    # Not equal: BatchNorm normalises each rank's 2 images by their own statistics, not the batch's 4
    # (in a PSPNet's 1x1 pyramid bin, 2 values a channel), ranks draw their own dropout masks, and IFV's
    # class prototypes come from each rank's half of the batch. Measured: the loss within 1.4% (sd) and
    # 6% (ifvd), as close as another training seed or closer; sd's mIoU within 0.001. IFVD's mIoU after
    # two epochs on 8 images swings by 0.2 between seeds: not compared.
    _, (first, _) = two_ranks
    two = first[case]["result"]
    _, alone = train(case, tiny_teacher(), tiny_data(), SETTINGS, progress=None, cache_root=tmp_path)
    assert [row["stage"] for row in two.history] == [row["stage"] for row in alone.history]
    for row, single in zip(two.history, alone.history, strict=True):
        assert row["loss"] == pytest.approx(single["loss"], rel=0.1)
    if case == "sd":
        assert abs(two.final["miou"] - alone.final["miou"]) < 0.05
        assert two.history[0]["feature_ratio"] == pytest.approx(alone.history[0]["feature_ratio"], rel=0.1)


@pytest.mark.slow
def test_rank_0_alone_fills_the_teacher_cache_writes_the_checkpoint_and_reports(two_ranks):
    folder, (first, second) = two_ranks
    # sd's feature stage reads cached teacher features: 8 images x 1 view, computed by rank 0 only
    assert first["sd"]["result"].teacher_forwards == 8 and second["sd"]["result"].teacher_forwards == 0
    assert first["said"] and not second["said"]
    stored = torch.load(folder / "sd" / CHECKPOINT_NAME, weights_only=False)
    assert stored["result"]["final"] == first["sd"]["result"].final
    for rank in (first, second):  # every rank reads the finished run back
        for case in CASES:
            assert rank[case]["again"].final == rank[case]["result"].final


def test_a_global_batch_that_does_not_split_over_the_ranks_is_refused(monkeypatch):
    monkeypatch.setattr(distributed, "world", lambda: (0, 2))
    recipe = build_recipe("baseline", {"epochs": 1})
    teacher = tiny_teacher()
    with pytest.raises(UserInputError, match=r"batch_size 3 .* over 2 processes; make it a multiple of 2"):
        Engine(recipe, tiny_student(recipe, teacher), teacher, tiny_data(), RunSettings(batch_size=3))


@pytest.mark.parametrize("drop_last, length", [(True, 11), (False, 3)])
def test_the_ranks_slices_make_up_the_batches_of_one_process(drop_last, length):
    def batches(**sampler):
        generator = torch.Generator().manual_seed(0)
        if not sampler:  # what the engine's loader did before it split batches
            return torch.utils.data.DataLoader(
                range(length), batch_size=4, shuffle=True, drop_last=drop_last, generator=generator
            )
        batches = distributed.ShardedBatches(length, 4, generator=generator, drop_last=drop_last, **sampler)
        return torch.utils.data.DataLoader(range(length), batch_sampler=batches, generator=generator)

    alone = [batch.tolist() for batch in batches()]
    assert [batch.tolist() for batch in batches(rank=0, size=1)] == alone
    halves = list(zip(batches(rank=0, size=2), batches(rank=1, size=2), strict=True))
    assert [a.tolist() + b.tolist() for a, b in halves] == alone
    assert all(len(a) == len(b) == 2 for a, b in halves[: length // 4])  # full batches split evenly


def test_loader_workers_change_nothing():
    teacher, data = tiny_teacher(), tiny_data()
    settings = RunSettings(batch_size=4, views=2)
    plain, alone = train("sd", teacher, data, settings, progress=None)
    pooled, with_workers = train(
        "sd", teacher, data, RunSettings(batch_size=4, views=2, num_workers=2), progress=None
    )
    assert with_workers.final == alone.final
    assert [row["loss"] for row in with_workers.history] == [row["loss"] for row in alone.history]
    for key, value in plain.state_dict().items():
        assert torch.equal(value, pooled.state_dict()[key]), key
