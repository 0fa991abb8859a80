"""`python -m kd.data.resize`: a copy at the study's image size that the study reads as the original."""

import numpy as np
import pytest
import torch
from helpers import write_png

from kd.data import PairedTransform, open_dataset
from kd.data.resize import main, resized_copy

SIZE = (18, 24)


def camvid_like(root, rng, frames=3):
    """A CamVid (SegNet layout) folder of noisy 36x48 images and masks of the 11 classes and void."""
    for split in ("train", "val", "test"):
        for frame in range(frames):
            name = f"0001TP_{split}{frame:03d}.png"
            write_png(root / split / name, rng.integers(0, 256, (36, 48, 3)))
            write_png(root / f"{split}annot" / name, rng.integers(0, 12, (36, 48)))
    (root / "train.txt").write_text("the split list, copied as it is\n")
    return root


def samples(spec, split):
    dataset, transform = open_dataset(spec, split), PairedTransform(resize=SIZE, normalize=False)
    return [transform(dataset[i]) for i in range(len(dataset))]


def test_the_study_reads_the_same_samples_from_the_copy(tmp_path):
    source = camvid_like(tmp_path / "camvid", np.random.default_rng(0))
    copy = resized_copy(f"camvid:{source}", tmp_path / "small", SIZE, say=lambda line: None)
    assert copy == f"camvid:{tmp_path / 'small'}"
    for split in ("train", "val", "test"):
        for before, after in zip(samples(f"camvid:{source}", split), samples(copy, split), strict=True):
            assert torch.equal(before["image"], after["image"]) and torch.equal(before["mask"], after["mask"])
    assert open_dataset(copy, "test")[0]["image"].shape[-2:] == SIZE  # stored small, not only read small
    assert (tmp_path / "small" / "train.txt").read_text() == "the split list, copied as it is\n"


def test_a_copy_that_would_differ_is_refused_by_its_check(tmp_path, capsys):
    # a grayscale photo is single-channel, so it is taken for a mask: the check catches the difference
    source = camvid_like(tmp_path / "camvid", np.random.default_rng(1))
    write_png(source / "train" / "0001TP_train000.png", np.random.default_rng(2).integers(0, 256, (36, 48)))
    assert main([f"camvid:{source}", str(tmp_path / "small"), "--image-size", "18,24"]) == 2
    assert "the copy of 0001TP_train000 (train) differs from the original" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["camvid:/nowhere", "OUT", "--image-size", "18,24"], "does not exist"),
        (["folder:a,b", "OUT", "--image-size", "18,24"], "resize takes camvid:PATH"),
        (["camvid:SRC", "OUT", "--image-size", "18"], "HEIGHT,WIDTH"),
        (["camvid:SRC", "FULL", "--image-size", "18,24"], "is not empty"),
    ],
)
def test_bad_requests_are_refused_before_anything_is_written(tmp_path, capsys, args, message):
    source = camvid_like(tmp_path / "camvid", np.random.default_rng(0), frames=1)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    paths = {"SRC": str(source), "OUT": str(tmp_path / "out"), "FULL": str(tmp_path / "full")}
    args = [a.replace("SRC", paths["SRC"]) if a.startswith("camvid:SRC") else paths.get(a, a) for a in args]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_the_real_camvid_copy_gives_the_camvid_11_samples(camvid_root, tmp_path):
    # the study's own views (random scale, crop, flip) of a few real images, from both folders
    import shutil

    subset = tmp_path / "camvid"
    for folder in ("train", "trainannot", "test", "testannot", "val", "valannot"):
        (subset / folder).mkdir(parents=True)
        for path in sorted((camvid_root / folder).glob("*.png"))[:2]:
            shutil.copyfile(path, subset / folder / path.name)
    copy = resized_copy(f"camvid:{subset}", tmp_path / "small", (180, 240), say=lambda line: None)
    views = PairedTransform(resize=(180, 240), scale=(0.5, 2.0), crop=(180, 240), hflip=True, normalize=False)
    before, after = open_dataset(f"camvid:{subset}", "train"), open_dataset(copy, "train")
    for index in range(len(before)):
        a, b = views(before[index], seed=7, view=1), views(after[index], seed=7, view=1)
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
