"""The teacher is trained only when a method needs its weights, or its reference scores are asked for."""

import pytest

from study import config as study_config
from study.prepare import prepare, teacher_users


def prepared(tmp_path, **overrides):
    config = study_config.resolve("smoke", overrides={"out": str(tmp_path), "sampler": "grid", **overrides})
    space = study_config.validate(config)
    config.run_dir.mkdir(parents=True)
    said = []
    return prepare(config, space, config.run_dir, say=said.append), said, config.run_dir


def test_a_study_of_the_student_alone_trains_no_teacher_and_says_why(tmp_path):
    shared, said, run_dir = prepared(tmp_path, methods=["baseline"])
    assert not shared.teacher_trained
    assert any("not trained: no method distils from it" in line for line in said), said
    assert not any("teacher-output caches" in line or "epoch" in line for line in said), said
    assert not (run_dir / "teacher.json").exists()
    assert (run_dir / "samples.npz").is_file()  # the report's images are still saved


@pytest.mark.parametrize(
    "overrides, users",
    [
        ({"methods": ["baseline", "esd"]}, ["esd"]),  # distils from it
        ({"methods": ["ftt"]}, ["ftt"]),  # CT starts from the teacher's backbone weights
        ({"methods": ["baseline"], "students": {"baseline": "ct"}}, ["baseline"]),
    ],
)
def test_methods_that_read_the_teacher_s_weights_are_named(overrides, users):
    assert teacher_users(study_config.resolve("smoke", overrides=overrides)) == users


def test_the_reference_scores_can_be_asked_for(tmp_path):
    shared, said, run_dir = prepared(tmp_path, methods=["baseline"], teacher_reference=True)
    assert shared.teacher_trained and (run_dir / "teacher.json").is_file()
    assert any(line.startswith("teacher: the report's reference") for line in said), said
