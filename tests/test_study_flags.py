"""Every study setting is a flag, generated from StudyConfig; errors say which flag changes it."""

import argparse
import dataclasses

import pytest

from study import config as study_config
from study.flags import SETTINGS, add_setting_flags
from study.run import config_from_args, main, parse_args


def test_every_setting_has_a_flag_in_a_help_group():
    parser = argparse.ArgumentParser()
    add_setting_flags(parser)
    titled = {action.dest: group.title for group in parser._action_groups for action in group._group_actions}
    for field in dataclasses.fields(study_config.StudyConfig):
        assert titled.get(field.name) == f"{SETTINGS[field.name][0]} settings", field.name


def test_flags_parse_each_kind_of_setting():
    args = parse_args(
        [
            "--preset", "smoke",
            "--image-size", "90,120",
            "--students", "ifvd=pspnet_resnet18, kd=pspnet_resnet18",
            "--space", "esd = {r = [0.0, 5.0]}",
            "--no-hflip",
            "--target-images", "6",
            "--methods", "baseline,esd",
            "--resource-wait-s", "60",
            "--amp", "off",
        ]
    )  # fmt: skip
    config = config_from_args(args)
    assert config.image_size == [90, 120] and config.hflip is False and config.target_images == 6
    assert config.students == {"ifvd": "pspnet_resnet18", "kd": "pspnet_resnet18"}
    assert config.space == {"esd": {"r": [0.0, 5.0]}} and config.methods == ["baseline", "esd"]
    assert (config.resource_wait_s, config.amp) == (60.0, "off")
    assert config_from_args(parse_args(["--preset", "smoke"])).hflip is True  # not given: the preset's


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--students", "ifvd"], "expected KEY=VALUE pairs"),
        (["--image-size", "tall"], "expected HEIGHT,WIDTH"),
        (["--space", "esd = {r = "], "expected TOML"),
        (["--amp", "fp8"], "invalid choice: 'fp8'"),
    ],
)
def test_a_malformed_flag_is_refused_naming_the_form(argv, words, capsys):
    with pytest.raises(SystemExit) as done:
        parse_args(argv)
    assert done.value.code == 2 and words in capsys.readouterr().err


def test_a_bad_setting_names_its_flag_and_study_file_key(tmp_path, capsys):
    assert main(["--preset", "smoke", "--views", "0", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "views must be 'fresh' or a whole number >= 1, got 0 [--views, or views in the study file]" in err
