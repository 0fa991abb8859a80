"""tools/offline_gpu: the WebP round trip keeps every pixel; run.sh stops a study at its deadline
and packs its tables without checkpoints, Ray's state or images."""

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import write_png
from PIL import Image

TOOLS = Path(__file__).resolve().parents[1] / "tools" / "offline_gpu"


def test_webp_there_and_back_keeps_every_image_mask_and_file(tmp_path):
    rng = np.random.default_rng(0)
    image = write_png(tmp_path / "camvid" / "train" / "a.png", rng.integers(0, 256, (36, 48, 3)))
    mask = write_png(tmp_path / "camvid" / "trainannot" / "a.png", rng.integers(0, 12, (36, 48)))
    (tmp_path / "camvid" / "train.txt").write_text("list\n")
    script = [sys.executable, str(TOOLS / "webp.py")]
    subprocess.run([*script, str(tmp_path / "camvid"), str(tmp_path / "w"), "webp"], check=True)
    assert (tmp_path / "w" / "train" / "a.webp").is_file() and (
        tmp_path / "w" / "trainannot" / "a.png"
    ).is_file()
    subprocess.run([*script, str(tmp_path / "w"), str(tmp_path / "back"), "png"], check=True)
    for original, back in ((image, "train/a.png"), (mask, "trainannot/a.png")):
        assert np.array_equal(
            np.asarray(Image.open(original)), np.asarray(Image.open(tmp_path / "back" / back))
        )
    assert (tmp_path / "back" / "train.txt").read_text() == "list\n"


def test_run_without_a_step_prints_its_usage():
    done = subprocess.run(["bash", str(TOOLS / "run.sh")], capture_output=True, text=True)
    assert done.returncode == 2 and "run.sh install SOFTWARE_DIR" in done.stdout


@pytest.mark.slow
def test_a_study_past_its_deadline_is_stopped_and_its_tables_packed(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "SITE": str(tmp_path / "no-site")}
    pack = tmp_path / "pack.tgz"
    args = ["--preset", "default", "--name", "cut", "--out", str(tmp_path / "runs"), "--quiet"]
    done = subprocess.run(
        ["bash", str(TOOLS / "run.sh"), "study", "45", str(pack), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=TOOLS.parents[1],
        timeout=600,
    )
    assert "deadline of 45 s: stopping the study" in done.stdout, done.stdout + done.stderr
    assert done.returncode != 0  # stopped early: the study says so with its exit status
    with tarfile.open(pack) as tar:
        names = tar.getnames()
    assert "cut/config.json" in names
    assert not [
        n for n in names if n.split("/")[1:2] in (["scratch"], ["ray"], ["samples.npz"], ["driver.lock"])
    ]
    assert (tmp_path / "runs" / "cut" / "config.json").is_file()  # the run folder stays there for --resume
