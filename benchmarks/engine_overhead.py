"""The engine's time per training step against a plain hand-written PyTorch loop.

    python benchmarks/engine_overhead.py [--student pspnet_resnet18_half_os32] [--size 128x256]
                                         [--images 32] [--batch-size 8] [--epochs 4] [--device auto]

Goal: the engine within 5 % of the plain loop. Same model (same initial weights), same
in-memory images, same augmentation, same batches, same optimiser and poly schedule; the
engine runs the `baseline` recipe (cross-entropy), the loop is what one would write by hand.
Epochs interleave (engine, plain, engine, plain, ...) so that machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import InMemory, device_name, device_of, synchronize  # noqa: E402

from kd.data import Augmented, PairedTransform, SyntheticRoadScenes  # noqa: E402
from kd.engine import Engine, RunData, RunSettings, collate  # noqa: E402
from kd.methods import build_recipe  # noqa: E402
from kd.models import build_student  # noqa: E402

GOAL_OVERHEAD = 0.05


def plain_epoch(
    model, dataset, transform, batch_size, epoch, optimizer, total_steps, step, device
) -> tuple[float, int]:
    """One epoch of a hand-written loop; returns (seconds, steps done so far)."""
    data = Augmented(dataset, transform, seed=0, views=4)
    data.set_epoch(epoch)
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(epoch),
    )
    model.train()
    synchronize(device)
    start = time.perf_counter()
    for batch in loader:
        for group in optimizer.param_groups:
            group["lr"] = 1e-2 * (1 - step / total_steps) ** 0.9
        images, masks = batch["image"].to(device), batch["mask"].to(device)
        loss = F.cross_entropy(model(model.normalize(images)), masks, ignore_index=255)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()  # a hand-written loop logs its loss too
        step += 1
    synchronize(device)
    return time.perf_counter() - start, step


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    # the default of the figures in docs/guide/benchmarks.md
    parser.add_argument("--student", default="pspnet_resnet18_half_os32")
    parser.add_argument("--size", default="128x256", help="image size HxW")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.size.split("x"))
    device = device_of(args.device)
    dataset = InMemory(
        SyntheticRoadScenes("target", size=args.images, image_size=(height, width), label_set="binary")
    )
    val = InMemory(SyntheticRoadScenes("test", size=2, image_size=(height, width), label_set="binary"))
    transform = PairedTransform(hflip=True, normalize=False)

    torch.manual_seed(0)
    engine_model = build_student(args.student, 2).to(device)
    plain_model = copy.deepcopy(engine_model)
    steps_per_epoch = args.images // args.batch_size
    print(
        f"{args.student}, {args.images} images {height}x{width}, batch {args.batch_size}, "
        f"{steps_per_epoch} steps/epoch, {device}, {torch.get_num_threads()} threads"
    )

    optimizer = torch.optim.SGD(plain_model.parameters(), lr=1e-2, momentum=0.9, weight_decay=3e-3)
    plain_times, progress = [], {"step": 0, "epoch": 0}

    def plain_epoch_between(metrics):  # the engine calls back after each of its epochs: epochs interleave
        seconds, progress["step"] = plain_epoch(
            plain_model,
            dataset,
            transform,
            args.batch_size,
            progress["epoch"],
            optimizer,
            args.epochs * steps_per_epoch,
            progress["step"],
            device,
        )
        plain_times.append(seconds / steps_per_epoch)
        progress["epoch"] += 1

    engine = Engine(
        build_recipe("baseline", {"epochs": args.epochs}),
        engine_model,
        None,
        RunData(dataset, val, train_transform=transform),
        RunSettings(batch_size=args.batch_size, evaluate="end", device=str(device)),
        progress=None,
        callback=plain_epoch_between,
    )
    engine_times = [h["seconds"] / h["steps"] for h in engine.run().history]
    plain_times, engine_times = plain_times[1:], engine_times[1:]  # the first epoch of each warms up
    plain, engine_step = statistics.median(plain_times), statistics.median(engine_times)
    overhead = engine_step / plain - 1
    print(f"  plain loop: {1000 * plain:8.1f} ms/step (median of {len(plain_times)} epochs)")
    print(f"  engine    : {1000 * engine_step:8.1f} ms/step")
    print(
        f"  overhead  : {100 * overhead:+.1f} % (goal within {100 * GOAL_OVERHEAD:.0f} %): "
        f"{'met' if overhead <= GOAL_OVERHEAD else 'NOT met'}"
    )
    return {
        "plain_ms_per_step": 1000 * plain,
        "engine_ms_per_step": 1000 * engine_step,
        "ratio": engine_step / plain,
        "goal": f"ratio <= {1 + GOAL_OVERHEAD}",
        "met": overhead <= GOAL_OVERHEAD,
        "device": device_name(device),
        "setup": f"{args.student}, {args.images} images {height}x{width}, batch {args.batch_size}, {device}",
    }


if __name__ == "__main__":
    main()
