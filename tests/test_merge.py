"""A study run in parts and merged reads as the same study run whole (real Ray, real training);
parts that are not one protocol are refused before anything is written."""

import json

import pandas as pd
import pytest

import analysis
from analysis.merge import main, merge
from analysis.tables import method_summary
from kd.errors import UserInputError
from study import config as study_config
from study.run import run_study


def tiny_grid(out, name, methods, r_choices=None):
    space = {"esd": {"r": {"choices": r_choices}}} if r_choices else {}
    overrides = {"out": str(out), "name": name, "sampler": "grid", "methods": methods, "space": space}
    overrides["report"] = False  # merging reads the tables
    return study_config.resolve("smoke", overrides=overrides)


@pytest.mark.slow
def test_parts_merged_give_the_whole_study_s_numbers(local_ray, tmp_path):
    quiet = {"say": lambda line: None, "progress": "quiet"}
    whole = run_study(tiny_grid(tmp_path, "whole", ["baseline", "esd"], [0.0, 1.0]), **quiet)
    # ESD in both parts, each with one choice of r: the merged space is their union
    parts = [
        run_study(tiny_grid(tmp_path, "part-esd-0", ["baseline", "esd"], [0.0]), **quiet),
        run_study(tiny_grid(tmp_path, "part-esd-1", ["esd"], [1.0]), **quiet),
    ]
    merged = merge(tmp_path / "merged", parts)
    config = json.loads((merged / "config.json").read_text())
    assert config["methods"] == ["baseline", "esd"] and config["space"] == {
        "esd": {"r": {"choices": [0.0, 1.0]}}
    }
    columns = ["variant", "trials", "completed", "miou_img", "hp_acc", "var", "split"]
    expected = method_summary(analysis.load(whole))[columns]
    got = method_summary(analysis.load(merged))[columns]
    assert (expected["split"] == "test").all()  # the parts' test scores, not validation
    pd.testing.assert_frame_equal(
        got.sort_values("variant").reset_index(drop=True),
        expected.sort_values("variant").reset_index(drop=True),
    )
    assert [p["name"] for p in json.loads((merged / "merged.json").read_text())["parts"]] == [
        "part-esd-0",
        "part-esd-1",
    ]
    assert not (merged / "samples.npz").exists()  # images stay out of a folder meant for committing


def fake_part(root, name, methods, variants, **config_changes):
    """A run folder as the driver writes it, with just the files merging reads."""
    part = root / name
    part.mkdir()
    config = {"run_format": 2, "name": name, "out": str(root), "methods": methods, "space": {}, "seeds": 5}
    (part / "config.json").write_text(json.dumps(config | config_changes))
    rows = [{"trial_id": f"{name}_{i}", "method": v.split()[0], "variant": v} for i, v in enumerate(variants)]
    pd.DataFrame(rows).to_parquet(part / "trials.parquet")
    (part / "roles.json").write_text(json.dumps({"test": ["a", "b"]}))
    return part


def test_parts_of_another_protocol_are_refused_naming_the_setting(tmp_path):
    a = fake_part(tmp_path, "a", ["baseline"], ["baseline"])
    b = fake_part(tmp_path, "b", ["sd"], ["sd"], seeds=3)
    with pytest.raises(UserInputError, match=r"differ in seeds: 5, 3"):
        merge(tmp_path / "merged", [a, b])
    assert not (tmp_path / "merged").exists()


def test_a_variant_run_in_two_parts_is_refused(tmp_path):
    a = fake_part(tmp_path, "a", ["baseline", "sd"], ["baseline", "sd"])
    b = fake_part(tmp_path, "b", ["sd"], ["sd"])
    with pytest.raises(UserInputError, match=r"variants sd were run in more than one part"):
        merge(tmp_path / "merged", [a, b])


