"""The ESD stage-1 stream: target and proximity images shuffled at a ratio r.

r is the number of target images per proximity image in one epoch of the stream
(r = 0: proximity images only). Two ways to size an epoch:

- `length=None` (the paper's): every target image once, plus round(n_target / r)
  proximity images (r = 0: every proximity image once);
- `length=L` (equal budgets across r): L entries, of which round(L * r / (1 + r)) target.

Within a domain, images are drawn from consecutive random permutations, so every image
appears equally often (counts differ by at most one) and none repeats before all have
appeared.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from kd.errors import UserInputError

TARGET, PROXIMITY = "target", "proximity"


def stream_counts(n_target: int, n_proximity: int, r: float, length: int | None = None) -> tuple[int, int]:
    """How many target and proximity entries one epoch of the stream holds."""
    if not (math.isfinite(r) and r >= 0):  # users hear of a bad r from the recipe's validation: a bug here
        raise ValueError(f"ESD stream: r must be a finite number >= 0, got {r!r}")
    if length is not None and length < 1:
        raise UserInputError(f"ESD stream length must be at least 1, got {length}.")
    if length is None:
        if r == 0:
            counts = (0, n_proximity)
        else:
            counts = (n_target, round(n_target / r))
            if counts[1] == 0:
                raise UserInputError(
                    f"ESD's r={r} with {n_target} target images leaves no proximity image in the stream; "
                    f"use r <= {2 * n_target} or give a stream length."
                )
    else:
        n_t = round(length * r / (1 + r))
        counts = (n_t, length - n_t)
    if counts[0] > 0 and n_target == 0:
        raise UserInputError(f"ESD's r={r} needs target images, but the target dataset is empty.")
    if counts[1] > 0 and n_proximity == 0:
        raise UserInputError(f"ESD's r={r} needs proximity images, but the proximity dataset is empty.")
    return counts


def _draw(rng: np.random.Generator, n: int, count: int) -> np.ndarray:
    if count == 0:
        return np.empty(0, np.int64)
    rounds = -(-count // n)
    return np.concatenate([rng.permutation(n) for _ in range(rounds)])[:count]


def mixed_stream(
    n_target: int, n_proximity: int, r: float, length: int | None = None, seed: int = 0, epoch: int = 0
) -> list[tuple[str, int]]:
    """One epoch of the stream as shuffled (domain, index) pairs; deterministic in (seed, epoch)."""
    count_t, count_p = stream_counts(n_target, n_proximity, r, length)
    rng = np.random.default_rng([seed, epoch])
    entries = [(TARGET, int(i)) for i in _draw(rng, n_target, count_t)]
    entries += [(PROXIMITY, int(i)) for i in _draw(rng, n_proximity, count_p)]
    order = rng.permutation(len(entries))
    return [entries[k] for k in order]


class MixedDataset(torch.utils.data.Dataset):
    """Target and proximity datasets mixed at r target images per proximity image; call
    `set_epoch` before each epoch.

    Samples keep their index within their own dataset and gain a `domain` key.
    """

    def __init__(self, target, proximity, r: float, length: int | None = None, seed: int = 0):
        self.target, self.proximity, self.r, self.length, self.seed = target, proximity, r, length, seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for part in (self.target, self.proximity):
            if hasattr(part, "set_epoch"):
                part.set_epoch(epoch)
        self.stream = mixed_stream(
            len(self.target), len(self.proximity), self.r, self.length, self.seed, epoch
        )

    def __len__(self) -> int:
        return len(self.stream)

    def __getitem__(self, k: int) -> dict:
        domain, index = self.stream[k]
        source = self.target if domain == TARGET else self.proximity
        return {**source[index], "domain": domain}
