"""Datasets decoded once onto the training device give the views the DataLoader path gives, once
per process, and only when they fit; fresh views, channels-last and compiled modules in the engine."""

import dataclasses
import gc

import pytest
import torch
from torch.utils.data import DataLoader

from kd.data import Augmented, CamVid, PairedTransform, SyntheticRoadScenes
from kd.data import resident as resident_module
from kd.data.resident import Resident, decoded_bytes, device_memory, resident
from kd.engine import Engine, RunData, RunSettings, collate
from kd.methods import build_recipe
from kd.models import build_student, build_teacher

SIZE = (48, 96)
RANDOM = PairedTransform(
    resize=(60, 80), scale=(0.5, 2.0), crop=(48, 64), hflip=True, jitter=0.3, normalize=False
)

pytestmark = pytest.mark.usefixtures("one_thread")


class Counted(SyntheticRoadScenes):
    """Synthetic scenes that count how often a sample is decoded."""

    decoded = 0

    def __getitem__(self, index):
        Counted.decoded += 1
        return super().__getitem__(index)


def scenes(domain="target", size=6, cls=SyntheticRoadScenes):
    return cls(domain, size=size, image_size=SIZE, seed=0, label_set="binary")


def batches(dataset, views, seed, epoch, num_workers=0):
    data = Augmented(dataset, RANDOM, seed=0, views=views, choice_seed=seed)
    data.set_epoch(epoch)
    return list(DataLoader(data, batch_size=3, num_workers=num_workers, collate_fn=collate))


@pytest.mark.parametrize("views", ["fresh", 2])
def test_real_images_decoded_once_on_the_device_give_the_views_dataloader_workers_give(views, camvid_root):
    camvid = CamVid(camvid_root, "train", label_set="full", first_n=6)
    on_device = resident([camvid], "cpu", share=1.0)[0]
    assert isinstance(on_device, Resident) and on_device.device.type == "cpu"
    for epoch in (0, 3):
        workers = batches(camvid, views, seed=1, epoch=epoch, num_workers=2)
        decoded = batches(on_device, views, seed=1, epoch=epoch)
        for a, b in zip(workers, decoded, strict=True):
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
            assert a["id"] == b["id"] and torch.equal(a["view"], b["view"])
    assert on_device.classes == camvid.classes and on_device.ids == camvid.ids  # the dataset's facts


def test_fresh_views_differ_by_seed_and_epoch_and_repeat_exactly():
    data = scenes()
    first = batches(data, "fresh", seed=0, epoch=0)[0]["image"]
    assert torch.equal(first, batches(data, "fresh", seed=0, epoch=0)[0]["image"])  # a rerun: the same
    assert not torch.equal(first, batches(data, "fresh", seed=1, epoch=0)[0]["image"])  # another seed
    assert not torch.equal(first, batches(data, "fresh", seed=0, epoch=1)[0]["image"])  # another epoch
    # a bank: every epoch's views come from the same few, whichever training seed picks them
    bank = {
        tuple(b["view"].tolist()): b["image"]
        for s in (0, 1)
        for e in range(4)
        for b in batches(data, 1, s, e)
    }
    assert len(bank) == 1


def test_a_copy_is_decoded_once_per_process_and_goes_with_its_dataset():
    data = scenes(cls=Counted)
    Counted.decoded = 0
    first = resident([data], "cpu", share=1.0)[0]
    decoded = Counted.decoded
    assert decoded == len(data) + 1  # every sample, and the first once more to estimate the size
    assert resident([data, None], "cpu", share=1.0) == [first, None]  # a second engine: no decoding
    assert Counted.decoded == decoded and resident([first], "cpu", 1.0) == [first]
    key = (id(data), "cpu")
    assert resident_module._COPIES[key] is first
    del data, first
    gc.collect()
    assert key not in resident_module._COPIES


def test_data_beyond_the_share_stays_with_the_dataloader_all_or_none():
    target, proximity = scenes(), scenes("proximity")
    one = decoded_bytes(target)
    assert one == len(target) * 4 * SIZE[0] * SIZE[1]  # uint8 RGB and a uint8 mask
    share = 1.5 * one / device_memory("cpu")  # room for one of them, not both
    assert isinstance(resident([target], "cpu", share)[0], Resident)
    assert resident([target, proximity], "cpu", share) == [target, proximity]  # ESD mixes both in a batch
    assert resident([target], "cpu", 0.0) == [target]


def engine_run(settings, recipe="sd", teacher=None, split_point="stage3"):
    data = RunData(
        scenes(),
        scenes("test", 3),
        scenes("proximity"),
        train_transform=RANDOM,
        eval_transform=PairedTransform(resize=(48, 64), normalize=False),
    )
    torch.manual_seed(0)
    teacher = teacher or build_teacher(num_classes=2, pretrained=False).eval()
    torch.manual_seed(1)
    student = build_student("sd", 2, teacher=teacher, split_point=split_point)
    engine = Engine(build_recipe(recipe, {"epochs": 2}), student, teacher, data, settings, progress=None)
    return engine, engine.run(), student


def test_the_engine_trains_alike_on_either_path_with_fresh_views_and_the_teacher_online():
    settings = RunSettings(batch_size=3, evaluate="end", device_data_share=0.0)
    assert settings.views == "fresh"  # the default
    engine, kept, student = engine_run(dataclasses.replace(settings, device_data_share=1.0))
    assert not engine.caches and isinstance(engine.data.target, Resident)
    # every image of every stage-1 epoch, and the feature-ratio pass, through the online teacher
    assert kept.teacher_forwards >= 2 * len(engine.data.target)
    _, decoded, other = engine_run(settings)
    assert decoded.final == kept.final and decoded.teacher_forwards == kept.teacher_forwards
    pairs = zip(student.state_dict().values(), other.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_channels_last_and_compiled_modules_train_as_the_plain_model_does():
    settings = RunSettings(batch_size=3, evaluate="end", views=1)
    # a student cut at stage1: few modules for the compiler to trace
    plain = engine_run(settings, "baseline", split_point="stage1")
    channels_last = engine_run(
        dataclasses.replace(settings, channels_last=True), "baseline", split_point="stage1"
    )
    compiled = engine_run(dataclasses.replace(settings, compile="eager"), "baseline", split_point="stage1")
    assert channels_last[0].fingerprint() == plain[0].fingerprint() == compiled[0].fingerprint()  # resumable
    kernel = next(p for p in channels_last[2].parameters() if p.dim() == 4)
    assert kernel.is_contiguous(memory_format=torch.channels_last)
    for other in (channels_last, compiled):
        assert other[1].final["miou"] == pytest.approx(plain[1].final["miou"], abs=1e-3)
        # Float rounding differs; Adam amplifies it on parameters whose gradient is near zero
        # (a BatchNorm bias before a projection), so compare the kernels.
        for a, b in zip(plain[2].parameters(), other[2].parameters(), strict=True):
            if a.dim() == 4:
                assert torch.allclose(a, b, atol=1e-3)
    assert all(m._compiled_call_impl is not None for m in compiled[2].stages.values())
    assert plain[2].stages["stage1"]._compiled_call_impl is None
