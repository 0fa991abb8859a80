"""Teachers from another label set: class maps, the mapped teacher, the study setting, a real study."""

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from kd.data import PairedTransform, SyntheticRoadScenes
from kd.data.class_maps import CLASS_MAPS, ClassMap, map_logits, register_class_map, to_road
from kd.data.labels import BINARY_CLASSES, CAMVID, CITYSCAPES
from kd.data.synthetic import SYNTHETIC_LABELS
from kd.engine import Engine, RunData, RunSettings
from kd.errors import UserInputError
from kd.methods import build_recipe
from kd.models import build_student, build_teacher
from kd.models.class_map import class_map_of, with_class_map
from kd.models.seeded import seeded_state_dict
from kd.teacher_cache import TeacherCache
from study import config as study_config
from study.prepare import prepare_teacher, teacher_shell
from study.run import config_from_args, parse_args

TEACHER = "deeplabv3_efficientnet_lite0"

# Where each Cityscapes class goes in CamVid's 11, as the documentation tells it.
CITYSCAPES_TO_CAMVID = {
    "road": "road",
    "sidewalk": "pavement",
    "building": "building",
    "wall": "building",
    "fence": "fence",
    "pole": "pole",
    "traffic_light": "sign_symbol",
    "traffic_sign": "sign_symbol",
    "vegetation": "tree",
    "terrain": "tree",
    "sky": "sky",
    "person": "pedestrian",
    "rider": "bicyclist",
    "car": "car",
    "truck": "car",
    "bus": "car",
    "train": "car",
    "motorcycle": "bicyclist",
    "bicycle": "bicyclist",
}


def grouped(probabilities: torch.Tensor, class_map: ClassMap) -> torch.Tensor:
    """The teacher's probabilities summed per group and renormalised over the kept classes."""
    sums = torch.stack([probabilities[:, list(g)].sum(1) for g in class_map.groups], 1)
    return sums / sums.sum(1, keepdim=True)


def test_mapped_logits_give_the_probabilities_summed_per_group():
    torch.manual_seed(0)
    logits = torch.randn(2, 19, 3, 4) * 4
    class_map = CLASS_MAPS["cityscapes-camvid11"]
    mapped = map_logits(logits, class_map)
    assert mapped.shape == (2, 11, 3, 4)
    expected = grouped(logits.softmax(1), class_map)
    torch.testing.assert_close(mapped.softmax(1), expected)
    # nothing is dropped: the mapped logits keep the whole partition function
    torch.testing.assert_close(mapped.exp().sum(1), logits.exp().sum(1))


def test_dropped_classes_leave_their_share_to_the_rest_in_proportion():
    class_map = ClassMap("drop", ("a", "b", "c", "d", "e"), ("ab", "d"), ((0, 1), (3,)))
    assert class_map.dropped == ("c", "e")
    logits = torch.tensor([[1.0, 2.0, 5.0, 0.5, 3.0]])
    probabilities = logits.softmax(1)[0]
    kept = probabilities[[0, 1, 3]].sum()
    expected = torch.stack([(probabilities[0] + probabilities[1]) / kept, probabilities[3] / kept])
    torch.testing.assert_close(map_logits(logits, class_map).softmax(1)[0], expected)


def test_every_cityscapes_class_lands_in_its_camvid_class():
    class_map = CLASS_MAPS["cityscapes-camvid11"]
    assert class_map.source == CITYSCAPES.classes and class_map.target == CAMVID.classes
    assert class_map.dropped == ()
    landed = {class_map.source[i]: class_map.target[j] for j, g in enumerate(class_map.groups) for i in g}
    assert landed == CITYSCAPES_TO_CAMVID
    # a teacher sure of one Cityscapes class predicts its CamVid class
    sure = torch.eye(19)[:, :, None, None] * 20
    predicted = map_logits(sure, class_map).argmax(1)[:, 0, 0]
    assert [class_map.target[int(j)] for j in predicted] == [
        CITYSCAPES_TO_CAMVID[c] for c in CITYSCAPES.classes
    ]


