"""python -m study.run: launch (or resume) a distillation study.

    python -m study.run                               # the embedded default: synthetic data, CPU, minutes
    python -m study.run --preset smoke                # a few tiny trials, about a minute
    python -m study.run --config study.toml --gpus-per-trial 0.5
    python -m study.run --config study.toml --address auto   # on an existing Ray cluster
    python -m study.run --name my-study --resume      # continue an interrupted study

Ray Tune runs the trials in parallel (a CPU slot, a GPU or a fraction of one each), Optuna
picks the configurations (TPE; NSGA-II or GP for several objectives), and the results are
written to runs/<name>/ as trials finish.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

from kd.errors import UserInputError
from study import config as study_config
from study.config import OBJECTIVES, PRESETS, StudyConfig

RAY_DIR = "ray"
JOURNAL = "optuna.journal"


class SearchSpace:
    """The define-by-run space as a picklable object: Ray saves the searcher with the experiment."""

    def __init__(self, methods: list[str], split_points: list[str], values: dict):
        import search_spaces

        self.methods, self.split_points, self.values = methods, split_points, values
        search_spaces.define_by_run(methods, split_points, values)  # validates now, not in the first trial

    def __call__(self, trial):
        import search_spaces

        return search_spaces.define_by_run(self.methods, self.split_points, self.values)(trial)


def _finished_only_optuna_search():
    from ray.tune.search.optuna import OptunaSearch

    class FinishedOnlyOptunaSearch(OptunaSearch):
        """Tells Optuna a trial COMPLETE only when it ran to the end.

        Ray hands a scheduler-stopped trial's last (intermediate) result to on_trial_complete,
        which Optuna would take as that configuration's final value; it is PRUNED instead.
        """

        def on_trial_complete(self, trial_id, result=None, error=False):
            error = error or bool(result and result.get("failed"))
            if error or (result is not None and not result.get("final")):
                result = None
            super().on_trial_complete(trial_id, result, error)

    return FinishedOnlyOptunaSearch


def _searcher(config: StudyConfig, split_points: list[str], run_dir: Path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from ray.tune.search import ConcurrencyLimiter

    samplers = {"tpe": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler,
                "gp": optuna.samplers.GPSampler}
    metrics = config.objectives
    modes = [OBJECTIVES[m] for m in metrics]
    searcher = _finished_only_optuna_search()(
        space=SearchSpace(config.methods, split_points, config.space),
        metric=metrics[0] if len(metrics) == 1 else metrics, mode=modes[0] if len(modes) == 1 else modes,
        sampler=samplers[config.sampler](seed=config.seed), study_name=config.name,
        storage=JournalStorage(JournalFileBackend(str(run_dir / JOURNAL))),
    )
    if config.max_concurrent:
        return ConcurrencyLimiter(searcher, max_concurrent=config.max_concurrent)
    return searcher


def _quiet_ray() -> None:
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Save the experiment state after every trial, so a crash never re-runs a finished trial.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("ray", "ray.tune", "ray.train", "ray.data"):
        # A failed trial's traceback is kept in trials.parquet and Ray's trial folder; one line is printed.
        logging.getLogger(name).setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", module="ray")


def _check_writable(run_dir: Path) -> None:
    """Fail before any training if results could not be saved."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise UserInputError(
            f"cannot write the study's results to {run_dir} ({err.strerror or err}); "
            "choose another --out, or make that folder writable."
        ) from None


def verify_data(data, say=print) -> None:
    """Decode every image and mask from files now: a corrupt file stops the study before Ray starts, named."""
    for dataset in (data.target, data.val, data.proximity):
        if dataset is not None and hasattr(dataset, "verify"):
            started = time.perf_counter()
            dataset.verify()
            say(f"checked {len(dataset)} {dataset.name} images in {time.perf_counter() - started:.1f} s")


# glibc gives every thread that allocates its own malloc arena; torch's intra-op threads then keep
# hundreds of MB of freed memory per worker. Two arenas hold a worker's peak close to its live data.
WORKER_ENV = {"MALLOC_ARENA_MAX": "2"}


