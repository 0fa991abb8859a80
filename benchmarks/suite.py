"""Every benchmark in one run: writes benchmarks/results/<date>.json and a markdown table.

    python -m benchmarks.suite                 # all figures: among them two default studies and a smoke one
    python -m benchmarks.suite --only engine,cache,orchestration
    python -m benchmarks.suite --only study_times --readme   # time the studies, then update the README
    python -m benchmarks.suite --readme        # the README's times table from the newest results only
    python -m benchmarks.suite --only engine,cache,reference_loop,fractional_gpus,preset_times --deadline 480

Figures that compare two things are measured side by side in this one run and reported as
a ratio. Goals: engine within 5 % of a plain loop; SD stage 1 at least 3x faster with the
teacher cache; SegKD at least 2x the steps per second of a loop written as the reference
scripts are (a GPU goal); 4 trials sharing a GPU at least 2.5x the trials per hour of one at a
time; orchestration under 1.5 s per trial beyond the trials' own work; the default study under
4 GiB of memory. GPU figures (fractional GPUs, preset times) are skipped, with the reason, on a
machine without one. The results file names the device (the GPU, else the CPU model) and torch's
version, and is rewritten after every figure: a run stopped early keeps the figures it finished.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from kd.run_folder import CONFIG, TIMING, TRIALS

sys.path.insert(0, str(Path(__file__).resolve().parent))
import engine_overhead  # noqa: E402
import readme_times  # noqa: E402
import reference_loop as reference  # noqa: E402
import teacher_cache  # noqa: E402
from common import device_name  # noqa: E402
from readme_times import duration  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
GOAL_ORCHESTRATION_S = 1.5
GOAL_MEMORY_GIB = 4.0
GOAL_SHARED_GPU = 2.5  # trials per hour, 4 trials sharing one GPU against one at a time
SD_PAPER_FLOPS_SHARE = 0.418
# A study that runs this long is stuck (the default takes minutes, even on 2 busy cores)
STUDY_TIMEOUT_S = 3 * 3600
# preset_times: camvid-11 as it stands takes about 10 minutes at 180x240 on one GPU (tools/offline_gpu);
# a short GPU session measures it cut to this (--preset-full: as it stands)
PRESET_SHORT = ["--epochs", "3", "--seeds", "1", "--teacher-epochs", "2"]
PRESET_SIZES = ("180,240", "360,480")
# When the run must end (time.monotonic(); None: no deadline): studies are stopped at it, and
# figures not yet started are skipped
DEADLINE: float | None = None
TEACHER_EPOCH = re.compile(r"^teacher (\S+): epoch \d+/(\d+) loss \S+ \(([\d.]+) s\)$", re.M)


def engine() -> dict:
    return engine_overhead.main([])


def cache() -> dict:
    return teacher_cache.main(
        [
            "--teacher",
            "deeplabv3_resnet50",
            "--split-point",
            "layer4",
            "--images",
            "16",
            "--epochs",
            "3",
            "--batch-size",
            "4",
        ]
    )


def orchestration(trials: int = 8) -> dict:
    """Per trial, the study's time beyond the trials' own work, with short trials run one at a time."""
    import pandas as pd

    from study import config as study_config
    from study.run import run_study

    with tempfile.TemporaryDirectory() as out:
        config = study_config.resolve(
            "smoke",
            overrides={
                "out": out,
                "name": "orchestration",
                "trials": trials,
                "max_concurrent": 1,
                "methods": ["baseline"],
            },
        )
        run_dir = run_study(config, say=lambda line: None)
        timing = json.loads((run_dir / TIMING).read_text())
        own = pd.read_parquet(run_dir / TRIALS)["duration_s"].sum()
    per_trial = (timing["fit_s"] - own) / trials
    print(
        f"orchestration: {trials} trials one at a time in {timing['fit_s']:.1f} s, "
        f"their own work {own:.1f} s: {per_trial:.2f} s per trial beyond it (goal < {GOAL_ORCHESTRATION_S} s)"
    )
    return {
        "trials": trials,
        "fit_s": timing["fit_s"],
        "trials_own_s": float(own),
        "overhead_s_per_trial": per_trial,
        "goal": f"< {GOAL_ORCHESTRATION_S} s per trial",
        "met": per_trial < GOAL_ORCHESTRATION_S,
    }


def _seconds_left() -> float:
    return STUDY_TIMEOUT_S if DEADLINE is None else min(STUDY_TIMEOUT_S, DEADLINE - time.monotonic())


def fractional_gpus() -> dict:
    """Trials per hour of the smoke preset's trials, 4 sharing one GPU (0.25 each) against one at a time."""
    if not torch.cuda.is_available():
        print("fractional GPUs: skipped: no GPU on this machine")
        return {"skipped": "no GPU on this machine", "goal": f"ratio >= {GOAL_SHARED_GPU}"}
    trials, runs = 8, {}
    for share in (1.0, 0.25):
        args = ["--preset", "smoke", "--trials", str(trials), "--methods", "baseline"]
        with tempfile.TemporaryDirectory() as out:
            run = _timed_study([*args, "--gpus-per-trial", str(share)], Path(out), timeout=_seconds_left())
        if run.get("wall_s") is None:
            return {"skipped": f"{share:g} GPU per trial: {run['skipped']}", "runs": runs}
        # The trials' phase: the preparation (teacher, caches) is the same whatever the share
        run["trials_per_hour"] = run["trials"] / run["fit_s"] * 3600
        runs[str(share)] = run
    ratio = runs["0.25"]["trials_per_hour"] / runs["1.0"]["trials_per_hour"]
    print(
        f"fractional GPUs on {device_name()}: trials per hour, one at a time "
        f"{runs['1.0']['trials_per_hour']:.0f}, 4 sharing the GPU {runs['0.25']['trials_per_hour']:.0f}: "
        f"{ratio:.2f}x (goal >= {GOAL_SHARED_GPU}x), CUDA MPS {'on' if _mps() else 'off'}"
    )
    return {
        "trials_per_hour": {share: run["trials_per_hour"] for share, run in runs.items()},
        "ratio": ratio,
        "goal": f"ratio >= {GOAL_SHARED_GPU}",
        "met": ratio >= GOAL_SHARED_GPU,
        "mps": _mps(),
        "runs": runs,
        "setup": f"python -m study.run {' '.join(args)} --gpus-per-trial 1.0 | 0.25; trials per hour "
        "from the trials' phase (timing.json fit_s)",
    }


