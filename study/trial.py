"""What one trial does, and the artefacts a study prepares once for all its trials.

The driver prepares, once per study: the datasets (checked), the teacher (loaded from a
checkpoint or its head trained on the source images, content-hashed and reused across
studies), and the teacher-output caches for every split point the search may pick. Trials
receive the teacher's weights through Ray's object store (so trials on other machines of a
cluster get them too), rebuild the datasets from the configuration (cheap: files are only
indexed, synthetic images are drawn on demand), and find the caches filled.

A trial trains its K seeds one after the other with kd.engine and reports once at the end:
the mean and standard deviation of every metric over the seeds, and every seed's per-image
scores. With ASHA it also reports the first seed's metrics after every epoch, so the
scheduler can stop it early; the final report carries `final: True`, which is how the
searcher tells a finished trial from a stopped one.
"""
from __future__ import annotations

import gc
import shutil
import statistics
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import search_spaces
from kd.data import Augmented, PairedTransform, open_dataset
from kd.engine import Engine, RunData, RunSettings, collate
from kd.methods import build_recipe
from kd.metrics import count_flops
from kd.models import build_student, build_teacher, fit_teacher, load_checkpoint
from kd.models.registry import SPLIT_STUDENTS
from kd.models.teacher_training import TeacherTraining
from study.config import SPLITS, StudyConfig, import_plugins

METRICS = ("miou", "miou_img", "hp_acc", "var")


@dataclass
class StudyContext:
    """What every trial of a study shares; passed to trials with tune.with_parameters."""

    config: dict
    split_points: list[str]
    teacher_state: dict
    num_classes: int


def open_role(config: StudyConfig, role: str, first_n: int | None):
    """The dataset playing `role` (source, target, proximity, val) in this study."""
    options = {"image_size": tuple(config.image_size)} if config.kind == "synthetic" else {}
    if config.kind == "folder":
        options["classes"] = config.classes
    split = SPLITS[config.kind][role]
    return open_dataset(config.data, split, label_set=config.label_set, first_n=first_n, **options)


def _resize(config: StudyConfig):
    # Synthetic images are drawn at image_size; files are resized to it.
    return None if config.kind == "synthetic" or not config.image_size else tuple(config.image_size)


def open_data(config: StudyConfig) -> RunData:
    """The study's datasets and transforms (each model normalises its own copy)."""
    proximity = None
    if "esd" in config.methods:
        proximity = open_role(config, "proximity", config.proximity_images)
    crop = tuple(config.crop) if config.crop else None
    return RunData(
        target=open_role(config, "target", config.target_images),
        val=open_role(config, "val", config.val_images),
        proximity=proximity,
        train_transform=PairedTransform(resize=_resize(config), crop=crop, hflip=config.hflip, normalize=False),
        eval_transform=PairedTransform(resize=_resize(config), normalize=False),
    )


DISPLAY_WIDTH = 256  # samples and predictions are stored at most this wide: enough to look at, small on disk


def _display_size(height: int, width: int) -> tuple[int, int]:
    scale = min(1.0, DISPLAY_WIDTH / width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _to_display(labels: torch.Tensor) -> np.ndarray:
    """[N,H,W] class maps shrunk (nearest) to the display size, as uint8."""
    size = _display_size(*labels.shape[-2:])
    shrunk = F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0]
    return shrunk.to(torch.uint8).numpy()


