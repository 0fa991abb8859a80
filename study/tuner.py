"""Everything that knows about Ray: the local instance or cluster, the Tune trainable, the
Optuna searcher, the callback that writes the tables, and starting or restoring the Tuner.

Every trial's configuration is `{"choice": TrialChoice}`: a grid gives Tune the list of
choices, a search's define-by-run function (study.space.StudySpace) returns one per trial.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import shutil
import warnings
from pathlib import Path

import torch
from ray import tune

from kd.metrics import METRICS, OBJECTIVES
from study.config import StudyConfig
from study.contract import TrialChoice, TrialReport
from study.results import ResultsTables, last_error_line, progress_line
from study.space import StudySpace
from study.trial import SCRATCH, StudyContext, run_trial

RAY_DIR = "ray"
REPORT = "report.json"  # in a trial's checkpoint, next to its students' weights
JOURNAL = "optuna.journal"
# glibc gives every thread that allocates its own malloc arena; torch's intra-op threads then keep
# hundreds of MB of freed memory per worker. Two arenas hold a worker's peak close to its live data.
WORKER_ENV = {"MALLOC_ARENA_MAX": "2"}


def quiet_ray() -> None:
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


def start_ray(address: str | None) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(
            address=address,
            include_dashboard=False,
            logging_level=logging.ERROR,
            log_to_driver=False,
            configure_logging=True,
            runtime_env={"env_vars": WORKER_ENV},
        )


def trainable(config: dict, context: StudyContext) -> None:
    """Tune's function trainable: one report at the end (`final: True` tells the searcher the trial
    ran to the end); with ASHA also the first seed's scores after every epoch."""
    import ray

    choice: TrialChoice = config["choice"]
    students = tune.get_checkpoint()
    report = saved_report(students)
    if report is None:  # the usual case: train
        report = run_trial(choice, context, _epoch_reporter(context))
        report.node = ray.get_runtime_context().get_node_id()
        # The students' weights, with the report, travel as Ray's checkpoint: Ray copies them to
        # the study's storage, where the driver finds them even when this worker's node is gone.
        students = None
        if report.students and not report.error:
            (Path(report.students) / REPORT).write_text(json.dumps(dataclasses.asdict(report)))
            students = tune.Checkpoint.from_directory(report.students)
    try:
        metrics = {
            # A failed trial has no scores, but Tune's searcher refuses a result without its metric
            # before the searcher could read "failed" and tell Optuna FAIL.
            **dict.fromkeys(METRICS, float("nan")),
            **report.objectives(),
            "final": True,
            "failed": report.error,
            "report": dataclasses.asdict(report),
        }
        tune.report(metrics, checkpoint=students)
        run_dir = Path(context.config.out).resolve() / context.config.name
        # the engine checkpoints and the students' local copy (Ray has its own now)
        shutil.rmtree(run_dir / SCRATCH / choice.key, ignore_errors=True)
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the next trial in this worker starts with the GPU's memory free


def saved_report(checkpoint: tune.Checkpoint | None) -> TrialReport | None:
    """The report kept in a trial's checkpoint: Ray restores a trial that had finished when the
    driver was interrupted from it on --resume, and the trial re-reports it without training again."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        saved = Path(folder) / REPORT
        return TrialReport.from_dict(json.loads(saved.read_text())) if saved.is_file() else None


def _epoch_reporter(context: StudyContext):
    """With ASHA, the first seed's validation scores after every epoch go to the scheduler."""
    if context.config.scheduler != "asha":
        return None
    return lambda metrics: tune.report({k: metrics[k] for k in (*METRICS, "epoch") if k in metrics})


def _finished_only_optuna_search():
    from ray.tune.search.optuna import OptunaSearch

    class FinishedOnlyOptunaSearch(OptunaSearch):
        """Tells Optuna a trial COMPLETE only when it ran to the end.

        Ray hands a scheduler-stopped trial's last (intermediate) result to on_trial_complete,
        which Optuna would take as that configuration's final value; it is PRUNED instead.
        """

        def suggest(self, trial_id: str):
            config = super().suggest(trial_id)
            # Optuna's own "<method>.<name>" keys stay in the searcher: the trial's config is its choice
            return {"choice": config["choice"]} if isinstance(config, dict) else config

        def on_trial_result(self, trial_id: str, result: dict):
            if result.get("final"):  # told on completion; as an intermediate step it would only repeat it
                return
            import optuna

            try:
                super().on_trial_result(trial_id, result)
            except optuna.exceptions.UpdateFinishedTrialError:  # re-run after --resume, closed in the journal
                pass

        def on_trial_complete(self, trial_id, result=None, error=False):
            error = error or bool(result and result.get("failed"))
            if error or (result is not None and not result.get("final")):
                result = None
            super().on_trial_complete(trial_id, result, error)

    return FinishedOnlyOptunaSearch


