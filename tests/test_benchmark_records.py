"""The benchmarks whose figures docs/RESULTS.md quotes write them to a file it can cite."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.mark.usefixtures("one_thread")
def test_the_plain_loop_writes_every_seed_and_its_command(camvid_root, tmp_path):
    import learning_parity

    out = tmp_path / "plain_loop.json"
    argv = ["--entries", "plain", "--seeds", "0,1", "--epochs", "1", "--threads", "1", "--json", str(out)]
    results = learning_parity.main(argv)
    record = json.loads(out.read_text())
    assert record["command"] == "python benchmarks/learning_parity.py " + " ".join(argv)
    assert record["eval"] == "dev" and record["eval_images"] == 101 and record["epochs"] == 1
    per_seed = record["results"]["plain"]["per_seed"]
    assert sorted(per_seed) == ["0", "1"] and set(per_seed["0"]) == {"miou", "miou_img", "hp_acc", "var"}
    assert [per_seed[s]["miou_img"] for s in ("0", "1")] == pytest.approx(results["plain"]["miou_img"])
    assert per_seed["0"] != per_seed["1"]  # the seeds are two trainings, not one written twice


@pytest.mark.parametrize("script", ["learning_parity", "sd_stage3", "teacher_strength"])
def test_an_output_file_that_cannot_be_written_is_refused_before_training(script, tmp_path, capsys):
    module = __import__(script)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(SystemExit) as stop:
        module.main(["--json", str(tmp_path / "a_file" / "out.json")])
    assert stop.value.code == 2
    assert f"--json {tmp_path / 'a_file' / 'out.json'}: cannot write into" in capsys.readouterr().err


def test_stage_3_s_ratio_is_refused_for_sd(capsys):
    import sd_stage3

    with pytest.raises(SystemExit) as stop:
        sd_stage3.main(["--r", "0.5"])
    assert stop.value.code == 2 and "--r is ESD's ratio; give --method esd too" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--student", "output_stride"], "--student takes KEY=VALUE, got output_stride"),
        (["--student", "output_stride=7"], "output_stride must be one of 8, 16, 32"),
        (["--recipe", "train.optimizer.wd=0"], "no field 'wd' here"),
    ],
)
def test_a_malformed_student_or_recipe_setting_is_refused_before_training(argv, message, capsys):
    import learning_parity

    with pytest.raises(SystemExit) as stop:
        learning_parity.main(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.usefixtures("one_thread")
def test_teacher_strength_trains_once_and_scores_every_class(tmp_path):
    import teacher_strength

    out = tmp_path / "teacher.json"
    argv = ["--preset", "smoke", "--teacher", "deeplabv3_efficientnet_lite0", "--trainable", "head"]
    argv += ["--epochs", "1", "--cache-dir", str(tmp_path / "teachers"), "--json", str(out)]
    assert teacher_strength.main(argv) == 0
    row = json.loads(out.read_text())
    assert row["command"] == "python benchmarks/teacher_strength.py " + " ".join(argv)
    assert len(row["iou"]) == len(row["classes"]) == 2 and 0 <= row["miou"] <= 1
    assert len(list((tmp_path / "teachers").glob("*.pt"))) == 1
    assert teacher_strength.main(argv) == 0  # the stored teacher, scored again: the same row
    assert json.loads(out.read_text())["iou"] == row["iou"]
    assert len(list((tmp_path / "teachers").glob("*.pt"))) == 1
    # the stored file, loaded instead of trained: the same teacher; then its reference row on test
    stored = str(next((tmp_path / "teachers").glob("*.pt")))
    argv = ["--preset", "smoke", "--teacher", "deeplabv3_efficientnet_lite0", "--teacher-checkpoint", stored]
    assert teacher_strength.main([*argv, "--json", str(out)]) == 0
    loaded = json.loads(out.read_text())
    assert loaded["iou"] == row["iou"] and loaded["split"] == "val" and loaded["checkpoint"] == stored
    assert teacher_strength.main([*argv, "--split", "test", "--json", str(out)]) == 0
    on_test = json.loads(out.read_text())
    assert on_test["split"] == "test" and on_test["iou"] != row["iou"]  # other images, other scores


def test_teacher_strength_scores_one_model(capsys):
    import teacher_strength

    with pytest.raises(SystemExit) as stop:
        teacher_strength.main(["--student-checkpoint", "a.pt", "--teacher-checkpoint", "b.pt"])
    assert stop.value.code == 2 and "give one" in capsys.readouterr().err