def _shared_artefacts(config: StudyConfig, run_dir: Path, split_points: list[str], say) -> tuple[dict, int]:
    """Check the data, train (or load) the teacher, save samples, fill the teacher-output caches,
    score the teacher.

    Returns (teacher weights, number of classes); the datasets and the teacher itself are dropped
    when this returns, so the driver does not hold them while the trials run.
    """
    from study.trial import evaluate_teacher, fill_caches, open_data, prepare_teacher, save_samples, teacher_shell

    data = open_data(config)
    verify_data(data, say)
    num_classes = data.target.num_classes
    teacher_state = prepare_teacher(config, num_classes, say=say)
    teacher = teacher_shell(config, num_classes)
    teacher.load_state_dict(teacher_state)
    teacher.eval()
    save_samples(data, run_dir / "samples.npz")
    fill_caches(config, teacher, data, split_points, num_classes, say=say)
    scores = evaluate_teacher(config, teacher, data, run_dir)
    say(f"teacher {teacher.name} on the validation images: miou {scores['miou']:.3f}, miou_img "
        f"{scores['miou_img']:.3f}, hp_acc {scores['hp_acc']:.2f}, var {scores['var']:.4f}")
    return teacher_state, num_classes


def _release_memory() -> None:
    """Give freed heap memory back to the system (glibc only; elsewhere a no-op)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def run_study(config: StudyConfig, resume: bool = False, say=print) -> Path:
    """Validate, prepare shared artefacts once, run the trials with Ray Tune; returns the run directory."""
    study_config.validate(config)
    run_dir = config.run_dir.resolve()
    if resume:
        saved = study_config.load(run_dir)
        if saved.to_dict() != config.to_dict():
            config = saved  # a resumed study runs what it started with
    elif (run_dir / "config.json").exists():
        raise UserInputError(f"{run_dir} already holds a study; add --resume to continue it, or choose another --name.")
    _check_writable(run_dir)
    _quiet_ray()
    import ray
    from ray import tune

    import search_spaces

    from kd.models.registry import split_points as points_of
    from study.results import ResultsWriter
    from study.trial import StudyContext, run_trial

    started = time.perf_counter()
    split_points = points_of(config.teacher)
    points = search_spaces.grid(config.methods, split_points, config.space) if config.sampler == "grid" else None
    total = len(points) if points is not None else config.trials
    say(f"study {config.name}: {', '.join(config.methods)} on {config.data}, {total} trials x "
        f"{config.seeds} seeds, sampler {config.sampler}, objectives {', '.join(config.objectives)} -> {run_dir}")
    study_config.save(config, run_dir)
    teacher_state, num_classes = _shared_artefacts(config, run_dir, split_points, say)
    _release_memory()
    say(f"shared artefacts ready in {time.perf_counter() - started:.0f} s")

    if not ray.is_initialized():
        ray.init(address=config.address, include_dashboard=False, logging_level=logging.ERROR,
                 log_to_driver=False, configure_logging=True, runtime_env={"env_vars": WORKER_ENV})
    context = StudyContext(config.to_dict(), split_points, teacher_state, num_classes)
    resources = {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial}
    trainable = tune.with_resources(tune.with_parameters(run_trial, context=context), resources)

    if config.sampler == "grid":
        tune_config = tune.TuneConfig(num_samples=1, max_concurrent_trials=config.max_concurrent or None,
                                      reuse_actors=True)
        param_space = {"grid": tune.grid_search(points)}
    else:
        scheduler = None
        metric = mode = None
        if config.scheduler == "asha":
            metric, mode = config.objectives[0], OBJECTIVES[config.objectives[0]]
            scheduler = tune.schedulers.ASHAScheduler(time_attr="training_iteration", grace_period=1)
        tune_config = tune.TuneConfig(search_alg=_searcher(config, split_points, run_dir), num_samples=config.trials,
                                      scheduler=scheduler, metric=metric, mode=mode,
                                      # A worker keeps torch, the datasets and the teacher loaded between trials.
                                      reuse_actors=True)
        param_space = None
    writer = ResultsWriter(run_dir, total, say=say)
    run_config = tune.RunConfig(name=RAY_DIR, storage_path=str(run_dir), callbacks=[writer], verbose=0,
                                failure_config=tune.FailureConfig(max_failures=config.retries))
    ray_dir = run_dir / RAY_DIR
    if resume and tune.Tuner.can_restore(str(ray_dir)):
        say(f"resuming: {len(writer.rows)} trial(s) already finished")
        tuner = tune.Tuner.restore(str(ray_dir), trainable, resume_unfinished=True, resume_errored=False,
                                   param_space=param_space)
    else:
        tuner = tune.Tuner(trainable, tune_config=tune_config, run_config=run_config,
                           **({"param_space": param_space} if param_space else {}))
    fit_started = time.perf_counter()
    tuner.fit()
    fit_seconds = time.perf_counter() - fit_started
    rows = ResultsWriter(run_dir, total).rows.values()  # on resume Ray ran its restored copy of the writer
    finished = sum(1 for row in rows if row["status"] == "completed")
    failed = sum(1 for row in rows if row["status"] == "failed")
    say(f"study {config.name}: {finished} completed, {failed} failed, {len(rows)} of {total} trials recorded "
        f"in {time.perf_counter() - started:.0f} s")
    (run_dir / "timing.json").write_text(json.dumps(  # for benchmarks: the study's time outside the trials
        {"prepare_s": fit_started - started, "fit_s": fit_seconds, "trials_recorded": len(rows)}) + "\n")
    if len(rows) >= total:
        shutil.rmtree(run_dir / "scratch", ignore_errors=True)  # engine checkpoints of trials in flight
    if len(rows) < total:
        say(f"the study stopped early; continue it with: python -m study.run --name {config.name} "
            f"--out {config.out} --resume")
    say(f"results: {run_dir / 'trials.parquet'}, {run_dir / 'per_image.parquet'}, {run_dir / 'curves.parquet'}")
    try:
        from analysis.report import write_report

        say(f"report: {write_report(run_dir)}")
    except Exception as err:  # the tables are written; a report problem must not hide them
        say(f"report not written ({type(err).__name__}: {err}); try: python -m analysis.report {run_dir}")
    return run_dir


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m study.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", metavar="FILE", help="a TOML study file (keys as in study/config.py; "
                        "[space.METHOD] and [students] tables); command-line values override it")
    parser.add_argument("--preset", default="default", choices=list(PRESETS),
                        help="starting point: smoke (a few tiny trials, about a minute), default (minutes), "
                        "camvid-sd (the SD paper's binary CamVid protocol, about 7 h on 2 CPU cores, continued with --resume) or "
                        "camvid-11 (IFVD, SKD, CWD and KD on the 11 CamVid classes)")
    parser.add_argument("--methods", help="comma-separated recipes, e.g. baseline,sd,esd,ifvd (python -m kd.methods lists them)")
    parser.add_argument("--trials", type=int, help="Optuna trials over all methods")
    parser.add_argument("--epochs", type=int, help="each method's epochs over all its stages (an equal budget; "
                        "SD/ESD split them 40/40/20); default: the preset's")
    parser.add_argument("--seeds", type=int, help="training seeds per trial (mean and std are reported)")
    parser.add_argument("--data", help="synthetic, camvid:PATH, cityscapes:PATH, kitti:PATH or folder:IMAGES_DIR,MASKS_DIR")
    parser.add_argument("--sampler", choices=("tpe", "nsga2", "gp", "grid"),
                        help="tpe (default), nsga2 or gp (multi-objective), grid (every method once, no search)")
    parser.add_argument("--objectives", help=f"comma-separated, from {', '.join(OBJECTIVES)} (several: multi-objective)")
    parser.add_argument("--scheduler", choices=("none", "asha"), help="asha: stop poor trials early (one objective)")
    parser.add_argument("--name", help="the study's name: its folder under --out")
    parser.add_argument("--out", help="where run folders go (default runs/)")
    parser.add_argument("--cpus-per-trial", type=float, help="CPU cores per trial (default 1)")
    parser.add_argument("--gpus-per-trial", type=float, help="GPUs per trial; fractions share a GPU (0.5: two trials each)")
    parser.add_argument("--max-concurrent", type=int, help="at most this many trials at once (default: as resources allow)")
    parser.add_argument("--address", help="join an existing Ray cluster: 'auto' or HOST:PORT (default: a local Ray)")
    parser.add_argument("--resume", action="store_true", help="continue the study --name (its saved configuration)")
    parser.add_argument("--retries", type=int, help="runs again a trial whose worker or node died (default 1)")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks for configuration errors too")
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> StudyConfig:
    split = lambda text: [item.strip() for item in text.split(",") if item.strip()] if text else None  # noqa: E731
    overrides = {
        "methods": split(args.methods), "trials": args.trials, "seeds": args.seeds, "epochs": args.epochs, "data": args.data,
        "sampler": args.sampler, "objectives": split(args.objectives), "scheduler": args.scheduler,
        "name": args.name, "out": args.out, "cpus_per_trial": args.cpus_per_trial,
        "gpus_per_trial": args.gpus_per_trial, "max_concurrent": args.max_concurrent, "address": args.address,
        "retries": args.retries,
    }
    return study_config.resolve(args.preset, args.config, overrides)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        config = config_from_args(args)
        if args.resume:
            saved = study_config.load(config.run_dir)
            config = saved
        run_study(config, resume=args.resume)
    except UserInputError as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: continue with --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
