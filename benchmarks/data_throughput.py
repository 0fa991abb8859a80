"""Data-loading figures: synthetic images per second, CamVid decode time per epoch.

    python benchmarks/data_throughput.py [--images 400] [--height 256 --width 512]

Goal: at least 200 synthetic images/s at 256x512 on one core, so data never waits.
Runs on one thread (torch and numpy), as one DataLoader worker would.
"""

from __future__ import annotations

import argparse
import os

for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(variable, "1")

import time  # noqa: E402

import torch  # noqa: E402

from kd.data import DOMAINS, CamVid, PairedTransform, SyntheticRoadScenes, locate_camvid  # noqa: E402

GOAL_IMAGES_PER_SECOND = 200


def images_per_second(dataset, count: int, transform=None) -> float:
    dataset[0]  # caches (coordinate grids, noise tiles) are built once per size, not per image
    start = time.perf_counter()
    for index in range(count):
        sample = dataset[index % len(dataset)]
        if transform is not None:
            transform(sample, seed=0, view=index)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=400, help="images per domain (default 400)")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(1)
    size = (args.height, args.width)

    print(
        f"synthetic images per second at {args.height}x{args.width}, one core "
        f"(goal >= {GOAL_IMAGES_PER_SECOND}/s)"
    )
    rates = {}
    for name in DOMAINS:
        rates[name] = images_per_second(
            SyntheticRoadScenes(name, size=args.images, image_size=size), args.images
        )
        print(f"  {name:<10} {rates[name]:7.0f} images/s")
    slowest = min(rates, key=rates.get)
    verdict = "meets" if rates[slowest] >= GOAL_IMAGES_PER_SECOND else "MISSES"
    print(f"  slowest domain: {slowest} at {rates[slowest]:.0f}/s, {verdict} the goal")
    augment = PairedTransform(crop=(size[0] // 2, size[1] // 2), hflip=True, max_pool=True)
    rate = images_per_second(
        SyntheticRoadScenes("target", size=args.images, image_size=size), args.images, augment
    )
    print(f"  target + crop/flip/max-pool/normalise: {rate:7.0f} images/s")

    root = locate_camvid()
    if root is None:
        print("CamVid: skipped (not found; set SEGKD_CAMVID or place it at ../shared/data/camvid)")
        return
    print(f"CamVid decode time per epoch ({root})")
    for split in ("train", "test"):
        dataset = CamVid(root, split)
        start = time.perf_counter()
        for index in range(len(dataset)):
            dataset[index]
        elapsed = time.perf_counter() - start
        print(
            f"  {split:<5} {len(dataset):4d} images: {elapsed:5.2f} s/epoch "
            f"({len(dataset) / elapsed:5.0f} images/s)"
        )


if __name__ == "__main__":
    main()
