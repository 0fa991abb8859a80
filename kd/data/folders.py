"""Real segmentation datasets stored as image and mask files.

All of them are lists of (image id, image path, mask path) pairs in sorted order plus a
RawLabels table; `SegmentationFiles` does the loading and every check. Layout problems
(missing folders, unpaired files, unreadable headers, size mismatches) are found when the
dataset is built, before any training starts; problems only visible in the pixels
(labels outside the class set, truncated files) are found when a sample is decoded, or by
`verify()` up front.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision import tv_tensors

from kd.data.labels import CAMVID, CITYSCAPES, IGNORE_INDEX, INVALID, RawLabels, identity_labels
from kd.errors import DatasetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm")
_MAX_LISTED = 5


def _listing(paths: Sequence[object]) -> str:
    shown = ", ".join(str(p) for p in list(paths)[:_MAX_LISTED])
    more = len(paths) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def _ranges(values: np.ndarray) -> str:
    """0 1 2 3 255 -> '0..3, 255'."""
    runs = np.split(values, np.flatnonzero(np.diff(values) != 1) + 1)
    return ", ".join(f"{run[0]}..{run[-1]}" if len(run) > 1 else f"{run[0]}" for run in runs)


def _require_dir(path: Path, what: str, hint: str) -> None:
    if not path.is_dir():
        raise DatasetError(f"{what}: folder {path} does not exist. {hint}")


def _images_in(folder: Path, pattern: str = "*") -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_size(path: Path, kind: str) -> tuple[int, int]:
    try:
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError) as err:
        raise DatasetError(f"cannot read {kind} file {path} ({err}). Replace or remove the file.") from err


class SegmentationFiles(torch.utils.data.Dataset):
    """Image/mask pairs on disk, decoded into the requested label set.

    A sample is a dict: `image` (tv_tensors.Image, uint8 [3,H,W]), `mask`
    (tv_tensors.Mask, int64 [H,W], IGNORE_INDEX = 255 for void), `index`, `id`.
    """

    labelled = True

    def __init__(
        self,
        pairs: Sequence[tuple[str, Path, Path]],
        raw_labels: RawLabels,
        label_set: str = "full",
        first_n: int | None = None,
        name: str = "dataset",
        check_sizes: bool = True,
    ):
        self.name = name
        self.label_set = label_set
        self.classes = raw_labels.class_names(label_set)
        self.num_classes = len(self.classes)
        self.ignore_index = IGNORE_INDEX
        self._lut = raw_labels.lut(label_set)
        pairs = sorted(pairs, key=lambda p: p[0])
        if first_n is not None:
            if first_n < 1 or first_n > len(pairs):
                raise DatasetError(
                    f"{name}: asked for the first {first_n} images but it has {len(pairs)}; "
                    f"choose a number between 1 and {len(pairs)}."
                )
            pairs = pairs[:first_n]
        self.pairs = list(pairs)
        if check_sizes:
            self._check_sizes()

    def _check_sizes(self) -> None:
        for _, image_path, mask_path in self.pairs:
            image_size, mask_size = _read_size(image_path, "image"), _read_size(mask_path, "mask")
            if image_size != mask_size:
                raise DatasetError(
                    f"{self.name}: image {image_path} is {image_size[0]}x{image_size[1]} but its mask "
                    f"{mask_path} is {mask_size[0]}x{mask_size[1]}; masks must have the size of their image."
                )

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def ids(self) -> list[str]:
        return [image_id for image_id, _, _ in self.pairs]

    def load_image(self, index: int) -> np.ndarray:
        path = self.pairs[index][1]
        try:
            with Image.open(path) as img:
                return np.asarray(img.convert("RGB"))
        except (UnidentifiedImageError, OSError) as err:
            raise DatasetError(
                f"cannot decode image file {path} ({err}). Replace or remove the file."
            ) from err

    def load_mask(self, index: int) -> np.ndarray:
        path = self.pairs[index][2]
        try:
            with Image.open(path) as img:
                raw = np.asarray(img)
        except (UnidentifiedImageError, OSError) as err:
            raise DatasetError(
                f"cannot decode mask file {path} ({err}). Replace or remove the file."
            ) from err
        if raw.ndim != 2:
            raise DatasetError(
                f"mask {path} has shape {raw.shape}; masks must be single-channel images of class values "
                "(colour-coded masks need converting to class indices first)."
            )
        if raw.dtype != np.uint8:
            if raw.min() < 0 or raw.max() > 255:
                bad = np.unique(raw[(raw < 0) | (raw > 255)])
                raise DatasetError(self._bad_values_message(path, bad))
            raw = raw.astype(np.uint8)
        mask = self._lut[raw]
        if (mask == INVALID).any():
            raise DatasetError(self._bad_values_message(path, np.unique(raw[mask == INVALID])))
        return mask.astype(np.int64)

    def _bad_values_message(self, path: Path, values: np.ndarray) -> str:
        return (
            f"mask {path} holds label values {_listing(values.tolist())} outside the class set of "
            f"{self.name} (valid raw values: {_ranges(np.flatnonzero(self._lut != INVALID))}). "
            "Fix the mask, or use the dataset kind whose labels it holds."
        )

    def __getitem__(self, index: int) -> dict:
        image, mask = self.load_image(index), self.load_mask(index)
        if image.shape[:2] != mask.shape:
            raise DatasetError(
                f"{self.name}: image {self.pairs[index][1]} and mask {self.pairs[index][2]} differ in size "
                f"({image.shape[1]}x{image.shape[0]} against {mask.shape[1]}x{mask.shape[0]})."
            )
        return {
            "image": tv_tensors.Image(torch.from_numpy(image.copy()).permute(2, 0, 1)),
            "mask": tv_tensors.Mask(torch.from_numpy(mask)),
            "index": index,
            "id": self.pairs[index][0],
        }

    def verify(self) -> None:
        """Decode every image and mask once, raising on the first bad file."""
        for index in range(len(self)):
            self[index]


def _pair_by_stem(
    images: Sequence[Path],
    masks: Sequence[Path],
    image_key,
    mask_key,
    name: str,
    image_dir: Path,
    mask_dir: Path,
) -> list[tuple[str, Path, Path]]:
    image_by_key = {image_key(p): p for p in images}
    mask_by_key = {mask_key(p): p for p in masks}
    if not image_by_key:
        raise DatasetError(f"{name}: no images ({', '.join(IMAGE_SUFFIXES)}) in {image_dir}. Check the path.")
    lonely_images = sorted(set(image_by_key) - set(mask_by_key))
    if lonely_images:
        raise DatasetError(
            f"{name}: {len(lonely_images)} image(s) have no mask in {mask_dir}: "
            f"{_listing([image_by_key[k] for k in lonely_images])}. Add the masks or remove those images."
        )
    lonely_masks = sorted(set(mask_by_key) - set(image_by_key))
    if lonely_masks:
        raise DatasetError(
            f"{name}: {len(lonely_masks)} mask(s) have no image in {image_dir}: "
            f"{_listing([mask_by_key[k] for k in lonely_masks])}. Add the images or remove those masks."
        )
    return [(key, image_by_key[key], mask_by_key[key]) for key in sorted(image_by_key)]


CAMVID_SPLITS = ("train", "val", "test")
CAMVID_ENV = "SEGKD_CAMVID"


def CamVid(
    root: str | os.PathLike, split: str = "train", label_set: str = "full", first_n: int | None = None
):
    """CamVid in the SegNet layout: `<split>/` RGB PNGs and `<split>annot/` class-index PNGs (11 = void)."""
    root = Path(root)
    if split not in CAMVID_SPLITS:
        raise DatasetError(f"CamVid has no split {split!r}; choose one of {', '.join(CAMVID_SPLITS)}.")
    hint = (
        "Expected the SegNet layout (train/, trainannot/, val/, valannot/, test/, testannot/); "
        f"point the path (or ${CAMVID_ENV}) at the folder that holds them."
    )
    image_dir, mask_dir = root / split, root / f"{split}annot"
    _require_dir(root, "CamVid", hint)
    _require_dir(image_dir, "CamVid", hint)
    _require_dir(mask_dir, "CamVid", hint)
    pairs = _pair_by_stem(
        _images_in(image_dir),
        _images_in(mask_dir),
        lambda p: p.stem,
        lambda p: p.stem,
        f"CamVid {split}",
        image_dir,
        mask_dir,
    )
    return SegmentationFiles(pairs, CAMVID, label_set, first_n, name=f"CamVid {split}")


CITYSCAPES_SPLITS = ("train", "val", "test")


def Cityscapes(
    root: str | os.PathLike, split: str = "train", label_set: str = "full", first_n: int | None = None
):
    """Cityscapes in torchvision's layout: leftImg8bit/<split>/<city>/ and
    gtFine/<split>/<city>/*_labelIds.png.

    labelIds are mapped to the 19 train ids (others void). Sorted order puts aachen first,
    so `first_n=64` on train gives the SD paper's Cityscapes-64.
    """
    root = Path(root)
    if split not in CITYSCAPES_SPLITS:
        raise DatasetError(
            f"Cityscapes has no split {split!r}; choose one of {', '.join(CITYSCAPES_SPLITS)}."
        )
    hint = (
        "Expected torchvision's layout: leftImg8bit/<split>/<city>/*_leftImg8bit.png "
        "and gtFine/<split>/<city>/*_gtFine_labelIds.png."
    )
    image_dir, mask_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    _require_dir(root, "Cityscapes", hint)
    _require_dir(image_dir, "Cityscapes", hint)
    _require_dir(mask_dir, "Cityscapes", hint)
    images = _images_in(image_dir, "*/*_leftImg8bit.*")
    masks = _images_in(mask_dir, "*/*_gtFine_labelIds.*")

    def key(path: Path, suffix: str) -> str:
        return f"{path.parent.name}/{path.name[: -len(suffix) - len(path.suffix)]}"

    pairs = _pair_by_stem(
        images,
        masks,
        lambda p: key(p, "_leftImg8bit"),
        lambda p: key(p, "_gtFine_labelIds"),
        f"Cityscapes {split}",
        image_dir,
        mask_dir,
    )
    return SegmentationFiles(pairs, CITYSCAPES, label_set, first_n, name=f"Cityscapes {split}")


