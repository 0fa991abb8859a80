"""tools/publish_run.py: a run folder copied into the repository reads as before, with no machine path."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
from helpers import make_run

from analysis.load import load as load_run

ROOT = Path(__file__).resolve().parent.parent


def test_a_published_run_folder_names_no_machine_path_and_reads_the_same(tmp_path):
    data = ROOT.parent / "shared" / "data" / "camvid"
    source = make_run(
        tmp_path / "runs" / "hand",
        config={
            "data": f"camvid:{data}",
            "out": str(tmp_path / "runs"),
            "cache_dir": str(tmp_path / "cache"),
        },
    )
    (source / "roles.json").write_text("{}")
    destination = tmp_path / "published" / "hand"
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "publish_run.py"), str(source), str(destination)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    config = json.loads((destination / "config.json").read_text())
    assert config["data"] == "camvid:../shared/data/camvid"
    assert (config["out"], config["cache_dir"]) == ("runs", None)
    assert str(tmp_path) not in (destination / "config.json").read_text()
    assert sorted(p.name for p in destination.iterdir()) == sorted(
        ["config.json", "trials.parquet", "per_image.parquet", "curves.parquet", "roles.json"]
    )
    published, original = load_run(destination), load_run(source)
    for table in ("trials", "per_image", "curves"):
        pd.testing.assert_frame_equal(getattr(published, table), getattr(original, table))


def test_a_folder_without_a_configuration_is_refused(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "publish_run.py"), str(tmp_path), str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert "holds no config.json" in done.stderr
    assert not (tmp_path / "out").exists()
