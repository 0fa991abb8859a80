"""The driver's heavy work as a Ray task (study.tasks): what the study uses on GPUs and clusters."""

import pytest
import torch
from helpers import smoke

from kd.errors import UserInputError
from study import config as study_config
from study.prepare import prepare
from study.tasks import run_work, runs_on_ray


def test_preparation_runs_in_the_driver_without_gpus_or_a_cluster(tmp_path):
    assert not runs_on_ray(smoke(tmp_path))
    assert runs_on_ray(smoke(tmp_path, address="auto")) and runs_on_ray(smoke(tmp_path, gpus_per_trial=0.5))


@pytest.mark.slow
def test_prepare_as_a_task_reports_progress_and_writes_the_run_folder(local_ray, tmp_path):
    config = smoke(tmp_path, address=local_ray.get_runtime_context().gcs_address)
    space = study_config.validate(config)
    config.run_dir.mkdir(parents=True)
    said = []
    shared = run_work(prepare, config, space, config.run_dir, say=said.append)
    assert shared.num_classes == 2 and shared.teacher_state
    assert any(line.startswith("teacher-output caches:") for line in said)  # the task's messages came back
    assert {"samples.npz", "teacher.json", "roles.json"} <= {p.name for p in config.run_dir.iterdir()}


@pytest.mark.slow
def test_a_configuration_error_in_the_task_is_raised_as_itself(local_ray, tmp_path):
    weights = tmp_path / "wrong.pt"
    torch.save({"not_a_layer.weight": torch.zeros(1)}, weights)
    config = smoke(
        tmp_path,
        address=local_ray.get_runtime_context().gcs_address,
        student_weights={"baseline": str(weights)},
    )
    space = study_config.validate(config)
    config.run_dir.mkdir(parents=True)
    with pytest.raises(UserInputError, match=r"\[student_weights\] baseline"):
        run_work(prepare, config, space, config.run_dir, say=lambda line: None)
