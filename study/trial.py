"""What one trial does, in a Ray worker: train a TrialChoice's seeds and answer with a TrialReport.

The worker rebuilds the datasets from the configuration (cheap: files are only indexed,
synthetic images drawn on demand), loads the teacher's weights the driver prepared, and trains
the K seeds one after the other with kd.engine. Engine checkpoints go to
run_dir/scratch/<choice key>/seed<k>, so a trial restarted by --resume continues where it was.
Nothing here knows about Ray: study.tuner wraps `run_trial` as Tune's trainable.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from kd.data import Augmented
from kd.distributed import world
from kd.engine import Engine, RunData, collate
from kd.errors import StorageError, UserInputError
from kd.io import STORAGE_ERRNOS, atomic_write, free_bytes, make_folder, megabytes, save_torch, storage_error
from kd.metrics import METRICS, count_flops
from kd.models import build_student
from kd.models.registry import SPLIT_STUDENTS
from kd.run_folder import PREDICTIONS, SCRATCH
from study.checks import import_plugins
from study.config import StudyConfig
from study.contract import TrialChoice, TrialReport
from study.prepare import (
    Shared,
    cache_folders,
    open_data,
    recipe_data,
    recipe_for,
    settings_for,
    student_for,
    teacher_shell,
    to_display,
)
from study.results import ResultsTables

STUDENTS = "students"  # the trained students' weights, seed<k>.pt, handed to Ray as the trial's checkpoint
# An engine checkpoint holds the student's weights, the optimiser's state of the same size and
# room for a critic or a second optimiser: about this many copies of the weights.
CHECKPOINT_COPIES = 3


@dataclass(frozen=True)
class StudyContext:
    """What every trial of a study shares; Ray passes it to trials through its object store."""

    config: StudyConfig
    shared: Shared


@lru_cache(maxsize=2)
def _process_data(config_json: str) -> RunData:
    # A worker reused for several trials opens the datasets once.
    return open_data(StudyConfig(**json.loads(config_json)))


def run_trial(
    choice: TrialChoice,
    context: StudyContext,
    on_epoch: Callable[[dict], None] | None = None,
    device: str | None = None,
) -> TrialReport:
    """Train every seed of `choice`; `on_epoch(metrics)` sees every epoch of every seed (its
    `seed`, `seeds`, and `epochs`: each seed's epochs at most), with validation scores where the
    study evaluates (every epoch of the first seed under ASHA). `device`: default cuda when the
    study gives trials GPUs. In a data-parallel trial every worker runs this on its slice of each
    batch (kd.engine) and only the first writes files. A failure in the trial's own code is
    returned as the report's `error`, not raised: Ray would only run it again and fail alike. A
    StorageError (a file that could not be written) is raised: it is the machine's fault, and
    the driver stops the study so that --resume runs this trial again."""
    config = context.config
    import_plugins(config)  # a fresh worker process has not imported the user's modules yet
    torch.set_num_threads(max(1, int(config.cpus_per_trial)))
    started = time.perf_counter()
    try:
        report = _train_seeds(config, choice, context.shared, on_epoch, device)
    except StorageError:
        raise
    except OSError as err:  # a write that failed outside kd.io's helpers: the disk's fault all the same
        if err.errno not in STORAGE_ERRNOS:
            report = TrialReport(error=f"{type(err).__name__}: {err}")
        else:
            raise storage_error(err.filename or Path(config.out), err) from err
    except Exception as err:
        report = TrialReport(error=f"{type(err).__name__}: {err}")
    report.seconds = time.perf_counter() - started
    return report


def _train_seeds(config: StudyConfig, choice: TrialChoice, shared: Shared, on_epoch, device) -> TrialReport:
    device = device or ("cuda" if config.gpus_per_trial > 0 and torch.cuda.is_available() else "cpu")
    writes = world()[0] == 0  # of a data-parallel trial's workers, the first writes its files
    state = shared.state_of(choice.teacher)
    teacher = teacher_shell(config.for_teacher(choice.teacher), shared.num_classes, state).to(device).eval()
    recipe = recipe_for(config, choice.method, choice.recipe_overrides)
    data = recipe_data(config, _process_data(json.dumps(config.to_dict(), sort_keys=True)), recipe)
    # Files go straight to the run folder, named by the choice: a worker reused for several
    # trials keeps the first trial's Ray context, and Ray's trial folder is copied around.
    run_dir = Path(config.out).resolve() / config.name
    report, finals, stages = TrialReport(seeds=config.seeds), [], []
    for seed in range(config.seeds):
        torch.manual_seed(seed)
        student = student_for(config, choice, recipe, teacher, shared.num_classes, load_weights=True)
        evaluate = "epoch" if config.scheduler == "asha" and seed == 0 else None
        tell = _epoch_teller(on_epoch, seed, config.seeds, sum(stage.epochs for stage in recipe.stages))
        engine = Engine(
            recipe,
            student,
            teacher,
            data,
            settings_for(config, seed, device, evaluate),
            progress=None,
            callback=tell,
            checkpoint_dir=run_dir / SCRATCH / choice.key / f"seed{seed}",
            cache_root=cache_folders(config)[1],
        )
        result = engine.run()
        report.precision, report.views = engine.precision, str(config.views)
        finals.append(result.final)
        stages.append(result.stages)
        report.per_image += [{"seed": seed, **row} for row in result.per_image]
        report.curves += [
            {"seed": seed, **{k: v for k, v in row.items() if k != "recipe"}} for row in result.history
        ]
        students = run_dir / SCRATCH / choice.key / STUDENTS
        report.students = str(students)
        if not writes:
            continue
        if seed == 0:
            save_predictions(student, data, device, run_dir / PREDICTIONS / f"{choice.key}.npz")
        save_torch(student.state_dict(), make_folder(students) / f"seed{seed}.pt")
    size = data.val[0]["image"].shape[-2:]
    report.params, report.flops = result.params, count_flops(student, (1, 3, *size))
    report.metrics = _mean_and_spread(finals)
    report.degenerate = any(final["classes_predicted"] <= 1 for final in finals)
    report.steps, report.stage1_feature_ratio = stage_summary(stages)
    report.stage1_feature_ratio_test = stage_summary(stages, "feature_ratio_test")[1]
    return report


def _epoch_teller(on_epoch, seed: int, seeds: int, epochs: int):
    if on_epoch is None:
        return None
    return lambda metrics: on_epoch({**metrics, "seed": seed, "seeds": seeds, "epochs": epochs})


def _mean_and_spread(finals: list[dict]) -> dict[str, float]:
    """Each metric's mean over the seeds and its population standard deviation (`<metric>_std`)."""
    summary = {}
    for name in METRICS:
        values = [final[name] for final in finals]
        summary[name] = statistics.fmean(values)
        summary[f"{name}_std"] = statistics.pstdev(values) if len(values) > 1 else 0.0
    return summary


def stage_summary(
    stages: list[list[dict]], ratio: str = "feature_ratio"
) -> tuple[dict[str, float], float | None]:
    """(optimiser steps per stage, mean over seeds; the first feature stage's `ratio`, mean over
    seeds, see Engine.feature_ratio, or None when some seed has none)."""
    steps = {}
    for name in dict.fromkeys(entry["stage"] for seed in stages for entry in seed):
        steps[name] = statistics.fmean(
            entry["steps"] for seed in stages for entry in seed if entry["stage"] == name
        )
    ratios = [next((e[ratio] for e in seed if ratio in e), None) for seed in stages]
    mean = statistics.fmean(ratios) if ratios and all(r is not None for r in ratios) else None
    return steps, mean


def save_predictions(student, data: RunData, device: str, path: Path) -> None:
    """A trial's predictions on every validation image, at the display size."""
    loader = torch.utils.data.DataLoader(
        Augmented(data.val, data.eval_transform), batch_size=8, collate_fn=collate
    )
    ids, predictions = [], []
    student.eval()
    with torch.no_grad():
        for batch in loader:
            logits = student(student.normalize(batch["image"].to(device)))
            predictions.append(to_display(logits.argmax(1).cpu()))
            ids += list(batch["id"])
    ids, predictions = np.array(ids), np.concatenate(predictions)
    make_folder(path.parent)
    atomic_write(path, lambda partial: _savez(partial, ids=ids, predictions=predictions))


def _savez(path: Path, **arrays) -> None:
    with open(path, "wb") as file:  # an open file: numpy would add ".npz" to the temporary name
        np.savez_compressed(file, **arrays)


def written_bytes(config: StudyConfig, num_classes: int, trials: int) -> int:
    """About what `trials` trials write to the run folder: every seed's students (kept until the
    study picks each variant's best), the engine checkpoints of the trials running at once, and
    the predictions (one byte a pixel, uncompressed). Caches are written during preparation."""
    weights = 4 * _largest_student(config, num_classes)  # float32
    at_once = min(trials, config.max_concurrent or trials)
    students = weights * config.seeds * trials
    checkpoints = weights * CHECKPOINT_COPIES * config.seeds * at_once
    height, width = config.image_size
    return students + checkpoints + (config.val_images or 0) * height * width * trials


def _largest_student(config: StudyConfig, num_classes: int) -> int:
    """The parameters of the study's largest student (built on the meta device: no memory). A
    student split from the teacher is counted as the whole teacher."""
    counts = []
    with torch.device("meta"):
        for method in config.methods:
            name = config.students.get(method, recipe_for(config, method).student)
            model = (
                teacher_shell(config, num_classes)
                if name in SPLIT_STUDENTS
                else build_student(name, num_classes)
            )
            counts.append(sum(p.numel() for p in model.parameters()))
    return max(counts)


def trials_to_run(run_dir: Path, total: int) -> int:
    """How many of the study's `total` trials are still to run: all but those recorded as completed
    or stopped (a failed row counts as to run: a crashed trial runs again on --resume)."""
    counts = ResultsTables(run_dir).counts()
    return max(0, total - counts["completed"] - counts["stopped"])


def check_free_space(config: StudyConfig, run_dir: Path, num_classes: int, total: int, say=print) -> None:
    """Refuse a study whose run folder's file system cannot hold what its trials still to run
    will write; warn when the margin is under half the estimate."""
    needed = written_bytes(config, num_classes, trials_to_run(run_dir, total))
    free = free_bytes(run_dir)
    said = f"the study writes about {megabytes(needed)} to {run_dir}, which has {megabytes(free)} free"
    if free < needed:
        raise UserInputError(f"{said}; free space there, or choose another --out.")
    if free < 1.5 * needed:
        say(f"warning: {said}: little margin")


def space_advice(config: StudyConfig, run_dir: Path, num_classes: int, total: int) -> str:
    """What a study stopped by a full disk tells its user: the space its trials still to run need."""
    needed = written_bytes(config, num_classes, trials_to_run(run_dir, total))
    free = free_bytes(run_dir)
    return (
        f"the study stopped; it writes about {megabytes(needed)} to {run_dir}, which has "
        f"{megabytes(free)} free: free space there, then continue with: "
        f"python -m study.run --name {config.name} --out {config.out} --resume"
    )
