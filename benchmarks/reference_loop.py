"""Student steps per second: SegKD's engine against a loop written as the IFVD and CIRKD scripts are.

    python -m benchmarks.reference_loop                    # GPU: 360x480, 30 steps a round; CPU: 180x240, 6
    python -m benchmarks.reference_loop --size 360x480 --batch-size 8 --steps 30 --device cuda --json out.json

The student is a PSPNet-ResNet18 (output stride 8), trained on fresh views: a random scale in
[0.5, 2], a crop of --size, a random flip, a new view of every image at every epoch.

- plain: a torch Dataset that opens the image and label PNG files with PIL in every __getitem__,
  scales, pads, crops and flips with PIL and numpy and normalises in numpy, a DataLoader with
  --workers processes (pinned memory on CUDA), float32, SGD with a poly lr, cross-entropy
  ignoring 255: how the reference training scripts train.
- segkd: the Engine with the `baseline` recipe (the same SGD, poly lr and cross-entropy) and its
  default settings: fresh views, the images decoded once onto the device when they fit
  device_data_share of its memory and augmented there, bf16 autocast on CUDA (float32 on CPU).

Both start from the same weights and read the same files: CamVid's first training images when it
is found (resized copies in a temporary folder when --size is not the files' size), else
synthetic road scenes written there as PNG files. Rounds interleave (a SegKD epoch, a plain
round, ...) so that machine noise hits both alike; the first round of each warms up. A round's
rate counts its steps after the first: the reference scripts start their loader and wait for its
first batch once per training, not once per round.

Goal: SegKD at least 2x the plain loop's steps per second, on a GPU. On a CPU both compute in
float32 and the loop's workers share the cores with training, so the ratio is recorded there but
the goal is not judged.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.optim.optimizer import register_optimizer_step_post_hook

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import check_output, device_name, device_of, synchronize  # noqa: E402

from kd.data import CamVid, Folder, PairedTransform, Subset, SyntheticRoadScenes, locate_camvid  # noqa: E402
from kd.data.resident import Resident  # noqa: E402
from kd.engine import Engine, RunData, RunSettings  # noqa: E402
from kd.methods import build_recipe  # noqa: E402
from kd.models import build_student  # noqa: E402

GOAL_RATIO = 2.0
STUDENT = "pspnet_resnet18"
SCALE = (0.5, 2.0)
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
CAMVID_VOID = 11
# The baseline recipe's optimiser, so that both loops take the same steps
LR, MOMENTUM, WEIGHT_DECAY, POLY = 1e-2, 0.9, 3e-3, 0.9


class PlainFiles(torch.utils.data.Dataset):
    """Image and label PNG files, opened and augmented in every __getitem__ (in the loader's workers)."""

    def __init__(self, pairs: list[tuple[Path, Path]], crop: tuple[int, int], void: int | None = None):
        self.pairs, self.crop, self.void = pairs, crop, void

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        image_path, label_path = self.pairs[index]
        image = Image.open(image_path).convert("RGB")
        label = Image.open(label_path)
        factor = random.uniform(*SCALE)
        size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
        image = image.resize(size, Image.BILINEAR)
        label = label.resize(size, Image.NEAREST)
        image = (np.asarray(image, np.float32) / 255.0 - MEAN) / STD
        label = np.array(label, np.int64)
        if self.void is not None:
            label[label == self.void] = 255
        # Pad after normalising: the image with 0 (the mean pixel), the label with the ignore value
        height, width = self.crop
        pad_h, pad_w = max(height - label.shape[0], 0), max(width - label.shape[1], 0)
        if pad_h or pad_w:
            image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))
            label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=255)
        top = random.randint(0, label.shape[0] - height)
        left = random.randint(0, label.shape[1] - width)
        image = image[top : top + height, left : left + width]
        label = label[top : top + height, left : left + width]
        if random.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        return torch.from_numpy(image.transpose(2, 0, 1).copy()), torch.from_numpy(label.copy())


