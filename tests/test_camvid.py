"""The real CamVid copy in ../shared/data/camvid (skipped when it is absent)."""

import numpy as np
import torch

from kd.data import CamVid, open_dataset
from kd.data.folders import CAMVID_SPLITS


def test_split_sizes_match_the_segnet_distribution(camvid_root):
    sizes = {split: len(CamVid(camvid_root, split)) for split in CAMVID_SPLITS}
    assert sizes == {"train": 367, "val": 101, "test": 233}


def test_raw_masks_hold_the_eleven_classes_and_void(camvid_root):
    train = CamVid(camvid_root, "train")
    seen = set()
    for index in range(0, len(train), 7):
        seen |= set(np.unique(np.asarray(train.load_mask(index))).tolist())
    assert seen <= set(range(11)) | {255}
    assert seen == set(range(11)) | {255}, "every class and void should occur in a seventh of train"


def test_full_label_set_maps_void_to_ignore(camvid_root):
    test = CamVid(camvid_root, "test")
    sample = test[0]
    assert sample["image"].shape == (3, 360, 480) and sample["image"].dtype == torch.uint8
    assert sample["mask"].shape == (360, 480) and sample["mask"].dtype == torch.int64
    assert set(sample["mask"].unique().tolist()) <= set(range(11)) | {255}
    assert test.num_classes == 11 and test.classes[3] == "road"


def test_binary_label_set_is_road_against_background(camvid_root):
    full = CamVid(camvid_root, "val")[5]["mask"]
    binary = CamVid(camvid_root, "val", label_set="binary")[5]["mask"]
    assert torch.equal(binary == 1, full == 3)
    assert torch.equal(binary == 255, full == 255)
    assert set(binary.unique().tolist()) == {0, 1, 255}


def test_first_n_takes_the_first_images_in_sorted_order(camvid_root):
    everything = CamVid(camvid_root, "train")
    first = open_dataset(f"camvid:{camvid_root}", split="train", label_set="binary", first_n=64)
    assert len(first) == 64
    assert first.ids == sorted(everything.ids)[:64]
    assert first.ids[0] == "0001TP_006690"
