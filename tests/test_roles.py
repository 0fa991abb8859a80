"""Image roles: target, val and test never share an image; neither the teacher nor ESD sees val or test."""

import json
from dataclasses import replace

import numpy as np
import pytest
from helpers import rgb, write_png

from kd.data import Subset, open_dataset
from kd.errors import DatasetError, UserInputError
from study import config as study_config
from study.roles import MAY_SHARE, ROLES, VAL_GAP, open_roles, overlaps


def ids(roles):
    return {role: set(data.ids) for role, data in roles.items()}


def assert_honest(roles):
    seen = ids(roles)
    for first in ROLES:
        for second in ROLES:
            if first < second and frozenset((first, second)) not in MAY_SHARE:
                assert not seen[first] & seen[second], (first, second)
    assert all(seen.values())


def test_synthetic_roles_are_disjoint_and_val_comes_from_the_target_domain():
    config = study_config.resolve("default")
    roles = open_roles(config)
    assert_honest(roles)
    assert {role: len(data) for role, data in roles.items()} == {
        "source": 512, "target": 16, "proximity": 32, "val": 16, "test": 64,
    }  # fmt: skip
    assert roles["val"].ids[0] == "target_00016" and roles["test"].ids[0] == "test_00000"


def test_the_camvid_sd_roles_follow_the_readme(camvid_root):
    roles = open_roles(study_config.resolve("camvid-sd"))
    assert_honest(roles)
    train = open_dataset(f"camvid:{camvid_root}", "train").ids
    assert roles["target"].ids == train[:64]
    assert roles["val"].ids == train[64 + VAL_GAP : 64 + VAL_GAP + 101]
    assert len(roles["test"]) == 233 and set(roles["source"].ids) == set(train) - set(roles["val"].ids)
    proximity_frames = [int(i.split("_")[1]) for i in roles["proximity"].ids]
    val_0016 = [int(i.split("_")[1]) for i in roles["val"].ids if i.startswith("0016E5")]
    assert max(val_0016) < min(proximity_frames)  # no val frame sits among ESD's proximity frames


def folder(tmp_path, count):
    for i in range(count):
        write_png(tmp_path / "img" / f"{i:03d}.png", np.full((8, 12, 3), i, np.uint8))
        write_png(tmp_path / "ann" / f"{i:03d}.png", np.zeros((8, 12), np.uint8))
    return f"folder:{tmp_path / 'img'},{tmp_path / 'ann'}"


def test_a_folder_is_dealt_to_roles_by_a_seeded_shuffle(tmp_path):
    smoke = study_config.resolve("smoke", overrides={"data": folder(tmp_path, 20), "classes": ["road", "x"]})
    config = replace(smoke, target_images=5, val_images=None, test_images=None, proximity_images=None,
                     source_images=None)  # fmt: skip
    roles = open_roles(config)
    assert_honest(roles)
    sizes = {role: len(d) for role, d in roles.items()}
    assert sizes == {"source": 14, "target": 5, "proximity": 9, "val": 2, "test": 4}  # 20 % test, 10 % val
    again = open_roles(config)
    other = open_roles(replace(config, split_seed=1))
    assert ids(again) == ids(roles) and ids(other)["test"] != ids(roles)["test"]


def test_a_role_left_without_images_stops_the_study_naming_it():
    config = study_config.resolve("smoke", overrides={"target_images": 64})  # the whole target domain
    with pytest.raises(
        UserInputError, match=r"val: no images left in .* after the other roles.*--target-images"
    ):
        open_roles(config)


def test_a_role_short_of_images_names_its_setting_and_flag(tmp_path):
    for name in "abcde":
        write_png(tmp_path / "img" / f"{name}.png", rgb())
        write_png(tmp_path / "ann" / f"{name}.png", rgb()[..., 0] * 0)
    config = study_config.resolve(
        "smoke",
        overrides={"data": f"folder:{tmp_path / 'img'},{tmp_path / 'ann'}", "classes": ["road", "other"]},
    )  # smoke asks for 4 test, 4 val and 8 target images of the 5
    with pytest.raises(UserInputError, match=r"val_images = 4 but .* has 1 image\(s\) left .*--val-images 1"):
        open_roles(config)


def test_shared_images_are_named():
    found = overlaps({"target": ["a", "b"], "val": ["b", "c"], "test": ["d"], "source": ["a"]})
    assert found == ["target and val share 1 image(s): b"]  # source may hold target images
    many = overlaps({"val": [f"x{i}" for i in range(7)], "test": [f"x{i}" for i in range(7)]})
    assert many == ["val and test share 7 image(s): x0, x1, x2, x3, x4 and 2 more"]


def test_a_subset_indexes_from_zero_and_keeps_the_images_ids():
    whole = open_dataset("synthetic", "test", image_size=(32, 64))
    part = Subset(whole, [5, 7], role="val")
    assert len(part) == 2 and part.ids == whole.ids[5:8:2] and part.name == "synthetic test (val)"
    assert part[1]["index"] == 1 and part[1]["id"] == whole[7]["id"]
    assert part.num_classes == whole.num_classes and part.seed == whole.seed
    assert np.array_equal(part[0]["image"], whole[5]["image"])
    with pytest.raises(DatasetError, match="positions 0..199"):
        Subset(whole, [200], role="val")


def test_the_study_writes_which_images_played_which_role(tmp_path):
    from study.prepare import save_roles

    roles = open_roles(study_config.resolve("smoke"))
    save_roles(roles, tmp_path / "roles.json")
    saved = json.loads((tmp_path / "roles.json").read_text())
    assert saved["val"]["ids"] == roles["val"].ids and saved["test"]["dataset"] == "synthetic test (test)"
