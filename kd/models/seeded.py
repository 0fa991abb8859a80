"""Weights made from nothing but a checkpoint layout's keys and shapes, the same on every machine.

A published network is checked against its reference code without the published file: each key's
tensor is drawn from a generator seeded by the key's name, so a key list alone (small, committed)
rebuilds the whole file, in the reference's layout, wherever the check runs. The values keep a deep
network's activations finite in eval mode (fan-in scaled weights, positive variances) and give
BatchNorm scales both signs, which tells InPlace-ABN's |w| + eps apart from a plain scale.
"""

from __future__ import annotations

import zlib

import torch

PROJECTED = 16  # wide features are compared through this many fixed random directions


def _generator(name: str) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(name.encode()))


def seeded_tensor(key: str, shape, dtype: str | torch.dtype = torch.float32) -> torch.Tensor:
    """The tensor of checkpoint entry `key`: the same for the same key, shape and dtype."""
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    shape = tuple(int(s) for s in shape)
    if not dtype.is_floating_point:  # num_batches_tracked
        return torch.zeros(shape, dtype=dtype)
    g = _generator(key)
    if len(shape) >= 2:
        fan_in = max(1, int(torch.tensor(shape[1:]).prod()))
        values = torch.randn(shape, generator=g) / fan_in**0.5
    elif key.endswith("running_var"):
        values = 0.5 + torch.rand(shape, generator=g)
    elif key.endswith("weight"):
        values = torch.randn(shape, generator=g)
    else:  # biases and running means
        values = 0.1 * torch.randn(shape, generator=g)
    return values.to(dtype)


def key_spec(state: dict[str, torch.Tensor]) -> list[list]:
    """[key, shape, dtype name] for every entry of a state dict, in its order: what a fixture commits."""
    return [[key, list(value.shape), str(value.dtype).removeprefix("torch.")] for key, value in state.items()]


def seeded_state_dict(spec: list) -> dict[str, torch.Tensor]:
    """The state dict `key_spec` described, filled by seeded_tensor."""
    return {key: seeded_tensor(key, shape, dtype) for key, shape, dtype in spec}


def seeded_image(size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """A (1, 3, H, W) RGB image in [0, 1] holding whole uint8 levels, as a decoded file would."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, 3, *size), generator=g).float() / 255


def projected(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) features seen through PROJECTED fixed directions when C is larger: a 2048-channel
    map checked at a sixteenth of its size, with any difference in it still showing."""
    channels = features.shape[1]
    if channels <= PROJECTED:
        return features
    directions = torch.randn(PROJECTED, channels, generator=_generator(f"projection/{channels}"))
    return torch.einsum("kc,nchw->nkhw", directions / channels**0.5, features.float())
