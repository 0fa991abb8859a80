"""A teacher's outputs are computed once per (image, view), stored, and equal to recomputation."""

import multiprocessing
import warnings

import numpy as np
import pytest
import torch

from kd.data import PairedTransform, SyntheticRoadScenes
from kd.errors import UserInputError
from kd.models.registry import build_teacher
from kd.teacher_cache import TeacherCache

SIZE = (32, 64)
POINT = "stage3"
BOTH = ("features", "logits")


pytestmark = pytest.mark.usefixtures("one_thread")


def teacher(seed=0):
    torch.manual_seed(seed)
    return build_teacher("deeplabv3_efficientnet_lite0", num_classes=2, pretrained=False)


def dataset(size=4, seed=0):
    return SyntheticRoadScenes("target", size=size, image_size=SIZE, seed=seed)


def random_transform(crop=(24, 48)):
    return PairedTransform(crop=crop, hflip=True, normalize=False)


class Counter:
    """Counts images through the teacher with a forward hook, independently of the cache's own count."""

    def __init__(self, model):
        self.images = 0
        model.stages["stem"].register_forward_pre_hook(self.hook)

    def hook(self, module, inputs):
        self.images += inputs[0].shape[0]


def batch(data, transform, entries, seed=0):
    return torch.stack([transform(data[i], seed, v)["image"] for i, v in entries])


def fresh(model, images, point=POINT, want=BOTH):
    with torch.no_grad():
        return model.eval().forward_parts(model.normalize(images), point, want=want)


def lookup(cache, data, transform, entries, seed=0):
    index, view = zip(*entries, strict=True)
    return cache.get(torch.tensor(index), torch.tensor(view), batch(data, transform, entries, seed))


ENTRIES = [(0, 0), (1, 2), (3, 1), (2, 2), (0, 1)]


def test_cached_outputs_equal_recomputation_and_are_reused(tmp_path):
    model, data, transform = teacher(), dataset(), random_transform()
    counter = Counter(model)
    cache = TeacherCache(model, POINT, data, transform, views=3, augment_seed=5, outputs=BOTH, root=tmp_path)
    first = lookup(cache, data, transform, ENTRIES, seed=5)
    assert cache.teacher_forwards == counter.images == len(ENTRIES) and cache.misses == len(ENTRIES)
    expected = fresh(model, batch(data, transform, ENTRIES, seed=5))
    for name in BOTH:
        assert first[name].dtype == torch.float32 and torch.equal(first[name], expected[name])

    again = lookup(cache, data, transform, ENTRIES[::-1], seed=5)  # batch order is kept
    # fresh() above ran the teacher too; the cache did not.
    assert counter.images == 2 * len(ENTRIES) and cache.teacher_forwards == len(ENTRIES)
    assert cache.hits == len(ENTRIES)
    for name in BOTH:
        assert torch.equal(again[name], first[name].flip(0))

    reopened = TeacherCache(
        model, POINT, data, transform, views=3, augment_seed=5, outputs=BOTH, root=tmp_path
    )
    assert reopened.key == cache.key and reopened.path == cache.path
    from_disk = lookup(reopened, data, transform, ENTRIES, seed=5)
    assert reopened.teacher_forwards == 0 and counter.images == 2 * len(ENTRIES)
    assert all(torch.equal(from_disk[name], first[name]) for name in BOTH)


def test_only_missing_entries_run_the_teacher(tmp_path):
    model, data, transform = teacher(), dataset(), random_transform()
    counter = Counter(model)
    cache = TeacherCache(model, POINT, data, transform, views=3, root=tmp_path)
    lookup(cache, data, transform, [(0, 0), (1, 1)])
    mixed = lookup(cache, data, transform, [(1, 1), (2, 0), (0, 0), (3, 2)])
    assert counter.images == cache.teacher_forwards == 4 and (cache.hits, cache.misses) == (2, 4)
    expected = fresh(model, batch(data, transform, [(2, 0), (3, 2)]))["features"]
    assert torch.equal(mixed["features"][[1, 3]], expected)
    assert set(mixed) == {"features"}


