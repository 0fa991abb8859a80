"""Paired image/mask transforms, reproducible from (seed, image index, view index).

Built from torchvision.transforms.v2, which moves a tv_tensors.Mask with its image
(nearest-neighbour resizing, same crop and flip). Random draws come from torch's global
generator, so each call runs under a generator seeded from (seed, index, view) and
restored afterwards: the same view of an image is the same tensor every time, which lets a
frozen teacher's output for that view be computed once and reused.

An `Augmentation` names a transform's random steps as data; recipes name theirs (kd.methods:
AUGMENTATIONS), so methods compared with one seed see the same views when they share one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
# `views = FRESH`: a new view of every image at every epoch, as the reference training scripts draw;
# `views = N`: a fixed bank of N views per image, which a teacher-output cache can hold
FRESH = "fresh"
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_bgr(image: torch.Tensor) -> torch.Tensor:
    return image.flip(-3)


def view_seed(seed: int, index: int, view: int) -> int:
    """A 63-bit seed for one augmentation view of one image."""
    return int(
        np.random.SeedSequence([int(seed), int(index), int(view)]).generate_state(1, np.uint64)[0] >> 1
    )


@dataclass(frozen=True)
class Augmentation:
    """The random steps of a training transform, in PairedTransform's order: `scale`, a (low, high)
    range from which one factor is drawn uniformly to rescale image and mask; `crop`, a random
    (height, width) window, the image padded with `fill` (uint8 RGB) and the mask with the ignore
    value where it is smaller; `hflip`, a horizontal flip with probability 0.5; `jitter`, photometric
    jitter of the image alone: brightness, contrast and saturation factors drawn from
    [1 - jitter, 1 + jitter] (0: none)."""

    scale: tuple[float, float] | None = None
    crop: tuple[int, int] | None = None
    hflip: bool = False
    fill: int | tuple[int, int, int] = 0
    jitter: float = 0.0


class RandomScale(v2.Transform):
    """Image and mask resized by one factor drawn uniformly from `scale` (the mask by nearest neighbour).

    Not v2.ScaleJitter: its factor is relative to a fixed target size, not to the image, so it is a
    pure factor only when every image already has that size."""

    def __init__(self, scale: tuple[float, float]):
        super().__init__()
        self.scale = tuple(scale)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = next(
            v2.functional.get_size(i) for i in flat_inputs if isinstance(i, tv_tensors.Image)
        )
        low, high = self.scale
        factor = low + float(torch.rand(1)) * (high - low)
        return {"size": [max(1, round(height * factor)), max(1, round(width * factor))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(v2.functional.resize, inpt, size=params["size"], antialias=True)


class MaxPool2x(v2.Transform):
    """The SD paper's 2x max-pooling of the input; the mask takes the top-left label of each 2x2 window."""

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            h, w = inpt.shape[-2] // 2 * 2, inpt.shape[-1] // 2 * 2
            return tv_tensors.wrap(inpt[..., 0:h:2, 0:w:2].contiguous(), like=inpt)
        if isinstance(inpt, tv_tensors.Image):
            if not inpt.is_floating_point():
                raise TypeError("MaxPool2x expects a float image; put it after the conversion to float")
            return tv_tensors.wrap(F.max_pool2d(inpt.as_subclass(torch.Tensor), 2), like=inpt)
        return inpt


