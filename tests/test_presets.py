"""The presets are study files under study/presets: each loads, resolves and is listed by --help."""

import pytest

from kd.errors import UserInputError
from study import config as study_config
from study.run import parse_args

NAMES = ["camvid-11", "camvid-11-control", "camvid-sd", "camvid-sd-controls", "default", "smoke"]


def test_every_preset_file_is_a_preset():
    assert sorted(study_config.PRESETS) == NAMES


@pytest.mark.parametrize("preset", NAMES)
def test_every_preset_resolves_into_a_study_config_of_its_name(preset, monkeypatch):
    monkeypatch.setattr("kd.data.locate_camvid", lambda: None)  # the presets' "camvid": wherever it is
    config = study_config.resolve(preset)
    assert isinstance(config, study_config.StudyConfig) and config.name == preset
    for key, value in study_config.PRESETS[preset].items():
        assert getattr(config, key) == value


def test_a_preset_file_is_a_study_file(tmp_path):
    copied = tmp_path / "mine.toml"
    copied.write_text((study_config.PRESET_FOLDER / "camvid-sd.toml").read_text())
    assert study_config.read_study_file(copied) == study_config.PRESETS["camvid-sd"]
    assert study_config.PRESETS["camvid-sd"]["epochs"] is None  # from its none list


def test_help_lists_every_preset(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    assert "{" + ",".join(study_config.PRESETS) + "}" in capsys.readouterr().out


def test_none_sets_settings_to_none_and_is_checked(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text('none = ["epochs", "test_images"]\n')
    config = study_config.resolve("smoke", path)
    assert config.epochs is None and config.test_images is None and config.val_images == 4
    path.write_text('none = "epochs"\n')
    with pytest.raises(UserInputError, match="none must be a list of setting names"):
        study_config.resolve("smoke", path)
    path.write_text('epochs = 3\nnone = ["epochs"]\n')
    with pytest.raises(UserInputError, match="epochs both given a value and listed in none"):
        study_config.resolve("smoke", path)


def test_every_preset_file_opens_with_its_name_and_what_it_is():
    summaries = study_config.preset_summaries()
    assert list(summaries) == list(study_config.PRESETS)
    for name, summary in summaries.items():
        assert (study_config.PRESET_FOLDER / f"{name}.toml").read_text().startswith(f"# {name}: ")
        assert summary and "\n" not in summary and not summary.endswith("."), name
    assert summaries["camvid-sd"] == "the SD paper's protocol on CamVid"
