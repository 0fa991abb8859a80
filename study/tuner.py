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
import math
import os
import re
import shutil
import signal
import threading
import warnings
from pathlib import Path

import optuna
import torch
from ray import tune
from ray.tune.search import ConcurrencyLimiter

from kd.errors import StorageError
from kd.io import atomic_write, storage_error
from kd.metrics import METRICS, OBJECTIVES
from kd.run_folder import JOURNAL, RAY_DIR, SCRATCH
from study.config import StudyConfig
from study.contract import TrialChoice, TrialReport
from study.results import ResultsTables, last_error_line, progress_line
from study.space import StudySpace
from study.trial import StudyContext, run_trial

REPORT = "report.json"  # in a trial's checkpoint, next to its students' weights


class PicklableNSGAIISampler(optuna.samplers.NSGAIISampler):
    """NSGA-II without the thread lock that Optuna 5.1's genetic samplers keep and pickle refuses:
    Ray Tune pickles its searcher, sampler included, into the experiment's state."""

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_thread_lock"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()  # unused by Optuna versions without one


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


def trainable(config: dict, context: StudyContext) -> None:
    """Tune's function trainable: a report after every epoch (`final: False`; under ASHA the first
    seed's only) and one at the end (`final: True` tells the searcher the trial ran to the end)."""
    import ray

    choice: TrialChoice = config["choice"]
    students = tune.get_checkpoint()
    report = saved_report(students)
    if report is None:  # the usual case: train
        if context.config.workers_per_trial > 1:
            report = data_parallel_trial(choice, context)
        else:
            report = run_trial(choice, context, _epoch_reporter(context))
            report.workers, report.cpus, report.gpus = 1, *assigned_resources()
        report.node = ray.get_runtime_context().get_node_id()
        # The students' weights, with the report, travel as Ray's checkpoint: Ray copies them to
        # the study's storage, where the driver finds them even when this worker's node is gone.
        students = None
        if report.students and not report.error:
            text = json.dumps(dataclasses.asdict(report))
            atomic_write(Path(report.students) / REPORT, lambda partial: Path(partial).write_text(text))
            students = tune.Checkpoint.from_directory(report.students)
    run_dir = Path(context.config.out).resolve() / context.config.name
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
        try:
            tune.report(metrics, checkpoint=students)  # Ray copies the checkpoint into its folder
        except OSError as err:
            raise storage_error(run_dir / RAY_DIR, err) from err
        # the engine checkpoints and the students' local copy (Ray has its own now)
        shutil.rmtree(run_dir / SCRATCH / choice.key, ignore_errors=True)
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the next trial in this worker starts with the GPU's memory free