class PairedTransform:
    """Resize -> random scale -> random crop -> horizontal flip -> photometric jitter -> float in
    [0, 1] -> 2x max-pool -> normalise.

    Every step is optional. `resize` and `crop` are (height, width); `scale`, `crop`, `hflip`,
    `fill` and `jitter` are an Augmentation's (from_augmentation). Crops larger than the image pad
    it (image with `fill`, mask with the ignore value). The samples may live on any device (see
    kd.data.resident): every step runs there, with its random draws on the CPU generator, so a view
    is the same wherever it is computed.
    """

    def __init__(
        self,
        resize: tuple[int, int] | None = None,
        crop: tuple[int, int] | None = None,
        hflip: bool = False,
        max_pool: bool = False,
        normalize: bool = True,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        ignore_index: int = 255,
        scale: tuple[float, float] | None = None,
        fill: int | tuple[int, int, int] = 0,
        channels: str = "rgb",
        jitter: float = 0.0,
    ):
        if scale is not None and crop is None:
            raise ValueError("a random scale needs a crop, so that every view of an image has one size")
        steps: list[v2.Transform] = []
        if resize is not None:
            steps.append(v2.Resize(tuple(resize), antialias=True))
        if scale is not None:
            steps.append(RandomScale(scale))
        if crop is not None:
            fills = {tv_tensors.Image: fill, tv_tensors.Mask: ignore_index}
            steps.append(v2.RandomCrop(tuple(crop), pad_if_needed=True, fill=fills))
        if hflip:
            steps.append(v2.RandomHorizontalFlip(p=0.5))
        if jitter:
            steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter))
        steps.append(v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True))
        if max_pool:
            steps.append(MaxPool2x())
        if normalize:
            if channels == "bgr":  # networks trained on OpenCV-decoded images; mean and std in BGR order
                steps.append(v2.Lambda(to_bgr, tv_tensors.Image))
            steps.append(v2.Normalize(mean=list(mean), std=list(std)))
        self.random = crop is not None or hflip or bool(jitter)
        self.normalizes = normalize
        self.fill = fill
        self.pipeline = v2.Compose(steps)

    @classmethod
    def from_augmentation(
        cls, augmentation: Augmentation, resize: tuple[int, int] | None = None, **options
    ) -> PairedTransform:
        """`augmentation`'s random steps after `resize`; `options` are the other arguments (normalize=...)."""
        return cls(resize=resize, **asdict(augmentation), **options)

    def __call__(self, sample: dict, seed: int = 0, view: int = 0) -> dict:
        """Transform one sample dict (`image`, `mask`, `index`, ...) as view `view` of image `index`."""
        if self.random:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(view_seed(seed, sample["index"], view))
                image, mask = self.pipeline(sample["image"], sample["mask"])
        else:
            image, mask = self.pipeline(sample["image"], sample["mask"])
        return {**sample, "image": image, "mask": mask, "view": view}

    def __repr__(self) -> str:
        # The teacher cache keys on this text, and RandomCrop's repr leaves its fill out.
        fill = f", fill={self.fill}" if self.fill != 0 else ""
        return f"PairedTransform({self.pipeline}{fill})"


class Augmented(torch.utils.data.Dataset):
    """A dataset seen through a PairedTransform, with fresh views or a fixed bank of them.

    With `views=FRESH` (or None) every epoch draws a fresh view of every image (view index =
    epoch), from a seed derived from (`seed`, `choice_seed`): each training seed sees its own
    views, and two recipes with one transform and one training seed see the same ones. With
    `views=V` each epoch picks, per image, one of V views deterministically from (choice_seed,
    epoch, index) out of a bank drawn from `seed`, so a cache of V teacher outputs per image covers
    every epoch.
    """

    def __init__(
        self,
        dataset,
        transform: PairedTransform,
        seed: int = 0,
        views: int | None = None,
        choice_seed: int | None = None,
    ):
        views = None if views == FRESH else views
        if views is not None and views < 1:
            raise ValueError(
                f"views must be at least 1 (or {FRESH!r} for a fresh view every epoch), got {views}"
            )
        self.dataset, self.transform, self.views = dataset, transform, views
        # The bank (seed) can stay fixed across training seeds, so one teacher cache serves them
        # all, while each training seed still picks its own sequence of views (choice_seed).
        self.choice_seed = seed if choice_seed is None else choice_seed
        self.seed = seed if views is not None or choice_seed is None else view_seed(seed, choice_seed, 0)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def view_of(self, index: int) -> int:
        if self.views is None:
            return self.epoch
        return view_seed(self.choice_seed, index, self.epoch) % self.views

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return self.transform(self.dataset[index], self.seed, self.view_of(index))

    def __getattr__(self, name: str):
        # Dataset facts (classes, ignore_index, ids, ...) come from the wrapped dataset.
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)
