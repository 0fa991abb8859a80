"""Data-parallel training over the processes of an initialised torch.distributed group (Ray Train's
TorchTrainer sets one up: gloo on CPU, NCCL on GPU).

Every rank holds the whole model and walks the same shuffled order of global batches, training on
its own contiguous slice of each; gradients are averaged before every optimiser step, so the ranks
keep identical weights. Without a group, or in a group of one, every function here does nothing and
the engine runs as one process.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(this process's rank, number of processes); (0, 1) without an initialised group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ShardedBatches(torch.utils.data.Sampler[list[int]]):
    """Global batches of `batch_size` indices out of `length`, shuffled by `generator` (None: in
    order), each cut to rank `rank`'s contiguous share of `size` shares.

    Every rank draws the same permutation from an equally seeded generator, so the ranks together
    see exactly the batches one process would; each decodes only its own images."""

    def __init__(
        self,
        length: int,
        batch_size: int,
        *,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        rank: int = 0,
        size: int = 1,
    ):
        self.length, self.batch_size, self.generator = length, batch_size, generator
        self.drop_last, self.rank, self.size = drop_last, rank, size

    def __len__(self) -> int:
        if self.drop_last:
            return self.length // self.batch_size
        return -(-self.length // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        # One randperm, as DataLoader(shuffle=True) draws it: a single process sees today's order.
        if self.generator is None:
            order = list(range(self.length))
        else:
            order = torch.randperm(self.length, generator=self.generator).tolist()
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            batch = order[start : start + self.batch_size]
            cuts = [len(batch) * k // self.size for k in range(self.size + 1)]
            yield batch[cuts[self.rank] : cuts[self.rank + 1]]


def _summed(tensors: list[torch.Tensor]) -> torch.Tensor:
    """`tensors` (one dtype and device) flattened into one and summed over the ranks in one all_reduce."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    return flat


def _scatter(flat: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    offset = 0
    for tensor in tensors:
        tensor.copy_(flat[offset : offset + tensor.numel()].view_as(tensor))
        offset += tensor.numel()


def average_gradients(parameters: Iterable[torch.Tensor]) -> None:
    """Each parameter's gradient becomes its mean over the ranks, i.e. the gradient of the global
    batch's mean loss. A rank where a parameter got no gradient adds zeros; the parameter keeps
    none only where no rank has one, as the optimiser then skips it on every rank alike."""
    _, size = world()
    parameters = list(parameters)
    if size == 1 or not parameters:
        return
    first = parameters[0]
    present = torch.tensor([p.grad is not None for p in parameters], dtype=first.dtype, device=first.device)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = _summed(grads + [present]) / size
    shares = flat[-len(parameters) :].tolist()
    offset = 0
    for parameter, share in zip(parameters, shares, strict=True):
        mean = flat[offset : offset + parameter.numel()].view_as(parameter)
        offset += parameter.numel()
        if share == 0:
            continue
        if parameter.grad is None:
            parameter.grad = mean.clone()
        else:
            parameter.grad.copy_(mean)


def average_buffers(modules: Iterable[torch.nn.Module]) -> None:
    """The floating-point buffers of `modules` (BatchNorm running statistics, which each rank
    gathered on its own shards) become their mean over the ranks; counters stay as they are."""
    _, size = world()
    if size == 1:
        return
    buffers = list({id(b): b for m in modules for b in m.buffers() if b.is_floating_point()}.values())
    if buffers:
        _scatter(_summed(buffers) / size, buffers)


def mean_across(values: dict[str, float]) -> dict[str, float]:
    """`values` averaged over the ranks (every rank passes the same names), so that every rank
    takes the same decisions from them: a rank that stopped a stage alone would deadlock the rest."""
    _, size = world()
    if size == 1:
        return dict(values)
    names = sorted(values)
    flat = torch.tensor([float(values[n]) for n in names], dtype=torch.float64, device=_device())
    dist.all_reduce(flat)
    return dict(zip(names, (flat / size).tolist(), strict=True))


def broadcast_module(module: torch.nn.Module) -> None:
    """Every parameter and buffer of `module` takes rank 0's values (as DDP does on wrapping), so that
    ranks whose callers built the model from different random states still train one model."""
    if world()[1] == 1:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor, src=0)


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def _device() -> torch.device:
    # NCCL reduces CUDA tensors only.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
