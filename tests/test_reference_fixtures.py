"""The published networks' reference outputs (tools/reference_outputs/record.py) are whole and small.

These read the committed fixtures alone, without the reference code or its repositories.
"""

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kd.models.seeded import PROJECTED, seeded_state_dict

FIXTURES = Path(__file__).parent / "fixtures" / "reference_nets"
NETWORKS = {
    "ifvd_pspnet_resnet101": "psp",
    "ifvd_pspnet_resnet18": "psp",
    "skd_pspnet_resnet18": "psp",
    "toolbox_pspnet_resnet101": "psp",
    "cirkd_deeplabv3_resnet101": "aspp",
    "cirkd_deeplabv3_resnet18": "aspp",
    "cirkd_pspnet_resnet18": "psp",
}
STUDENTS = ["csail_resnet18_into_ifvd_student", "csail_resnet18_into_cirkd_pspnet_resnet18"]
CASES = [*NETWORKS, *STUDENTS]
BACKBONE = ["stem", "layer1", "layer2", "layer3", "layer4"]
MAX_NPZ, MAX_JSON = 200_000, 100_000  # bytes


def record(case: str) -> dict:
    return json.loads((FIXTURES / f"{case}.json").read_text())


def arrays(case: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"{case}.npz") as npz:
        return {name: npz[name] for name in npz.files}


def test_every_case_has_its_two_files_and_nothing_else():
    names = {path.name for path in FIXTURES.iterdir()}
    assert names == {f"{case}.{ext}" for case in CASES for ext in ("json", "npz")}


@pytest.mark.parametrize("case", CASES)
def test_files_are_small(case):
    assert (FIXTURES / f"{case}.npz").stat().st_size < MAX_NPZ
    assert (FIXTURES / f"{case}.json").stat().st_size < MAX_JSON


@pytest.mark.parametrize("case", CASES)
def test_outputs_are_the_ones_described(case):
    described, stored = record(case), arrays(case)
    assert described["case"] == case
    expected = (
        BACKBONE if case in STUDENTS else ["logits", "aux_logits", "logits_up", *BACKBONE, NETWORKS[case]]
    )
    assert list(described["outputs"]) == expected
    assert list(stored) == expected
    for name, entry in described["outputs"].items():
        array = stored[name]
        assert array.dtype == np.float32, name
        assert list(array.shape) == entry["shape"], name
        assert array.shape[0] == 1 and np.isfinite(array).all(), name
        if entry.get("projected"):
            assert entry["channels"] > PROJECTED == array.shape[1], name


@pytest.mark.parametrize("case", list(NETWORKS))
def test_logits_up_is_the_logits_upsampled_as_recorded(case):
    described, stored = record(case), arrays(case)
    entry, upsampling = described["outputs"]["logits_up"], described["upsampling"]
    assert entry["full_shape"] == [1, 19, *described["input"]["size"]] == [1, 19, *upsampling["size"]]
    assert stored["logits"].shape == stored["aux_logits"].shape
    assert stored["logits"].shape[1] == 19
    rows, cols = (
        slice(int(start), None, int(step)) for start, step in re.findall(r"(\d+)::(\d+)", entry["sampled"])
    )
    up = F.interpolate(
        torch.from_numpy(stored["logits"]),
        size=upsampling["size"],
        mode=upsampling["mode"],
        align_corners=upsampling["align_corners"],
    )
    expected = up[..., rows, cols].numpy()
    scale = np.abs(expected).max()
    np.testing.assert_allclose(stored["logits_up"], expected, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("case", CASES)
def test_keys_are_a_checkpoint_layout(case):
    keys = record(case)["keys"]
    names = [name for name, _, _ in keys]
    assert len(set(names)) == len(names)
    for name, shape, dtype in keys:
        assert isinstance(getattr(torch, dtype), torch.dtype), name
        assert all(isinstance(size, int) and size > 0 for size in shape), name


def test_an_r18_layout_rebuilds_its_weights_quickly():
    keys = record("ifvd_pspnet_resnet18")["keys"]
    start = time.perf_counter()
    state = seeded_state_dict(keys)
    assert time.perf_counter() - start < 5
    assert list(state) == [name for name, _, _ in keys]
    for name, shape, dtype in keys:
        assert list(state[name].shape) == shape and state[name].dtype == getattr(torch, dtype), name


@pytest.mark.parametrize("case", STUDENTS)
def test_students_name_the_imagenet_keys_they_kept(case):
    described = record(case)
    keys = [name for name, _, _ in described["keys"]]
    used = described["used_keys"]
    assert used == [name for name in keys if name in set(used)]  # a subset, in the file's order
    assert "fc.weight" in keys and not any(name.startswith("fc.") for name in used)
    assert not any("_tmp_running" in name or "_running_iter" in name for name in used)
    # InPlace-ABN keeps no num_batches_tracked; nn.BatchNorm2d does
    counted = [name for name in used if name.endswith("num_batches_tracked")]
    assert bool(counted) == ("cirkd" in case)
    assert described["student_modules_not_in_file"] == (
        ["dsn", "head", "pspmodule"] if "ifvd" in case else []
    )


def test_cases_sharing_code_and_keys_agree():
    # SKD's network is IFVD's (the two differ in preprocessing rounding only), and the ImageNet file
    # fills IFVD's backbone under the same key names as the IFVD R18 case's own seeded weights
    ifvd, skd = arrays("ifvd_pspnet_resnet18"), arrays("skd_pspnet_resnet18")
    for name, array in ifvd.items():
        np.testing.assert_allclose(skd[name], array, rtol=0, atol=1e-5 * np.abs(array).max(), err_msg=name)
    student = arrays("csail_resnet18_into_ifvd_student")
    for name in BACKBONE:
        np.testing.assert_allclose(student[name], ifvd[name], rtol=1e-6, atol=0, err_msg=name)
