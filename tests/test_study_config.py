"""Study configuration: presets, study files, command-line overrides, and every error before Ray starts."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from kd.errors import UserInputError
from study import config as study_config
from study.run import main


def write(tmp_path, text):
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def test_layers_defaults_preset_file_command_line(tmp_path):
    path = write(tmp_path, 'trials = 10\nseeds = 3\nmethods = ["sd", "esd"]\n[space.esd]\nr = [0.0, 2.0]\n')
    config = study_config.resolve("smoke", path, {"seeds": 4, "trials": None})
    assert config.trials == 10 and config.seeds == 4 and config.methods == ["sd", "esd"]
    assert config.image_size == [32, 64]  # from the preset
    assert config.space == {"esd": {"r": [0.0, 2.0]}}
    assert study_config.validate(config).methods == config.methods


def test_every_problem_is_listed_at_once_and_ray_never_starts(tmp_path, capsys):
    import ray

    path = write(tmp_path, '[space.esd]\nr = [-1.0, 3.0]\nsplit_point = ["stage99"]\n')
    code = main(
        [
            "--config",
            str(path),
            "--methods",
            "esd,distil",
            "--trials",
            "0",
            "--data",
            "camvid:/nowhere/camvid",
            "--gpus-per-trial",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    for words in (
        "unknown method(s) distil",
        "trials must be a whole number >= 1",
        "/nowhere/camvid does not exist",
        "gpus_per_trial = 1.0 but this machine has no GPU",
    ):
        assert words in err
    assert not ray.is_initialized()
    assert not (tmp_path / "default").exists()  # nothing written


def test_search_space_problems_are_listed_together():
    config = study_config.resolve(
        "smoke",
        overrides={"methods": ["esd"], "space": {"esd": {"r": [-1.0, 3.0], "split_point": ["stage99"]}}},
    )
    with pytest.raises(UserInputError) as err:
        study_config.validate(config)
    assert (
        "esd.r = -1.0" in str(err.value)
        and "must be a finite number >= 0" in str(err.value)
        and "stage99" in str(err.value)
    )


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"scheduler": "asha", "objectives": ["miou_img", "var"]}, "single objective"),
        ({"objectives": ["accuracy"]}, "objectives must be some of"),
        ({"sampler": "random"}, "sampler must be one of"),
        ({"name": "../escape"}, "plain folder name"),
        ({"data": "folder:/a,/b"}, "needs its class names"),
        ({"teacher": "resnet9000"}, "unknown teacher"),
        ({"students": {"ifvd": "alexnet"}}, "is not a known student"),
        ({"cpus_per_trial": 0}, "cpus_per_trial must be a number > 0"),
        ({"epochs": 2}, r"epochs = 2 is each method's total over its stages, but esd need\(s\) 3"),
        ({"trials": 5}, r"trials = 5 cannot be shared equally by 2 methods; give a multiple of 2 \(e.g. 6\)"),
        ({"split_seed": -1}, "split_seed must be a whole number >= 0"),
        ({"workers_per_trial": 3}, r"batch_size = 4 is the global batch.*multiple of 3"),
        ({"workers_per_trial": 0}, "workers_per_trial must be a whole number >= 1"),
        ({"amp": "fp8"}, "amp must be one of bf16, fp16, off"),
        ({"teacher_trainable": "backbone"}, "teacher_trainable must be one of head, all, got 'backbone'"),
        ({"num_workers": -1}, "num_workers must be a whole number >= 0"),
        ({"workers_per_trial": 2, "scheduler": "asha"}, "data-parallel trials do not send"),
    ],
)
def test_bad_settings_are_named(overrides, words):
    with pytest.raises(UserInputError, match=words):
        study_config.validate(study_config.resolve("smoke", overrides=overrides))


def test_unknown_keys_and_bad_files(tmp_path):
    with pytest.raises(UserInputError, match="unknown study setting"):
        study_config.resolve("default", write(tmp_path, "trails = 3\n"))
    with pytest.raises(UserInputError, match="not valid TOML"):
        study_config.resolve("default", write(tmp_path, "trials = = 3\n"))
    with pytest.raises(UserInputError, match="does not exist"):
        study_config.resolve("default", tmp_path / "none.toml")


def test_resume_needs_a_study(tmp_path, capsys):
    assert main(["--name", "never", "--out", str(tmp_path), "--resume"]) == 2
    assert "holds no study" in capsys.readouterr().err


def test_a_study_of_another_run_format_is_not_resumed(tmp_path, capsys):
    config = study_config.resolve("smoke", overrides={"out": str(tmp_path), "name": "old"})
    study_config.save(config, config.run_dir)
    assert study_config.load(config.run_dir) == config
    older = {
        k: v for k, v in json.loads((config.run_dir / "config.json").read_text()).items() if k != "run_format"
    }
    (config.run_dir / "config.json").write_text(json.dumps(older))  # as studies before TrialChoice saved it
    assert main(["--name", "old", "--out", str(tmp_path), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "another version of SegKD Study (run format 1" in err and "python -m analysis.report" in err


def test_resume_may_change_resources_but_not_what_trials_compute(tmp_path, capsys):
    config = study_config.resolve("smoke", overrides={"out": str(tmp_path), "name": "s", "cpus_per_trial": 1})
    study_config.save(config, config.run_dir)
    changes = {"cpus_per_trial": 2.0, "max_concurrent": 1, "cache_dir": "cache", "name": "s", "epochs": 3}
    resumed = study_config.resumed(config.run_dir, changes)
    assert (resumed.cpus_per_trial, resumed.max_concurrent) == (2.0, 1)
    assert resumed.cache_dir == str((Path.cwd() / "cache").resolve())  # relative to where --resume ran
    assert resumed.epochs == config.epochs and resumed.methods == config.methods
    with pytest.raises(UserInputError) as err:
        study_config.resumed(config.run_dir, {"epochs": 5, "amp": "off", "cpus_per_trial": 2.0})
    assert "cannot change amp (saved 'bf16', given 'off'), epochs (saved 3, given 5)" in str(err.value)
    assert "start a new study" in str(err.value)
    # the command line: the study file and flags of a resume are changes, checked the same way
    assert main(["--name", "s", "--out", str(tmp_path), "--resume", "--epochs", "9"]) == 2
    assert "cannot change epochs (saved 3, given 9)" in capsys.readouterr().err


def test_a_resume_that_would_change_the_arithmetic_is_refused(tmp_path, capsys):
    import pandas as pd

    config = study_config.resolve("smoke", overrides={"out": str(tmp_path), "name": "cpu"})
    study_config.save(config, config.run_dir)  # amp bf16 by default: autocast on GPUs, fp32 on CPUs
    pd.DataFrame([{"trial_id": "t0", "status": "completed", "precision": "fp32"}]).to_parquet(
        config.run_dir / "trials.parquet"
    )
    assert main(["--name", "cpu", "--out", str(tmp_path), "--resume", "--gpus-per-trial", "0.5"]) == 2
    err = capsys.readouterr().err
    assert (
        "trained in fp32; resumed with gpus_per_trial = 0.5 and amp = 'bf16' the rest would train in bf16"
        in err
    )
    assert "starts with --amp off" in err


def test_help_explains(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--config",
        "--preset",
        "--methods",
        "--trials",
        "--seeds",
        "--data",
        "--name",
        "--out",
        "--cpus-per-trial",
        "--gpus-per-trial",
        "--address",
        "--resume",
    ):
        assert flag in out


@pytest.mark.parametrize("preset", ["camvid-sd", "camvid-11"])
def test_camvid_presets_find_the_data_and_validate(preset, camvid_root):
    config = study_config.resolve(preset)
    assert config.data == f"camvid:{camvid_root.resolve()}" and config.sampler == "grid" and config.seeds >= 3
    assert config.test_images is None and config.val_images == 101  # every test image for the results
    assert study_config.validate(config).methods == config.methods


def test_presets_train_on_fresh_views_unless_they_say_why_not():
    # the references draw a new view of every image at every iteration; a bank only where a
    # preset's few minutes on 2 cores need the teacher cache
    assert study_config.resolve("camvid-sd").views == study_config.resolve("camvid-11").views == "fresh"
    assert study_config.resolve("default").views == 4 and study_config.resolve("smoke").views == 2


def test_camvid_sd_preset_follows_the_sd_protocol(camvid_root):
    config = study_config.resolve("camvid-sd")
    assert (config.label_set, config.target_images, config.proximity_images) == ("binary", 64, None)
    points = study_config.validate(config).grid()
    assert sorted(p.values["r"] for p in points if p.method == "esd") == [0.0, 0.5, 1.0, 5.0]
    assert [p.method for p in points if p.method != "esd"] == ["baseline", "ftt", "sd", "ifvd_paper"]
    assert config.students == {"ifvd_paper": "sd"}  # every distillation method on the SD student
    assert config.seeds >= 5 and config.epochs is None  # every method at the recipes' equal budget
    from study.prepare import recipe_for

    budgets = {m: sum(s.epochs for s in recipe_for(config, m, {}).stages) for m in config.methods}
    assert set(budgets.values()) == {100}, budgets


def test_a_preset_space_for_a_method_left_out_is_dropped(camvid_root):
    config = study_config.resolve("camvid-sd", overrides={"methods": ["baseline", "sd"]})
    assert config.space == {} and study_config.validate(config).methods == ["baseline", "sd"]
    assert config.students == {}  # the preset's student for ifvd_paper, left out with it
    config = study_config.resolve("camvid-sd", overrides={"methods": ["esd"]})
    assert config.space == {"esd": {"r": {"choices": [0.0, 0.5, 1.0, 5.0]}}}


def test_camvid_without_a_folder_says_how_to_give_one(monkeypatch, tmp_path):
    monkeypatch.setenv("SEGKD_CAMVID", str(tmp_path / "absent"))
    config = study_config.resolve("camvid-sd")
    assert config.data == f"camvid:{(tmp_path / 'absent').resolve()}"
    with pytest.raises(UserInputError, match="absent does not exist"):
        study_config.validate(config)
    monkeypatch.setattr("kd.data.locate_camvid", lambda: None)
    config = study_config.resolve("smoke", overrides={"data": "camvid"})
    with pytest.raises(UserInputError, match="set SEGKD_CAMVID=PATH or write"):
        study_config.validate(config)


def test_a_grid_fills_the_teacher_caches_of_its_own_points_only():
    from study.prepare import cache_choices, fill_caches, open_data, teacher_shell

    def caches(sampler, space):
        config = study_config.resolve(
            "smoke", overrides={"methods": ["sd"], "sampler": sampler, "space": space}
        )
        data, lines = open_data(config), []
        teacher = teacher_shell(config, data.target.num_classes).eval()
        choices = cache_choices(config, study_config.validate(config))
        fill_caches(config, teacher, data, choices, data.target.num_classes, say=lines.append)
        return int(lines[-1].split(":")[1].split()[0])  # "teacher-output caches: N (...)"

    one_point = caches("grid", {})  # the grid runs sd at its default point only
    assert one_point > 0
    assert (
        caches("tpe", {"sd": {"split_point": ["stage5", "top"]}}) == 2 * one_point
    )  # a search may pick either
    from kd.models.registry import split_points

    every = len(split_points(study_config.resolve("smoke").teacher))
    assert caches("tpe", {}) == every * one_point  # a search may pick every point the teacher offers
    assert caches("grid", {"sd": {"split_point": ["stage5", "top"]}}) == 2 * one_point  # crossed: both


def test_the_default_gives_every_method_the_same_budget_and_student():
    from study.prepare import recipe_for

    config = study_config.resolve("default")
    study_config.validate(config)
    budgets = {m: sum(s.epochs for s in recipe_for(config, m, {}).stages) for m in config.methods}
    assert set(budgets.values()) == {config.epochs}, budgets
    assert {recipe_for(config, m, {}).student for m in config.methods} == {
        "sd",
        "ct",
    }  # CT: the teacher's front
    for method in config.methods:  # one split point: the students' features and SD's mimicry compare
        assert config.space[method]["split_point"] == "stage5"
    narrowed = study_config.resolve("default", overrides={"methods": ["ifvd"]})
    assert narrowed.space == {}  # the preset's settings for methods left out are dropped, not errors


def test_stage_summary_averages_steps_and_the_first_feature_ratio_over_seeds():
    from study.trial import stage_summary

    seed0 = [{"stage": "feature", "steps": 640, "feature_ratio": 0.4}, {"stage": "frozen", "steps": 640}]
    seed1 = [{"stage": "feature", "steps": 600, "feature_ratio": 0.6}, {"stage": "frozen", "steps": 640}]
    steps, ratio = stage_summary([seed0, seed1])
    assert steps == pytest.approx({"feature": 620, "frozen": 640}) and ratio == pytest.approx(0.5)
    assert stage_summary([[{"stage": "train", "steps": 1600}]]) == ({"train": 1600}, None)  # no feature stage


def test_relative_paths_become_absolute_for_the_trials(tmp_path, monkeypatch):
    # Ray runs each trial in its own folder: a path relative to the shell would name nothing there.
    monkeypatch.chdir(tmp_path)
    config = study_config.resolve(
        "smoke",
        overrides={"data": "folder:imgs,masks", "teacher_checkpoint": "weights/teacher.pt"},
    )
    assert config.data == f"folder:{tmp_path / 'imgs'},{tmp_path / 'masks'}"
    assert config.teacher_checkpoint == str(tmp_path / "weights" / "teacher.pt")
    assert (
        study_config.resolve("smoke", overrides={"data": "camvid:../c"}).data
        == f"camvid:{tmp_path.parent / 'c'}"
    )
    assert study_config.resolve("smoke").data == "synthetic"
    assert study_config.resolve("smoke").out == str(tmp_path / "runs")  # the default "runs", from here


@pytest.mark.parametrize("trainable, backbone_changes", [("head", False), ("all", True)])
def test_teacher_trainable_decides_whether_the_backbone_is_fine_tuned(tmp_path, trainable, backbone_changes):
    from kd.models import build_teacher
    from study.prepare import prepare_teacher

    overrides = {"teacher_trainable": trainable, "cache_dir": str(tmp_path)}
    config = study_config.resolve("smoke", overrides=overrides)
    state = prepare_teacher(config, num_classes=2, say=lambda message: None)
    pretrained = build_teacher(config.teacher, num_classes=2).state_dict()
    stem = next(k for k in state if k.startswith("stages.") and k.endswith("weight"))
    assert torch.equal(state[stem], pretrained[stem]) is not backbone_changes


def test_teacher_jitter_varies_the_teacher_s_source_images_and_keys_its_cache():
    from kd.data import SyntheticRoadScenes
    from kd.models import build_teacher
    from kd.models.registry import without_weights
    from study.prepare import teacher_training

    config = study_config.resolve("smoke")
    teacher = build_teacher(config.teacher, num_classes=2, **without_weights(config.teacher))
    sample = SyntheticRoadScenes("source", size=1, image_size=tuple(config.image_size))[0]
    _, plain = teacher_training(config, teacher)
    _, jittered = teacher_training(dataclasses.replace(config, teacher_jitter=0.5), teacher)

    def brightness(transform):  # a flip keeps an image's mean; a photometric draw does not
        return {round(float(transform(sample, view=v)["image"].mean()), 4) for v in range(4)}

    assert len(brightness(plain)) == 1 and len(brightness(jittered)) == 4
    assert repr(plain) != repr(jittered)  # a cached teacher trained without jitter is not reused
    with pytest.raises(UserInputError, match=r"teacher_jitter must be within \[0, 1\]"):
        study_config.validate(dataclasses.replace(config, teacher_jitter=1.5))


def test_a_random_teacher_is_its_seed_s_initialisation_never_trained(tmp_path):
    from kd.models import build_teacher
    from kd.models.registry import without_weights
    from study.prepare import needed_roles, prepare_teacher

    config = study_config.resolve("smoke", overrides={"teacher_init": "random", "cache_dir": str(tmp_path)})
    said = []
    state = prepare_teacher(config, num_classes=2, say=said.append)
    torch.manual_seed(config.seed)
    untrained = build_teacher(config.teacher, num_classes=2, **without_weights(config.teacher)).state_dict()
    assert all(torch.equal(state[k], untrained[k]) for k in untrained)  # no ImageNet file, no training
    assert said == [
        f"teacher {config.teacher}: random weights from seed {config.seed}, never trained (a control)"
    ]
    assert "source" not in needed_roles(config)  # no images to train it on
    with pytest.raises(UserInputError, match="teacher_init = 'random' .* teacher_checkpoint"):
        study_config.validate(dataclasses.replace(config, teacher_checkpoint=__file__))


def test_the_control_presets_say_what_they_control(camvid_root):
    controls = study_config.resolve("camvid-sd-controls")
    assert controls.augmentation == "ifvd" and controls.seeds == 10 and controls.views == "fresh"
    points = study_config.validate(controls).grid()
    assert sorted(p.method for p in points) == ["baseline", "esd", "esd", "esd", "sd", "sd_adabn"]
    positive = study_config.resolve("camvid-11-control")
    assert positive.image_size == [360, 480] and positive.teacher == positive.teachers[0]
    points = study_config.validate(positive).grid()
    assert sum(p.method == "ifvd_student" for p in points) == 3  # the student alone's three learning rates
    assert len(points) == 3 + 5 * 3  # every distiller with every teacher