@pytest.mark.parametrize("name, labels", [("cityscapes-road", CITYSCAPES), ("camvid11-road", CAMVID)])
def test_road_maps_put_road_against_every_other_class(name, labels):
    class_map = CLASS_MAPS[name]
    assert class_map.source == labels.classes and class_map.target == BINARY_CLASSES == ("background", "road")
    assert class_map.groups[1] == (labels.road,) and labels.classes[labels.road] == "road"
    assert sorted(class_map.groups[0] + class_map.groups[1]) == list(range(len(labels.classes)))
    assert class_map == to_road(name, labels.classes, labels.road)


@pytest.mark.parametrize(
    "groups, words",
    [
        (((0,), (0, 1)), "in two groups"),
        (((0,), ()), "has no source class"),
        (((0,), (5,)), "outside 0..2"),
        (((0, 1, 2),), "1 groups for 2 target classes"),
    ],
)
def test_a_malformed_map_is_refused(groups, words):
    with pytest.raises(UserInputError, match=words):
        ClassMap("bad", ("a", "b", "c"), ("x", "y"), groups)


def test_a_registered_name_is_not_taken_by_another_map():
    other = dataclasses.replace(CLASS_MAPS["camvid11-road"], groups=((0, 1, 2, 4, 5, 6, 7, 8, 9), (3, 10)))
    with pytest.raises(UserInputError, match="registered already"):
        register_class_map(other)
    assert register_class_map(CLASS_MAPS["camvid11-road"]) is CLASS_MAPS["camvid11-road"]  # the same: fine


def test_with_class_map_keeps_the_keys_and_maps_every_path_through_the_heads(one_thread):
    torch.manual_seed(0)
    teacher = build_student("pspnet_resnet18_os32", 19).eval()  # small, and it has an aux head
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    x = torch.rand(1, 3, 32, 48)
    point = teacher.split_points[-2]
    with torch.no_grad():
        before = teacher.forward_parts(x, point, want=("logits", "aux_logits"))
        amg, tail = teacher.split(point)
        whole, split = teacher(x), tail(amg(x), x.shape[-2:])
    class_map = CLASS_MAPS["cityscapes-camvid11"]
    mapped = with_class_map(teacher, class_map)
    assert list(mapped.state_dict()) == list(state) and mapped.num_classes == 11
    assert class_map_of(mapped) is class_map and not list(mapped.class_map.parameters())
    mapped.load_state_dict(state)  # the unmapped teacher's weights load strictly
    with torch.no_grad():
        after = mapped.forward_parts(x, point, want=("logits", "aux_logits"))
        amg, tail = mapped.split(point)
        outputs = {"logits": after["logits"], "aux_logits": after["aux_logits"], "forward": mapped(x)}
        outputs["tail"] = tail(amg(x), x.shape[-2:])
    # the map runs on the head's output, before forward() upsamples it to the input size
    head = map_logits(before["logits"], class_map)
    size, corners = x.shape[-2:], getattr(teacher, "align_corners", False)
    upsampled = F.interpolate(head, size=size, mode="bilinear", align_corners=corners)
    expected = {"logits": head, "aux_logits": map_logits(before["aux_logits"], class_map)}
    expected |= {"forward": upsampled, "tail": upsampled}
    for name, output in outputs.items():
        torch.testing.assert_close(output, expected[name], msg=name)
    assert not torch.allclose(outputs["forward"], map_logits(whole, class_map))  # the order matters
    torch.testing.assert_close(whole, split)
    with pytest.raises(UserInputError, match="mapped by 'cityscapes-camvid11' already"):
        with_class_map(mapped, class_map)
    with pytest.raises(UserInputError, match="maps 19 classes, but .* predicts 2"):
        with_class_map(build_student("pspnet_resnet18_os32", 2), class_map)


def test_teacher_cache_keys_a_mapped_teachers_logits_apart(tmp_path):
    teacher = build_teacher(TEACHER, len(SYNTHETIC_LABELS.classes), pretrained=False)
    data = SyntheticRoadScenes("target", size=2, image_size=(32, 64), seed=0, label_set="binary")
    transform = PairedTransform(normalize=False)

    def key(outputs):
        return TeacherCache(teacher, None, data, transform, outputs=outputs, root=tmp_path).key

    unmapped = {outputs: key(outputs) for outputs in ("logits", "features")}
    with_class_map(teacher, to_road("synthetic-road", SYNTHETIC_LABELS.classes, SYNTHETIC_LABELS.road))
    assert key("logits") != unmapped["logits"]
    assert key("features") == unmapped["features"]  # features do not depend on the map


