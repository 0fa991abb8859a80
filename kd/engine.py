"""Runs a recipe: its stages in order, on CPU or CUDA, with per-epoch metrics and checkpoints.

    from kd.engine import Engine, RunData, RunSettings
    result = Engine(recipe, student, teacher, RunData(target, val, proximity),
                    RunSettings(batch_size=8, seed=0), checkpoint_dir="run/seed0").run()
    result.final            # {"miou", "miou_img", "hp_acc", "var"} on the validation images

Batches stay in [0, 1]; student and teacher each normalise their own copy (their weights
may expect different normalisations). Every stage trains the module groups it names and
freezes the rest (frozen modules stay in eval mode). A stage's loss is a WeightedSum of
its terms; terms with a critic (adversarial) get one critic update after each student
update. Teacher outputs come from a TeacherCache when the augmentation is a fixed bank of
views (or not random), otherwise from a teacher forward under no_grad in the run's precision
(fresh views: a new view of every image at every epoch, as the reference scripts train).

Where the data lives: every dataset that fits `device_data_share` of the device's memory is
decoded once onto the device (kd.data.resident) and its views are computed there; a larger one
is decoded by DataLoader workers every epoch. Both give the same views.

Determinism and resumption: every epoch seeds torch and its shuffling from (seed, stage,
epoch), so an epoch does not depend on the random state earlier epochs left behind. A
checkpoint written after every epoch (student, loss-term parts, optimiser state, history)
lets a run resume mid-recipe and end with the same weights as an uninterrupted run.

Data parallel: under an initialised torch.distributed group of N processes (Ray Train's
TorchTrainer), each trains on its contiguous 1/N of every global batch (batch_size stays the
global batch) and gradients are averaged before each step (kd.distributed). The result is a
one-process run's up to what depends on the batch as a whole (BatchNorm statistics, IFV's class
prototypes) and dropout masks. Rank 0 alone fills the teacher caches, writes checkpoints and
reports progress; every rank evaluates and calls back.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, default_collate

from kd import distributed
from kd.data import Augmented, MixedDataset, PairedTransform, Subset
from kd.data.class_maps import CLASS_MAPS
from kd.data.resident import Resident, resident
from kd.data.transforms import FRESH
from kd.errors import NonFiniteLossError, UserInputError
from kd.io import content_key, make_folder, save_torch
from kd.losses import TERMS, WeightedSum, build_term
from kd.methods import DEFAULT_CRITIC, Optimizer, Recipe, Stage
from kd.metrics import REGIONS, THETA, ConfusionMeter, count_parameters, per_image_miou, robustness
from kd.models.class_map import class_map_of
from kd.models.segmenter import Segmenter

CHECKPOINT_FORMAT = 1
CHECKPOINT_NAME = "engine.pt"
EVALUATE = ("epoch", "stage", "end")
AMP = ("bf16", "fp16", "off")
# RunData.test's images the feature ratio is measured on at most: a few batches say whether the
# mimicry carries over, and a large test split would cost a teacher forward on every image per run
FEATURE_RATIO_TEST_IMAGES = 64


def precision(amp: str, device_type: str) -> str:
    """The arithmetic of a run's forward passes: `amp`'s autocast dtype on CUDA, else "fp32"
    (on CUDA with amp "off", convolutions may still use TF32, PyTorch's default)."""
    return amp if amp != "off" and device_type == "cuda" else "fp32"


@dataclass(frozen=True)
class RunSettings:
    """How to run a recipe (the recipe itself says what to train)."""

    batch_size: int = 8
    seed: int = 0
    device: str = "cpu"
    amp: str = "bf16"  # CUDA autocast: "bf16", "fp16" (with a GradScaler) or "off"; CPU runs float32
    # "fresh": a new augmentation view of every image at every epoch (the teacher runs online);
    # N: a fixed bank of N views per image, which a teacher-output cache serves
    views: int | str = FRESH
    augment_seed: int = 0  # seeds the bank, shared across training seeds so teacher caches are shared
    student_point: str | None = None  # student features for feature terms; default: its last stage
    teacher_point: str | None = (
        None  # default: the student's point if the teacher has it, else its last stage
    )
    stream_length: int | None = None  # ESD mixed stream entries per epoch; None: every target image once
    evaluate: str = "epoch"  # "epoch", "stage" (after each stage) or "end"
    eval_batch_size: int | None = None
    theta: float = THETA  # HP-Acc threshold on per-image mIoU
    num_workers: int = 0
    cache: bool = True  # teacher-output cache (needs a fixed bank of views or no random augmentation)
    cache_dtype: str = "float32"
    # a dataset that takes at most this share of the device's memory is decoded once onto it and
    # augmented there (0: decoded every epoch by DataLoader workers)
    device_data_share: float = 0.25
    channels_last: bool = False  # student, teacher and images in channels-last memory format
    # torch.compile the student's and the teacher's modules: True (inductor) or a backend's name
    compile: bool | str = False

    def problems(self) -> list[str]:
        found = []
        for name in ("batch_size",):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                found.append(f"{name} must be a whole number >= 1, got {getattr(self, name)!r}")
        if self.views != FRESH and not (
            isinstance(self.views, int) and not isinstance(self.views, bool) and self.views >= 1
        ):
            found.append(f"views must be {FRESH!r} or a whole number >= 1, got {self.views!r}")
        if not (isinstance(self.device_data_share, (int, float)) and 0 <= self.device_data_share <= 1):
            found.append(f"device_data_share must be within [0, 1], got {self.device_data_share!r}")
        if self.amp not in AMP:
            found.append(f"amp must be one of {', '.join(AMP)}, got {self.amp!r}")
        if self.evaluate not in EVALUATE:
            found.append(f"evaluate must be one of {', '.join(EVALUATE)}, got {self.evaluate!r}")
        if not 0 <= self.theta <= 1:
            found.append(f"theta must be within [0, 1], got {self.theta}")
        return found


@dataclass
class RunData:
    """Datasets of kd.data (uint8 samples) and the transforms that prepare them (normalize=False).

    `test`: images a feature stage's feature ratio is measured on too, after the stage (as the
    eval transform gives them; their labels are never read): whether the mimicry the stage
    learnt on its own images carries over to the images the study is scored on."""

    target: object
    val: object
    proximity: object | None = None
    train_transform: PairedTransform = field(default_factory=lambda: PairedTransform(normalize=False))
    eval_transform: PairedTransform = field(default_factory=lambda: PairedTransform(normalize=False))
    test: object | None = None


@dataclass
class RunResult:
    final: dict  # miou, miou_img, hp_acc, var on the validation images after the last stage
    history: list[dict]  # one entry per epoch, as passed to the callback
    per_image: list[dict]  # {"id", "miou"} per validation image
    teacher_forwards: int  # images the teacher ran on (cache misses included), over the whole run
    params: int
    seconds: float

    @property
    def stages(self) -> list[dict]:
        """Per stage: its name, the epochs and optimiser steps it took, how it ended ("plateau" or
        "max") and, for a stage with a feature loss, its feature_ratio (and feature_ratio_test, on
        RunData.test)."""
        summary: dict[str, dict] = {}
        for row in self.history:
            entry = summary.setdefault(row["stage"], {"stage": row["stage"], "epochs": 0, "steps": 0})
            entry["epochs"] += 1
            entry["steps"] += row["steps"]
            for key in ("stage_end", "feature_ratio", "feature_ratio_test"):
                if key in row:
                    entry[key] = row[key]
        return list(summary.values())


def _derive(*numbers: int) -> int:
    return int(np.random.SeedSequence([int(n) % 2**63 for n in numbers]).generate_state(1, np.uint64)[0] >> 1)


def collate(samples: list[dict]) -> dict:
    batch = default_collate(samples)
    for key in ("image", "mask"):
        batch[key] = batch[key].as_subclass(torch.Tensor)
    return batch


def loading(dataset, device, num_workers: int) -> dict:
    """DataLoader options for `dataset`: no worker processes and no pinning for a copy already on
    a GPU (CUDA does not survive a fork); else `num_workers`, pinned memory for a GPU."""
    on_gpu = isinstance(dataset, Resident) and dataset.device.type == "cuda"
    return {
        "num_workers": 0 if on_gpu else num_workers,
        "pin_memory": torch.device(device).type == "cuda" and not on_gpu,
    }


def evaluate(
    model: Segmenter,
    dataset,
    transform,
    batch_size: int = 8,
    device: str = "cpu",
    theta: float = THETA,
    num_workers: int = 0,
) -> tuple[dict, list[dict]]:
    """(mIoU, per-image mIoU, HP-Acc, variance and the number of classes `model` predicts on `dataset`,
    [{"id", "miou"} per image]). A dataset that marks pixel regions in its images (a `regions(id)`
    method, kd.metrics.REGIONS) adds miou_<region>: the mIoU over that region's pixels."""
    loader = DataLoader(
        Augmented(dataset, transform),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collate,
        **loading(dataset, device, num_workers),
    )
    meter = ConfusionMeter(model.num_classes, dataset.ignore_index)
    regions = getattr(dataset, "regions", None)
    region_meters = {name: ConfusionMeter(model.num_classes, dataset.ignore_index) for name in REGIONS}
    per_image, ids = [], []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in loader:
            images, masks = batch["image"].to(device), batch["mask"].to(device)
            pred = model(model.normalize(images)).argmax(1)
            meter.update(pred, masks)
            if regions is not None:
                _update_regions(region_meters, regions, batch["id"], pred, masks, dataset.ignore_index)
            per_image.append(per_image_miou(pred, masks, model.num_classes, dataset.ignore_index).cpu())
            ids += list(batch["id"])
    model.train(was_training)
    scores = torch.cat(per_image)
    overall = meter.compute()
    metrics = {
        "miou": overall["miou"],
        **robustness(scores, theta),
        "classes_predicted": overall["classes_predicted"],
    }
    if regions is not None:
        # a region no image has (shadows in a domain without any) gets no score, not NaN
        metrics.update(
            {
                f"miou_{name}": meter.compute()["miou"]
                for name, meter in region_meters.items()
                if meter.confusion.any()
            }
        )
    return metrics, [{"id": i, "miou": float(v)} for i, v in zip(ids, scores, strict=True)]


def _update_regions(meters: dict, regions, ids, pred: torch.Tensor, masks: torch.Tensor, ignore: int) -> None:
    """Each region's meter gains the batch's pixels in that region (the rest ignored); a region
    drawn at another size than the scored masks is resized to them (nearest)."""
    for row, image_id in enumerate(ids):
        marked = regions(image_id)
        for name, meter in meters.items():
            region = torch.from_numpy(np.ascontiguousarray(marked[name]))[None, None].float()
            if region.shape[-2:] != masks.shape[-2:]:
                region = torch.nn.functional.interpolate(region, size=masks.shape[-2:], mode="nearest")
            inside = region[0, 0].bool().to(masks.device)
            meter.update(pred[row][None], torch.where(inside, masks[row], ignore)[None])


class Engine:
    """Validates everything at construction (before any training); `run()` trains."""

    def __init__(
        self,
        recipe: Recipe,
        student: Segmenter,
        teacher: Segmenter | None,
        data: RunData,
        settings: RunSettings = RunSettings(),
        *,
        checkpoint_dir: str | os.PathLike | None = None,
        callback: Callable[[dict], None] | None = None,
        progress: Callable[[str], None] | None = print,
        cache_root: str | os.PathLike | None = None,
    ):
        self.recipe, self.student, self.teacher, self.data, self.settings = (
            recipe,
            student,
            teacher,
            data,
            settings,
        )
        self.callback, self.say = callback, progress or (lambda message: None)
        self.checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
        self.device = torch.device(settings.device)
        self.rank, self.world_size = distributed.world()
        if self.rank != 0:  # one progress report for the whole group
            self.say = lambda message: None
        # Autocast on or off; tests switch it on for CPU to exercise the CUDA path.
        self.amp = precision(settings.amp, self.device.type) != "fp32"
        self.amp_dtype = torch.float16 if settings.amp == "fp16" else torch.bfloat16
        self._validate()
        self.groups = self._groups()
        # A constructed teacher's AMG is frozen by construction; no stage may thaw it.
        self.trainable_ids = {id(p) for p in student.parameters() if p.requires_grad}
        self.shapes = None
        self.teacher_outputs_needed = sorted(
            {need for needs in recipe.teacher_terms.values() for need in needs}
        )
        self.caches = self._caches(cache_root) if self.teacher_outputs_needed else {}
        self.teacher_forwards = 0
        self.history: list[dict] = []
        self.given_data = None

    @property
    def precision(self) -> str:
        """ "fp32", "bf16" or "fp16": what this run computes in (see `precision`)."""
        return precision(self.settings.amp, "cuda") if self.amp else "fp32"  # as autocast runs, forced or not

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp)

    # ---- validation: every problem before any expensive work -------------------------------

    def _validate(self) -> None:
        recipe, data, student, teacher, settings = (
            self.recipe,
            self.data,
            self.student,
            self.teacher,
            self.settings,
        )
        recipe.validate(TERMS)
        problems = settings.problems()
        if isinstance(settings.batch_size, int) and settings.batch_size % self.world_size:
            problems.append(
                f"batch_size {settings.batch_size} (the global batch) does not split evenly over "
                f"{self.world_size} processes; make it a multiple of {self.world_size}"
            )
        if recipe.needs_teacher and teacher is None:
            problems.append(
                f"recipe {recipe.name!r} distils from a teacher ({', '.join(recipe.teacher_terms)}): "
                "pass a teacher"
            )
        if recipe.needs_proximity and data.proximity is None:
            problems.append(
                f"recipe {recipe.name!r} reads the ESD mixed stream: "
                "pass proximity images (RunData.proximity)"
            )
        for name, dataset in (("target", data.target), ("val", data.val)):
            if getattr(dataset, "num_classes", student.num_classes) != student.num_classes:
                problems.append(
                    f"the student predicts {student.num_classes} classes but the {name} images have "
                    f"{dataset.num_classes}; build it with num_classes={dataset.num_classes}"
                )
        if not getattr(data.val, "labelled", True):
            problems.append("the validation images are unlabelled; evaluation needs labels")
        aux_terms = {
            n for s in recipe.stages for n in s.active_losses() if "aux_logits" in TERMS[n].student_needs
        }
        if aux_terms and getattr(student, "aux_point", None) is None:
            problems.append(
                f"{', '.join(sorted(aux_terms))} trains an auxiliary head, which {student.name} has not"
            )
        labelled_terms = {"ce", "dsn", "ifv"}
        if any(labelled_terms & set(s.active_losses()) for s in recipe.stages) and not getattr(
            data.target, "labelled", True
        ):
            problems.append("the target images are unlabelled, but the recipe trains with labels (ce/ifv)")
        if teacher is not None and any("logits" in needs for needs in recipe.teacher_terms.values()):
            if teacher.num_classes != student.num_classes:
                problems.append(
                    f"teacher predicts {teacher.num_classes} classes, student {student.num_classes}: "
                    "logit distillation needs the same classes; a teacher trained on another label set "
                    "needs a class map onto the student's: kd.models.class_map.with_class_map(teacher, "
                    "kd.data.class_maps.CLASS_MAPS[NAME]) (a study's teacher_class_map, "
                    f"--teacher-class-map), shipped: {', '.join(CLASS_MAPS)}"
                )
        for name, transform in (
            ("train_transform", data.train_transform),
            ("eval_transform", data.eval_transform),
        ):
            if transform.normalizes:
                problems.append(
                    f"{name} normalises: use PairedTransform(normalize=False); "
                    "each model normalises its own copy"
                )
        if data.eval_transform.random:
            problems.append("eval_transform is random (crop/flip): evaluation must see fixed images")
        try:
            self.student_point = student.check_split_point(settings.student_point or student.split_points[-1])
            if teacher is not None:
                default = (
                    self.student_point
                    if self.student_point in teacher.split_points
                    else teacher.split_points[-1]
                )
                self.teacher_point = teacher.check_split_point(settings.teacher_point or default)
        except UserInputError as err:
            problems.append(str(err).rstrip("."))
        if problems:
            raise UserInputError("cannot run: " + "; ".join(problems) + ".")

    def _groups(self) -> dict[str, list[torch.nn.Module]]:
        names = self.student.split_points
        cut = names.index(self.student_point) + 1
        fe = [self.student.stages[n] for n in names[:cut]]
        head = [self.student.stages[n] for n in names[cut:]] + [self.student.head]
        aux_point = getattr(self.student, "aux_point", None)
        if aux_point is not None:  # the auxiliary head trains with the stage it reads
            (fe if names.index(aux_point) < cut else head).append(self.student.aux_head)
        return {"fe": fe, "head": head, "student": fe + head}

    def _caches(self, root) -> dict:
        settings, transform = self.settings, self.data.train_transform
        if not settings.cache:
            return {}
        if transform.random and settings.views == FRESH:
            self.say("teacher cache off: fresh views; the teacher runs on every batch (views=N caches)")
            return {}
        from kd.teacher_cache import TeacherCache

        domains = {"target": self.data.target}
        if self.data.proximity is not None and self.recipe.needs_proximity:
            domains["proximity"] = self.data.proximity
        return {
            domain: TeacherCache(
                self.teacher,
                self.teacher_point,
                dataset,
                transform,
                views=settings.views if transform.random else 1,
                augment_seed=settings.augment_seed,
                outputs=tuple(self.teacher_outputs_needed),
                root=root,
                dtype=settings.cache_dtype,
                device=settings.device,
            )
            for domain, dataset in domains.items()
        }

    # ---- one stage -----------------------------------------------------------------------

    def _feature_shapes(self) -> dict:
        sample = self.data.train_transform(self.data.target[0], self.settings.augment_seed, 0)
        probe = sample["image"].as_subclass(torch.Tensor)[None].to(self.device)
        shapes = {"num_classes": self.student.num_classes, "ignore_index": self.data.target.ignore_index}
        was_training = self.student.training
        with torch.no_grad():
            self.student.eval()
            parts = self.student.forward_parts(
                self.student.normalize(probe), self.student_point, want=("features",)
            )
            shapes["student_features_shape"] = tuple(parts["features"].shape)
            if self.teacher is not None:
                self.teacher.eval()
                parts = self.teacher.forward_parts(
                    self.teacher.normalize(probe), self.teacher_point, want=("features",)
                )
                shapes["teacher_features_shape"] = tuple(parts["features"].shape)
        self.student.train(was_training)
        return shapes

    def _build_stage(self, index: int, stage: Stage):
        torch.manual_seed(_derive(self.settings.seed, index, -1))  # adapters/critics start alike on resume
        terms = {name: build_term(name, **stage.loss_options.get(name, {})) for name in stage.losses}
        losses = WeightedSum(terms, stage.losses)
        if self.shapes is None:
            self.shapes = self._feature_shapes()
        losses.bind(**self.shapes)
        losses.to(self.device)
        for parameter in self.student.parameters():
            parameter.requires_grad_(False)
        for group in stage.train:
            for module in self.groups[group]:
                for parameter in module.parameters():
                    parameter.requires_grad_(id(parameter) in self.trainable_ids)
        trainable = [p for p in self.student.parameters() if p.requires_grad] + list(
            losses.student_parameters()
        )
        if not any(p.requires_grad for p in self.student.parameters()):
            raise UserInputError(
                f"stage {stage.name!r} trains {'+'.join(stage.train)}, which has no trainable parameters in "
                f"{self.student.name} (a frozen constructed teacher's 'fe'?)"
            )
        optimizer = _optimizer(trainable, stage.optimizer)
        critic = None
        if losses.critic_terms():
            critic_params = [p for term in losses.critic_terms().values() for p in term.critic_parameters()]
            critic = _optimizer(critic_params, stage.critic or DEFAULT_CRITIC)
        return losses, optimizer, critic

    def _head_trained(self, stage: Stage) -> bool:
        """Whether the student's predictions mean anything after `stage` (not after fe-only stage 1)."""
        return any(group != "fe" for group in stage.train) or any(
            "head" in s.train or "student" in s.train
            for s in self.recipe.stages[: self.recipe.stages.index(stage)]
        )

    def _set_modes(self, stage: Stage) -> None:
        self.student.train()
        trained = {id(m) for group in stage.train for m in self.groups[group]}
        for module in self.groups["student"]:
            if id(module) not in trained:
                module.eval()  # frozen BatchNorm keeps its statistics
            elif stage.batchnorm == "frozen":
                for layer in module.modules():
                    if isinstance(layer, _BatchNorm):
                        layer.eval()

    def _loader(
        self, index: int, stage: Stage, epoch: int, global_epoch: int, train: bool = True
    ) -> DataLoader:
        s = self.settings
        target = Augmented(
            self.data.target, self.data.train_transform, s.augment_seed, s.views, choice_seed=s.seed
        )
        dataset = target
        if stage.stream == "mix":
            proximity = Augmented(
                self.data.proximity, self.data.train_transform, s.augment_seed, s.views, s.seed
            )
            length = s.stream_length or (len(self.data.target) if stage.mix_epoch == "target" else None)
            dataset = MixedDataset(target, proximity, stage.r, length, seed=_derive(s.seed, index))
        dataset.set_epoch(global_epoch)
        generator = torch.Generator().manual_seed(_derive(s.seed, index, epoch))
        # Training batches are split over the ranks; the passes after training (precise BN, feature
        # ratio) run on every image on every rank, so each rank gets the one-process result.
        rank, size = (self.rank, self.world_size) if train else (0, 1)
        batches = distributed.ShardedBatches(
            len(dataset),
            s.batch_size,
            generator=generator if train else None,
            drop_last=train and len(dataset) > s.batch_size,
            rank=rank,
            size=size,
        )
        return DataLoader(
            dataset,
            batch_sampler=batches,
            generator=generator,  # the loader draws its workers' base seed from it, not from torch's
            collate_fn=collate,
            persistent_workers=False,
            **loading(self.data.target, self.device, s.num_workers),
        )

    def _teacher(self, batch: dict, images: torch.Tensor, needs, cached: bool = True) -> dict:
        """The teacher's outputs `needs` on a batch: from the caches (`cached`, training images
        only), else a forward."""
        if not needs:
            return {}
        if self.caches and cached:
            domains = batch.get("domain") or ["target"] * len(images)
            parts: dict[str, torch.Tensor] = {}
            for domain in sorted(set(domains)):
                rows = torch.tensor([k for k, d in enumerate(domains) if d == domain])
                cache = self.caches[domain]
                before = cache.teacher_forwards
                got = cache.get(batch["index"][rows], batch["view"][rows], images[rows.to(images.device)])
                self.teacher_forwards += cache.teacher_forwards - before
                for name in needs:
                    if name not in parts:
                        parts[name] = got[name].new_empty((len(images), *got[name].shape[1:]))
                    parts[name][rows.to(parts[name].device)] = got[name]
        else:
            with torch.no_grad(), self._autocast():
                self.teacher.eval()
                parts = self.teacher.forward_parts(
                    self.teacher.normalize(images), self.teacher_point, want=needs
                )
            self.teacher_forwards += len(images)
        return {name: value.float() for name, value in parts.items()}

    def _step(
        self, stage: Stage, losses: WeightedSum, optimizer, critic, batch: dict, done: float, where: str
    ):
        """One optimiser step (and one critic step) at `done`, the share of the stage behind us:
        each optimiser's lr is its initial lr x (1 - done) ** its own poly_power."""
        images = self._placed(batch["image"])
        masks = batch["mask"].to(self.device, non_blocking=True)
        schedules = [(optimizer, stage.optimizer.poly_power)]
        if critic is not None:
            schedules.append((critic, (stage.critic or DEFAULT_CRITIC).poly_power))
        for torch_optimizer, power in schedules:
            for group in torch_optimizer.param_groups:
                group["lr"] = group["initial_lr"] * (1 - done) ** power
        teacher = self._teacher(batch, images, losses.teacher_needs)
        with self._autocast():
            student = self.student.forward_parts(
                self.student.normalize(images), self.student_point, want=losses.student_needs
            )
        # Loss terms, adapters and critics run in float32, outside autocast; WeightedSum upsamples
        # the logits for the terms that compare them at the input size.
        student = {name: value.float() for name, value in student.items()}
        inputs = {"image": images, "mask": masks}
        total, values = losses(student, teacher, inputs, where=where)
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        # Manual averaging rather than DistributedDataParallel: the engine calls forward_parts, not
        # forward, and each stage freezes other parts of the network. The scaler unscales the mean.
        distributed.average_gradients(p for group in optimizer.param_groups for p in group["params"])
        self.scaler.step(optimizer)
        self.scaler.update()
        if critic is not None:
            detached = {name: value.detach() for name, value in student.items()}
            critic_loss = losses.critic_loss(detached, teacher, inputs)
            if not torch.isfinite(critic_loss):
                raise NonFiniteLossError(term="adv (critic)", value=float(critic_loss), where=where)
            critic.zero_grad(set_to_none=True)
            # No scaler: the critic sees detached float32 logits and runs outside autocast.
            critic_loss.backward()
            distributed.average_gradients(p for group in critic.param_groups for p in group["params"])
            critic.step()
            values["critic"] = float(critic_loss.detach())
        return values

    # ---- evaluation ----------------------------------------------------------------------

    def evaluate(self) -> tuple[dict, list[dict]]:
        """mIoU, per-image mIoU, HP-Acc and variance of the student on the validation images."""
        s = self.settings
        with self._autocast():
            return evaluate(
                self.student,
                self.data.val,
                self.data.eval_transform,
                s.eval_batch_size or s.batch_size,
                self.device,
                s.theta,
                s.num_workers,
            )

    def recalibrate_batchnorm(self, index: int, stage: Stage, global_epoch: int) -> None:
        """Recompute the BatchNorm statistics of the modules `stage` trains over the images of its last
        epoch, as exact averages for the final weights ("precise BN")."""
        trained = [m for group in stage.train for m in self.groups[group]]
        norms = [layer for module in trained for layer in module.modules() if isinstance(layer, _BatchNorm)]
        if not norms:
            return
        momenta = [layer.momentum for layer in norms]
        for layer in norms:
            layer.reset_running_stats()
            layer.momentum = None  # a cumulative average over the pass
        self._set_modes(dataclasses.replace(stage, batchnorm="train"))
        want = ("features",) if set(stage.train) == {"fe"} else ("logits",)
        aux_head = getattr(self.student, "aux_head", None)
        if any(m is aux_head for m in trained):  # else its BatchNorm would keep the reset statistics
            want += ("aux_logits",)
        with torch.no_grad():
            read = dataclasses.replace(stage, stream=stage.batchnorm_stream or stage.stream)
            for batch in self._loader(index, read, stage.epochs - 1, global_epoch - 1, train=False):
                images = self._placed(batch["image"])
                with self._autocast():
                    self.student.forward_parts(self.student.normalize(images), self.student_point, want=want)
        for layer, momentum in zip(norms, momenta, strict=True):
            layer.momentum = momentum

    def feature_ratio(self, index: int, stage: Stage, losses: WeightedSum, global_epoch: int) -> float:
        """How much of the teacher's features the student reproduces: its feature loss (eval mode)
        over the images of the stage's last epoch, divided by the loss of predicting each channel's
        mean over those images. 1.0: it learned no more than the channel means; 0: all of it."""
        loader = self._loader(index, stage, stage.epochs - 1, global_epoch - 1, train=False)
        return self._feature_ratio(losses, loader, cached=True)

    def test_feature_ratio(self, losses: WeightedSum) -> float:
        """The feature ratio on the first FEATURE_RATIO_TEST_IMAGES of RunData.test, unaugmented,
        the teacher run on them (they are in no cache)."""
        test = self.data.test
        shown = (
            Subset(test, range(min(len(test), FEATURE_RATIO_TEST_IMAGES)))
            if len(test) > FEATURE_RATIO_TEST_IMAGES
            else test
        )
        s = self.settings
        loader = DataLoader(
            Augmented(shown, self.data.eval_transform),
            batch_size=s.eval_batch_size or s.batch_size,
            collate_fn=collate,
            **loading(test, self.device, s.num_workers),
        )
        return self._feature_ratio(losses, loader, cached=False)

    def _feature_ratio(self, losses: WeightedSum, loader, cached: bool) -> float:
        term = losses.terms["feature"]
        was_training = self.student.training
        self.student.eval()
        error, sums, squares, positions = 0.0, 0.0, 0.0, 0
        with torch.no_grad():
            for batch in loader:
                images = self._placed(batch["image"])
                teacher = self._teacher(batch, images, ("features",), cached)["features"].double()
                with self._autocast():
                    student = self.student.forward_parts(
                        self.student.normalize(images), self.student_point, want=("features",)
                    )["features"]
                student = term.adapt(student.float(), teacher.float()).double()
                error += float((student - teacher).square().sum())
                sums = sums + teacher.sum(dim=(0, 2, 3))
                squares = squares + teacher.square().sum(dim=(0, 2, 3))
                positions += teacher.numel() // teacher.shape[1]
        self.student.train(was_training)
        spread = float((squares - sums.square() / positions).sum())  # squared error of the channel means
        return error / spread if spread > 0 else float("nan")

    # ---- checkpoints ---------------------------------------------------------------------

    def fingerprint(self) -> str:
        settings = dataclasses.asdict(self.settings)
        for machine_only in (
            "device",
            "num_workers",
            "eval_batch_size",
            "cache",
            "device_data_share",
            "channels_last",
            "compile",
        ):
            settings.pop(machine_only)
        # The key spells a few settings in fixed words (amp "bf16" and "off" as true and false, a
        # stage's r as "ratio"), so that renaming them in code leaves the key, and every checkpoint
        # saved under it, as it is.
        settings["amp"] = {"bf16": True, "off": False}.get(settings["amp"], settings["amp"])
        recipe = self.recipe.to_dict()
        for stage in recipe["stages"]:
            stage["ratio"] = stage.pop("r")
        described = {
            "recipe": recipe,
            "settings": settings,
            "student": self.student.name,
            "teacher": self.teacher.name if self.teacher is not None else None,
        }
        class_map = class_map_of(self.teacher) if self.teacher is not None else None
        if class_map is not None:  # only then: checkpoints written without maps still resume
            described["teacher_class_map"] = class_map.name
        return content_key(described)

    def _save(self, state: dict) -> None:
        make_folder(self.checkpoint_path.parent)
        state = {"format": CHECKPOINT_FORMAT, "fingerprint": self.fingerprint(), **state}
        save_torch(state, self.checkpoint_path)

    def _load(self) -> dict | None:
        if self.checkpoint_path is None or not self.checkpoint_path.is_file():
            return None
        state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=False)
        if state.get("format") != CHECKPOINT_FORMAT or state.get("fingerprint") != self.fingerprint():
            raise UserInputError(
                f"{self.checkpoint_path} was written by a different recipe, settings or model; "
                "delete it to start afresh, or point checkpoint_dir elsewhere."
            )
        return state

    # ---- the run -------------------------------------------------------------------------

    def run(self) -> RunResult:
        start = time.perf_counter()
        self._place_models()
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp and self.amp_dtype == torch.float16
        )
        state = self._load()
        finished = state is not None and "result" in state
        if not finished and self.rank == 0:
            self._fill_caches()
        distributed.barrier()  # the other ranks read what rank 0 stored; their first read opens it
        first_stage, first_epoch = self._restore(state)
        if finished:
            self.say(f"{self.recipe.name}: already finished ({self.checkpoint_path})")
            return RunResult(**state["result"])
        distributed.broadcast_module(self.student)
        evaluation = None
        for index in range(first_stage, len(self.recipe.stages)):
            resumed = state if index == first_stage else None
            evaluation = self._run_stage(index, first_epoch if resumed else 0, resumed, evaluation)
        if evaluation is None:
            evaluation = self.evaluate()
        result = RunResult(
            final=evaluation[0],
            history=self.history,
            per_image=evaluation[1],
            teacher_forwards=self.teacher_forwards,
            params=count_parameters(self.student),
            seconds=time.perf_counter() - start,
        )
        for parameter in self.student.parameters():
            parameter.requires_grad_(id(parameter) in self.trainable_ids)
        self._checkpoint({"stage": len(self.recipe.stages), "epoch": 0, "result": dataclasses.asdict(result)})
        return result

    def _place_models(self) -> None:
        """Models on the device (in channels-last format, compiled, as the settings say), and the
        datasets that fit there decoded onto it."""
        s = self.settings
        memory_format = torch.channels_last if s.channels_last else torch.preserve_format
        for model in (self.student, self.teacher):
            if model is None:
                continue
            model.to(self.device, memory_format=memory_format)
            if s.compile:
                # Module.compile compiles in place, so state-dict keys stay the model's own.
                for module in [*model.stages.values(), model.head, getattr(model, "aux_head", None)]:
                    if module is not None:
                        module.compile(**({"backend": s.compile} if isinstance(s.compile, str) else {}))
        if self.teacher is not None:
            self.teacher.eval()
        roles = ("target", "val", "proximity")
        self.given_data = self.given_data or self.data  # Resident copies hold their datasets weakly
        placed = resident([getattr(self.given_data, r) for r in roles], self.device, s.device_data_share)
        self.data = dataclasses.replace(self.given_data, **dict(zip(roles, placed, strict=True)))

    def _placed(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        if self.settings.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def _fill_caches(self) -> None:
        for domain, cache in self.caches.items():
            if cache.missing:  # once per teacher, dataset and view bank; later runs find it filled
                self.say(f"teacher cache ({domain}): computing {cache.missing} outputs into {cache.path}")
                self.teacher_forwards += cache.fill(batch_size=self.settings.batch_size, progress=self.say)

    def _restore(self, state: dict | None) -> tuple[int, int]:
        """Load a checkpoint's student, history and scaler; the stage and epoch to go on from."""
        if state is None:
            return 0, 0
        self.student.load_state_dict(state["student"])
        self.history, self.teacher_forwards = state["history"], state["teacher_forwards"]
        if "result" in state:
            return len(self.recipe.stages), 0
        if state.get("scaler"):  # empty when written with the scaler off (another device or amp)
            self.scaler.load_state_dict(state["scaler"])
        self.say(f"{self.recipe.name}: resuming at stage {state['stage'] + 1}, epoch {state['epoch'] + 1}")
        return state["stage"], state["epoch"]

    def _run_stage(self, index: int, first_epoch: int, resumed: dict | None, evaluation):
        """Train stage `index` from `first_epoch` (with the optimiser state of `resumed`, a checkpoint
        taken in this stage); the last epoch's evaluation, `evaluation` if no epoch ran."""
        stage = self.recipe.stages[index]
        losses, optimizer, critic = self._build_stage(index, stage)
        if resumed is not None and "optimizer" in resumed:
            losses.load_state_dict(resumed["losses"])
            optimizer.load_state_dict(resumed["optimizer"])
            if critic is not None:
                critic.load_state_dict(resumed["critic"])
        for group in optimizer.param_groups + (critic.param_groups if critic is not None else []):
            group.setdefault("initial_lr", group["lr"])
        plateau = Plateau(stage, [row["loss"] for row in self.history if row["stage_index"] == index])
        for epoch in range(first_epoch, stage.epochs):
            begun = time.perf_counter()
            sums, steps = self._train_epoch(index, stage, epoch, losses, optimizer, critic)
            metrics = self._epoch_metrics(stage, index, epoch, sums, steps, optimizer, begun)
            metrics["epochs_since_best"] = plateau.update(metrics["loss"])
            stopped = plateau.stop()
            last_of_stage = stopped or epoch + 1 == stage.epochs
            if last_of_stage:
                metrics["stage_end"] = "plateau" if stopped else "max"
            evaluation = self._end_epoch(stage, index, losses, metrics, last_of_stage)
            self.history.append(metrics)
            self.say(_progress_line(metrics, stage))
            # A stage that stopped early resumes at the next stage, with that stage's fresh optimiser.
            optimizers = {
                "losses": losses.state_dict(),
                "optimizer": optimizer.state_dict(),
                "critic": critic.state_dict() if critic is not None else None,
            }
            at = {"stage": index + 1, "epoch": 0} if stopped else {"stage": index, "epoch": epoch + 1}
            self._checkpoint(at if stopped else {**at, **optimizers})
            if self.callback is not None:
                # After the checkpoint: a callback that stops the run loses nothing. Every rank calls
                # it (Ray Train's report wants all of them), so it must stop all ranks or none.
                self.callback(metrics)
            if stopped:
                break
        return evaluation

    def _train_epoch(self, index: int, stage: Stage, epoch: int, losses, optimizer, critic):
        """One pass over the epoch's images: each term's values summed over the steps (the mean across
        ranks: every rank must stop the stage at the same epoch), and the number of steps."""
        # Ranks draw other dropout masks, as one process does for other images of the batch.
        torch.manual_seed(_derive(self.settings.seed, index, epoch) + self.rank)
        self._set_modes(stage)
        loader = self._loader(index, stage, epoch, len(self.history))
        steps, sums = len(loader), {}
        for step, batch in enumerate(loader):
            done = (epoch * steps + step) / (stage.epochs * steps)
            where = f"recipe {self.recipe.name!r}, stage {stage.name!r}, epoch {epoch + 1}, step {step + 1}"
            values = self._step(stage, losses, optimizer, critic, batch, done, where)
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + value
        return distributed.mean_across(sums), steps

    def _epoch_metrics(self, stage: Stage, index: int, epoch: int, sums, steps, optimizer, begun) -> dict:
        """The history row of an epoch, its losses the stage's means per step."""
        metrics = {
            "recipe": self.recipe.name,
            "stage": stage.name,
            "stage_index": index,
            "stage_epoch": epoch + 1,
            "epoch": len(self.history) + 1,
            "lr": optimizer.param_groups[0]["lr"],
            "steps": steps,
            "seconds": time.perf_counter() - begun,
            "teacher_forwards": self.teacher_forwards,
        }
        active = stage.active_losses()
        metrics["loss"] = sum(active[n] * sums[n] / max(steps, 1) for n in active if n in sums)
        metrics.update({f"loss_{name}": value / max(steps, 1) for name, value in sums.items()})
        return metrics

    def _end_epoch(self, stage: Stage, index: int, losses, metrics: dict, last_of_stage: bool):
        """After an epoch's steps: precise BatchNorm and the feature ratio at the end of a stage, and
        the evaluation the settings ask for (its results added to `metrics`; None when none)."""
        if last_of_stage and stage.batchnorm == "precise":
            self.recalibrate_batchnorm(index, stage, metrics["epoch"])
        # Each rank's BatchNorm statistics come from its own shards (or, in precise BN, its own
        # dropout masks): one set for all ranks before anything reads or saves them.
        distributed.average_buffers(
            m for m in self.student.modules() if isinstance(m, _BatchNorm) and m.training
        )
        if last_of_stage and "feature" in stage.active_losses():
            metrics["feature_ratio"] = self.feature_ratio(index, stage, losses, metrics["epoch"])
            if self.data.test is not None:
                metrics["feature_ratio_test"] = self.test_feature_ratio(losses)
        evaluate = self.settings.evaluate
        if evaluate == "epoch" or (evaluate == "stage" and last_of_stage and self._head_trained(stage)):
            evaluation = self.evaluate()
            metrics.update(evaluation[0])
            return evaluation
        return None

    def _checkpoint(self, at: dict) -> None:
        """Save the student, the history and `at` (where to go on from, or the result) on rank 0."""
        if self.checkpoint_path is None:
            return
        if self.rank == 0:
            self._save(
                {
                    **at,
                    "student": self.student.state_dict(),
                    "scaler": self.scaler.state_dict(),
                    "history": self.history,
                    "teacher_forwards": self.teacher_forwards,
                }
            )
        # A callback may stop the run, or it ends: a next run in these processes reads this checkpoint
        # on every rank, not an older one on ranks that went on sooner.
        distributed.barrier()


class Plateau:
    """Epochs since a stage's mean training loss last fell below (1 - min_delta) x its best;
    `stop()` once that reaches the stage's patience (never without one)."""

    def __init__(self, stage: Stage, losses: list[float] = ()):
        self.patience, self.min_delta = stage.patience, stage.min_delta
        self.best, self.since_best = math.inf, 0
        for loss in losses:  # a resumed stage replays the epochs it already ran
            self.update(loss)

    def update(self, loss: float) -> int:
        if loss < self.best * (1 - self.min_delta) or self.best == math.inf:
            self.best, self.since_best = loss, 0
        else:
            self.since_best += 1
        return self.since_best

    def stop(self) -> bool:
        return self.patience is not None and self.since_best >= self.patience


def _optimizer(parameters, settings: Optimizer) -> torch.optim.Optimizer:
    if settings.kind == "adam":
        return torch.optim.Adam(
            parameters, lr=settings.lr, betas=tuple(settings.betas), weight_decay=settings.weight_decay
        )
    return torch.optim.SGD(
        parameters, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )


def _progress_line(metrics: dict, stage: Stage) -> str:
    terms = ", ".join(f"{k[5:]} {v:.4g}" for k, v in metrics.items() if k.startswith("loss_"))
    line = (
        f"{metrics['recipe']} | {metrics['stage']} {metrics['stage_epoch']}/{stage.epochs} | "
        f"loss {metrics['loss']:.4g} ({terms}) | {metrics['seconds']:.1f} s"
    )
    if "miou" in metrics and not math.isnan(metrics["miou"]):
        line += f" | val mIoU {metrics['miou']:.3f} HP-Acc {metrics['hp_acc']:.2f} var {metrics['var']:.4f}"
    return line
