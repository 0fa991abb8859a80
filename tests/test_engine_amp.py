"""RunSettings.amp: bf16, fp16 (with a GradScaler whose state the checkpoint keeps) or off; CPU runs
float32 whatever the setting."""

import dataclasses

import pytest
import torch
from helpers import tiny_data, tiny_student, tiny_teacher

from kd.engine import CHECKPOINT_NAME, Engine, RunSettings, precision
from kd.errors import UserInputError
from kd.methods import build_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def teacher():
    return tiny_teacher()


@pytest.fixture(scope="module")
def data():
    return tiny_data()


def engine(teacher, data, amp, epochs=1, **kwargs):
    recipe = build_recipe("baseline", {"epochs": epochs})
    settings = RunSettings(batch_size=4, views=1, evaluate="end", amp=amp)
    return Engine(recipe, tiny_student(recipe, teacher), teacher, data, settings, progress=None, **kwargs)


@pytest.mark.parametrize("amp", ["fp32", "FP16", True, None])
def test_other_amp_values_are_refused_with_the_choices(amp, teacher, data):
    assert RunSettings(amp=amp).problems() == [f"amp must be one of bf16, fp16, off, got {amp!r}"]
    with pytest.raises(UserInputError, match="amp must be one of bf16, fp16, off"):
        engine(teacher, data, amp)
    assert all(RunSettings(amp=good).problems() == [] for good in ("bf16", "fp16", "off"))


def test_on_cpu_every_setting_trains_in_float32(teacher, data):
    runs = {}
    for amp in ("fp16", "bf16", "off"):
        runner = engine(teacher, data, amp)
        result = runner.run()
        assert not runner.amp and not runner.scaler.is_enabled() and runner.precision == "fp32"
        runs[amp] = (result, runner.student.state_dict())
    (off, weights) = runs.pop("off")
    for result, other in runs.values():
        assert result.final == off.final
        assert [row["loss"] for row in result.history] == [row["loss"] for row in off.history]
        assert all(torch.equal(weights[key], value) for key, value in other.items())


def test_the_arithmetic_is_autocast_only_on_cuda():
    assert [precision(amp, "cuda") for amp in ("bf16", "fp16", "off")] == ["bf16", "fp16", "fp32"]
    assert {precision(amp, "cpu") for amp in ("bf16", "fp16", "off")} == {"fp32"}


def test_amp_is_part_of_the_checkpoint_identity(teacher, data, tmp_path):
    engine(teacher, data, "off", checkpoint_dir=tmp_path).run()
    with pytest.raises(UserInputError, match="different recipe, settings or model"):
        engine(teacher, data, "fp16", checkpoint_dir=tmp_path).run()
    # amp was True or False before it took names: those checkpoints still resume
    for name, old in (("bf16", True), ("off", False)):
        runner = engine(teacher, data, name)
        now = runner.fingerprint()
        runner.settings = dataclasses.replace(runner.settings, amp=old)
        assert runner.fingerprint() == now


def test_the_fp16_scaler_state_is_checkpointed_and_restored(teacher, data, tmp_path):
    class Interrupt(Exception):
        pass

    def interrupt(metrics):
        raise Interrupt

    # float16 autocast and its scaler, which CUDA takes, exercised on CPU
    cut = engine(teacher, data, "fp16", epochs=2, checkpoint_dir=tmp_path, callback=interrupt)
    cut.amp = True
    with pytest.raises(Interrupt):
        cut.run()
    assert cut.scaler.is_enabled()
    stored = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)
    assert stored["scaler"] == cut.scaler.state_dict()
    stored["scaler"]["scale"] = 1024.0  # as a run whose loss overflowed float16 a few times would leave it
    torch.save(stored, tmp_path / CHECKPOINT_NAME)

    resumed = engine(teacher, data, "fp16", epochs=2, checkpoint_dir=tmp_path)
    resumed.amp = True
    result = resumed.run()
    assert len(result.history) == 2 and all(
        torch.isfinite(torch.tensor(row["loss"])) for row in result.history
    )
    assert resumed.scaler.get_scale() == 1024.0  # no overflow in two steps, and growth takes 2000