def test_the_engine_names_the_class_map_when_the_classes_differ():
    data = SyntheticRoadScenes("target", size=2, image_size=(32, 64), seed=0, label_set="binary")
    run_data = RunData(data, data, train_transform=PairedTransform(normalize=False))
    teacher = build_teacher(TEACHER, 7, pretrained=False)
    student = build_student("pspnet_resnet18_half_os32", 2)
    recipe, settings = build_recipe("ifvd_kd", {"epochs": 1}), RunSettings(cache=False)
    with pytest.raises(UserInputError, match="teacher_class_map.*cityscapes-camvid11"):
        Engine(recipe, student, teacher, run_data, settings, progress=None)
    with_class_map(teacher, to_road("synthetic-road", SYNTHETIC_LABELS.classes, SYNTHETIC_LABELS.road))
    Engine(recipe, student, teacher, run_data, settings, progress=None)  # mapped: accepted


@pytest.fixture(scope="module")
def checkpoint_19(tmp_path_factory):
    """A teacher checkpoint file of Cityscapes' 19 classes."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "cityscapes_teacher.pth"
    torch.save(build_teacher(TEACHER, 19, pretrained=False).state_dict(), path)
    return path


def camvid_like(tmp_path, **changes):
    """A study on folder data with CamVid's 11 class names: validation needs no real files."""
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir(exist_ok=True)
    values = {
        "out": str(tmp_path / "runs"),
        "data": f"folder:{tmp_path / 'images'},{tmp_path / 'masks'}",
        "classes": list(CAMVID.classes),
        "label_set": "full",
        "teacher": TEACHER,
        **changes,
    }
    return study_config.resolve("smoke", overrides=values)


def problems(config) -> str:
    return "\n".join(study_config.class_map_problems(config))


def test_study_classes_are_the_datasets_own():
    for label_set in ("full", "binary"):
        config = study_config.resolve("smoke", overrides={"label_set": label_set})
        data = SyntheticRoadScenes("target", size=1, image_size=(16, 16), label_set=label_set)
        assert study_config.study_classes(config) == tuple(data.classes)


def test_a_study_refuses_a_class_map_that_does_not_fit(tmp_path, checkpoint_19):
    unknown = problems(camvid_like(tmp_path, teacher_class_map="nope", teacher_checkpoint=str(checkpoint_19)))
    assert "'nope' is not a known class map" in unknown and "cityscapes-camvid11, cityscapes-road" in unknown
    binary = problems(
        camvid_like(
            tmp_path,
            label_set="binary",
            teacher_class_map="cityscapes-camvid11",
            teacher_checkpoint=str(checkpoint_19),
        )
    )
    assert "maps onto 11 classes" in binary and "has 2 (background, road" in binary
    assert "(cityscapes-road, camvid11-road)" in binary
    no_checkpoint = problems(camvid_like(tmp_path, teacher_class_map="cityscapes-camvid11"))
    assert "give its weights as teacher_checkpoint (--teacher-checkpoint)" in no_checkpoint
    unmapped = problems(camvid_like(tmp_path, teacher_checkpoint=str(checkpoint_19), methods=["ifvd_kd"]))
    assert "predicts 19 classes, the study's data has 11: ifvd_kd read the teacher's logits" in unmapped
    assert "teacher_class_map (--teacher-class-map)" in unmapped and "(cityscapes-camvid11)" in unmapped
    reference = problems(
        camvid_like(tmp_path, teacher_checkpoint=str(checkpoint_19), methods=["esd"], teacher_reference=True)
    )
    assert "19 classes, the study's data has 11: teacher_reference read the teacher's logits" in reference
    # Feature distillation needs no map: the teacher keeps its 19 classes.
    features_only = camvid_like(tmp_path, teacher_checkpoint=str(checkpoint_19), methods=["sd", "ifvd_ifv"])
    assert problems(features_only) == ""
    state = prepare_teacher(features_only, 11, say=lambda line: None)
    assert teacher_shell(features_only, 11, state).num_classes == 19
    fits = camvid_like(
        tmp_path, teacher_class_map="cityscapes-camvid11", teacher_checkpoint=str(checkpoint_19)
    )
    assert problems(fits) == ""
    study_config.validate(fits)  # the whole validation agrees


