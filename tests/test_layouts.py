"""Cityscapes, KITTI and folder layouts on small trees built here."""

import numpy as np
import pytest
import torch
from helpers import rgb, write_png

from kd.data import Cityscapes, Folder, Kitti, open_dataset

# labelIds: 0 unlabeled (void), 7 road, 8 sidewalk, 26 car -> train ids 255, 0, 1, 13
LABEL_IDS = np.array([[7, 7, 8, 8], [26, 26, 0, 0]], np.uint8).repeat(2, 0).repeat(3, 1)  # 4x12
TRAIN_IDS = np.array([[0, 0, 1, 1], [13, 13, 255, 255]]).repeat(2, 0).repeat(3, 1)


def make_cityscapes(root, split="train", cities=("zurich", "aachen", "bochum"), per_city=2):
    for city in cities:
        for i in range(per_city):
            stem = f"{city}_{i:06d}_000019"
            write_png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", rgb(4, 12, 10 * i))
            write_png(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", LABEL_IDS)
            # torchvision's layout also holds colour and instance maps; they must be ignored
            write_png(root / "gtFine" / split / city / f"{stem}_gtFine_color.png", rgb(4, 12))
    return root


def make_kitti(root, n=3):
    for i in range(n):
        write_png(root / "training" / "image_2" / f"{i:06d}_10.png", rgb(4, 12, 20 * i))
        write_png(root / "training" / "semantic" / f"{i:06d}_10.png", LABEL_IDS)
    return root


def test_cityscapes_maps_label_ids_to_the_19_train_ids(tmp_path):
    ds = Cityscapes(make_cityscapes(tmp_path), "train")
    assert len(ds) == 6 and ds.num_classes == 19
    assert ds.classes[0] == "road" and ds.classes[13] == "car" and ds.classes[18] == "bicycle"
    assert torch.equal(ds[0]["mask"], torch.from_numpy(TRAIN_IDS))


def test_cityscapes_sorted_order_puts_aachen_first_for_cityscapes_64_style_subsets(tmp_path):
    ds = Cityscapes(make_cityscapes(tmp_path), "train", first_n=2)
    assert ds.ids == ["aachen/aachen_000000_000019", "aachen/aachen_000001_000019"]


def test_cityscapes_binary_label_set(tmp_path):
    mask = Cityscapes(make_cityscapes(tmp_path), "train", label_set="binary")[0]["mask"]
    expected = np.where(TRAIN_IDS == 255, 255, (TRAIN_IDS == 0).astype(int))
    assert torch.equal(mask, torch.from_numpy(expected))


def test_kitti_semantics_uses_cityscapes_label_ids(tmp_path):
    ds = Kitti(make_kitti(tmp_path), label_set="full")
    assert len(ds) == 3 and ds.ids == ["000000_10", "000001_10", "000002_10"]
    assert torch.equal(ds[2]["mask"], torch.from_numpy(TRAIN_IDS))
    assert ds[2]["image"].shape == (3, 4, 12)
    binary = open_dataset(f"kitti:{tmp_path}", label_set="binary", first_n=1)
    assert len(binary) == 1 and set(binary[0]["mask"].unique().tolist()) == {0, 1, 255}


def test_folder_pairs_by_name_across_suffixes_and_maps_void(tmp_path):
    mask = np.array([[0, 1, 2, 9], [255, 2, 1, 0]], np.uint8)
    for name in ("b", "a"):
        write_png(tmp_path / "img" / f"{name}.png", rgb(2, 4))
        write_png(tmp_path / "ann" / f"{name}.png", mask)
    (tmp_path / "img" / "a.png").rename(tmp_path / "img" / "a.jpg")  # a JPEG image with a PNG mask
    ds = Folder(tmp_path / "img", tmp_path / "ann", classes=["sky", "road", "car"], void_values=[9])
    assert ds.ids == ["a", "b"]
    assert ds[0]["mask"].tolist() == [[0, 1, 2, 255], [255, 2, 1, 0]]
    binary = Folder(
        tmp_path / "img", tmp_path / "ann", classes=3, road_class=1, void_values=[9], label_set="binary"
    )
    assert binary.classes == ("background", "road")
    assert binary[1]["mask"].tolist() == [[0, 1, 0, 255], [255, 0, 1, 0]]


def test_open_dataset_reads_folder_specs(tmp_path):
    write_png(tmp_path / "i" / "x.png", rgb(2, 2))
    write_png(tmp_path / "m" / "x.png", np.zeros((2, 2)))
    ds = open_dataset(
        f"folder:{tmp_path / 'i'},{tmp_path / 'm'}", classes=["road", "other"], label_set="binary"
    )
    assert len(ds) == 1 and ds[0]["mask"].tolist() == [[1, 1], [1, 1]]


def test_verify_decodes_everything(tmp_path):
    root = make_kitti(tmp_path)
    Kitti(root).verify()
    write_png(root / "training" / "semantic" / "000001_10.png", np.full((4, 12), 250, np.uint8))
    with pytest.raises(ValueError, match="000001_10.png"):
        Kitti(root).verify()