def prepare_files(size: tuple[int, int], images: int, folder: Path) -> dict:
    """The images both loops read: {"pairs", "void", "dataset" (kd.data's reader), "data" (a description)}.

    CamVid's first training images if it is found (read in place at their own size, else resized
    copies in `folder`), else synthetic road scenes written into `folder` as PNG files."""
    camvid = locate_camvid()
    if camvid is not None and (camvid / "train").is_dir():
        train = CamVid(camvid, "train")
        count = min(images, len(train))
        with Image.open(train.pairs[0][1]) as first:
            native = (first.height, first.width)
        if native == tuple(size):
            dataset = CamVid(camvid, "train", first_n=count)
            described = f"CamVid train, first {count} images ({native[0]}x{native[1]} files)"
        else:
            from torchvision.transforms import v2

            from kd.data.resize import resize_file

            # The study's own resize (kd.data.resize): the files a study at this size reads
            resize = v2.Resize(tuple(size), antialias=True)
            for _, image_path, mask_path in train.pairs[:count]:
                resize_file(image_path, folder / "train" / image_path.name, resize)
                resize_file(mask_path, folder / "trainannot" / mask_path.name, resize)
            dataset = CamVid(folder, "train")
            described = (
                f"CamVid train, first {count} images ({native[0]}x{native[1]} files, resized to "
                f"{size[0]}x{size[1]} in a temporary folder)"
            )
        void = CAMVID_VOID
    else:
        synthetic = SyntheticRoadScenes("target", size=images, image_size=tuple(size), label_set="full")
        for index in range(images):
            sample = synthetic[index]
            name = f"{synthetic.ids[index]}.png"
            (folder / "images").mkdir(parents=True, exist_ok=True)
            (folder / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(sample["image"].permute(1, 2, 0).numpy()).save(folder / "images" / name)
            Image.fromarray(sample["mask"].numpy().astype(np.uint8)).save(folder / "masks" / name)
        dataset = Folder(folder / "images", folder / "masks", classes=synthetic.classes)
        described = f"synthetic road scenes, {images} images written as PNG files (CamVid not found)"
        void = None
    return {
        "pairs": [(image, mask) for _, image, mask in dataset.pairs],
        "void": void,
        "dataset": dataset,
        "data": described,
    }


def plain_round(model, loader, optimizer, progress: dict, total_steps: int, device) -> None:
    """One pass over the loader, as a reference script's training loop takes its steps."""
    model.train()
    for images, labels in loader:
        for group in optimizer.param_groups:
            group["lr"] = LR * (1 - progress["step"] / total_steps) ** POLY
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        loss = F.cross_entropy(model(images), labels, ignore_index=255)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()  # the scripts log their loss
        progress["step"] += 1


def rate(ticks: list[float]) -> tuple[int, float]:
    """(steps after the first, their seconds) from the times at which each optimiser step ended."""
    return len(ticks) - 1, ticks[-1] - ticks[0]


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", help="crop and image size HxW (default 360x480 on a GPU, 180x240 on a CPU)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, help="steps per round (default 30 on a GPU, 6 on a CPU)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each loop; the first warms up")
    parser.add_argument("--workers", type=int, help="the plain loop's loader processes (4 on a GPU, else 2)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--json", metavar="PATH", help="also write the figures to this file")
    args = parser.parse_args(argv)
    check_output(parser, args.json)
    if args.rounds < 2 or (args.steps is not None and args.steps < 2):
        parser.error("--rounds and --steps must be at least 2: a warm-up round, and steps after a first")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = device_of(args.device)
    gpu = device.type == "cuda"
    height, width = (int(v) for v in (args.size or ("360x480" if gpu else "180x240")).split("x"))
    steps = args.steps or (30 if gpu else 6)
    workers = args.workers if args.workers is not None else (4 if gpu else 2)

    with tempfile.TemporaryDirectory() as folder:
        files = prepare_files((height, width), steps * args.batch_size, Path(folder))
        dataset = files["dataset"]
        steps = len(dataset) // args.batch_size  # fewer when the data has fewer images
        plain_data = PlainFiles(files["pairs"], (height, width), files["void"])
        torch.manual_seed(0)
        student = build_student(STUDENT, dataset.num_classes)
        plain_model = copy.deepcopy(student).to(device)  # the same weights at the start
        optimizer = torch.optim.SGD(
            plain_model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
        )
        print(
            f"{STUDENT}, {files['data']}, crop {height}x{width}, batch {args.batch_size}, {steps} steps a "
            f"round, {args.rounds} rounds each (the first warms up), plain loop with {workers} workers; "
            f"{device_name(device)}, {torch.get_num_threads()} threads"
        )

        # The time every optimiser step ends, for both loops: the same clock, steady state only
        ticks: list[float] = []

        def tick(optimizer, args, kwargs):
            synchronize(device)
            ticks.append(time.perf_counter())

        rounds = {"segkd": [], "plain": []}
        progress = {"step": 0}

        def plain_after_segkd_epoch(metrics):  # the engine calls back after each epoch: rounds interleave
            rounds["segkd"].append(rate(ticks))
            ticks.clear()
            loader = torch.utils.data.DataLoader(
                plain_data,
                batch_size=args.batch_size,
                shuffle=True,
                drop_last=True,
                num_workers=workers,
                pin_memory=gpu,
            )
            plain_round(plain_model, loader, optimizer, progress, args.rounds * steps, device)
            rounds["plain"].append(rate(ticks))
            ticks.clear()

        val = Subset(dataset, range(2), role="val")  # the engine scores once, after the last round
        engine = Engine(
            build_recipe("baseline", {"epochs": args.rounds}),
            student,
            None,
            RunData(
                dataset,
                val,
                train_transform=PairedTransform(
                    scale=SCALE, crop=(height, width), hflip=True, normalize=False
                ),
            ),
            RunSettings(batch_size=args.batch_size, views="fresh", device=str(device), evaluate="end"),
            progress=None,
            callback=plain_after_segkd_epoch,
        )
        hook = register_optimizer_step_post_hook(tick)
        try:
            engine.run()
        finally:
            hook.remove()
        resident = isinstance(engine.data.target, Resident)

    def steps_per_s(side: str) -> float:
        measured = rounds[side][1:]
        return sum(n for n, _ in measured) / sum(s for _, s in measured)

    segkd, plain = steps_per_s("segkd"), steps_per_s("plain")
    ratio = segkd / plain
    print(f"  plain loop: {plain:7.2f} steps/s (float32, {workers} workers reading PNG files)")
    print(
        f"  SegKD     : {segkd:7.2f} steps/s ({engine.precision}, images "
        f"{'decoded once onto the device' if resident else 'decoded every epoch'})"
    )
    print(
        f"  ratio     : {ratio:.2f}x (goal >= {GOAL_RATIO:g}x on a GPU): "
        + (("met" if ratio >= GOAL_RATIO else "NOT met") if gpu else "not judged on a CPU")
    )
    result = {
        "segkd_steps_per_s": segkd,
        "plain_steps_per_s": plain,
        "ratio": ratio,
        "goal": f"ratio >= {GOAL_RATIO:g} on a GPU",
        # The goal is a GPU goal: a CPU computes both in float32 and runs the workers on its cores
        "met": ratio >= GOAL_RATIO if gpu else None,
        "device": device_name(device),
        "segkd_precision": engine.precision,
        "segkd_resident": resident,
        "plain_workers": workers,
        "rounds": {side: [{"steps": n, "seconds": s} for n, s in values] for side, values in rounds.items()},
        "data": files["data"],
        "setup": f"{STUDENT}, crop {height}x{width}, batch {args.batch_size}, {steps} steps x {args.rounds} "
        f"rounds each (first warms up), {device}",
    }
    if args.json:
        command = "python -m benchmarks.reference_loop " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        Path(args.json).write_text(json.dumps({"command": command.strip(), **result}, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
