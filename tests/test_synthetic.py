"""Synthetic road-scene domains: deterministic by seed, with real shifts between domains."""

import numpy as np
import pytest
import torch

from kd.data import DOMAINS, SyntheticRoadScenes, render
from kd.data.synthetic import CLASSES, ROAD

SIZE = (96, 192)


def luminance(image):
    return image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def dark_road_share(domain, n=24):
    """Share of road pixels far darker than the image's typical road: cast shadows."""
    shares = []
    for i in range(n):
        image, labels = render(0, domain, i, *SIZE)
        road = luminance(image)[labels == ROAD]
        shares.append(np.mean(road < 0.65 * np.median(road)))
    return float(np.mean(shares))


def test_same_seed_same_scene_and_other_seed_other_scene():
    a_img, a_lab = render(3, "target", 5, *SIZE)
    b_img, b_lab = render(3, "target", 5, *SIZE)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    c_img, c_lab = render(4, "target", 5, *SIZE)
    assert not np.array_equal(a_lab, c_lab)
    assert not np.array_equal(render(3, "target", 6, *SIZE)[1], a_lab)


def test_dataset_is_deterministic_and_shaped_like_the_real_ones():
    first = SyntheticRoadScenes("source", size=4, image_size=SIZE, seed=7)[2]
    again = SyntheticRoadScenes("source", size=4, image_size=SIZE, seed=7)[2]
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["mask"], again["mask"])
    assert first["image"].shape == (3, *SIZE) and first["image"].dtype == torch.uint8
    assert first["mask"].shape == SIZE and first["mask"].dtype == torch.int64
    assert first["id"] == "source_00002"


def test_every_class_and_void_occur_and_nothing_else():
    seen = set()
    for i in range(30):
        seen |= set(np.unique(render(0, "target", i, *SIZE)[1]).tolist())
    assert seen == set(range(len(CLASSES))) | {255}


def test_domains_differ_in_style():
    def road_colour(domain):
        pixels = [render(0, domain, i, *SIZE) for i in range(12)]
        return np.concatenate([img[lab == ROAD] for img, lab in pixels]).mean(0)

    source, target = road_colour("source"), road_colour("target")
    assert np.abs(source - target).max() > 25
    # proximity and test keep the target's style, shadows aside
    assert np.abs(road_colour("test") - target).max() < np.abs(source - target).max()
    images = {d: render(0, d, 0, *SIZE)[0] for d in DOMAINS}
    assert len({img.tobytes() for img in images.values()}) == 4


def test_target_has_no_shadows_but_proximity_and_test_do():
    target, proximity, test = dark_road_share("target"), dark_road_share("proximity"), dark_road_share("test")
    assert target < 0.002
    assert proximity > 0.03 and test > 0.03


def test_proximity_is_unlabelled():
    proximity = SyntheticRoadScenes("proximity", size=3, image_size=SIZE)
    assert not proximity.labelled
    assert (proximity[1]["mask"] == 255).all()
    assert (
        SyntheticRoadScenes("target", image_size=SIZE).labelled and len(SyntheticRoadScenes("target")) == 64
    )


def test_binary_label_set():
    full = SyntheticRoadScenes("test", size=2, image_size=SIZE)[1]["mask"]
    binary = SyntheticRoadScenes("test", size=2, image_size=SIZE, label_set="binary")[1]["mask"]
    assert torch.equal(binary == 1, full == ROAD) and torch.equal(binary == 255, full == 255)


@pytest.mark.parametrize("size", [(16, 16), (33, 70), (360, 480)])
def test_odd_sizes_render(size):
    image, labels = render(1, "proximity", 2, *size)
    assert image.shape == (*size, 3) and labels.shape == size


def test_regions_split_the_ground_into_shadowed_and_sunlit_pixels():
    test = SyntheticRoadScenes("test", size=12, image_size=SIZE, seed=0)
    target = SyntheticRoadScenes("target", size=4, image_size=SIZE, seed=0)
    shadowed = 0
    for i, image_id in enumerate(test.ids):
        regions = test.regions(image_id)
        shadow, sunlit = regions["shadow"], regions["sunlit"]
        assert not (shadow & sunlit).any()
        labels = render(0, "test", i, *SIZE)[1]
        assert set(np.unique(labels[shadow | sunlit])) <= {
            ROAD,
            CLASSES.index("sidewalk"),
            CLASSES.index("vegetation"),
        }
        image = luminance(test[i]["image"].permute(1, 2, 0).numpy())
        road = labels == ROAD
        if (shadow & road).sum() > 20 and (sunlit & road).sum() > 20:
            assert image[shadow & road].mean() < 0.8 * image[sunlit & road].mean()  # what a shadow is
            shadowed += 1
    assert shadowed >= 3
    assert not any(target.regions(i)["shadow"].any() for i in target.ids)  # the target never has shadows
    with pytest.raises(Exception, match="no image"):
        test.regions("target_00000")


def test_evaluation_scores_the_regions_of_a_dataset_that_marks_them():
    from kd.data import PairedTransform, Subset
    from kd.engine import evaluate
    from kd.metrics import ConfusionMeter

    class Predicts(torch.nn.Module):
        """Road wherever the image is dark: right on sunlit road, wrong on shadowed grass."""

        num_classes = 2

        def normalize(self, images):
            return images

        def forward(self, images):
            dark = (images.mean(1) < 0.43).float()  # images in [0, 1]
            return torch.stack([dark, 1 - dark], 1)  # binary labels: road is class 0

    test = Subset(SyntheticRoadScenes("test", size=8, image_size=SIZE, seed=0, label_set="binary"), [5, 6, 7])
    transform = PairedTransform(normalize=False)
    metrics, _ = evaluate(Predicts(), test, transform, batch_size=2)
    for name in ("shadow", "sunlit"):
        meter = ConfusionMeter(2)
        for k in range(len(test)):
            sample = transform(test[k])
            region = torch.from_numpy(test.regions(sample["id"])[name])
            pred = Predicts()(sample["image"][None].as_subclass(torch.Tensor)).argmax(1)[0]
            meter.update(pred[None], torch.where(region, sample["mask"].as_subclass(torch.Tensor), 255)[None])
        assert metrics[f"miou_{name}"] == pytest.approx(meter.compute()["miou"])
    assert metrics["miou_shadow"] != pytest.approx(metrics["miou_sunlit"])
    # a dataset that marks no regions (a real one's role) gets no region scores
    unmarked = Subset(
        SyntheticRoadScenes("test", size=2, image_size=SIZE, seed=0, label_set="binary"), [0, 1]
    )
    unmarked.regions = None
    assert not {"miou_shadow", "miou_sunlit"} & set(evaluate(Predicts(), unmarked, transform)[0])
