"""Some images of a dataset, as a dataset of their own.

    val = Subset(open_dataset("camvid:PATH", "train"), range(266, 367), role="val")

A sample's `index` is its position in the subset (the teacher cache and the engine index by
it); its `id` stays the image's own, so roles drawn from one split can be checked for overlap.
Everything else (classes, label set, the synthetic seed) is the dataset's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kd.errors import DatasetError


class Subset(torch.utils.data.Dataset):
    def __init__(self, dataset, indices: Sequence[int], role: str = ""):
        self.dataset, self.indices = dataset, [int(i) for i in indices]
        bad = [i for i in self.indices if not 0 <= i < len(dataset)]
        if bad or not self.indices:
            raise DatasetError(
                f"{dataset.name}: {role or 'a subset'} needs images at positions 0..{len(dataset) - 1}, "
                f"got {'none' if not self.indices else bad[:5]}."
            )
        self.name = f"{dataset.name} ({role})" if role else dataset.name

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict:
        return {**self.dataset[self.indices[index]], "index": index}

    @property
    def ids(self) -> list[str]:
        every = self.dataset.ids
        return [every[i] for i in self.indices]

    @property
    def pairs(self):
        """The files of these images (file datasets only): what the teacher's fingerprint reads."""
        return [self.dataset.pairs[i] for i in self.indices]

    def verify(self) -> None:
        """Decode every image and mask of the subset once, raising on the first bad file."""
        for index in range(len(self)):
            self[index]

    def __getattr__(self, name: str):
        # classes, num_classes, ignore_index, labelled, label_set, seed, image_size: the dataset's
        if name in ("dataset", "indices") or name.startswith("__"):  # not set yet (unpickling, copying)
            raise AttributeError(name)
        return getattr(self.dataset, name)
