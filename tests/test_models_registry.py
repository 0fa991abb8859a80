"""Models by name, split points, and `python -m kd.models`."""

import json

import pytest
import torch

from kd.errors import UserInputError
from kd.models import (
    DEFAULT_TEACHER,
    SPLIT_STUDENTS,
    STUDENTS,
    TEACHERS,
    build_student,
    build_teacher,
    model_names,
    split_points,
)
from kd.models.__main__ import SPLIT_EXAMPLES, main, summary_rows
from kd.models.efficientnet_lite import EFFICIENTNET_LITE_MEAN

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "name", list(TEACHERS) + list(STUDENTS) + ["deeplabv3:resnet18", "pspnet:mobilenet_v3_small"]
)
def test_every_named_model_builds_segments_and_splits_anywhere(name):
    build = build_teacher if name in TEACHERS or ":" in name else build_student
    model = build(name, num_classes=3).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        whole = model(x)
        assert whole.shape == (2, 3, 64, 96)
        for point in model.split_points:
            amg, tail = model.split(point)
            assert torch.allclose(tail(amg(x), x.shape[-2:]), whole, atol=1e-5), f"split at {point}"
    assert model.split_points == split_points(name)


def test_default_teacher_is_pretrained_lite0_with_its_own_normalisation():
    teacher = build_teacher()
    assert teacher.name == DEFAULT_TEACHER == "deeplabv3_efficientnet_lite0"
    assert teacher.input_mean == EFFICIENTNET_LITE_MEAN
    random = build_teacher(pretrained=False)
    assert not torch.equal(
        teacher.stages["stem"].state_dict()["0.weight"], random.stages["stem"].state_dict()["0.weight"]
    )


def test_sd_and_ct_students_come_from_a_teachers_split():
    teacher = build_teacher(DEFAULT_TEACHER, num_classes=2, pretrained=False)
    sd = build_student("sd", 2, teacher=teacher, split_point="stage4")
    ct = build_student("ct", 2, teacher=teacher, split_point="stage4")
    assert (
        sd.split_points == ct.split_points == teacher.split_points[: teacher.split_points.index("stage4") + 1]
    )
    assert sd.input_mean == teacher.input_mean
    x = torch.randn(1, 3, 64, 96)
    amg, _ = teacher.eval().split("stage4")
    assert sd.eval().features(x, "stage4").shape == amg(x).shape


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: build_teacher("deeplabv4"),
            r"unknown teacher 'deeplabv4'; choose one of .*deeplabv3_efficientnet_lite0",
        ),
        (lambda: build_student("pspnet_resnet1000", 2), r"unknown student .*pspnet_resnet18_half"),
        (lambda: build_teacher("pspnet:alexnet2"), r"HEAD:BACKBONE .*resnet18"),
        (lambda: build_student("sd", 2), "pass teacher= and split_point="),
        (
            lambda: build_student("ct", 2, teacher=build_teacher("pspnet:resnet18", 2), split_point="layer9"),
            r"no split point 'layer9'; valid split points: stem, layer1, layer2, layer3, layer4",
        ),
        (
            lambda: build_teacher("deeplabv3_resnet50", 2, checkpoint="/nowhere/coco.pth"),
            "/nowhere/coco.pth does not exist",
        ),
        (lambda: build_teacher(num_classes=0), "num_classes must be at least 1"),
    ],
)
def test_bad_model_requests(call, message):
    with pytest.raises(UserInputError, match=message):
        call()


def test_cli_lists_models_with_their_split_points(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: " ".join(line.split()[1:]) for line in out.splitlines() if line.strip()}
    assert rows["deeplabv3_resnet50"] == "teacher split points: stem, layer1, layer2, layer3, layer4"
    assert rows["deeplabv3_efficientnet_lite0_os8"].startswith("teacher split points: stem, stage1,")
    assert set(model_names()) <= {line.split()[0] for line in out.splitlines() if line.strip()}