def preset_times(full: bool = False) -> dict:
    """Wall time of the camvid-11 preset at 180x240 and 360x480, trials sharing one GPU (0.25 each)."""
    if not torch.cuda.is_available():
        print("preset times: skipped: no GPU on this machine")
        return {"skipped": "no GPU on this machine"}
    from kd.data import locate_camvid

    camvid = locate_camvid()
    if camvid is None or not (camvid / "train").is_dir():
        print("preset times: skipped: CamVid not found (set SEGKD_CAMVID)")
        return {"skipped": "CamVid not found: set SEGKD_CAMVID to its folder"}
    cut = [] if full else PRESET_SHORT
    figures = {"shortened": " ".join(cut) or None, "data": str(camvid), "mps": _mps()}
    for size in PRESET_SIZES:
        args = ["--preset", "camvid-11", "--image-size", size, "--gpus-per-trial", "0.25", *cut]
        with tempfile.TemporaryDirectory() as out:
            figures[size] = {"command": "python -m study.run " + " ".join(args)}
            figures[size].update(_timed_study(args, Path(out), timeout=_seconds_left()))
        run = figures[size]
        took = f"skipped: {run['skipped']}" if run.get("wall_s") is None else duration(run["wall_s"])
        print(f"preset times: camvid-11 at {size}" + (f" ({' '.join(cut)})" if cut else "") + f": {took}")
    return figures