def data_parallel_trial(choice: TrialChoice, context: StudyContext) -> TrialReport:
    """The trial on `workers_per_trial` Ray Train workers (DDP: NCCL on GPUs, gloo on CPU), each
    with the trial's CPUs and GPUs. This Tune trial only coordinates them; the first worker writes
    the report next to the trial's checkpoints, in the run folder every node sees."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    config = context.config
    answer = Path(config.out) / config.name / SCRATCH / choice.key / REPORT
    answer.parent.mkdir(parents=True, exist_ok=True)
    answer.unlink(missing_ok=True)
    gpus = config.gpus_per_trial
    trainer = TorchTrainer(
        _data_parallel_worker,
        train_loop_config={"choice": choice, "context": context, "answer": str(answer)},
        scaling_config=ScalingConfig(
            num_workers=config.workers_per_trial,
            use_gpu=gpus > 0,
            resources_per_worker={"CPU": config.cpus_per_trial} | ({"GPU": gpus} if gpus else {}),
        ),
        torch_config=TorchConfig(backend="nccl" if gpus > 0 else "gloo"),
        run_config=RunConfig(
            name=f"train-{choice}",
            storage_path=str(Path(config.out) / config.name / RAY_DIR),
            callbacks=[TuneReportCallback()],  # the first worker's epoch reports reach this Tune trial
        ),
    )
    try:
        trainer.fit()
    except Exception as err:  # a worker died or could not start: the trial failed, the study goes on
        if StorageError.__name__ in str(err):  # a worker could not write: the study stops
            raise StorageError(answer.parent, f"a data-parallel worker could not write: {err}") from err
        if not answer.is_file():
            return TrialReport(error=f"data-parallel workers failed: {type(err).__name__}: {err}")
    return TrialReport.from_dict(json.loads(answer.read_text()))


def _data_parallel_worker(loop_config: dict) -> None:
    import ray.train
    import ray.train.torch

    from kd.distributed import world

    context: StudyContext = loop_config["context"]
    device = str(ray.train.torch.get_device()) if context.config.gpus_per_trial > 0 else "cpu"
    on_epoch = _epoch_reporter(context, send=ray.train.report)  # every rank reports: Ray Train wants all
    report = run_trial(loop_config["choice"], context, on_epoch, device=device)
    report.workers, report.cpus, report.gpus = world()[1], *assigned_resources()
    if world()[0] == 0:
        text = json.dumps(dataclasses.asdict(report))
        atomic_write(Path(loop_config["answer"]), lambda tmp: Path(tmp).write_text(text))


def assigned_resources() -> tuple[float, float]:
    """(CPUs, GPUs) Ray gave this process: what the trial (or one of its workers) ran on."""
    import ray

    assigned = ray.get_runtime_context().get_assigned_resources()
    return assigned.get("CPU", 0.0), assigned.get("GPU", 0.0)


def saved_report(checkpoint: tune.Checkpoint | None) -> TrialReport | None:
    """The report kept in a trial's checkpoint: Ray restores a trial that had finished when the
    driver was interrupted from it on --resume, and the trial re-reports it without training again."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        saved = Path(folder) / REPORT
        return TrialReport.from_dict(json.loads(saved.read_text())) if saved.is_file() else None


EPOCH_KEYS = ("seed", "seeds", "epoch", "epochs", "stage", "loss")  # what every epoch's report says


def _epoch_reporter(context: StudyContext, send=tune.report):
    """Every epoch of every seed goes to Tune (loggers, the live progress): its loss, stage and
    position, and validation scores where the trial evaluated (NaN elsewhere: Tune wants every
    objective in every result). ASHA judges the first seed's epochs only: the others are not sent.
    `send`: ray.train.report in a data-parallel trial's workers, which Ray hands on to Tune."""
    asha = context.config.scheduler == "asha"

    def report(metrics: dict) -> None:
        if asha and metrics["seed"] != 0:
            return
        scores = {m: float(metrics[m]) if m in metrics else float("nan") for m in METRICS}
        send({**scores, **{k: metrics[k] for k in EPOCH_KEYS if k in metrics}, "final": False})

    return report


def finished_only_optuna_search():
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
            if not all(math.isfinite(result.get(m, math.nan)) for m in self._metrics()):
                return  # an epoch that was not evaluated
            import optuna

            try:
                super().on_trial_result(trial_id, result)
            except optuna.exceptions.UpdateFinishedTrialError:  # re-run after --resume, closed in the journal
                pass

        def _metrics(self) -> list[str]:
            return self._metric if isinstance(self._metric, list) else [self._metric]

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

    samplers = {
        "tpe": optuna.samplers.TPESampler,
        "nsga2": PicklableNSGAIISampler,
        "gp": optuna.samplers.GPSampler,
    }
    metrics = config.objectives
    modes = [OBJECTIVES[m] for m in metrics]
    search = finished_only_optuna_search()(
        space=space,
        metric=metrics[0] if len(metrics) == 1 else metrics,
        mode=modes[0] if len(modes) == 1 else modes,
        sampler=samplers[config.sampler](seed=config.seed),
        study_name=config.name,
        storage=JournalStorage(JournalFileBackend(str(run_dir / JOURNAL))),
    )
    # always limited, so that --resume can change the limit (without one: every trial may run at once)
    return ConcurrencyLimiter(search, max_concurrent=max_concurrent(config) or config.trials)


INTERRUPTED = threading.Event()  # set by a Ctrl-C during tuner.fit(): the command then exits 130
STORAGE_FAULTS: list[StorageError] = []  # what trials could not write during tuner.fit()


