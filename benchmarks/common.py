"""Shared set-up of the training benchmarks: images decoded or rendered once into memory."""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import torch


class InMemory(torch.utils.data.Dataset):
    """A dataset's samples rendered once, so timings measure training, not image synthesis."""

    def __init__(self, dataset):
        self.samples = [dataset[i] for i in range(len(dataset))]
        for name in ("classes", "num_classes", "ignore_index", "labelled", "ids", "name", "label_set"):
            setattr(self, name, getattr(dataset, name))
        for name in ("seed", "image_size", "pairs"):  # what fingerprints the content (synthetic / files)
            if hasattr(dataset, name):
                setattr(self, name, getattr(dataset, name))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        return self.samples[index]


def device_of(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_after_warmup(values: list[float]) -> float:
    return statistics.median(values[1:] if len(values) > 2 else values)


def check_output(parser: argparse.ArgumentParser, path: str | None, flag: str = "--json") -> None:
    """Refuse an output file that cannot be written before hours of training, not after them."""
    if path is None:
        return
    folder = Path(path).resolve().parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        parser.error(f"{flag} {path}: cannot write into {folder}; make the folder or choose another path")


def device_name(device: str | torch.device | None = None) -> str:
    """The GPU's name, or the CPU's model from /proc/cpuinfo: what a figure was measured on."""
    if (device is None and torch.cuda.is_available()) or (
        device is not None and torch.device(device).type == "cuda"
    ):
        return torch.cuda.get_device_name(torch.device(device or "cuda"))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU: {line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    import platform

    return f"CPU: {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"
