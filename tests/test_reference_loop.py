"""benchmarks/reference_loop.py: its plain loop reads files as the reference scripts do, and it returns
the fields the benchmark suite records. Times are never asserted."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_png

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import reference_loop  # noqa: E402


def test_the_plain_dataset_opens_its_files_at_every_sample(tmp_path):
    image = write_png(tmp_path / "image.png", np.full((20, 30, 3), 200))
    label = write_png(tmp_path / "label.png", np.array([[3, 11, 0] * 10] * 20))
    data = reference_loop.PlainFiles([(image, label)], crop=(16, 24), void=reference_loop.CAMVID_VOID)
    images, labels = data[0]
    assert images.shape == (3, 16, 24) and images.dtype == torch.float32
    assert labels.shape == (16, 24) and set(labels.unique().tolist()) <= {0, 3, 255}  # 11 is void
    assert abs(float(images.mean())) < 5  # normalised in numpy, not raw pixels
    image.unlink()
    with pytest.raises(FileNotFoundError):  # read from disk again, not held in memory
        data[0]


@pytest.mark.usefixtures("one_thread")
def test_both_loops_take_their_steps_and_return_what_the_suite_records(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGKD_CAMVID", str(tmp_path / "absent"))  # synthetic scenes written as PNG files
    samples = []
    read = reference_loop.PlainFiles.__getitem__
    monkeypatch.setattr(
        reference_loop.PlainFiles, "__getitem__", lambda self, i: samples.append(i) or read(self, i)
    )
    out = tmp_path / "figures.json"
    argv = ["--size", "48x64", "--batch-size", "2", "--steps", "2", "--rounds", "2", "--workers", "0"]
    result = reference_loop.main([*argv, "--device", "cpu", "--json", str(out)])
    assert len(samples) == 2 * 2 * 2  # rounds x steps x batch, each sample read from its files
    assert result["ratio"] == pytest.approx(result["segkd_steps_per_s"] / result["plain_steps_per_s"])
    assert result["met"] is None and "GPU" in result["goal"]  # a GPU goal, not judged on a CPU
    assert result["device"].startswith("CPU") and "PNG" in result["data"]
    assert [len(result["rounds"][side]) for side in ("segkd", "plain")] == [2, 2]
    assert json.loads(out.read_text())["command"].startswith(
        "python -m benchmarks.reference_loop --size 48x64"
    )