def test_parts_trained_in_different_arithmetic_are_refused(tmp_path):
    parts = [fake_part(tmp_path, m, [m], [m]) for m in ("baseline", "sd", "esd")]
    for part, arithmetic in zip(
        parts, ("fp32", "bf16", None), strict=True
    ):  # None: recorded before the column
        pd.read_parquet(part / "trials.parquet").assign(precision=arithmetic).to_parquet(
            part / "trials.parquet"
        )
    with pytest.raises(UserInputError, match=r"different arithmetic \(bf16, fp32\)"):
        merge(tmp_path / "merged", parts)
    assert not (tmp_path / "merged").exists()
    assert merge(tmp_path / "merged", [parts[0], parts[2]]).is_dir()  # fp32 and unrecorded: one protocol


def test_parts_on_other_images_are_refused(tmp_path):
    a = fake_part(tmp_path, "a", ["baseline"], ["baseline"])
    b = fake_part(tmp_path, "b", ["sd"], ["sd"])
    (b / "roles.json").write_text(json.dumps({"test": ["a", "c"]}))
    with pytest.raises(UserInputError, match=r"roles.json differ: other test images in .*b than"):
        merge(tmp_path / "merged", [a, b])


def test_the_command_refuses_a_used_folder_and_a_non_study_with_exit_2(tmp_path, capsys):
    a = fake_part(tmp_path, "a", ["baseline"], ["baseline"])
    b = fake_part(tmp_path, "b", ["sd"], ["sd"])
    assert main([str(tmp_path / "a"), str(a), str(b)]) == 2
    assert "is not empty; give a new folder" in capsys.readouterr().err
    assert main([str(tmp_path / "merged"), str(a), str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "not a study's run folder" in err and str(tmp_path / "nowhere") in err
    (b / "teacher.json").write_text(json.dumps({"name": "t", "miou": 0.8}))  # a baseline-only part has none
    assert main([str(tmp_path / "merged"), str(a), str(b)]) == 0
    assert json.loads((tmp_path / "merged" / "teacher.json").read_text())["miou"] == 0.8
    assert set(pd.read_parquet(tmp_path / "merged" / "trials.parquet")["variant"]) == {"baseline", "sd"}


def test_a_student_set_for_a_method_one_part_ran_joins_and_a_conflict_is_refused(tmp_path):
    a = fake_part(tmp_path, "a", ["baseline"], ["baseline"])  # started before ifvd_paper got the SD student
    b = fake_part(tmp_path, "b", ["ifvd_paper"], ["ifvd_paper"], students={"ifvd_paper": "sd"})
    c = fake_part(tmp_path, "c", ["esd"], ["esd r=0"], students={"esd": "sd"})
    d = fake_part(tmp_path, "d", ["esd"], ["esd r=1"], students={"esd": "pspnet_resnet18"})
    merged = merge(tmp_path / "merged", [a, b, c])
    students = json.loads((merged / "config.json").read_text())["students"]
    assert students == {"ifvd_paper": "sd", "esd": "sd"}
    with pytest.raises(UserInputError, match=r"two parts ran esd with different students \('sd' and"):
        merge(tmp_path / "merged2", [a, c, d])


def test_a_teacher_is_the_same_up_to_arithmetic_and_another_one_is_refused(tmp_path):
    teacher = {"name": "t", "params": 10, "flops": 20, "miou": 0.8, "test": {"miou": 0.7}}
    a = fake_part(tmp_path, "a", ["sd"], ["sd"])
    b = fake_part(tmp_path, "b", ["esd"], ["esd"])
    (a / "teacher.json").write_text(json.dumps(teacher))
    (b / "teacher.json").write_text(json.dumps(teacher | {"miou": 0.8 + 1e-6}))  # another thread count
    merge(tmp_path / "merged", [a, b])
    (b / "teacher.json").write_text(json.dumps(teacher | {"test": {"miou": 0.75}}))
    with pytest.raises(UserInputError, match=r"teacher.json differ .*another teacher"):
        merge(tmp_path / "merged2", [a, b])
