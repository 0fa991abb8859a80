"""Every benchmark in one run: writes benchmarks/results/<date>.json and a markdown table.

    python benchmarks/suite.py                 # all figures (about 15 minutes on 2 CPUs)
    python benchmarks/suite.py --only engine,cache,orchestration

Figures that compare two things are measured side by side in this one run and reported as
a ratio. Goals: engine within 5 % of a plain loop; SD stage 1 at least 3x faster with the
teacher cache; orchestration under 1.5 s per trial beyond the trials' own work; the default
study under 4 GiB of memory. GPU figures (fractional GPUs) are skipped, with the reason,
on a machine without one.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import engine_overhead  # noqa: E402
import teacher_cache  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
GOAL_ORCHESTRATION_S = 1.5
GOAL_MEMORY_GIB = 4.0
SD_PAPER_FLOPS_SHARE = 0.418


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
        timing = json.loads((run_dir / "timing.json").read_text())
        own = pd.read_parquet(run_dir / "trials.parquet")["duration_s"].sum()
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


def fractional_gpus() -> dict:
    if not torch.cuda.is_available():
        print("fractional GPUs: skipped: no GPU on this machine")
        return {"skipped": "no GPU on this machine"}
    rates = {}
    for share in (1.0, 0.5, 0.25):
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "study.run",
                    "--preset",
                    "smoke",
                    "--out",
                    out,
                    "--trials",
                    "8",
                    "--gpus-per-trial",
                    str(share),
                    "--methods",
                    "baseline",
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                return {"error": done.stderr[-2000:]}
            rates[share] = 8 / (time.perf_counter() - started) * 3600
    print(
        "fractional GPUs: trials per hour " + ", ".join(f"{k:g} GPU each: {v:.0f}" for k, v in rates.items())
    )
    return {
        "trials_per_hour": {str(k): v for k, v in rates.items()},
        "ratio_half_vs_whole": rates[0.5] / rates[1.0],
    }


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


FIGURES = {
    "engine": engine,
    "cache": cache,
    "orchestration": orchestration,
    "fractional_gpus": fractional_gpus,
    "student_vs_teacher": student_vs_teacher,
    "memory": default_study_memory,
}


def markdown(results: dict) -> str:
    lines = ["| figure | value | goal | met |", "|---|---|---|---|"]
    rows = {
        "engine": lambda r: (
            f"engine {r['engine_ms_per_step']:.1f} vs plain {r['plain_ms_per_step']:.1f} ms/step "
            f"(ratio {r['ratio']:.3f})"
        ),
        "cache": lambda r: (
            f"{r['seconds_per_epoch_without_cache']:.2f} / {r['seconds_per_epoch_with_cache']:.2f} "
            f"s/epoch = {r['ratio']:.1f}x; teacher forwards per study "
            f"{r['teacher_forwards_per_study_without_cache']} vs {r['teacher_forwards_per_study_with_cache']}"
        ),
        "orchestration": lambda r: f"{r['overhead_s_per_trial']:.2f} s per trial",
        "fractional_gpus": lambda r: r.get("skipped") or str(r.get("trials_per_hour")),
        "student_vs_teacher": lambda r: (
            f"FLOPs {r['flops_share']:.1%} of the teacher (paper 41.8 %), latency {r['latency_share']:.1%}"
        ),
        "memory": lambda r: f"{r['peak_gib']:.2f} GiB peak PSS (summed RSS {r['peak_rss_sum_gib']:.2f} GiB)",
    }
    for name, result in results.items():
        if "error" in result:
            lines.append(f"| {name} | error: {result['error'][:100]} | | |")
            continue
        met = result.get("met")
        lines.append(
            f"| {name} | {rows[name](result)} | {result.get('goal', '')} | "
            f"{'' if met is None else ('yes' if met else 'no')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", help=f"comma-separated, from {', '.join(FIGURES)}")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(FIGURES)
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        parser.error(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    results = {
        "machine": {
            "cpus": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__,
        }
    }
    figures = {}
    for name in names:
        print(f"--- {name}")
        try:
            figures[name] = FIGURES[name]()
        except Exception as err:  # one broken figure must not lose the others
            figures[name] = {"error": f"{type(err).__name__}: {err}"}
            print(f"{name}: error: {err}")
    results["figures"] = figures
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H%M%S")
    (RESULTS / f"{stamp}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    table = markdown(figures)
    (RESULTS / f"{stamp}.md").write_text(table)
    print(table)
    print(f"written: {RESULTS / stamp}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