def summary_table(out: str) -> dict[str, list[str]]:
    """The rows of the printed summary, model label -> its numbers, header included."""
    return {line[:48].strip(): line[48:].split() for line in out.splitlines()[1:-1]}


def test_cli_summary_counts_params_and_flops_at_full_size_without_timing_by_default(capsys):
    assert main(["--summary", "--models", "pspnet_resnet18_half,ct"]) == 0
    out = capsys.readouterr().out
    assert "latency" not in out.splitlines()[1]
    rows = summary_table(out)
    assert rows.pop("model") == ["params", "(M)", "GFLOPs"]
    assert all(len(numbers) == 2 for numbers in rows.values())
    params, gflops = rows["pspnet_resnet18_half"]
    # 3.16 M, plus 0.07 M in the training-only DSN head; FLOPs counted at the default 512x1024
    assert float(params) == pytest.approx(3.23, abs=0.01) and float(gflops) == pytest.approx(53.6, abs=0.1)
    assert float(rows["ct (deeplabv3_resnet50@layer4)"][0]) == pytest.approx(23.6, abs=0.05), (
        "the SD paper's CT size"
    )


def test_the_default_summary_has_a_row_for_every_model_and_every_split_example():
    labels = [label for label, _ in summary_rows(None, 2)]
    assert len(labels) == len(set(labels))
    assert {name for name in model_names() if name not in SPLIT_STUDENTS} <= set(labels)
    for teacher, point in SPLIT_EXAMPLES:
        assert {f"{s} ({teacher}@{point})" for s in ["ct", "sd-text", "sd-table", "sd-dense"]} <= set(labels)


def test_cli_summary_latency_adds_a_timed_column(capsys):
    tiny = ["--summary", "--latency", "--models", "pspnet_resnet18_half", "--size", "32x64", "--repeats", "1"]
    assert main(tiny) == 0
    out = capsys.readouterr().out
    assert "median of 1" in out.splitlines()[0]
    rows = summary_table(out)
    assert rows.pop("model") == ["params", "(M)", "GFLOPs", "latency", "(ms)"]
    (params, gflops, ms) = rows["pspnet_resnet18_half"]
    assert float(params) == pytest.approx(3.23, abs=0.01) and float(ms) > 0
    assert main([*tiny, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert set(row) == {"name", "params", "gflops", "latency_ms"} and row["latency_ms"] > 0


def test_cli_summary_json_lists_the_teacher_its_ct_and_every_sd_variant(capsys):
    assert main(["--summary", "--json", "--models", "deeplabv3_resnet50", "--size", "64x128"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}  # nothing but the JSON list
    assert list(rows) == [
        "deeplabv3_resnet50",
        "ct (deeplabv3_resnet50@layer4)",
        "sd-text (deeplabv3_resnet50@layer4)",
        "sd-table (deeplabv3_resnet50@layer4)",
        "sd-dense (deeplabv3_resnet50@layer4)",
    ]
    assert all(
        set(row) == {"name", "params", "gflops"} and isinstance(row["params"], int) for row in rows.values()
    )
    ct, table = rows["ct (deeplabv3_resnet50@layer4)"], rows["sd-table (deeplabv3_resnet50@layer4)"]
    assert table["params"] == pytest.approx(9.5e6, rel=0.15)  # Table II: S = 9.5 M
    assert table["gflops"] / ct["gflops"] == pytest.approx(0.418, rel=0.15)  # Table II: 41.8 % of CT's FLOPs
    assert (
        rows["sd-text (deeplabv3_resnet50@layer4)"]["params"] < 0.3e6
        and rows["sd-dense (deeplabv3_resnet50@layer4)"]["params"] == ct["params"]
    )


def test_cli_refuses_unknown_models_and_sizes(capsys):
    assert main(["--summary", "--models", "resnet9000"]) == 2
    assert "unknown model(s) resnet9000" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--summary", "--size", "big"])
    assert "size must look like 512x1024" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--summary", "--repeats", "3"])
    assert "--repeats counts the timed passes of --latency; add --latency" in capsys.readouterr().err
