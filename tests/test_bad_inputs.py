"""Every bad dataset input gives a DatasetError that names the file or folder and the fix."""

import numpy as np
import pytest
from helpers import rgb, write_png

from kd.data import CamVid, Cityscapes, Folder, Kitti, SyntheticRoadScenes, open_dataset
from kd.errors import DatasetError, UserInputError


def camvid_tree(root, names=("a", "b"), size=(6, 8)):
    for name in names:
        write_png(root / "train" / f"{name}.png", rgb(*size))
        write_png(root / "trainannot" / f"{name}.png", np.full(size, 3, np.uint8))
    return root


def test_missing_root(tmp_path):
    with pytest.raises(DatasetError, match=r"does not exist.*SegNet layout") as err:
        CamVid(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)


def test_missing_mask_folder(tmp_path):
    write_png(tmp_path / "train" / "a.png", rgb())
    with pytest.raises(DatasetError, match="trainannot does not exist"):
        CamVid(tmp_path)


def test_missing_cityscapes_annotations(tmp_path):
    write_png(tmp_path / "leftImg8bit" / "train" / "x" / "x_0_0_leftImg8bit.png", rgb())
    with pytest.raises(DatasetError, match=r"gtFine.*does not exist.*torchvision's layout"):
        Cityscapes(tmp_path)


def test_no_images(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "trainannot").mkdir()
    (tmp_path / "train" / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetError, match="no images"):
        CamVid(tmp_path)


def test_image_without_mask(tmp_path):
    camvid_tree(tmp_path)
    write_png(tmp_path / "train" / "c.png", rgb(6, 8))
    with pytest.raises(DatasetError, match=r"1 image\(s\) have no mask") as err:
        CamVid(tmp_path)
    assert str(tmp_path / "train" / "c.png") in str(err.value)


def test_mask_without_image(tmp_path):
    camvid_tree(tmp_path)
    write_png(tmp_path / "trainannot" / "z.png", np.zeros((6, 8)))
    with pytest.raises(DatasetError, match=r"mask\(s\) have no image") as err:
        CamVid(tmp_path)
    assert str(tmp_path / "trainannot" / "z.png") in str(err.value)


def test_image_and_mask_of_different_sizes(tmp_path):
    camvid_tree(tmp_path)
    write_png(tmp_path / "trainannot" / "b.png", np.zeros((5, 8)))
    with pytest.raises(DatasetError, match=r"is 8x6 but its mask .*b.png is 8x5"):
        CamVid(tmp_path)


def test_label_values_outside_the_class_set(tmp_path):
    camvid_tree(tmp_path)
    mask = np.full((6, 8), 3, np.uint8)
    mask[0, :2] = (12, 40)
    write_png(tmp_path / "trainannot" / "b.png", mask)
    ds = CamVid(tmp_path)
    ds[0]  # the good one decodes
    with pytest.raises(DatasetError, match=r"b.png holds label values 12, 40 outside the class set") as err:
        ds[1]
    assert "valid raw values: 0..11, 255" in str(err.value)


def test_colour_coded_mask(tmp_path):
    camvid_tree(tmp_path)
    write_png(tmp_path / "trainannot" / "a.png", rgb(6, 8))
    with pytest.raises(DatasetError, match=r"a.png has shape \(6, 8, 3\); masks must be single-channel"):
        CamVid(tmp_path)[0]


def test_unreadable_file(tmp_path):
    camvid_tree(tmp_path)
    (tmp_path / "train" / "b.png").write_bytes(b"this is not a png")
    with pytest.raises(DatasetError, match=r"cannot read image file .*b.png.*Replace or remove"):
        CamVid(tmp_path)


def test_truncated_file_is_named_when_decoded(tmp_path):
    camvid_tree(tmp_path, size=(64, 64))
    noisy = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    path = write_png(tmp_path / "train" / "a.png", noisy)
    path.write_bytes(path.read_bytes()[:200])
    ds = CamVid(tmp_path)  # the header still reads
    with pytest.raises(DatasetError, match=r"cannot decode image file .*a.png"):
        ds[0]


def test_first_n_larger_than_the_dataset(tmp_path):
    with pytest.raises(DatasetError, match="asked for the first 5 images but it has 2"):
        CamVid(camvid_tree(tmp_path), first_n=5)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: CamVid(root, "training"), "no split 'training'"),
        (lambda root: Kitti(root, "test"), "only for split 'train'"),
        (lambda root: CamVid(root, label_set="road"), "unknown label set"),
        (lambda root: SyntheticRoadScenes("night"), "unknown synthetic domain 'night'"),
        (lambda root: SyntheticRoadScenes("target", first_n=65), "first 65 images but it has 64"),
        (lambda root: open_dataset("coco:/data"), "unknown data kind 'coco'"),
        (lambda root: open_dataset("camvid"), r"names no path; write it as camvid:PATH"),
        (lambda root: open_dataset(f"folder:{root}"), "two folders, comma between"),
        (lambda root: open_dataset(f"folder:{root},{root}"), "need their classes"),
    ],
)
def test_bad_options(tmp_path, make, message):
    camvid_tree(tmp_path)
    with pytest.raises(ValueError, match=message):
        make(tmp_path)


def test_binary_folder_needs_to_know_the_road_class(tmp_path):
    camvid_tree(tmp_path)
    with pytest.raises(DatasetError, match="pass road_class"):
        Folder(tmp_path / "train", tmp_path / "trainannot", classes=["a", "b"], label_set="binary")
    with pytest.raises(DatasetError, match="road class 'lane' is not among"):
        Folder(tmp_path / "train", tmp_path / "trainannot", classes=["a", "b"], road_class="lane")


def test_dataset_errors_are_user_input_errors():
    assert issubclass(DatasetError, UserInputError) and issubclass(UserInputError, ValueError)