class InterruptWatch(tune.Callback):
    """Notes a Ctrl-C. Tune catches it and stops the study gracefully (its state saved), then
    returns as if the study had ended; the command must still tell a script it was interrupted.
    Tune installs its handler before it sets up callbacks, so this wraps Tune's."""

    def setup(self, **info):
        INTERRUPTED.clear()
        STORAGE_FAULTS.clear()
        tune_handler = signal.getsignal(signal.SIGINT)
        if not callable(tune_handler) or threading.current_thread() is not threading.main_thread():
            return

        def noted(signum, frame):
            INTERRUPTED.set()
            tune_handler(signum, frame)

        signal.signal(signal.SIGINT, noted)


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

    def on_experiment_end(self, trials, **info):
        # A trial that finished while its row could not be written (a full disk) is recorded at the
        # end of --resume. Not after an interruption: Tune then ends the running trials as well.
        if INTERRUPTED.is_set() or STORAGE_FAULTS:
            return
        for trial in trials:
            if trial.status == "TERMINATED" and trial.trial_id not in self.tables.rows:
                self.on_trial_complete(None, trials, trial)

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        report = TrialReport.from_dict(result["report"]) if "report" in result else TrialReport()
        if report.error:  # the trial's own error (divergence, out of memory, a bug in a component)
            status = "failed"
        else:  # stopped: early-stopped by the scheduler before its final report
            status = "completed" if result.get("final") else "stopped"
        self._record(trial, report, status)

    def on_trial_error(self, iteration, trials, trial, **info):
        error = _error_line(trial)
        if fault := _storage_fault(error):  # not recorded: --resume runs it again
            _stop_for(fault)
        else:
            self._record(trial, TrialReport(error=error), "failed")

    def on_trial_recover(self, iteration, trials, trial, **info):
        if fault := _storage_fault(_error_line(trial)):  # a retry would only meet the same full disk
            _stop_for(fault)

    def _record(self, trial, report: TrialReport, status: str) -> None:
        choice: TrialChoice = trial.config["choice"]
        students = (
            self._relative(trial.checkpoint.path) if status == "completed" and trial.checkpoint else None
        )
        try:
            row = self.tables.add(
                trial.trial_id, choice, report, status, self._relative(getattr(trial, "path", None)), students
            )
        except StorageError as fault:  # the tables on disk stay as they were; on_experiment_end catches up
            self.tables = ResultsTables(self.run_dir)
            return _stop_for(fault)
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


def _error_line(trial) -> str:
    # The error file is written locally first (get_error reads the synced copy, which may lag).
    path = trial.error_file
    return last_error_line(Path(path).read_text() if path and Path(path).is_file() else trial.get_error())


def _storage_fault(error: str) -> StorageError | None:
    """The StorageError a trial raised, from the error line Ray relays, or None for another error."""
    name, _, message = error.partition(": ")
    if name.rsplit(".", 1)[-1] != StorageError.__name__:
        return None
    written = re.fullmatch(r"could not write (.+?) \((.*)\)", message)
    return StorageError(*(written.groups() if written else ("a file", message)))


def _stop_for(fault: StorageError) -> None:
    """Stop the study as a Ctrl-C does, for the first storage fault: Ray keeps the running and
    unstarted trials unfinished for --resume, and the driver then raises `fault`."""
    STORAGE_FAULTS.append(fault)
    if len(STORAGE_FAULTS) == 1 and threading.current_thread() is threading.main_thread():
        signal.raise_signal(signal.SIGINT)  # Tune's handler ends tuner.fit() after this step


def raise_storage_fault() -> None:
    """After tuner.fit(): raise the first StorageError a trial met, if any."""
    if STORAGE_FAULTS:
        raise STORAGE_FAULTS[0]


def trial_resources(config: StudyConfig) -> dict:
    """What Tune reserves for one trial: its CPUs and GPUs, or, for a data-parallel trial, nothing
    worth counting (its Ray Train workers reserve their own; Ray refuses an empty request)."""
    if config.workers_per_trial > 1:
        return {"cpu": 0, "memory": 1}
    return {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial}