def Kitti(root: str | os.PathLike, split: str = "train", label_set: str = "full", first_n: int | None = None):
    """KITTI semantics: training/image_2/*.png with training/semantic/*.png in Cityscapes labelIds."""
    root = Path(root)
    if split != "train":
        raise DatasetError(f"KITTI semantics has labels only for split 'train' (training/), not {split!r}.")
    hint = "Expected the KITTI semantics layout: training/image_2/ and training/semantic/."
    image_dir, mask_dir = root / "training" / "image_2", root / "training" / "semantic"
    _require_dir(root, "KITTI", hint)
    _require_dir(image_dir, "KITTI", hint)
    _require_dir(mask_dir, "KITTI", hint)
    pairs = _pair_by_stem(
        _images_in(image_dir),
        _images_in(mask_dir),
        lambda p: p.stem,
        lambda p: p.stem,
        "KITTI",
        image_dir,
        mask_dir,
    )
    return SegmentationFiles(pairs, CITYSCAPES, label_set, first_n, name="KITTI")


def Folder(
    images_dir: str | os.PathLike,
    masks_dir: str | os.PathLike,
    classes: Sequence[str] | int,
    road_class: int | str | None = None,
    void_values: Sequence[int] = (),
    label_set: str = "full",
    first_n: int | None = None,
):
    """Any folder of images with a folder of single-channel masks of the same names (any image suffix).

    Masks hold class indices 0..C-1; 255 and `void_values` are ignored. `road_class`
    (an index, or a class name) is needed only for the binary label set; by default the
    class named "road" is taken when there is one.
    """
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    hint = "Give a folder of images and a folder of masks with the same file names."
    _require_dir(images_dir, "Folder dataset", hint)
    _require_dir(masks_dir, "Folder dataset", hint)
    names = tuple(f"class_{i}" for i in range(classes)) if isinstance(classes, int) else tuple(classes)
    if not names:
        raise DatasetError("Folder dataset: give at least one class (a list of names or a count).")
    if isinstance(road_class, str):
        if road_class not in names:
            raise DatasetError(
                f"Folder dataset: road class {road_class!r} is not among the classes {list(names)}."
            )
        road_class = names.index(road_class)
    elif road_class is None and "road" in names:
        road_class = names.index("road")
    if road_class is None and label_set == "binary":
        raise DatasetError(
            "Folder dataset: the binary road-vs-background label set needs to know which class is road; "
            "pass road_class (an index or a class name), or name a class 'road'."
        )
    if road_class is not None and not 0 <= road_class < len(names):
        raise DatasetError(f"Folder dataset: road class {road_class} is outside 0..{len(names) - 1}.")
    labels = identity_labels(
        names, road=road_class if road_class is not None else -1, void_values=tuple(void_values)
    )
    pairs = _pair_by_stem(
        _images_in(images_dir),
        _images_in(masks_dir),
        lambda p: p.stem,
        lambda p: p.stem,
        "Folder dataset",
        images_dir,
        masks_dir,
    )
    return SegmentationFiles(pairs, labels, label_set, first_n, name=f"Folder dataset {images_dir}")
