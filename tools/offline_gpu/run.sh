#!/usr/bin/env bash
# On the GPU machine, from the repository root, with the folders bundle.sh made:
#   tools/offline_gpu/run.sh install SOFTWARE_DIR        # the packages into $SITE (default /tmp/segkd-site)
#   tools/offline_gpu/run.sh data DATA_DIR DEST          # WebP back to PNG; the study reads --data KIND:DEST
#   tools/offline_gpu/run.sh study DEADLINE_S PACK ARGS  # python -m study.run ARGS, stopped after DEADLINE_S
#                                                        # (SIGINT: the tables of finished trials are kept),
#                                                        # then its tables packed into PACK (.tgz);
#                                                        # MPS=1 first starts CUDA MPS (see below)
# Keep SITE, DEST and the study's --out outside the checkout: a fresh copy of the checkout may
# replace its ignored folders between two commands, and --resume needs the run folder as it was.
set -uo pipefail
site=${SITE:-/tmp/segkd-site}
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0
python=${PYTHON:-python3}
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
  deadline=$2 pack=$3
  shift 3
  started=$(date +%s)
  # MPS=1: kernels of the trials sharing a GPU run side by side. Without it the GPU runs one
  # process's kernels at a time, and a batch of 8 small images leaves most of an H200 idle.
  if [ "${MPS:-0}" = 1 ]; then
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/segkd-mps CUDA_MPS_LOG_DIRECTORY=/tmp/segkd-mps
    mkdir -p /tmp/segkd-mps
    nvidia-cuda-mps-control -d && echo "MPS started" || echo "MPS not started: the trials take turns on the GPU"
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
  run_dir=$("$python" - "$@" <<'PY'
import sys
from study.run import config_from_args, parse_args
config = config_from_args(parse_args(sys.argv[1:]))
print(config.run_dir.resolve())
PY
)
  # the tables, config, roles, teacher scores and logs; not the checkpoints, Ray's state or images
  tar -czf "$pack" --exclude=scratch --exclude=ray --exclude=samples.npz --exclude=driver.lock \
    -C "$(dirname "$run_dir")" "$(basename "$run_dir")"
  echo "study exit $status; tables of $run_dir in $pack"
  exit $status
  ;;
*)
  sed -n 2,10p "$0"
  exit 2
  ;;
esac