def max_concurrent(config: StudyConfig) -> int | None:
    """The study's limit on trials at once; for data-parallel trials, as many as the cluster's
    CPUs and GPUs hold (their Tune trials reserve nothing, so Tune alone would start them all)."""
    if config.max_concurrent or config.workers_per_trial == 1:
        return config.max_concurrent or None
    import ray

    total = ray.cluster_resources()
    fits = total.get("CPU", 0) // (config.workers_per_trial * config.cpus_per_trial)
    if config.gpus_per_trial:
        fits = min(fits, total.get("GPU", 0) // (config.workers_per_trial * config.gpus_per_trial))
    return max(1, int(fits))


def restored_configs(tuner: tune.Tuner) -> tuple[tune.TuneConfig, tune.RunConfig]:
    """The TuneConfig and RunConfig a restored `tuner` will run with, to change in place.

    Ray restores the limits and callbacks the study started with and offers no public way to change
    them; this is the study's one use of the Tuner's private attributes, so that a Ray release that
    renames them fails the test of this function instead of resuming with the old limits."""
    local = tuner._local_tuner
    return local._tune_config, local._run_config


def make_tuner(
    config: StudyConfig,
    space: StudySpace,
    context: StudyContext,
    run_dir: Path,
    total: int,
    resume: bool,
    say=print,
    callbacks: list | None = None,
    verbose: bool = False,
) -> tune.Tuner:
    """A new Tuner, or the interrupted one restored (`resume`): its finished trials are not run
    again, and the rest run with this configuration's resources. Trials whose worker or node died
    (after `retries` attempts) run again: a crash is not a result. (Ray already saves most of them
    as unfinished: it keeps the RUNNING state of a trial whose actor died.) A trial that failed by
    its own error (a diverging loss) ended normally for Ray and stays failed."""
    runnable = tune.with_resources(tune.with_parameters(trainable, context=context), trial_resources(config))
    grid = config.sampler == "grid"
    param_space = {"choice": tune.grid_search(space.grid())} if grid else None
    ray_dir = run_dir / RAY_DIR
    if resume and tune.Tuner.can_restore(str(ray_dir)):
        return _restored_tuner(config, runnable, ray_dir, param_space, callbacks or [])
    run_config = tune.RunConfig(
        name=RAY_DIR,
        storage_path=str(run_dir),
        callbacks=[
            ResultsWriter(run_dir, total, config.objectives[0], say),
            InterruptWatch(),
            *(callbacks or []),
        ],
        verbose=2 if verbose else 0,
        failure_config=tune.FailureConfig(max_failures=config.retries),
    )
    return tune.Tuner(
        runnable,
        tune_config=_tune_config(config, space, run_dir),
        run_config=run_config,
        **({"param_space": param_space} if grid else {}),
    )


def _restored_tuner(config: StudyConfig, runnable, ray_dir: Path, param_space, callbacks: list) -> tune.Tuner:
    """The interrupted Tuner, with this configuration's limits and this driver's callbacks."""
    tuner = tune.Tuner.restore(
        str(ray_dir),
        runnable,
        resume_unfinished=True,
        resume_errored=True,
        param_space=param_space,
    )
    concurrent = max_concurrent(config)
    restored, run_config = restored_configs(tuner)
    restored.max_concurrent_trials = concurrent
    if isinstance(restored.search_alg, ConcurrencyLimiter):
        restored.search_alg.max_concurrent = concurrent or config.trials
    # the tables' writer keeps its rows; the other callbacks are this driver's, with its settings
    writers = [c for c in run_config.callbacks or [] if isinstance(c, ResultsWriter)]
    run_config.callbacks = [*writers, InterruptWatch(), *callbacks]
    return tuner


def _tune_config(config: StudyConfig, space: StudySpace, run_dir: Path) -> tune.TuneConfig:
    """A grid's Tune settings, or a search's: its Optuna searcher and ASHA when the study asks."""
    if config.sampler == "grid":
        return tune.TuneConfig(num_samples=1, max_concurrent_trials=max_concurrent(config), reuse_actors=True)
    asha = config.scheduler == "asha"
    return tune.TuneConfig(
        search_alg=searcher(config, space, run_dir),
        num_samples=config.trials,
        scheduler=tune.schedulers.ASHAScheduler(time_attr="training_iteration", grace_period=1)
        if asha
        else None,
        metric=config.objectives[0] if asha else None,
        mode=OBJECTIVES[config.objectives[0]] if asha else None,
        reuse_actors=True,  # a worker keeps torch, the datasets and the teacher loaded between trials
    )
