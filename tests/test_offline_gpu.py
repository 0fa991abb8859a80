"""tools/offline_gpu: the WebP round trip keeps every pixel; run.sh stops a study at its deadline
and packs its tables without checkpoints, Ray's state or images."""

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from helpers import write_png
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
        ["bash", str(TOOLS / "run.sh"), "study", "15", str(pack), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=TOOLS.parents[1],
        timeout=600,
    )
    assert "deadline of 15 s: stopping the study" in done.stdout, done.stdout + done.stderr
    assert done.returncode == 130  # stopped early (here in its preparation): the study says so
    with tarfile.open(pack) as tar:
        names = tar.getnames()
    assert "cut/config.json" in names
    assert not [
        n for n in names if n.split("/")[1:2] in (["scratch"], ["ray"], ["samples.npz"], ["driver.lock"])
    ]
    assert (tmp_path / "runs" / "cut" / "config.json").is_file()  # the run folder stays there for --resume


def test_start_refuses_a_run_folder_that_would_not_outlive_the_checkout(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "STATE": str(tmp_path / "state")}
    done = subprocess.run(
        ["bash", str(TOOLS / "run.sh"), "start", "--preset", "default", "--out", "runs"],
        capture_output=True,
        text=True,
        env=env,
        cwd=TOOLS.parents[1],
    )
    assert done.returncode == 2 and "needs --out ABSOLUTE_DIR" in done.stdout
    assert not (tmp_path / "state").exists()  # nothing started


@pytest.mark.slow
def test_a_started_study_outlives_its_command_and_wait_packs_it(tmp_path):
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "SITE": str(tmp_path / "no-site"),
        "STATE": str(tmp_path / "state"),
        "MPS": "1",  # asked for where it cannot run: said, and the study runs without it
    }
    args = ["--preset", "smoke", "--methods", "baseline", "--trials", "1", "--epochs", "1", "--no-report"]
    args += ["--name", "bg", "--out", str(tmp_path / "runs"), "--quiet"]

    def run(*step, timeout=60):
        command = ["bash", str(TOOLS / "run.sh"), *step]
        return subprocess.run(
            command, capture_output=True, text=True, env=env, cwd=TOOLS.parents[1], timeout=timeout
        )

    started = run("start", *args)
    assert started.returncode == 0, started.stdout + started.stderr
    assert "MPS not usable here" in started.stdout
    waited = run("wait", "0", str(tmp_path / "early.tgz"))
    assert (
        waited.returncode == 75 and "still running" in waited.stdout
    )  # start returned, the study did not end
    waited = run("wait", "600", str(tmp_path / "pack.tgz"), timeout=700)
    assert waited.returncode == 0 and "study exit 0" in waited.stdout, waited.stdout + waited.stderr
    with tarfile.open(tmp_path / "pack.tgz") as tar:
        names = tar.getnames()
    assert "bg/final.parquet" in names and "bg/trials.parquet" in names  # it ran to its test scores
    assert not [n for n in names if n.split("/")[1:2] in (["scratch"], ["ray"], ["samples.npz"])]
    assert "study bg: 1 completed" in (tmp_path / "pack.log").read_text()
