"""python -m study.run: launch (or resume) a distillation study.

    python -m study.run                               # the embedded default: synthetic data, CPU, minutes
    python -m study.run --preset smoke                # a few tiny trials (README: Measured times)
    python -m study.run --config study.toml --gpus-per-trial 0.5
    python -m study.run --config study.toml --address auto   # on an existing Ray cluster
    python -m study.run --name my-study --resume      # continue an interrupted study
    # a teacher of Cityscapes' 19 classes distils into CamVid's 11 (docs/guide/teachers.md)
    python -m study.run --preset camvid-11 --teacher-checkpoint cs.pth --teacher-class-map cityscapes-camvid11

Ray Tune runs the trials in parallel (a CPU slot, a GPU or a fraction of one each), Optuna
picks the configurations (TPE; NSGA-II or GP for several objectives), and the results are
written to runs/<name>/ as trials finish.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from kd.errors import StorageError, UserInputError
from kd.run_folder import CONFIG, CURVES, FINAL, PER_IMAGE, RESUMABLE, SCRATCH, TIMING, TRIALS
from study import config as study_config
from study.config import PRESETS, StudyConfig
from study.flags import add_setting_flags, flag, given


class StudyStopped(Exception):
    """The study ended before every requested trial was recorded (its tables and report are written)."""

    def __init__(self, recorded: int, total: int, interrupted: bool):
        super().__init__(f"{recorded} of {total} trials recorded")
        self.recorded, self.total, self.interrupted = recorded, total, interrupted


class TestScoringFailed(Exception):
    """Every trial is recorded but the chosen students were not scored on the test images (the
    tables and the report are written; --resume scores them)."""

    __test__ = False  # pytest: not a test class


def run_study(
    config: StudyConfig, resume: bool = False, say=print, changes: dict | None = None, progress: str = "live"
) -> Path:
    """Validate, prepare shared artefacts once, run the trials with Ray Tune; returns the run directory.

    `resume`: continue the study saved in config's run folder, with `changes` to the settings that
    may change on resume (kd.run_folder.RESUMABLE: resources, the cluster, the cache folder).
    `progress`: "live" (a bar per running trial on a terminal), "quiet" (nothing but errors and
    the end) or "verbose" (Ray Tune's own status table too)."""
    config, space = _checked(config, resume, changes or {})
    from study.lock import RunLock

    with RunLock(config.run_dir.resolve()):
        return _run(config, space, resume, say, progress)


def _run(config: StudyConfig, space, resume: bool, say, progress: str) -> Path:
    from study.tuner import quiet_ray

    quiet_ray()
    run_dir, started = config.run_dir.resolve(), time.perf_counter()
    total = len(space.grid()) if config.sampler == "grid" else config.trials
    say(
        f"study {config.name}: {', '.join(config.methods)} on {config.data}, {total} trials x "
        f"{config.seeds} seeds, sampler {config.sampler}, objectives {', '.join(config.objectives)} "
        f"-> {run_dir}"
    )
    if resume and _finished(run_dir, total):
        say(
            f"study {config.name} is finished: all {total} trials are recorded and the chosen students "
            f"scored on test ({run_dir / FINAL}); nothing to resume. A new study needs a new --name."
        )
        return run_dir
    shared = _prepare_shared(config, space, run_dir, say, total)
    say(f"shared artefacts ready in {time.perf_counter() - started:.0f} s")
    fit_started = time.perf_counter()
    tables = _fit(config, space, shared, run_dir, total, resume, say, progress)
    _record_timing(run_dir, fit_started - started, time.perf_counter() - fit_started, len(tables.rows))
    counts = tables.counts()
    say(
        f"study {config.name}: {counts['completed']} completed, {counts['failed']} failed, "
        f"{len(tables.rows)} of {total} trials recorded in {time.perf_counter() - started:.0f} s"
    )
    return _finish(config, run_dir, shared, tables, total, say)


def _finished(run_dir: Path, total: int) -> bool:
    """Every trial recorded, none failed, and the test scores written: resuming would only redo
    the preparation and the test scoring."""
    from study.results import ResultsTables

    tables = ResultsTables(run_dir)
    return (run_dir / FINAL).is_file() and len(tables.rows) >= total and not tables.counts()["failed"]


def _prepare_shared(config: StudyConfig, space, run_dir: Path, say, total: int):
    """Start (or join) Ray and prepare what every trial shares (study.prepare); a configuration
    error found here (or too little free space for `total` trials) leaves no Ray instance of ours
    running."""
    from study.cluster import ray_disk_warning, resource_problems, start_ray
    from study.prepare import check_files, prepare
    from study.tasks import run_work, runs_on_ray
    from study.trial import check_free_space

    local = not runs_on_ray(config)
    if local:  # a corrupt file is named before Ray starts; a Ray task checks them where it runs
        check_files(config, say)
    if config.address is None and (warning := ray_disk_warning()):
        say(f"warning: {warning}")
    started_ray = start_ray(config.address, connect_timeout_s=config.connect_timeout_s)
    try:
        _refuse_impossible(resource_problems(config, config.check_resources))
        study_config.save(config, run_dir)
        shared = run_work(prepare, config, space, run_dir, local, say=say)
        check_free_space(config, run_dir, shared.num_classes, total, say)
    except UserInputError:
        if started_ray:
            import ray

            ray.shutdown()
        raise
    _release_memory()
    return shared


def _fit(config: StudyConfig, space, shared, run_dir: Path, total: int, resume: bool, say, progress: str):
    """Run (or continue) the trials with Ray Tune; the tables as the trials left them."""
    from study.cluster import ResourceWaitWarning
    from study.results import ResultsTables
    from study.trial import StudyContext, space_advice
    from study.tuner import make_tuner, raise_storage_fault
    from study.watch import watchers

    if resume:
        say(f"resuming: {len(ResultsTables(run_dir).rows)} trial(s) already finished")
    callbacks = [ResourceWaitWarning(config, say=say), *watchers(config, run_dir, progress, say)]
    context = StudyContext(config, shared)
    verbose = progress == "verbose"
    try:
        make_tuner(config, space, context, run_dir, total, resume, say, callbacks, verbose).fit()
        raise_storage_fault()
    except StorageError as err:  # the tables hold what was written; the trial it hit runs on --resume
        advice = space_advice(config, run_dir, shared.num_classes, total)
        raise StorageError(err.path, err.cause, err.errno, advice) from err
    return ResultsTables(run_dir)  # on resume Ray ran its restored copy of the writer


def _finish(config: StudyConfig, run_dir: Path, shared, tables, total: int, say) -> Path:
    """Once every trial is recorded, score the chosen students on test; write the report either way
    (unless --no-report).
    Raises StudyStopped when trials are missing, TestScoringFailed when scoring failed."""

    failed, recorded = tables.counts()["failed"], len(tables.rows)
    again = f"python -m study.run --name {config.name} --out {config.out} --resume"
    if failed:
        say(
            f"{failed} trial(s) failed: the error column of {TRIALS} says why; trials whose "
            f"worker or node died run again with: {again}"
        )
    scoring_error = None
    if recorded >= total:
        if not failed:  # a crashed trial run again continues from its seeds' checkpoints
            shutil.rmtree(run_dir / SCRATCH, ignore_errors=True)
        scoring_error = _score_on_test(config, run_dir, shared, say)
    else:
        say(
            f"the study stopped early; continue it with: {again}; the chosen trials are scored on "
            "the test images at the end"
        )
    if config.report:
        _write_report(run_dir, say)
    else:
        _say_tables(run_dir, say)
        say(f"report: not written (--no-report); write it with: python -m analysis.report {run_dir}")
    if recorded < total:
        from study.tuner import INTERRUPTED

        raise StudyStopped(recorded, total, INTERRUPTED.is_set())
    if scoring_error:
        raise TestScoringFailed(scoring_error)
    return run_dir


def _record_timing(run_dir: Path, prepare_s: float, fit_s: float, recorded: int) -> None:
    """timing.json, for benchmarks: this session's preparation and trial time at the top, and every
    session's in `sessions`, so a study continued with --resume still has its whole wall time."""
    path = run_dir / TIMING
    try:
        sessions = json.loads(path.read_text()).get("sessions", [])
    except (OSError, ValueError):  # the first session, or a file from a version without sessions
        sessions = []
    session = {"prepare_s": prepare_s, "fit_s": fit_s, "trials_recorded": recorded}
    sessions.append(session)
    total = sum(s["prepare_s"] + s["fit_s"] for s in sessions)
    path.write_text(json.dumps({**session, "total_s": total, "sessions": sessions}, indent=1) + "\n")


def _checked(config: StudyConfig, resume: bool, changes: dict):
    """(the configuration that runs, its resolved search space); a resumed study runs what it
    started with, on the resources `changes` may give it."""
    run_dir = config.run_dir.resolve()
    if resume:
        config = study_config.resumed(run_dir, changes)
        _refuse_mixed_precision(config, run_dir)
    elif (run_dir / CONFIG).exists():
        raise UserInputError(
            f"{run_dir} already holds a study; add --resume to continue it, or choose another --name."
        )
    space = study_config.validate(config)
    _check_writable(run_dir)
    return config, space


def _refuse_mixed_precision(config: StudyConfig, run_dir: Path) -> None:
    """A study resumed on other resources must train in the arithmetic its recorded trials used:
    with GPUs, amp's autocast (bf16 by default); on CPUs, fp32."""
    import pandas as pd

    from kd.engine import precision

    if not (run_dir / TRIALS).is_file():
        return
    recorded = pd.read_parquet(run_dir / TRIALS).get("precision", pd.Series(dtype=object)).dropna()
    before = sorted(set(recorded))
    now = precision(config.amp, "cuda" if config.gpus_per_trial > 0 else "cpu")
    if before and before != [now]:
        raise UserInputError(
            f"the trials recorded so far trained in {', '.join(before)}; resumed with gpus_per_trial = "
            f"{config.gpus_per_trial:g} and amp = {config.amp!r} the rest would train in {now}, and the "
            "study would compare arithmetic as well as methods. Resume on the kind of machine it "
            "started on; a study meant to move between CPUs and GPUs starts with --amp off (fp32 on both)."
        )


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


def _refuse_impossible(found: list[str]) -> None:
    """Requests no node can ever satisfy stop the study here: Ray would wait for them forever."""
    if found:
        listing = "\n".join(f"  - {problem}" for problem in found)
        raise UserInputError(f"the cluster cannot run these trials:\n{listing}")


def _release_memory() -> None:
    """Give freed heap memory back to the system (glibc only; elsewhere a no-op)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _score_on_test(config: StudyConfig, run_dir: Path, shared, say) -> str | None:
    """Test once, after selection (final.parquet). A failure here keeps every table, says how to
    retry and is returned (None after success): the report is still written before the study fails."""
    from study.final import score_chosen
    from study.tasks import run_work

    try:
        run_work(score_chosen, config, run_dir, shared, say=say)
    except Exception as err:
        problem = (
            f"test scoring failed ({type(err).__name__}: {err}); the tables are intact: fix the cause "
            f"and score again with: python -m study.run --name {config.name} --out {config.out} --resume"
        )
        say(problem)
        return problem
    return None


def _say_tables(run_dir: Path, say) -> None:
    say(f"results: {run_dir / TRIALS}, {run_dir / PER_IMAGE}, {run_dir / CURVES}")


def _write_report(run_dir: Path, say) -> None:
    _say_tables(run_dir, say)
    try:
        from analysis.report import write_report

        say(f"report: {write_report(run_dir)}")
    except Exception as err:  # the tables are written; a report problem must not hide them
        say(f"report not written ({type(err).__name__}: {err}); try: python -m analysis.report {run_dir}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m study.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="a TOML study file (the settings below as keys; [space.METHOD], [students] and "
        "[student_weights] tables); command-line values override it",
    )
    parser.add_argument(
        "--preset",
        default="default",
        choices=list(PRESETS),
        help="starting point, a study file of study/presets: "
        + "; ".join(f"{name}: {summary}" for name, summary in study_config.preset_summaries().items())
        # argparse formats help with %
        .replace("%", "%%"),
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the study --name with its saved configuration; it may run on other resources "
        f"({', '.join(flag(name) for name in RESUMABLE)}) but nothing that changes results; trials "
        "whose worker or node died run again",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show Python tracebacks for configuration errors too"
    )
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--quiet", action="store_true", help="no progress: only errors and the study's end")
    shown.add_argument("--verbose", action="store_true", help="Ray Tune's own status table as well")
    add_setting_flags(parser)
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> StudyConfig:
    return study_config.resolve(args.preset, args.config, given(args))


def _errors_only(line: str) -> None:
    """--quiet: what needs the user (failures, how to continue, where the results are) still shows."""
    if any(
        word in line for word in ("failed", "error", "warning", "--resume", "results:", "report:", "waited")
    ):
        from tqdm import tqdm

        tqdm.write(line)


def main(argv=None) -> int:
    args = parse_args(argv)
    config = None  # until the flags make one
    try:
        config = config_from_args(args)
        changes = {
            **(study_config.read_study_file(args.config) if args.config else {}),
            **given(args),
        }
        progress = "quiet" if args.quiet else "verbose" if args.verbose else "live"
        from tqdm import tqdm

        say = tqdm.write if not args.quiet else _errors_only  # above the live bars, not through them
        run_study(
            config,
            resume=args.resume,
            changes=changes,
            progress=progress,
            say=say,
        )
    except UserInputError as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except StorageError as err:  # a full disk: the machine's fault, said with how to continue
        print(f"error: {err}", file=sys.stderr)
        return 1
    except StudyStopped as stopped:  # how to continue is said already
        return 130 if stopped.interrupted else 1
    except TestScoringFailed:  # said already, with how to score again
        return 1
    except KeyboardInterrupt:
        saved = config is not None and (Path(config.out) / config.name / CONFIG).is_file()
        again = "continue with --resume" if saved else "nothing was saved; start the study again"
        print(f"interrupted: {again}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