@pytest.mark.parametrize(
    "change",
    [
        {"model": teacher(seed=1)},
        {"point": "stage4"},
        {"transform": random_transform(crop=(16, 48))},
        {"views": 2},
        {"data": dataset(seed=1)},
        {"data": dataset(size=5)},
        {"augment_seed": 1},
        {"outputs": BOTH},
        {"dtype": "float16"},
    ],
)
def test_any_changed_input_gives_another_key(tmp_path, change):
    def key(model=None, point=POINT, data=None, transform=None, views=3, **options):
        model, data, transform = model or teacher(), data or dataset(), transform or random_transform()
        return TeacherCache(model, point, data, transform, views=views, root=tmp_path, **options).key

    assert key(**change) != key()


def test_fill_computes_each_entry_once(tmp_path):
    model, data, transform = teacher(), dataset(), random_transform()
    counter = Counter(model)
    lines = []
    cache = TeacherCache(model, POINT, data, transform, views=3, outputs=BOTH, root=tmp_path)
    assert cache.missing == 12
    assert cache.fill(batch_size=5, progress=lines.append) == 12 == counter.images
    assert cache.missing == 0 and lines and "12 teacher forwards" in lines[-1]
    assert cache.fill(progress=None) == 0

    entries = [(i, v) for v in range(3) for i in range(4)]
    got = lookup(cache, data, transform, entries)
    assert counter.images == 12
    expected = {name: [] for name in BOTH}
    for start in range(0, 12, 5):  # the batches fill() ran
        for name, out in fresh(model, batch(data, transform, entries[start : start + 5])).items():
            expected[name].append(out)
    assert all(torch.equal(got[name], torch.cat(expected[name])) for name in BOTH)


def test_fixed_transform_stores_one_view(tmp_path):
    model, data, transform = teacher(), dataset(), PairedTransform(normalize=False)
    counter = Counter(model)
    cache = TeacherCache(model, POINT, data, transform, views=4, augment_seed=3, root=tmp_path)
    assert cache.views == 1
    assert cache.key == TeacherCache(model, POINT, data, transform, views=1, root=tmp_path).key
    assert cache.key == TeacherCache(model, POINT, data, transform, views=None, root=tmp_path).key
    assert cache.fill(progress=None) == 4
    got = lookup(cache, data, transform, [(1, 0), (1, 3), (2, 7)])
    assert counter.images == 4
    assert torch.equal(got["features"][0], got["features"][1])
    assert torch.equal(
        got["features"][1:2], fresh(model, batch(data, transform, [(1, 0), (2, 0)]))["features"][:1]
    )


@pytest.mark.parametrize(
    "options, message",
    [
        ({"transform": PairedTransform(crop=(24, 48))}, "normalize=False"),
        ({"transform": PairedTransform(normalize=True)}, "normalize=False"),
        ({"views": None}, "views=V"),
        ({"views": 0}, "views"),
        ({"outputs": ("features", "attention")}, "attention"),
        ({"point": "stage99"}, "stage99"),
        ({"dtype": "float64"}, "float64"),
    ],
)
def test_bad_inputs_are_refused_before_any_forward(tmp_path, options, message):
    model = teacher()
    counter = Counter(model)
    arguments = {"point": POINT, "transform": random_transform(), "views": 3} | options
    point, transform = arguments.pop("point"), arguments.pop("transform")
    with pytest.raises(UserInputError, match=message):
        TeacherCache(model, point, dataset(), transform, root=tmp_path, **arguments)
    assert counter.images == 0 and not any(tmp_path.iterdir())


@pytest.mark.parametrize("entry, message", [((4, 0), "index 4"), ((0, 3), "view 3"), ((-1, 0), "index -1")])
def test_out_of_range_entries_are_refused(tmp_path, entry, message):
    model, data, transform = teacher(), dataset(), random_transform()
    counter = Counter(model)
    cache = TeacherCache(model, POINT, data, transform, views=3, root=tmp_path)
    with pytest.raises(UserInputError, match=message):
        cache.get([entry[0]], [entry[1]], torch.zeros(1, 3, 24, 48))
    assert counter.images == 0