def searcher(config: StudyConfig, space: StudySpace, run_dir: Path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from ray.tune.search import ConcurrencyLimiter

    samplers = {
        "tpe": optuna.samplers.TPESampler,
        "nsga2": optuna.samplers.NSGAIISampler,
        "gp": optuna.samplers.GPSampler,
    }
    metrics = config.objectives
    modes = [OBJECTIVES[m] for m in metrics]
    search = _finished_only_optuna_search()(
        space=space,
        metric=metrics[0] if len(metrics) == 1 else metrics,
        mode=modes[0] if len(modes) == 1 else modes,
        sampler=samplers[config.sampler](seed=config.seed),
        study_name=config.name,
        storage=JournalStorage(JournalFileBackend(str(run_dir / JOURNAL))),
    )
    return (
        ConcurrencyLimiter(search, max_concurrent=config.max_concurrent) if config.max_concurrent else search
    )


class ResultsWriter(tune.Callback):
    """Writes each finished trial to the tables and prints one progress line."""

    def __init__(self, run_dir: Path, total: int, objective: str, say=print):
        self.run_dir, self.total, self.objective, self.say = Path(run_dir), total, objective, say
        self.tables = ResultsTables(self.run_dir)

    def __getstate__(self) -> dict:
        # Ray pickles callbacks with the experiment and restores them on --resume: rows come from disk then.
        return {"run_dir": self.run_dir, "total": self.total, "objective": self.objective, "say": self.say}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.tables = ResultsTables(self.run_dir)

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        report = TrialReport.from_dict(result["report"]) if "report" in result else TrialReport()
        if report.error:  # the trial's own error (divergence, out of memory, a bug in a component)
            status = "failed"
        else:  # stopped: early-stopped by the scheduler before its final report
            status = "completed" if result.get("final") else "stopped"
        self._record(trial, report, status)

    def on_trial_error(self, iteration, trials, trial, **info):
        # The error file is written locally first (get_error reads the synced copy, which may lag).
        path = trial.error_file
        text = Path(path).read_text() if path and Path(path).is_file() else trial.get_error()
        self._record(trial, TrialReport(error=last_error_line(text)), "failed")

    def _record(self, trial, report: TrialReport, status: str) -> None:
        choice: TrialChoice = trial.config["choice"]
        students = (
            self._relative(trial.checkpoint.path) if status == "completed" and trial.checkpoint else None
        )
        row = self.tables.add(
            trial.trial_id, choice, report, status, self._relative(getattr(trial, "path", None)), students
        )
        if row is None:
            return
        self.say(progress_line(len(self.tables.rows), self.total, row))
        if students:  # only each variant's best on validation keeps its students: they are what test scores
            self.tables.keep_best_students(choice.variant, self.objective, OBJECTIVES[self.objective])

    def _relative(self, path: str | None) -> str | None:
        """A path of Ray's, relative to the run folder when inside it."""
        if not path:
            return None
        try:
            return str(Path(path).resolve().relative_to(self.run_dir.resolve()))
        except ValueError:
            return str(path)


def make_tuner(
    config: StudyConfig,
    space: StudySpace,
    context: StudyContext,
    run_dir: Path,
    total: int,
    resume: bool,
    say=print,
) -> tune.Tuner:
    """A new Tuner, or the interrupted one restored (`resume`): its finished trials are not run again."""
    resources = {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial}
    runnable = tune.with_resources(tune.with_parameters(trainable, context=context), resources)
    grid = config.sampler == "grid"
    param_space = {"choice": tune.grid_search(space.grid())} if grid else None
    ray_dir = run_dir / RAY_DIR
    if resume and tune.Tuner.can_restore(str(ray_dir)):
        return tune.Tuner.restore(
            str(ray_dir), runnable, resume_unfinished=True, resume_errored=False, param_space=param_space
        )
    if grid:
        tune_config = tune.TuneConfig(
            num_samples=1, max_concurrent_trials=config.max_concurrent or None, reuse_actors=True
        )
    else:
        asha = config.scheduler == "asha"
        tune_config = tune.TuneConfig(
            search_alg=searcher(config, space, run_dir),
            num_samples=config.trials,
            scheduler=tune.schedulers.ASHAScheduler(time_attr="training_iteration", grace_period=1)
            if asha
            else None,
            metric=config.objectives[0] if asha else None,
            mode=OBJECTIVES[config.objectives[0]] if asha else None,
            reuse_actors=True,  # a worker keeps torch, the datasets and the teacher loaded between trials
        )
    run_config = tune.RunConfig(
        name=RAY_DIR,
        storage_path=str(run_dir),
        callbacks=[ResultsWriter(run_dir, total, config.objectives[0], say)],
        verbose=0,
        failure_config=tune.FailureConfig(max_failures=config.retries),
    )
    return tune.Tuner(
        runnable,
        tune_config=tune_config,
        run_config=run_config,
        **({"param_space": param_space} if grid else {}),
    )