def save_samples(data: RunData, path) -> None:
    """The validation images and ground truth as trials see them, for the report's segmentation figures."""
    samples = [data.eval_transform(data.val[i]) for i in range(len(data.val))]
    images = torch.stack([s["image"].as_subclass(torch.Tensor) for s in samples])
    masks = torch.stack([s["mask"].as_subclass(torch.Tensor) for s in samples])
    size = _display_size(*images.shape[-2:])
    small = F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)
    pixels = (small.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.savez_compressed(path, ids=np.array([s["id"] for s in samples]), images=pixels,
                        masks=_to_display(masks.clamp(0, 255)), classes=np.array(data.val.classes))


def save_predictions(student, data: RunData, device: str, path) -> None:
    """A trial's predictions on every validation image (its first seed), at the display size."""
    loader = torch.utils.data.DataLoader(Augmented(data.val, data.eval_transform), batch_size=8, collate_fn=collate)
    ids, predictions = [], []
    student.eval()
    with torch.no_grad():
        for batch in loader:
            logits = student(student.normalize(batch["image"].to(device)))
            predictions.append(_to_display(logits.argmax(1).cpu()))
            ids += list(batch["id"])
    np.savez_compressed(path, ids=np.array(ids), predictions=np.concatenate(predictions))


def teacher_shell(config: StudyConfig, num_classes: int):
    # The ImageNet weights would be overwritten at once by the study's teacher weights.
    options = {"pretrained": False} if config.teacher == "deeplabv3_efficientnet_lite0" else {}
    return build_teacher(config.teacher, num_classes=num_classes, **options)


def prepare_teacher(config: StudyConfig, num_classes: int, say=print) -> dict:
    """The teacher's weights: from `teacher_checkpoint`, else its head trained on the source images (cached)."""
    torch.manual_seed(config.seed)  # the head's initial weights are part of the teacher's content hash
    teacher = build_teacher(config.teacher, num_classes=num_classes)
    if config.teacher_checkpoint:
        load_checkpoint(teacher, config.teacher_checkpoint)
        say(f"teacher {config.teacher}: loaded {config.teacher_checkpoint}")
    else:
        source = open_role(config, "source", config.source_images)
        transform = PairedTransform(resize=_resize(config), hflip=config.hflip, mean=teacher.input_mean,
                                    std=teacher.input_std)
        fit_teacher(teacher, source, TeacherTraining(epochs=config.teacher_epochs, batch_size=config.batch_size),
                    transform=transform, progress=say)
    return {name: value.detach().cpu() for name, value in teacher.state_dict().items()}


def student_for(method: str, recipe, config: StudyConfig, teacher, split_point: str | None, num_classes: int,
                overrides: dict | None = None):
    """The method's student; the SD student's capacity comes from the "student.<option>" overrides."""
    name = config.students.get(method, recipe.student)
    options = search_spaces.split_student_options(overrides or {})[1]
    if name == "sd":
        return build_student(name, num_classes, teacher=teacher, split_point=split_point or teacher.split_points[-1],
                             **options)
    if name in SPLIT_STUDENTS:
        return build_student(name, num_classes, teacher=teacher, split_point=split_point or teacher.split_points[-1])
    return build_student(name, num_classes)


def settings_for(config: StudyConfig, seed: int, device: str, evaluate: str | None = None) -> RunSettings:
    return RunSettings(batch_size=config.batch_size, seed=seed, device=device, views=config.views,
                       evaluate=evaluate or config.evaluate)


def recipe_for(config: StudyConfig, method: str, overrides: dict):
    recipe_overrides = search_spaces.split_student_options(overrides)[0]
    return build_recipe(method, ({"total_epochs": config.epochs} if config.epochs else {}) | recipe_overrides)


def fill_caches(config: StudyConfig, teacher, data: RunData, split_points: list[str], num_classes: int, say=print) -> int:
    """Compute, once per study, the teacher outputs of every (method, split point) the study may pick."""
    forwards, seen = 0, set()
    if config.sampler == "grid":  # only the grid's points, not every point the space allows
        grid = search_spaces.grid(config.methods, split_points, config.space)
        pairs = list(dict.fromkeys((p["method"], p["split_point"]) for p in grid))
    else:
        pairs = []
        for method in config.methods:
            choice = search_spaces.space_for(method, split_points, config.space).get("split_point")
            pairs += [(method, point) for point in list(getattr(choice, "choices", ()))
                      or [getattr(choice, "value", None)]]
    for method, point in pairs:
        recipe = recipe_for(config, method, {})
        student = student_for(method, recipe, config, teacher, point, num_classes)
        engine = Engine(recipe, student, teacher, data, settings_for(config, 0, "cpu"), progress=None)
        for cache in engine.caches.values():
            if cache.key not in seen:
                seen.add(cache.key)
                if cache.missing:
                    forwards += cache.fill(batch_size=config.batch_size, progress=None)
    say(f"teacher-output caches: {len(seen)} (method x split point x domain), {forwards} teacher forwards")
    return forwards


TEACHER = "teacher.json"


def evaluate_teacher(config: StudyConfig, teacher, data: RunData, run_dir) -> dict:
    """The teacher's own scores on the validation images, the reference every student is read against;
    written to run_dir/teacher.json."""
    import json

    from kd.engine import evaluate
    from kd.metrics import count_parameters

    metrics, _ = evaluate(teacher, data.val, data.eval_transform, config.batch_size)
    size = data.val[0]["image"].shape[-2:]
    record = {"name": teacher.name, **metrics, "params": count_parameters(teacher),
              "flops": count_flops(teacher, (1, 3, *size))}
    (Path(run_dir) / TEACHER).write_text(json.dumps(record, indent=2) + "\n")
    return record


@lru_cache(maxsize=2)
def _process_data(config_json: str) -> RunData:
    import json

    return open_data(StudyConfig(**json.loads(config_json)))


PREDICTIONS = "predictions"


def trial_key(trial_config: dict) -> str:
    """A trial's name from its configuration, the same in the driver and in the worker."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(trial_config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def trial_choice(trial_config: dict, config: StudyConfig, split_points: list[str]) -> tuple[str, dict, str | None]:
    if "grid" in trial_config:  # ablation grid: no search
        point = trial_config["grid"]
        return point["method"], point["overrides"], point["split_point"]
    return search_spaces.trial_overrides(trial_config, split_points, config.space)


def run_trial(trial_config: dict, context: StudyContext) -> None:
    """The Ray Tune function trainable."""
    import json

    import ray
    from ray import tune

    config = StudyConfig(**context.config)
    import_plugins(config)  # a fresh worker process has not imported the user's modules yet
    torch.set_num_threads(max(1, int(config.cpus_per_trial)))
    method, overrides, split_point = trial_choice(trial_config, config, context.split_points)
    recipe = recipe_for(config, method, overrides)
    data = _process_data(json.dumps(context.config, sort_keys=True))
    device = "cuda" if config.gpus_per_trial > 0 and torch.cuda.is_available() else "cpu"
    teacher = teacher_shell(config, context.num_classes)
    teacher.load_state_dict(context.teacher_state)
    teacher.to(device).eval()
    # Files go straight to the run folder, named by the trial's configuration: a worker reused for
    # several trials keeps the first trial's Ray context, and Ray's trial folder is copied around.
    run_dir = Path(config.out).resolve() / config.name
    key = trial_key(trial_config)
    predictions = run_dir / PREDICTIONS / f"{key}.npz"
    scratch = run_dir / "scratch" / key  # engine checkpoints, for a trial restarted by --resume
    started = time.perf_counter()
    holder = {"student": None}
    try:
        report = _train_seeds(config, method, recipe, split_point, data, teacher, device, predictions, scratch,
                              context.num_classes, holder, overrides)
    except Exception as err:  # the trial's own failure: recorded, not retried by Ray (it would fail alike)
        report = {"final": True, "failed": f"{type(err).__name__}: {err}", "method": method,
                  "split_point": split_point}
    report.update(seconds=time.perf_counter() - started, node=ray.get_runtime_context().get_node_id())
    try:
        tune.report(report)
        shutil.rmtree(scratch, ignore_errors=True)  # checkpoints matter only while the trial runs
    finally:
        del holder, teacher
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the next trial in this worker starts with the GPU's memory free


def _train_seeds(config, method, recipe, split_point, data, teacher, device, predictions, scratch, num_classes,
                 holder, overrides) -> dict:
    """Train every seed of a trial; the final report (mean and std over seeds, per-image scores, curves)."""
    from ray import tune

    asha = config.scheduler == "asha"
    finals, per_image, curves, stages = [], [], [], []
    for seed in range(config.seeds):
        torch.manual_seed(seed)
        student = holder["student"] = student_for(method, recipe, config, teacher, split_point, num_classes, overrides)

        def report_epoch(metrics, first_seed=(seed == 0)):
            if asha and first_seed:  # ASHA judges the first seed's learning curve
                tune.report({k: metrics[k] for k in (*METRICS, "epoch") if k in metrics})

        settings = settings_for(config, seed, device, evaluate="epoch" if asha and seed == 0 else None)
        engine = Engine(recipe, student, teacher, data, settings, progress=None, callback=report_epoch,
                        checkpoint_dir=scratch / f"seed{seed}")
        result = engine.run()
        finals.append(result.final)
        stages.append(result.stages)
        per_image += [{"seed": seed, **row} for row in result.per_image]
        curves += [{"seed": seed, **{k: v for k, v in row.items() if k != "recipe"}} for row in result.history]
        if seed == 0:
            predictions.parent.mkdir(parents=True, exist_ok=True)
            save_predictions(student, data, device, predictions)
    size = data.val[0]["image"].shape[-2:]
    report = {"final": True, "method": method, "split_point": split_point, "seeds": config.seeds,
              "params": result.params, "flops": count_flops(holder["student"], (1, 3, *size)),
              "per_image": per_image, "curves": curves}
    for name in METRICS:
        values = [final[name] for final in finals]
        report[name] = statistics.fmean(values)
        report[f"{name}_std"] = statistics.pstdev(values) if len(values) > 1 else 0.0
    report["degenerate"] = any(final["classes_predicted"] <= 1 for final in finals)
    return report | stage_summary(stages)


def stage_summary(stages: list[list[dict]]) -> dict:
    """Per stage, the optimiser steps it took (mean over seeds) as `steps_<stage>`, and the first
    feature stage's `stage1_feature_ratio` (mean over seeds; see Engine.feature_ratio)."""
    summary, ratios = {}, []
    for name in dict.fromkeys(entry["stage"] for seed in stages for entry in seed):
        steps = [entry["steps"] for seed in stages for entry in seed if entry["stage"] == name]
        summary[f"steps_{name}"] = statistics.fmean(steps)
    for seed in stages:
        ratios += [next((e["feature_ratio"] for e in seed if "feature_ratio" in e), None)]
    if all(r is not None for r in ratios) and ratios:
        summary["stage1_feature_ratio"] = statistics.fmean(ratios)
    return summary
