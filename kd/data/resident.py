"""Datasets decoded once into uint8 tensors on the device that trains on them.

The datasets SegKD is for are small (CamVid: 701 images, 363 MB as uint8 at 360x480), so a
trial can decode every image once and keep it where the network runs: on a GPU the random
scale, crop, flip and jitter of each view then run as tensor operations there, and no epoch
decodes a PNG or copies a batch from the host. A dataset that would take more than a settable
share of the device's memory keeps the usual path: each sample decoded by DataLoader workers,
every epoch.

Both paths apply the same PairedTransform to the same uint8 tensors with the same seeded
draws, so they give the same views (tests/test_resident.py).

    from kd.data.resident import resident
    target, val = resident([target, val], "cuda", share=0.25)   # Resident copies, or the datasets
"""

from __future__ import annotations

import os
import weakref

import torch
from torchvision import tv_tensors

# Decoded copies live as long as their dataset and are made once per process and device, so the
# seeds of a trial (one Engine each) share one copy.
_COPIES: dict[tuple[int, str], Resident] = {}


def device_memory(device: str | torch.device) -> int:
    """Bytes of memory on `device`: a GPU's total memory, or the machine's physical memory."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def decoded_bytes(dataset) -> int:
    """What `dataset` takes decoded (uint8 images and masks), estimated from its first sample."""
    if len(dataset) == 0:
        return 0
    sample = dataset[0]
    per_image = sample["image"].numel() * sample["image"].element_size()
    per_image += sample["mask"].numel() * _compact(sample["mask"]).element_size()
    return per_image * len(dataset)


class Resident(torch.utils.data.Dataset):
    """`dataset`'s samples decoded once onto `device`; dataset facts (classes, ids, ...) are the
    wrapped dataset's. It holds the dataset weakly: keep the dataset while this is in use."""

    def __init__(self, dataset, device: str | torch.device):
        self.device = torch.device(device)
        self._dataset = weakref.ref(dataset)
        self.samples = []
        for index in range(len(dataset)):
            sample = dataset[index]
            self.samples.append(
                {
                    **sample,
                    "image": tv_tensors.Image(sample["image"].to(self.device)),
                    "mask": _compact(sample["mask"]).to(self.device),
                }
            )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        return {**sample, "mask": tv_tensors.Mask(sample["mask"].long())}

    def __getattr__(self, name: str):
        if name.startswith("_") or name in ("samples", "device"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    @property
    def dataset(self):
        dataset = self._dataset()
        if dataset is None:
            raise ReferenceError(
                "the dataset of this Resident copy is gone; keep it while the copy is in use"
            )
        return dataset

    def __reduce__(self):
        # Sent to another process (DataLoader workers, Ray), it is the dataset it holds.
        return (_same, (self.dataset,))


def _compact(mask: torch.Tensor) -> torch.Tensor:
    # Labels and the ignore value fit a byte in every label set SegKD knows; a mask that does not
    # keeps its dtype. Masks are widened again per sample, so both paths transform the same values.
    if mask.numel() and 0 <= int(mask.min()) and int(mask.max()) <= 255:
        return mask.to(torch.uint8)
    return mask


def _same(dataset):
    return dataset


def resident(datasets: list, device: str | torch.device, share: float) -> list:
    """`datasets` decoded onto `device` if together they take at most `share` of the device's
    memory (one copy per process, device and dataset), else as they are: all or none, so that
    a batch mixing two of them (ESD's stream) comes from one place. `share = 0` never decodes;
    None entries stay None."""
    present = [d for d in datasets if d is not None and not isinstance(d, Resident)]
    device = torch.device(device)
    made = all((id(d), str(device)) in _COPIES for d in present)
    too_big = not made and sum(map(decoded_bytes, present)) > share * device_memory(device)
    if not present or share <= 0 or too_big:
        return list(datasets)
    return [_copy(d, device) if d is not None and not isinstance(d, Resident) else d for d in datasets]


def _copy(dataset, device: torch.device) -> Resident:
    key = (id(dataset), str(device))
    if key not in _COPIES:
        _COPIES[key] = Resident(dataset, device)
        weakref.finalize(dataset, _COPIES.pop, key, None)
    return _COPIES[key]
