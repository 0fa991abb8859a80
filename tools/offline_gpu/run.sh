#!/usr/bin/env bash
# On a node of the GPU cluster, from the repository root, with the folders bundle.sh made:
#   tools/offline_gpu/run.sh install SOFTWARE_DIR        # the packages into $SITE (default /tmp/segkd-site)
#   tools/offline_gpu/run.sh data DATA_DIR DEST          # WebP back to PNG; the study reads --data KIND:DEST
#   tools/offline_gpu/run.sh study DEADLINE_S PACK ARGS  # python -m study.run ARGS, stopped after DEADLINE_S
#                                                        # (SIGINT: the tables of finished trials are kept),
#                                                        # then its tables packed into PACK (.tgz)
#   tools/offline_gpu/run.sh start ARGS                  # python -m study.run ARGS (with --out ABSOLUTE_DIR)
#                                                        # detached: it outlives this job where the node
#                                                        # keeps processes after a job ends
#   tools/offline_gpu/run.sh wait SECONDS PACK           # wait for the started study up to SECONDS, then pack
#                                                        # its tables (exit: the study's; 75: still running)
# MPS=1 (study, start): CUDA MPS first, checked with one client; trials take turns on the GPU without it.
# Keep SITE, DEST, STATE (default /tmp/segkd-study: the started study's code copy, log and exit status)
# and the study's --out outside the checkout: a job may start from a fresh copy of the repository,
# without the ignored folders of the one before, and --resume needs the run folder as it was.
set -uo pipefail
# Job control: without it bash starts background commands with SIGINT ignored, Python keeps it
# ignored until Ray Tune installs its handler, and a deadline in the preparation goes unheard.
set -m
site=${SITE:-/tmp/segkd-site}
state=${STATE:-/tmp/segkd-study}
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0
python=${PYTHON:-python3}

# Kernels of the trials sharing a GPU run side by side under MPS; without it the GPU runs one
# process's kernels at a time, and a batch of 8 small images leaves most of an H200 idle.
start_mps() {
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/segkd-mps CUDA_MPS_LOG_DIRECTORY=/tmp/segkd-mps
  mkdir -p /tmp/segkd-mps
  nvidia-cuda-mps-control -d 2>/dev/null  # already running is fine
  # a CUDA client works, and it went through an MPS server (without a daemon CUDA runs without MPS)
  if timeout 60 "$python" -c "import torch; torch.ones(1, device='cuda').sum().item()" 2>/dev/null \
    && [ -n "$(echo get_server_list | nvidia-cuda-mps-control 2>/dev/null)" ]; then
    echo "MPS on"
  else
    echo "MPS not usable here: the trials take turns on the GPU"
    echo quit | nvidia-cuda-mps-control 2>/dev/null
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
  fi
}

# the tables, config, roles, teacher scores and logs; not the checkpoints, Ray's state or images
pack() {
  local pack=$1
  shift
  local run_dir
  run_dir=$("$python" - "$@" <<'PY'
import sys
from study.run import config_from_args, parse_args
config = config_from_args(parse_args(sys.argv[1:]))
print(config.run_dir.resolve())
PY
)
  [ -d "$run_dir" ] || { echo "no run folder $run_dir to pack"; return 1; }
  tar -czf "$pack" --exclude=scratch --exclude=ray --exclude=samples.npz --exclude=driver.lock \
    -C "$(dirname "$run_dir")" "$(basename "$run_dir")"
  echo "tables of $run_dir in $pack"
}

case "${1:-}" in
install)
  mkdir -p "$site" && tar -xJf "$2/ray-slim.tar.xz" -C "$site" \
    && "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$2"/*.whl \
    && "$python" -c "import ray, optuna, torch; print('ray', ray.__version__, 'optuna', optuna.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
    && echo "CUDA MPS: $(command -v nvidia-cuda-mps-control || echo 'not on this machine')"
  ;;
data)
  "$python" tools/offline_gpu/webp.py "$2" "$3" png
  ;;
study)
  deadline=$2 pack_file=$3
  shift 3
  started=$(date +%s)
  if [ "${MPS:-0}" = 1 ]; then
    start_mps
    trap 'echo quit | nvidia-cuda-mps-control 2>/dev/null' EXIT
  fi
  "$python" -m study.run "$@" &
  study=$!
  while kill -0 $study 2>/dev/null && [ $(($(date +%s) - started)) -lt "$deadline" ]; do sleep 5; done
  if kill -0 $study 2>/dev/null; then
    echo "deadline of $deadline s: stopping the study (continue it with --resume)"
    kill -INT $study
  fi
  wait $study
  status=$?
  pack "$pack_file" "$@"
  echo "study exit $status"
  exit $status
  ;;
start)
  shift
  out=""
  for ((i = 1; i < $#; i++)); do [ "${!i}" = --out ] && j=$((i + 1)) && out=${!j}; done
  case "$out" in
  /*) ;;
  *) echo "run.sh start needs --out ABSOLUTE_DIR outside the checkout (got '${out}'): the run folder must outlive the checkout's copy"; exit 2 ;;
  esac
  [ "${MPS:-0}" = 1 ] && start_mps
  # the study runs from a copy of the code: the next job may bring a fresh copy of the repository
  rm -rf "$state/code" "$state/exit" && mkdir -p "$state/code" && cp -r kd study search_spaces analysis "$state/code/"
  printf '%s\n' "$@" > "$state/args"
  export PYTHONPATH="$site:$state/code" STATE_DIR="$state"
  cd "$state/code" || exit 1
  setsid nohup bash -c \
    '"$0" -m study.run "$@" >> "$STATE_DIR/study.log" 2>&1; echo $? > "$STATE_DIR/exit"' \
    "$python" "$@" </dev/null >/dev/null 2>&1 &
  echo $! > "$state/pid"
  cd "$OLDPWD" || exit 1
  echo "study started (log: $state/study.log)"
  ;;
wait)
  seconds=$2 pack_file=$3
  started=$(date +%s)
  [ -f "$state/args" ] || { echo "no started study in $state (run.sh start ARGS first)"; exit 2; }
  while [ ! -f "$state/exit" ] && [ $(($(date +%s) - started)) -lt "$seconds" ]; do sleep 5; done
  mapfile -t args < "$state/args"
  grep -v '^\s*$' "$state/study.log" | tail -25
  pack "$pack_file" "${args[@]}"
  cp "$state/study.log" "${pack_file%.tgz}.log"  # every start's output, a --resume's after the first's
  if [ -f "$state/exit" ]; then
    echo "study exit $(cat "$state/exit")"
    exit "$(cat "$state/exit")"
  fi
  echo "study still running after $seconds s: wait again"
  exit 75
  ;;
*)
  sed -n 2,17p "$0"
  exit 2
  ;;
esac
