#!/usr/bin/env bash
# Everything that needs a GPU, in one command, for a GPU machine without internet access:
#
#   OUT=/path/to/folder benchmarks/gpu.sh [DEADLINE_S]      # from the repository root; default 540 s
#
# 1. nvidia-smi and the environment (torch, CUDA, Ray, Optuna);
# 2. the tests that need a GPU (tests/test_gpu.py and every test file that skips without CUDA);
# 3. python -m benchmarks.suite --only engine,cache,reference_loop (one process on the GPU);
# 4. CUDA MPS on where it works (MPS=0: off), then --only fractional_gpus,preset_times (trials
#    sharing the GPU), and MPS off again.
# Each step gets what is left of DEADLINE_S; a study still running at the suite's deadline is
# stopped and its figure says so; the suite rewrites its results file after every figure. Logs and
# the new benchmarks/results files are copied into $OUT (default /tmp/segkd-gpu-out).
#
# Needs the installed environment (SITE, default /tmp/segkd-site from tools/offline_gpu/run.sh
# install, goes on PYTHONPATH when present) and, for preset_times, CamVid: SEGKD_CAMVID=FOLDER
# (a copy at 180x240 from tools/offline_gpu/bundle.sh will do: the study resizes every file).
# Without a GPU the GPU parts are skipped with the reason, and what can be written still is.
set -uo pipefail
# Job control: background commands keep SIGINT, which stops the suite and its studies cleanly
set -m

deadline=${1:-540}
out=${OUT:-/tmp/segkd-gpu-out}
python=${PYTHON:-python}
site=${SITE:-/tmp/segkd-site}
started=$(date +%s)
mkdir -p "$out/results"
[ -d "$site" ] && export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0
left() { echo $((deadline - ($(date +%s) - started))); }
say() { echo "[gpu.sh $(($(date +%s) - started)) s] $*" | tee -a "$out/gpu.log"; }
marker=$(mktemp)  # results files newer than this one are this run's

# Run a command for at most $1 seconds (SIGINT first, as Ctrl-C), its output into $out/$2 and on screen
bounded() {
  local seconds=$1 log=$2
  shift 2
  if [ "$seconds" -lt 10 ]; then
    say "skipped (deadline): $*"
    return 0
  fi
  say "$* (at most $seconds s)"
  timeout -s INT -k 30 "$seconds" "$@" 2>&1 | tee -a "$out/$log"
  local status=${PIPESTATUS[0]}
  say "exit $status$([ "$status" = 124 ] && echo ': stopped at its deadline')"
}

if command -v nvidia-smi >/dev/null; then
  nvidia-smi 2>&1 | tee "$out/nvidia-smi.txt"
else
  say "no nvidia-smi on this machine" | tee "$out/nvidia-smi.txt"
fi
"$python" - <<'PY' 2>&1 | tee "$out/environment.txt"
import importlib, platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0))
for name in ("ray", "optuna", "pandas", "pyarrow"):
    try:
        print(name, importlib.import_module(name).__version__)
    except ImportError:
        print(name, "MISSING: the study figures will fail (tools/offline_gpu/run.sh install)")
PY
gpu=$("$python" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)

gpu_tests=$(grep -l "not torch.cuda.is_available()" tests/test_*.py | tr '\n' ' ')
bounded "$(($(left) < 150 ? $(left) : 150))" tests.txt "$python" -m pytest -q $gpu_tests tests/test_reference_loop.py

if [ "$gpu" = 1 ]; then
  # Leave the shared-GPU figures at least 300 s
  bounded $(($(left) - 300)) suite.txt "$python" -m benchmarks.suite --only engine,cache,reference_loop
else
  say "no CUDA GPU: engine, cache and reference_loop would be CPU figures here (python -m benchmarks.suite)"
fi

mps=off
if [ "$gpu" = 1 ] && [ "${MPS:-1}" = 1 ] && command -v nvidia-cuda-mps-control >/dev/null; then
  # Kernels of the trials sharing the GPU run side by side under MPS, not by turns
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/segkd-mps CUDA_MPS_LOG_DIRECTORY=/tmp/segkd-mps
  mkdir -p /tmp/segkd-mps
  nvidia-cuda-mps-control -d 2>/dev/null
  if timeout 60 "$python" -c "import torch; torch.ones(1, device='cuda').sum().item()" 2>/dev/null \
    && [ -n "$(echo get_server_list | nvidia-cuda-mps-control 2>/dev/null)" ]; then
    mps=on
  else
    echo quit | nvidia-cuda-mps-control 2>/dev/null
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
  fi
fi
say "CUDA MPS $mps"
# The suite stops its studies at its own deadline; the hard limit after it leaves them time to end
bounded $(($(left) - 20)) suite.txt "$python" -m benchmarks.suite --only fractional_gpus,preset_times \
  --deadline $(($(left) - 90))
[ "$mps" = on ] && echo quit | nvidia-cuda-mps-control

find benchmarks/results -newer "$marker" -type f -exec cp {} "$out/results/" \;
rm -f "$marker"
say "done: $(ls "$out/results" | tr '\n' ' ')in $out"