@pytest.mark.parametrize("damage", ["delete", "reshape", "meta"])
def test_damaged_entry_is_moved_aside_and_rebuilt(tmp_path, damage):
    model, data, transform = teacher(), dataset(), random_transform()
    cache = TeacherCache(model, POINT, data, transform, views=3, root=tmp_path)
    first = lookup(cache, data, transform, ENTRIES)["features"]
    del cache
    if damage == "delete":
        (tmp_path / first_key(tmp_path) / "features.npy").unlink()
    elif damage == "reshape":  # right grid, wrong output shape
        np.save(tmp_path / first_key(tmp_path) / "features.npy", np.zeros((4, 3, 7, 2, 2), np.float32))
    else:
        (tmp_path / first_key(tmp_path) / "meta.json").write_text("{not json")

    with pytest.warns(UserWarning, match="damaged"):
        rebuilt = TeacherCache(model, POINT, data, transform, views=3, root=tmp_path)
    got = lookup(rebuilt, data, transform, ENTRIES)["features"]
    assert rebuilt.teacher_forwards == len(ENTRIES) and torch.equal(got, first)
    assert any(".broken-" in path.name for path in tmp_path.iterdir())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert TeacherCache(model, POINT, data, transform, views=3, root=tmp_path).missing == 12 - len(
            ENTRIES
        )


def first_key(root):
    (entry,) = [path.name for path in root.iterdir() if not path.name.startswith(".")]
    return entry


def _fill_in_another_process(root):
    torch.set_num_threads(1)
    cache = TeacherCache(teacher(), POINT, dataset(), random_transform(), views=3, outputs=BOTH, root=root)
    return cache.fill(batch_size=3, progress=None), cache.key


@pytest.mark.slow  # two fresh interpreters import torch: several seconds
def test_processes_filling_one_cache_leave_one_complete_copy(tmp_path):
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.map(_fill_in_another_process, [tmp_path, tmp_path])
    (key,) = {key for _, key in results}
    assert 12 <= sum(forwards for forwards, _ in results) <= 24
    assert [path.name for path in tmp_path.iterdir()] == [key]  # no partial or broken directory left behind

    model, data, transform = teacher(), dataset(), random_transform()
    cache = TeacherCache(model, POINT, data, transform, views=3, outputs=BOTH, root=tmp_path)
    entries = [(i, v) for v in range(3) for i in range(4)]
    got = lookup(cache, data, transform, entries)
    assert cache.teacher_forwards == 0
    for start in range(0, 12, 3):  # the batches fill() ran
        expected = fresh(model, batch(data, transform, entries[start : start + 3]))
        assert all(torch.equal(got[name][start : start + 3], expected[name]) for name in BOTH)


def test_float16_storage_is_equal_within_fp16_rounding(tmp_path):
    model, data, transform = teacher(), dataset(), random_transform()
    cache = TeacherCache(model, POINT, data, transform, views=3, outputs=BOTH, root=tmp_path, dtype="float16")
    first = lookup(cache, data, transform, ENTRIES)
    again = lookup(cache, data, transform, ENTRIES)
    expected = fresh(model, batch(data, transform, ENTRIES))
    for name in BOTH:
        assert first[name].dtype == torch.float32 and torch.equal(first[name], again[name])
        assert torch.equal(first[name], expected[name].half().float())
        torch.testing.assert_close(first[name], expected[name], rtol=1e-3, atol=1e-4)
    full = TeacherCache(model, POINT, data, transform, views=3, outputs=BOTH, root=tmp_path / "f32")
    full.fill(progress=None)
    assert (cache.path / "features.npy").stat().st_size < 0.6 * (full.path / "features.npy").stat().st_size
