"""`python -m kd.data`: describe, verify and preview a dataset; user mistakes exit 2 without a traceback."""

import subprocess
import sys

import numpy as np
from helpers import rgb, write_png
from PIL import Image

from kd.data.__main__ import main


def test_describes_the_synthetic_training_domain_by_default(capsys):
    assert main(["synthetic", "--first-n", "5"]) == 0
    out = capsys.readouterr().out
    assert "synthetic target: 5 images, labelled" in out
    assert "road, sidewalk, building, sky, vegetation, car, person; ignore = 255" in out


def test_verify_prints_class_shares_of_a_folder_dataset(tmp_path, capsys):
    mask = np.array([[0, 0, 1, 255]], np.uint8)
    for name in ("a", "b"):
        write_png(tmp_path / "i" / f"{name}.png", rgb(1, 4))
        write_png(tmp_path / "m" / f"{name}.png", mask)
    assert main([f"folder:{tmp_path / 'i'},{tmp_path / 'm'}", "--classes", "road,car", "--verify"]) == 0
    out = capsys.readouterr().out
    assert "decoded 2/2" in out
    assert (
        "road              50.00 %" in out
        and "car               25.00 %" in out
        and "(ignored)         25.00 %" in out
    )


def test_preview_writes_images_above_their_masks(tmp_path, capsys):
    path = tmp_path / "preview.png"
    assert main(["synthetic:test", "--count", "3", "--preview", str(path)]) == 0
    assert Image.open(path).size == (3 * 512, 2 * 256)


def test_user_mistakes_exit_2_with_the_message_and_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "kd.data", f"camvid:{tmp_path / 'missing'}"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "error: CamVid: folder" in result.stderr and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr
