"""Each setting says its default, group, help and simple constraint on its StudyConfig field once;
the flags and the simple checks are made from it."""

import pytest

from study import checks, settings
from study.run import parse_args

FIELDS = settings.FIELDS
WITH_CHOICES = [name for name, spec in FIELDS.items() if spec.metadata["choices"] is not None]
WHOLE = [name for name, spec in FIELDS.items() if spec.metadata["least"] is not None]
SWITCHES = [name for name in FIELDS if settings.TYPES[name] is bool]


def test_every_setting_has_a_group_and_help():
    for name, spec in FIELDS.items():
        assert spec.metadata["group"] in settings.GROUPS, name
        assert spec.metadata["help"].strip(), name


def test_the_simple_checks_cover_the_settings_they_always_did():
    assert set(WITH_CHOICES) == {
        "sampler",
        "scheduler",
        "teacher_trainable",
        "teacher_init",
        "evaluate",
        "amp",
    }
    assert set(WHOLE) >= {"trials", "seeds", "batch_size", "teacher_epochs", "workers_per_trial", "epochs"}
    assert {"teacher_reference", "check_resources", "hflip"} <= set(SWITCHES)


@pytest.mark.parametrize("name", WITH_CHOICES)
def test_a_value_outside_the_choices_is_named(name):
    choices = FIELDS[name].metadata["choices"]
    found = checks.field_problems(settings.StudyConfig(**{name: "nonsense"}))
    assert found == [f"{name} must be one of {', '.join(choices)}, got 'nonsense'"]


@pytest.mark.parametrize("name", WHOLE)
def test_a_whole_number_below_its_least_is_named(name):
    least = FIELDS[name].metadata["least"]
    assert checks.field_problems(settings.StudyConfig(**{name: least})) == []
    for bad in (least - 1, 2.5, True):
        found = checks.field_problems(settings.StudyConfig(**{name: bad}))
        assert len(found) == 1 and found[0].startswith(f"{name} must be a whole number >= {least}")
        assert found[0].endswith(f", got {bad!r}")


def test_none_passes_only_where_the_type_allows_it():
    assert checks.field_problems(settings.StudyConfig(epochs=None, test_images=None)) == []
    assert checks.field_problems(settings.StudyConfig(trials=None)) == [
        "trials must be a whole number >= 1, got None"
    ]


@pytest.mark.parametrize("name", SWITCHES)
def test_a_switch_must_be_true_or_false(name):
    found = checks.field_problems(settings.StudyConfig(**{name: "yes"}))
    assert found == [f"{name} must be true or false, got 'yes'"]


def test_flags_take_their_choices_and_help_from_the_fields(capsys):
    assert parse_args(["--teacher-trainable", "all"]).teacher_trainable == "all"
    with pytest.raises(SystemExit):
        parse_args(["--teacher-trainable", "backbone"])
    assert "invalid choice: 'backbone'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert FIELDS["device_data_share"].metadata["help"] in shown