def _mps() -> bool:
    """Whether a CUDA MPS control daemon is listening where this process's CUDA clients would look."""
    return (Path(os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps")) / "control").exists()


def student_vs_teacher() -> dict:
    """The SD paper's setting: DeepLabV3-ResNet50 split after layer4 and its SD student, at 512x1024."""
    from kd.metrics import count_flops, latency
    from kd.models import build_student, build_teacher

    teacher = build_teacher("deeplabv3_resnet50", num_classes=2).eval()
    student = build_student("sd", 2, teacher=teacher, split_point="layer4").eval()
    size = (1, 3, 512, 1024)
    figures = {}
    for name, model in (("teacher", teacher), ("student", student)):
        figures[f"{name}_gflops"] = count_flops(model, size) / 1e9
        figures[f"{name}_latency_ms"] = latency(model, size, warmup=1, repeats=3)["median_ms"]
    figures["flops_share"] = figures["student_gflops"] / figures["teacher_gflops"]
    figures["latency_share"] = figures["student_latency_ms"] / figures["teacher_latency_ms"]
    figures["sd_paper_flops_share"] = SD_PAPER_FLOPS_SHARE
    print(
        f"student/teacher at 512x1024: FLOPs {figures['flops_share']:.1%} "
        f"(SD paper {SD_PAPER_FLOPS_SHARE:.1%}), "
        f"latency {figures['latency_share']:.1%} ({figures['student_latency_ms']:.0f} / "
        f"{figures['teacher_latency_ms']:.0f} ms on CPU)"
    )
    return figures


def _descendants(root_pid: int) -> list[int]:
    """The process and all its descendants, from /proc (Linux)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents.setdefault(int(stat[stat.rindex(")") + 2 :].split()[1]), []).append(int(entry.name))
    found, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += parents.get(pid, [])
    return found


def _tree_memory(root_pid: int) -> tuple[int, int]:
    """(PSS, RSS) in bytes summed over a process and its descendants.

    RSS counts the shared pages of torch's libraries once per process; PSS splits them
    between the processes that share them, so its sum is what the machine really holds.
    """
    pss = rss = 0
    for pid in _descendants(root_pid):
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        except OSError:  # the process ended meanwhile
            continue
        fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in rollup[1:] if line.split()[1:]}
        pss, rss = pss + fields.get("Pss", 0), rss + fields.get("Rss", 0)
    return pss, rss


def default_study_memory() -> dict:
    """Peak resident memory of `python -m study.run` and every process it starts (Ray included)."""
    with tempfile.TemporaryDirectory() as out:
        study = subprocess.Popen(
            [sys.executable, "-m", "study.run", "--out", out],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        peak = peak_rss = 0
        started = time.perf_counter()
        stop = threading.Event()

        def sample():
            nonlocal peak, peak_rss
            while not stop.is_set():
                pss, rss = _tree_memory(study.pid)
                peak, peak_rss = max(peak, pss), max(peak_rss, rss)
                time.sleep(0.25)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = study.wait()
        stop.set()
        sampler.join()
    gib = peak / 2**30
    print(
        f"default study: peak memory {gib:.2f} GiB PSS over all its processes, Ray's included (goal < "
        f"{GOAL_MEMORY_GIB} GiB; summed RSS, shared libraries counted per process: "
        f"{peak_rss / 2**30:.2f} GiB), "
        f"{time.perf_counter() - started:.0f} s, exit code {code}"
    )
    return {
        "peak_gib": gib,
        "peak_rss_sum_gib": peak_rss / 2**30,
        "seconds": time.perf_counter() - started,
        "exit_code": code,
        "goal": f"< {GOAL_MEMORY_GIB} GiB",
        "met": gib < GOAL_MEMORY_GIB and code == 0,
    }


def _timed_study(args: list[str], out: Path, timeout: float = STUDY_TIMEOUT_S) -> dict:
    """One `python -m study.run` as a user starts it: a new process, its own Ray, an empty teacher cache;
    stopped after `timeout` seconds."""
    if timeout <= 0:
        return {"skipped": "the run's deadline had passed", "load_at_start": os.getloadavg()[0]}
    env = {
        **os.environ,
        # A fresh cache: a warm one skips the teacher's training, and a first run is what users meet
        "SEGKD_CACHE": str(out / "cache"),
        # This checkout's code, in the driver and in Ray's workers, whatever package is installed
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    log = out / "study.log"
    load, started = os.getloadavg()[0], time.perf_counter()
    with open(log, "w") as sink:
        study = subprocess.Popen(
            [sys.executable, "-m", "study.run", *args, "--out", str(out / "runs")],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = study.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(study)
            return {"skipped": f"still running after {timeout:.0f} s; stopped", "load_at_start": load}
        except BaseException:  # Ctrl-C, or a hard deadline: the study has its own session and would stay
            _stop(study)
            raise
    wall = time.perf_counter() - started
    text = log.read_text()
    if code != 0:
        tail = " | ".join(text.strip().splitlines()[-3:])
        return {"skipped": f"exit code {code}: {tail[-300:]}", "load_at_start": load}
    run_dir = next((out / "runs").iterdir())
    timing = json.loads((run_dir / TIMING).read_text())
    figures = {
        "wall_s": wall,
        "prepare_s": timing["prepare_s"],
        "fit_s": timing["fit_s"],
        "trials": timing["trials_recorded"],
        "seeds": json.loads((run_dir / CONFIG).read_text())["seeds"],
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_at_start": load,
        "load_at_end": os.getloadavg()[0],
        "teacher_cache": "empty",
    }
    epochs = TEACHER_EPOCH.findall(text)
    if epochs:
        figures["teacher_head"] = {
            "teacher": epochs[0][0],
            "epochs": len(epochs),
            "seconds": sum(float(seconds) for _, _, seconds in epochs),
        }
    else:
        figures["teacher_head"] = {"skipped": "the study's log shows no teacher training"}
    return figures


def _stop(study: subprocess.Popen) -> None:
    os.killpg(study.pid, signal.SIGINT)  # the study shuts its Ray down on Ctrl-C
    try:
        study.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(study.pid, signal.SIGKILL)
        study.wait()


def _camvid_sd(run: str | None) -> dict:
    """camvid-sd takes hours: its time is read from a finished run, never measured here."""
    if run is None:
        return {"skipped": "it takes hours; the suite reads a finished run's time with --camvid-sd-run RUN"}
    path = Path(run)
    timing_file = path / TIMING if path.is_dir() else path
    try:
        timing = json.loads(timing_file.read_text())
        config = json.loads((timing_file.parent / CONFIG).read_text())
    except (OSError, ValueError) as err:
        return {"skipped": f"cannot read {timing_file} or the config.json beside it: {err}"}
    from kd.run_folder import FINAL

    # A study scores its chosen trials on the test images only once every trial is recorded
    if not (timing_file.parent / FINAL).exists():
        return {"skipped": f"{timing_file.parent} has no {FINAL}: the study has not finished"}
    finished = datetime.datetime.fromtimestamp(timing_file.stat().st_mtime).strftime("%Y-%m-%d")
    figure = {
        "wall_s": timing.get("total_s", timing["prepare_s"] + timing["fit_s"]),
        "trials": timing["trials_recorded"],
        "seeds": config["seeds"],
        "source": str(timing_file),
        "finished": finished,
    }
    if "sessions" in timing:  # every session's time, summed (preparation is repeated by each)
        figure["sessions"] = len(timing["sessions"])
    else:  # written by a version that kept the last session's time only
        figure["caveat"] = "the last session's time if the study was resumed"
    return figure


def study_times(camvid_sd_run: str | None = None) -> dict:
    """Wall-clock time of the smoke preset and of the embedded default, as the README quotes them."""
    figures = {}
    for key, args in (("smoke", ["--preset", "smoke"]), ("default", [])):
        with tempfile.TemporaryDirectory() as out:
            figures[key] = _timed_study(args, Path(out), timeout=_seconds_left())
        study = figures[key]
        if study.get("wall_s") is None:
            print(f"study_times: {key}: skipped: {study['skipped']}")
        else:
            head = study["teacher_head"]
            print(
                f"study_times: {key}: {study['wall_s']:.0f} s wall ({study['trials']} trials x "
                f"{study['seeds']} seeds, prepare {study['prepare_s']:.0f} s, trials {study['fit_s']:.0f} s; "
                f"teacher head {head.get('seconds', 0):.0f} s) on {study['cores']} cores, load "
                f"{study['load_at_start']:.1f} -> {study['load_at_end']:.1f}"
            )
    figures["camvid_sd"] = _camvid_sd(camvid_sd_run)
    camvid = figures["camvid_sd"]
    print(
        f"study_times: camvid_sd: {camvid['skipped'] if 'skipped' in camvid else duration(camvid['wall_s'])}"
    )
    return figures


FIGURES = {
    "engine": engine,
    "cache": cache,
    "orchestration": orchestration,
    "reference_loop": lambda: reference.main([]),
    "fractional_gpus": fractional_gpus,
    "preset_times": preset_times,
    "student_vs_teacher": student_vs_teacher,
    "memory": default_study_memory,
    "study_times": study_times,
}


def markdown(results: dict) -> str:
    lines = ["| figure | value | goal | met |", "|---|---|---|---|"]
    rows = {
        "engine": lambda r: (
            f"engine {r['engine_ms_per_step']:.1f} vs plain {r['plain_ms_per_step']:.1f} ms/step "
            f"(ratio {r['ratio']:.3f}) on {r.get('device', 'an unrecorded device')}"
        ),
        "cache": lambda r: (
            f"{r['seconds_per_epoch_without_cache']:.2f} / {r['seconds_per_epoch_with_cache']:.2f} "
            f"s/epoch = {r['ratio']:.1f}x on {r.get('device', 'an unrecorded device')}; teacher forwards per "
            f"study {r['teacher_forwards_per_study_without_cache']} vs "
            f"{r['teacher_forwards_per_study_with_cache']}"
        ),
        "orchestration": lambda r: f"{r['overhead_s_per_trial']:.2f} s per trial",
        "reference_loop": lambda r: (
            f"SegKD {r['segkd_steps_per_s']:.2f} vs plain {r['plain_steps_per_s']:.2f} steps/s = "
            f"{r['ratio']:.2f}x on {r['device']} ({r['setup']}; {r['data']})"
            + ("" if r["met"] is not None else "; a GPU goal, not judged on a CPU")
        ),
        "fractional_gpus": lambda r: (
            f"{r['trials_per_hour']['0.25']:.0f} trials/h at 0.25 GPU each vs "
            f"{r['trials_per_hour']['1.0']:.0f} at 1.0 = {r['ratio']:.2f}x "
            f"(CUDA MPS {'on' if r['mps'] else 'off'})"
        ),
        "preset_times": lambda r: (
            "camvid-11"
            + (f" cut to {r['shortened']}" if r["shortened"] else "")
            + f", 0.25 GPU per trial, MPS {'on' if r['mps'] else 'off'}: "
            + "; ".join(
                f"{size} {duration(r[size]['wall_s']) if r[size].get('wall_s') else r[size]['skipped']}"
                for size in PRESET_SIZES
                if size in r
            )
        ),
        "student_vs_teacher": lambda r: (
            f"FLOPs {r['flops_share']:.1%} of the teacher (paper 41.8 %), latency {r['latency_share']:.1%}"
        ),
        "memory": lambda r: f"{r['peak_gib']:.2f} GiB peak PSS (summed RSS {r['peak_rss_sum_gib']:.2f} GiB)",
        "study_times": lambda r: "; ".join(
            f"{key} {duration(r[key]['wall_s'])}" if r[key].get("wall_s") else f"{key} skipped"
            for key in ("smoke", "default", "camvid_sd")
        ),
    }
    for name, result in results.items():
        if "error" in result:
            lines.append(f"| {name} | error: {result['error'][:100]} | | |")
            continue
        if isinstance(result.get("skipped"), str):
            lines.append(f"| {name} | skipped: {result['skipped']} | {result.get('goal', '')} | |")
            continue
        met = result.get("met")
        lines.append(
            f"| {name} | {rows[name](result)} | {result.get('goal', '')} | "
            f"{'' if met is None else ('yes' if met else 'no')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    global DEADLINE
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", help=f"comma-separated, from {', '.join(FIGURES)}")
    parser.add_argument(
        "--readme",
        action="store_true",
        help="rewrite the README's times table from the newest results that have study_times; alone, "
        "it measures nothing",
    )
    parser.add_argument(
        "--camvid-sd-run",
        metavar="RUN",
        help="study_times: a finished camvid-sd run folder (or its timing.json) to read that preset's time "
        "from; it is never run here",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        metavar="SECONDS",
        help="end the run this many seconds from now: studies running then are stopped (their figure says "
        "so), figures not started are skipped; the results file keeps every finished figure",
    )
    parser.add_argument(
        "--preset-full",
        action="store_true",
        help=f"preset_times: run camvid-11 as it stands, not cut to {' '.join(PRESET_SHORT)}",
    )
    args = parser.parse_args(argv)
    if args.deadline is not None:
        DEADLINE = time.monotonic() + args.deadline
    if args.readme and not args.only:
        return _readme()
    names = args.only.split(",") if args.only else list(FIGURES)
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        parser.error(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    results = {
        "machine": {
            "device": device_name(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda if torch.cuda.is_available() else None,
            "cpus": torch.get_num_threads(),
            "cores": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "code": _code(),
        "figures": {},
    }
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H%M%S")
    for name in names:
        print(f"--- {name}")
        if DEADLINE is not None and time.monotonic() >= DEADLINE:
            results["figures"][name] = {"skipped": f"the run's deadline ({args.deadline:g} s) had passed"}
            print(f"{name}: skipped: the deadline had passed")
        else:
            try:
                options = {"camvid_sd_run": args.camvid_sd_run} if name == "study_times" else {}
                options = {"full": args.preset_full} if name == "preset_times" else options
                results["figures"][name] = FIGURES[name](**options)
            except Exception as err:  # one broken figure must not lose the others
                results["figures"][name] = {"error": f"{type(err).__name__}: {err}"}
                print(f"{name}: error: {err}")
        _write(stamp, results)  # after every figure: a run stopped early keeps what it measured
    print(markdown(results["figures"]))
    print(f"written: {RESULTS / stamp}.json and .md")
    return _readme() if args.readme else 0


def _write(stamp: str, results: dict) -> None:
    (RESULTS / f"{stamp}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    machine, code = results["machine"], results["code"]
    header = (
        f"Device: {machine['device']}; torch {machine['torch']}"
        + (f" (CUDA {machine['cuda']})" if machine["cuda"] else "")
        + f"; {machine['cores']} cores; commit {(code['commit'] or 'unknown')[:12]}"
        + (f" with {len(code['changed_files'])} changed files" if code["changed_files"] else "")
        + f"; {stamp}\n\n"
    )
    (RESULTS / f"{stamp}.md").write_text(header + markdown(results["figures"]))


def _code() -> dict:
    """The commit measured, and whether the tree differed from it: times change with the code."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.rstrip("\n") if done.returncode == 0 else ""

    return {
        "commit": git("rev-parse", "HEAD") or None,
        "changed_files": git("status", "--porcelain").splitlines(),
    }


def _readme() -> int:
    source = readme_times.rewrite_readme()
    print(
        f"{readme_times.README}: times table {'from ' + source.name if source else 'empty: no results yet'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
