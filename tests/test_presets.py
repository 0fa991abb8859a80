"""The presets are study files under study/presets: each loads, resolves and says what it is."""

import json
from pathlib import Path

import pytest

from kd.errors import UserInputError
from study import config as study_config

BEFORE = json.loads((Path(__file__).parent / "data" / "presets_before.json").read_text())


def test_the_preset_files_hold_the_presets_as_they_were():
    assert study_config.PRESETS == BEFORE


@pytest.mark.parametrize("preset", sorted(BEFORE))
def test_every_preset_resolves_into_a_study_config(preset, monkeypatch):
    monkeypatch.setattr("kd.data.locate_camvid", lambda: None)  # the presets' "camvid": wherever it is
    config = study_config.resolve(preset)
    assert isinstance(config, study_config.StudyConfig)
    for key, value in study_config.PRESETS[preset].items():
        assert getattr(config, key) == (value if key != "data" else "camvid")


def test_a_preset_file_is_a_study_file(tmp_path):
    copied = tmp_path / "mine.toml"
    copied.write_text((study_config.PRESET_FOLDER / "camvid-sd.toml").read_text())
    assert study_config.read_study_file(copied) == study_config.PRESETS["camvid-sd"]


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
