"""On a CUDA GPU: the engine in each precision, and a study whose trials share one GPU.

Skipped, with the reason, on machines without one (CI has none); run them where a GPU is:
    python -m pytest -q tests/test_gpu.py
"""

import math

import pandas as pd
import pytest
import torch

from kd.data import PairedTransform, SyntheticRoadScenes
from kd.engine import Engine, RunData, RunSettings
from kd.methods import build_recipe
from kd.models import build_student, build_teacher

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA GPU on this machine: the engine in bf16/fp16/off on cuda and a study sharing one "
    "GPU among 4 trials run only where a GPU is present",
)
SIZE = (48, 96)


@pytest.fixture(scope="module")
def data():
    def synthetic(role, size):
        return SyntheticRoadScenes(role, size=size, image_size=SIZE, seed=0, label_set="binary")

    return RunData(
        synthetic("target", 8),
        synthetic("test", 4),
        synthetic("proximity", 8),
        train_transform=PairedTransform(crop=(40, 80), hflip=True, normalize=False),
    )


@pytest.mark.parametrize("amp", ["bf16", "fp16", "off"])
def test_the_engine_trains_on_cuda_in_each_precision(amp, data):
    torch.manual_seed(0)
    teacher = build_teacher(num_classes=2, pretrained=False).eval()
    student = build_student("sd", 2, teacher=teacher, split_point="stage3")
    recipe = build_recipe("esd", {"total_epochs": 3})
    settings = RunSettings(batch_size=4, views=2, device="cuda", amp=amp)
    result = Engine(recipe, student, teacher, data, settings, progress=None).run()
    assert all(math.isfinite(row["loss"]) for row in result.history)
    assert 0.0 <= result.final["miou"] <= 1.0
    assert next(student.parameters()).device.type == "cuda"


def test_four_trials_share_one_gpu(tmp_path):
    import ray

    from study import config as study_config
    from study.run import run_study

    ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        config = study_config.resolve(
            "smoke", overrides={"out": str(tmp_path), "gpus_per_trial": 0.25, "cpus_per_trial": 1}
        )
        run_dir = run_study(config, say=lambda line: None)
    finally:
        ray.shutdown()
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert (trials["status"] == "completed").all(), trials["error"].tolist()
    assert (trials["gpus"] == 0.25).all()
    assert (trials["precision"] == "bf16").all()  # the default amp: autocast on the GPU
    assert (run_dir / "teacher.json").is_file()  # prepared in a Ray task on the GPU
