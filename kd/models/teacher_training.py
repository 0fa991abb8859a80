"""Train or fine-tune a teacher on a labelled dataset once, and reuse the result.

The checkpoint's file name is a content hash of everything that produced it: the model's
name, class count and initial weights, the dataset (kind, label set, image ids, file
sizes, synthetic seed and size), the transform and the training settings. A study asks for
its teacher with the same inputs and gets the stored weights back instead of retraining;
change any input and a new checkpoint is trained.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from kd.data import Augmented, PairedTransform
from kd.errors import UserInputError
from kd.io import content_key, save_torch
from kd.models.checkpoints import load_checkpoint
from kd.models.segmenter import Segmenter

CHECKPOINT_FORMAT = 1


def cache_root() -> Path:
    """Where SegKD keeps what it computes once and reuses: $SEGKD_CACHE, else ~/.cache/segkd."""
    return Path(os.environ.get("SEGKD_CACHE", "~/.cache/segkd")).expanduser()


def default_cache_dir() -> Path:
    return cache_root() / "teachers"


# What a teacher's training updates: its head on a frozen pretrained backbone, or all of it
TRAINABLE = ("head", "all")


@dataclass(frozen=True)
class TeacherTraining:
    """Settings of teacher training. `trainable`: "head" (backbone frozen) or "all" (fine-tuning)."""

    trainable: str = "head"
    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 3e-3
    poly_power: float = 0.9
    seed: int = 0

    def __post_init__(self):
        problems = []
        if self.trainable not in TRAINABLE:
            problems.append(f"trainable must be one of {', '.join(TRAINABLE)}, got {self.trainable!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            problems.append(f"lr must be positive, got {self.lr}")
        if problems:
            raise UserInputError("teacher training: " + "; ".join(problems) + ".")


@dataclass(frozen=True)
class TeacherCheckpoint:
    path: Path
    digest: str
    reused: bool
    final_loss: float | None


def digest_state(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def dataset_fingerprint(dataset) -> dict:
    ids = "\n".join(dataset.ids)
    fingerprint = {
        "name": dataset.name,
        "label_set": dataset.label_set,
        "size": len(dataset),
        "ids": hashlib.sha256(ids.encode()).hexdigest(),
    }
    if hasattr(dataset, "seed"):  # synthetic data: the seed and size are the content
        fingerprint["seed"] = dataset.seed
        fingerprint["image_size"] = list(dataset.image_size)
    if hasattr(dataset, "pairs"):  # files on disk: a changed file changes the teacher
        sizes = [(p.stat().st_size, m.stat().st_size) for _, p, m in dataset.pairs]
        fingerprint["file_sizes"] = content_key(sizes, length=64)
    return fingerprint


def content_hash(model: Segmenter, dataset, transform: PairedTransform, settings: TeacherTraining) -> str:
    recipe = {
        "format": CHECKPOINT_FORMAT,
        "model": model.name,
        "num_classes": model.num_classes,
        "weights": digest_state(model),
        "dataset": dataset_fingerprint(dataset),
        "transform": repr(transform),
        "settings": asdict(settings),
    }
    return content_key(recipe, length=20)


def fit_teacher(
    model: Segmenter,
    dataset,
    settings: TeacherTraining = TeacherTraining(),
    transform: PairedTransform | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    progress: Callable[[str], None] | None = print,
) -> TeacherCheckpoint:
    """Train `model` (its head, or all of it) on `dataset`, or load the stored result of the same training.

    `dataset` yields the samples of kd.data (uint8 images); `transform` (default: the
    model's own input normalisation only) prepares them. The model is left holding the trained weights.
    """
    if not getattr(dataset, "labelled", True):
        raise UserInputError(f"{dataset.name} is unlabelled; a teacher needs labelled images.")
    if getattr(dataset, "num_classes", model.num_classes) != model.num_classes:
        raise UserInputError(
            f"{model.name} predicts {model.num_classes} classes but {dataset.name} has "
            f"{dataset.num_classes}; "
            "build the teacher with the dataset's num_classes."
        )
    transform = transform or PairedTransform(
        mean=model.input_mean, std=model.input_std, channels=model.input_channels
    )
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    digest = content_hash(model, dataset, transform, settings)
    path = cache_dir / f"{model.name}-{digest}.pt"
    say = progress or (lambda message: None)
    if path.is_file():
        try:
            meta = load_checkpoint(model, path)
        except UserInputError as err:  # a damaged cache entry holds nothing worth keeping
            say(f"teacher {model.name}: stored checkpoint unusable, training again ({err})")
        else:
            say(f"teacher {model.name}: reusing {path}")
            return TeacherCheckpoint(path, digest, reused=True, final_loss=meta.get("final_loss"))

    final_loss = _train(model, dataset, settings, transform, torch.device(device), say)
    cache_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "model": model.name,
        "digest": digest,
        "settings": asdict(settings),
        "final_loss": final_loss,
        "dataset": dataset_fingerprint(dataset),
    }
    save_torch({"state_dict": model.state_dict(), "meta": meta}, path)
    say(f"teacher {model.name}: saved {path}")
    return TeacherCheckpoint(path, digest, reused=False, final_loss=final_loss)


def _train(model: Segmenter, dataset, settings: TeacherTraining, transform, device, say) -> float:
    torch.manual_seed(settings.seed)
    data = Augmented(dataset, transform, seed=settings.seed)
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=settings.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(settings.seed),
        drop_last=len(data) > settings.batch_size,
    )
    model.to(device)
    model.requires_grad_(True)
    # "head": the pretrained backbone stays as it is; stages that belong to the head train
    frozen = (
        [stage for name, stage in model.stages.items() if name not in model.head_stages]
        if settings.trainable == "head"
        else []
    )
    for stage in frozen:
        stage.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        trainable, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    total = settings.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: (1 - step / total) ** settings.poly_power
    )
    step, epoch_loss = 0, float("nan")
    for epoch in range(settings.epochs):
        data.set_epoch(epoch)
        model.train()
        for stage in frozen:
            stage.eval()  # a frozen backbone keeps its BatchNorm statistics too
        start, losses = time.perf_counter(), []
        for batch in loader:
            images, masks = batch["image"].to(device), batch["mask"].to(device)
            if not (masks != dataset.ignore_index).any():
                continue  # a crop of void only has no loss to learn from
            loss = F.cross_entropy(model(images), masks, ignore_index=dataset.ignore_index)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"teacher training of {model.name}: loss is {loss.item()} at step {step}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            step += 1
        epoch_loss = sum(losses) / len(losses) if losses else float("nan")
        seconds = time.perf_counter() - start
        say(
            f"teacher {model.name}: epoch {epoch + 1}/{settings.epochs} "
            f"loss {epoch_loss:.4f} ({seconds:.1f} s)"
        )
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    model.eval()
    return epoch_loss