def test_a_map_given_to_a_checkpoint_of_the_studys_classes_is_refused(tmp_path):
    path = tmp_path / "camvid_teacher.pth"
    torch.save(build_teacher(TEACHER, 11, pretrained=False).state_dict(), path)
    found = problems(
        camvid_like(tmp_path, teacher_class_map="cityscapes-camvid11", teacher_checkpoint=str(path))
    )
    assert "maps 19 classes, but teacher_checkpoint" in found and "leave teacher_class_map out" in found


def test_the_flag_sets_the_map_and_help_lists_the_shipped_ones(capsys):
    config = config_from_args(parse_args(["--preset", "smoke", "--teacher-class-map", "cityscapes-road"]))
    assert config.teacher_class_map == "cityscapes-road"
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = "".join(capsys.readouterr().out.split())  # as argparse wraps it, without the wrapping
    assert "--teacher-class-mapTEACHER_CLASS_MAP" in text
    assert "cityscapes-camvid11,cityscapes-road,camvid11-road" in text


def test_the_study_loads_the_checkpoint_then_maps(tmp_path, checkpoint_19):
    config = camvid_like(
        tmp_path, teacher_class_map="cityscapes-camvid11", teacher_checkpoint=str(checkpoint_19)
    )
    state = prepare_teacher(config, 11, say=lambda line: None)
    file = torch.load(checkpoint_19)
    assert state.keys() == file.keys() and all(torch.equal(state[k], file[k]) for k in file)  # unmapped
    teacher = teacher_shell(config, 11, state)
    assert teacher.num_classes == 11 and class_map_of(teacher).name == "cityscapes-camvid11"
    assert teacher.state_dict().keys() == state.keys()


@pytest.mark.slow
def test_a_camvid_study_distils_a_cityscapes_teacher_through_the_map(camvid_root, tmp_path):
    """CIRKD's Cityscapes PSPNet-R18, a file in the layout its code saves (keys recorded from it), as
    the teacher of a CamVid-11 study."""
    keys = json.loads(
        (Path(__file__).parent / "fixtures/reference_nets/cirkd_pspnet_resnet18.json").read_text()
    )
    cirkd_checkpoint_19 = tmp_path / "kd_psp_resnet18_citys.pth"
    torch.save(seeded_state_dict(keys["keys"]), cirkd_checkpoint_19)
    import ray

    from study.run import run_study

    config = study_config.resolve(
        "smoke",
        overrides={
            "name": "mapped",
            "out": str(tmp_path / "runs"),
            "data": f"camvid:{camvid_root}",
            "label_set": "full",
            "methods": ["ifvd_kd"],
            "sampler": "grid",
            "trials": 1,
            "epochs": 1,
            "image_size": [32, 48],
            "target_images": 4,
            "val_images": 2,
            "test_images": 2,
            "batch_size": 2,
            "views": 1,
            "teacher": "cirkd_pspnet_resnet18",
            "teacher_checkpoint": str(cirkd_checkpoint_19),
            "teacher_class_map": "cityscapes-camvid11",
            "cache_dir": str(tmp_path / "cache"),
            "report": False,
        },
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run_dir = run_study(config, say=lambda line: None, progress="quiet")
    finally:
        ray.shutdown()
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert list(trials["status"]) == ["completed"], trials["error"].tolist()
    curves = pd.read_parquet(run_dir / "curves.parquet")
    assert (curves["loss_kd"] > 0).all()  # the student read the mapped teacher's 11 classes
    teacher = json.loads((run_dir / "teacher.json").read_text())
    assert 0 <= teacher["miou"] <= 1 and 0 <= teacher["test"]["miou"] <= 1  # its own scores, mapped
    metas = [json.loads(p.read_text()) for p in (tmp_path / "cache" / "teacher_outputs").glob("*/meta.json")]
    assert [m["recipe"]["class_map"]["name"] for m in metas] == ["cityscapes-camvid11"]
    assert metas[0]["shapes"]["logits"][0] == 11  # the cache holds mapped logits
