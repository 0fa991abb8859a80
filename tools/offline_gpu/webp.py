"""Images of a dataset folder to lossless WebP and back (masks and other files copied as they are):
the resized CamVid is 47 MB as PNG and 35 MB as WebP, the same pixels.

python tools/offline_gpu/webp.py SRC DST webp   # where the bundle is made
python tools/offline_gpu/webp.py SRC DST png    # on the cluster, before the study reads DST
"""

import shutil
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image


def convert(job):
    source, target, to = job
    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as image:
        if to == "webp" and image.mode in ("RGB", "RGBA"):
            image.save(target.with_suffix(".webp"), "WEBP", lossless=True, quality=100, method=6)
            with Image.open(target.with_suffix(".webp")) as back:
                if not np.array_equal(np.asarray(back.convert(image.mode)), np.asarray(image)):
                    raise ValueError(f"{source}: WebP did not keep the pixels")
        elif to == "png" and source.suffix == ".webp":
            image.convert("RGB").save(target.with_suffix(".png"), compress_level=1)
        else:
            shutil.copyfile(source, target)


def main(source: Path, target: Path, to: str) -> None:
    if to not in ("webp", "png"):
        sys.exit(f"the third argument is webp or png, not {to!r}")
    images = (".png", ".webp")
    jobs = [(p, target / p.relative_to(source), to) for p in sorted(source.rglob("*")) if p.suffix in images]
    for path in source.rglob("*"):
        if path.is_file() and path.suffix not in images:
            (target / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target / path.relative_to(source))
    with Pool() as pool:
        pool.map(convert, jobs, chunksize=8)
    print(f"{len(jobs)} files -> {to} in {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
