"""Outputs of a frozen teacher, computed once and reused across epochs, seeds and trials.

What is cached: for each image of a dataset and each augmentation view of it, the teacher's
features at a split point (the SD "AMG" output) and/or its logits (the head's output before
upsampling), as `Segmenter.forward_parts` gives them on the teacher's own normalisation of
the transformed [0, 1] image.

Key: the entry directory is named by a content hash (sha256, first 20 hex digits) of the
teacher's name, input normalisation and weight digest, its class map when it has one and
logits are cached (kd.data.class_maps: name, classes and groups), the split point, the
outputs, the dataset fingerprint, repr(transform), the number of views, the augmentation
seed, the storage dtype and a format number. Any change of these gives a new entry; nothing is ever
looked up by a name that could go stale.

Layout under `root` ($SEGKD_CACHE/teacher_outputs, SEGKD_CACHE defaulting to ~/.cache/segkd):

    <key>/features.npy   [N images, V views, *feature shape]   (stored dtype)
    <key>/logits.npy     [N images, V views, classes, h, w]
    <key>/filled.npy     uint8 [N, V]: 1 where the entry has been written
    <key>/meta.json      the key's inputs and the output shapes, human readable

Arrays are memory-mapped `.npy` files: a training process reads only the rows it needs and
several processes share one copy through the page cache. Shapes are learned from the first
teacher forward, so a directory appears only once something is computed.

Concurrency: a directory is built under a temporary name and renamed onto `<key>`; the
rename fails when another process got there first, and the loser opens the winner's. Data
rows are written and flushed before their `filled` flag, so a flag never points at
unwritten data. Two processes computing the same entry write the same values (fill() runs
the teacher on fixed batches, so the batch composition is the same in every process).

Why a fixed bank of views: a random augmentation drawn afresh every epoch would never hit
the cache. `Augmented(..., views=V)` picks each epoch one of V reproducible views per image
(PairedTransform is deterministic per (seed, index, view)), so V teacher outputs per image
cover every epoch. A transform without random steps gives the same image for every view:
the cache then stores one view and maps every view to it.

Equality: with float32 storage a cached output equals, bitwise on CPU, the teacher's output
for that view computed in a batch of the same images. CPU kernels may differ in the last bits
between batch compositions (a batch of one takes another convolution path), i.e. within
float32 rounding. dtype="float16" halves the disk and memory and is equal within fp16
rounding (features beyond +-65504 would overflow). The teacher must stay frozen: its weights
are hashed once, when the cache is opened.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from numpy.lib.format import open_memmap

from kd.data.transforms import PairedTransform
from kd.errors import UserInputError
from kd.io import content_key
from kd.models.class_map import class_map_of
from kd.models.segmenter import Segmenter
from kd.models.teacher_training import cache_root, dataset_fingerprint, digest_state

CACHE_FORMAT = 1
OUTPUTS = ("features", "logits")
PROGRESS_SECONDS = 10  # a progress line at most this often: quick fills print one line
DTYPES = {"float32": np.float32, "float16": np.float16}


def default_root() -> Path:
    return cache_root() / "teacher_outputs"


class TeacherCache:
    """Teacher outputs per (image index, view), read from disk or computed once and stored.

    `transform` must leave images in [0, 1] (PairedTransform(normalize=False)); the teacher
    normalises its own copy. With a random transform `views` (V) is required and the images
    passed to `get` must be `transform(dataset[i], augment_seed, view)`, as
    `Augmented(dataset, transform, seed=augment_seed, views=V)` yields them.

    Counters: `teacher_forwards` (images the teacher ran on, by get and fill), `hits` and
    `misses` (entries looked up by get). `key` and `path` name the entry directory.
    """

    def __init__(
        self,
        teacher: Segmenter,
        point: str | None,
        dataset,
        transform: PairedTransform,
        *,
        views: int | None = 1,
        augment_seed: int = 0,
        outputs=("features",),
        root: str | os.PathLike | None = None,
        dtype: str = "float32",
        device: str | torch.device = "cpu",
    ):
        outputs = (outputs,) if isinstance(outputs, str) else tuple(outputs)
        unknown = [name for name in outputs if name not in OUTPUTS]
        if unknown or not outputs:
            raise UserInputError(
                f"teacher cache: unknown outputs {unknown or list(outputs)}; "
                "choose 'features' and/or 'logits'."
            )
        if point is not None:
            teacher.check_split_point(point)
        if views is not None and (isinstance(views, bool) or not isinstance(views, int) or views < 1):
            raise UserInputError(f"teacher cache: views must be a whole number of at least 1, got {views!r}.")
        if dtype not in DTYPES:
            raise UserInputError(f"teacher cache: dtype must be 'float32' or 'float16', got {dtype!r}.")
        if transform.normalizes:
            raise UserInputError(
                "teacher cache: the transform normalises images; pass PairedTransform(..., normalize=False) "
                "so batches stay in [0, 1] and the teacher (and each student) normalises its own copy."
            )
        if transform.random and views is None:
            raise UserInputError(
                "teacher cache: the transform is random, and a fresh view every epoch would never be reused; "
                "give a fixed bank of views (views=V) and train on Augmented(..., views=V)."
            )
        self.teacher, self.dataset, self.transform = teacher.eval(), dataset, transform
        self.outputs = tuple(name for name in OUTPUTS if name in outputs)
        self.point = point if point is not None else teacher.split_points[-1]
        self.views = views if transform.random else 1
        self.augment_seed = augment_seed if transform.random else 0
        self.dtype = np.dtype(DTYPES[dtype])
        self.device = torch.device(device)
        self.root = Path(root) if root is not None else default_root()
        self.recipe = {
            "format": CACHE_FORMAT,
            "teacher": teacher.name,
            "normalization": [list(teacher.input_mean), list(teacher.input_std)]
            + ([teacher.input_channels] if teacher.input_channels != "rgb" else []),
            "weights": digest_state(teacher),
            # Logits do not depend on where features would be taken.
            "point": self.point if "features" in self.outputs else None,
            "outputs": list(self.outputs),
            "dataset": dataset_fingerprint(dataset),
            "transform": repr(transform),
            "views": self.views,
            "augment_seed": self.augment_seed,
            "dtype": dtype,
        }
        class_map = class_map_of(teacher)
        # A map holds no weights, so the digest does not tell a mapped teacher's logits from its own;
        # features do not depend on it.
        if class_map is not None and "logits" in self.outputs:
            self.recipe["class_map"] = dataclasses.asdict(class_map)
        self.recipe = json.loads(json.dumps(self.recipe))  # as meta.json will give it back
        self.key = content_key(self.recipe, length=20)
        self.path = self.root / self.key
        self.teacher_forwards = self.hits = self.misses = 0
        self._filled: np.ndarray | None = None
        self._arrays: dict[str, np.ndarray] | None = None
        self._shapes: dict[str, tuple] | None = None
        self._open()

    @property
    def missing(self) -> int:
        """Entries (image, view) not computed yet."""
        total = len(self.dataset) * self.views
        if self._filled is None and not self._open():
            return total
        return total - int(np.count_nonzero(self._filled))

    def get(self, indices, views, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Teacher outputs for a batch: `images[k]` is view `views[k]` of image `indices[k]`, in [0, 1].

        Stored entries are read; missing ones are computed on their images and stored. Returns
        float32 tensors on `device`, in batch order.
        """
        index = self._check(indices, len(self.dataset), "index")
        view = self._view_slots(views, len(index))
        if images.shape[0] != len(index):
            raise ValueError(f"{images.shape[0]} images for {len(index)} indices")
        if self._filled is None:
            self._open()
        missing = (
            np.arange(len(index)) if self._filled is None else np.flatnonzero(self._filled[index, view] == 0)
        )
        self.hits += len(index) - len(missing)
        self.misses += len(missing)
        if len(missing):
            computed = self._compute(images[torch.from_numpy(missing)])
            self._store(index[missing], view[missing], computed)
        # Fresh entries are read back too, so they come out exactly as later reads will.
        return {
            name: torch.from_numpy(np.asarray(array[index, view], dtype=np.float32)).to(self.device)
            for name, array in self._arrays.items()
        }

    def fill(self, batch_size: int = 8, progress: Callable[[str], None] | None = print) -> int:
        """Compute every missing entry now; returns the number of images the teacher ran on."""
        if batch_size < 1:
            raise UserInputError(f"teacher cache: batch_size must be at least 1, got {batch_size}.")
        say = progress or (lambda message: None)
        entries = [(i, v) for v in range(self.views) for i in range(len(self.dataset))]
        # Fixed batches, so a process filling beside another computes the same batches, bit for bit.
        batches = [
            np.array(entries[start : start + batch_size]).T for start in range(0, len(entries), batch_size)
        ]
        started, before, already = time.time(), self.teacher_forwards, len(entries) - self.missing
        shown = started
        for number, (index, view) in enumerate(batches, 1):
            if self._filled is None:
                self._open()
            todo = np.ones(len(index), bool) if self._filled is None else self._filled[index, view] == 0
            if todo.any():
                samples = [
                    self.transform(self.dataset[int(i)], self.augment_seed, int(v))
                    for i, v in zip(index, view, strict=True)
                ]
                computed = self._compute(torch.stack([sample["image"] for sample in samples]))
                self._store(index[todo], view[todo], {name: out[todo] for name, out in computed.items()})
            if number < len(batches) and time.time() - shown >= PROGRESS_SECONDS:
                shown = time.time()
                done = min(number * batch_size, len(entries))
                say(
                    f"teacher cache {self.key}: {done}/{len(entries)} entries ({100 * done // len(entries)}%)"
                )
        forwards = self.teacher_forwards - before
        say(
            f"teacher cache {self.key}: {len(entries)} entries "
            f"({len(self.dataset)} images x {self.views} views), {already} already stored, "
            f"{forwards} teacher forwards in {time.time() - started:.1f} s -> {self.path}"
        )
        return forwards

    def _check(self, values, size: int, what: str) -> np.ndarray:
        array = np.asarray(torch.as_tensor(values).cpu(), dtype=np.int64).reshape(-1)
        bad = array[(array < 0) | (array >= size)]
        if len(bad):
            raise UserInputError(f"teacher cache: {what} {int(bad[0])} out of range; valid: 0..{size - 1}.")
        return array

    def _view_slots(self, views, count: int) -> np.ndarray:
        if views is None:
            return np.zeros(count, np.int64)
        if self.transform.random:
            slots = self._check(views, self.views, "view")
        else:  # every view is the same image, stored once
            slots = self._check(views, np.iinfo(np.int64).max, "view") * 0
        if len(slots) != count:
            raise ValueError(f"{len(slots)} views for {count} indices")
        return slots

    def _compute(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        """Teacher outputs for a batch, already rounded to the storage dtype."""
        self.teacher.eval()
        device = next(self.teacher.parameters()).device
        with torch.no_grad():
            x = self.teacher.normalize(images.to(device, torch.float32))
            parts = self.teacher.forward_parts(x, self.point, want=self.outputs)
        self.teacher_forwards += len(images)
        computed = {name: parts[name].cpu().numpy().astype(self.dtype) for name in self.outputs}
        shapes = {name: out.shape[1:] for name, out in computed.items()}
        if self._shapes is None:
            self._shapes = shapes
        elif shapes != self._shapes:
            raise UserInputError(
                "teacher cache: the teacher's outputs changed shape between batches "
                f"({self._shapes} then {shapes}); "
                "every image must have one size: give the transform a resize or crop."
            )
        return computed

    def _store(self, index: np.ndarray, view: np.ndarray, computed: dict[str, np.ndarray]) -> None:
        self._storage(self._shapes)
        for name, array in self._arrays.items():
            array[index, view] = computed[name]
            array.flush()
        self._filled[index, view] = 1  # only after the data is on its way to disk
        self._filled.flush()

    def _storage(self, shapes: dict[str, tuple]) -> None:
        """Make sure an entry directory holding outputs of `shapes` is open."""
        for _ in range(4):  # create and open; once more if the one opened (another process's) was damaged
            if self._arrays is None and not self._open():
                self._create(shapes)
                continue
            stored = {name: array.shape[2:] for name, array in self._arrays.items()}
            if stored == shapes:
                return
            self._discard(f"it stores outputs of shape {stored} but the teacher gives {shapes}")
        raise RuntimeError(f"could not set up the teacher cache directory {self.path}")

    def _open(self) -> bool:
        if not self.path.is_dir():
            return False
        grid = (len(self.dataset), self.views)
        try:
            meta = json.loads((self.path / "meta.json").read_text())
            if meta.get("recipe") != self.recipe:
                raise ValueError("meta.json does not match the key")
            filled = np.load(self.path / "filled.npy", mmap_mode="r+")
            arrays = {name: np.load(self.path / f"{name}.npy", mmap_mode="r+") for name in self.outputs}
            if filled.shape != grid or filled.dtype != np.uint8:
                raise ValueError(f"filled.npy is {filled.dtype} {filled.shape}, expected uint8 {grid}")
            for name, array in arrays.items():
                expected = grid + tuple(meta["shapes"][name])
                if array.shape != expected or array.dtype != self.dtype:
                    raise ValueError(f"{name}.npy is {array.dtype} {array.shape}, meta.json says {expected}")
        except (
            OSError,
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
        ) as err:  # JSONDecodeError is a ValueError
            self._discard(str(err))
            return False
        self._filled, self._arrays = filled, arrays
        return True

    def _create(self, shapes: dict[str, tuple]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        partial = self.root / f".{self.key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        partial.mkdir()
        grid = (len(self.dataset), self.views)
        for name, shape in shapes.items():
            open_memmap(
                partial / f"{name}.npy", mode="w+", dtype=self.dtype, shape=grid + tuple(shape)
            ).flush()
        open_memmap(partial / "filled.npy", mode="w+", dtype=np.uint8, shape=grid).flush()
        meta = {
            "key": self.key,
            "recipe": self.recipe,
            "shapes": {name: list(shape) for name, shape in shapes.items()},
        }
        (partial / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        # Not kd.io.atomic_write, which is for files: here losing the race is no error (the loser
        # opens the winner's folder), and the loser's partial is a folder to remove.
        try:
            os.rename(partial, self.path)
        except OSError as err:
            shutil.rmtree(partial, ignore_errors=True)
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            # Another process created it first: theirs is opened instead.

    def _discard(self, reason: str) -> None:
        """Move a damaged entry directory aside (kept for inspection) so that it is rebuilt."""
        warnings.warn(
            f"teacher cache {self.path} is damaged ({reason}); moving it aside and rebuilding", stacklevel=3
        )
        self._filled = self._arrays = None
        aside = self.path.with_name(f"{self.key}.broken-{os.getpid()}")
        shutil.rmtree(aside, ignore_errors=True)
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            pass  # another process moved it first
