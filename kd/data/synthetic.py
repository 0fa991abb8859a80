"""Synthetic road-scene domains, generated on the fly and deterministic by seed.

Scenes are laid out in perspective (horizon, vanishing point, a road widening towards the
camera, sidewalks, building facades whose walls meet the ground line, trees, poles, cars
and people scaled by depth) as a map of *materials*; a material has a class and a colour,
so labels and pixels come from the same layout. Four domains differ in appearance the way
the ESD paper's domains do:

- `source`: many labelled images in a saturated, game-engine-like style, with some shadows;
- `target`: few labelled images in a muted camera-like style, never with shadows;
- `proximity`: unlabelled, target style, mostly with cast shadows and rare conditions
  (dusk, glare, fog) - what the target lacks;
- `test`: target style with shadows, so a student that only saw the target is tested on
  conditions only the proximity domain shows it.

Everything is numpy on whole arrays (objects on their bounding boxes), about 3 ms an image
at 256x512 on one core.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torchvision import tv_tensors

from kd.data.labels import IGNORE_INDEX, identity_labels
from kd.errors import DatasetError

CLASSES = ("road", "sidewalk", "building", "sky", "vegetation", "car", "person")
ROAD, SIDEWALK, BUILDING, SKY, VEGETATION, CAR, PERSON = range(len(CLASSES))
SYNTHETIC_LABELS = identity_labels(CLASSES, road=ROAD)

# Materials: what a pixel is made of. Several materials share a class (a lane marking is
# road, a window is building, a pole is void so there is something to ignore).
(
    M_SKY,
    M_ROAD,
    M_LANE,
    M_SIDEWALK,
    M_GRASS,
    M_TREE,
    M_TRUNK,
    M_POLE,
    M_WINDOW,
    M_WHEEL,
    M_GLASS,
    M_SKIN,
    M_PANTS,
) = range(13)
M_BUILDING = 13  # 4 facade colours
M_CAR = 17  # up to 6 car colours
M_SHIRT = 23  # up to 4 shirt colours
NUM_MATERIALS = 27
MAX_CARS, MAX_PEOPLE = 6, 4

MATERIAL_CLASS = np.full(NUM_MATERIALS, IGNORE_INDEX, dtype=np.uint8)
MATERIAL_CLASS[[M_SKY]] = SKY
MATERIAL_CLASS[[M_ROAD, M_LANE]] = ROAD
MATERIAL_CLASS[[M_SIDEWALK]] = SIDEWALK
MATERIAL_CLASS[[M_GRASS, M_TREE, M_TRUNK]] = VEGETATION
MATERIAL_CLASS[[M_WINDOW, *range(M_BUILDING, M_BUILDING + 4)]] = BUILDING
MATERIAL_CLASS[[M_WHEEL, M_GLASS, *range(M_CAR, M_CAR + MAX_CARS)]] = CAR
MATERIAL_CLASS[[M_SKIN, M_PANTS, *range(M_SHIRT, M_SHIRT + MAX_PEOPLE)]] = PERSON
IS_GROUND = np.zeros(NUM_MATERIALS, dtype=bool)
IS_GROUND[[M_ROAD, M_LANE, M_SIDEWALK, M_GRASS]] = True


@dataclass(frozen=True)
class Style:
    """Colours and rendering of a domain. Colours are RGB in 0..255."""

    fixed: dict  # material -> colour, for materials with one colour
    buildings: tuple
    cars: tuple
    shirts: tuple
    colour_jitter: float  # std of per-image, per-material colour offsets
    grain: float  # fine noise amplitude
    blotch: float  # low-frequency noise amplitude (stains, wear)
    top_light: float  # vertical shading: brighter at the top of the image
    brightness: tuple  # range of a global brightness factor


SOURCE_STYLE = Style(
    fixed={
        M_SKY: (70, 150, 245),
        M_ROAD: (70, 70, 85),
        M_LANE: (250, 250, 250),
        M_SIDEWALK: (215, 170, 150),
        M_GRASS: (40, 190, 60),
        M_TREE: (20, 150, 40),
        M_TRUNK: (120, 70, 30),
        M_POLE: (240, 200, 0),
        M_WINDOW: (40, 90, 160),
        M_WHEEL: (20, 20, 20),
        M_GLASS: (120, 200, 250),
        M_SKIN: (240, 190, 150),
        M_PANTS: (30, 40, 120),
    },
    buildings=((200, 90, 70), (230, 200, 120), (160, 110, 200), (110, 170, 190), (240, 140, 60)),
    cars=((230, 30, 30), (30, 80, 230), (250, 220, 20), (20, 200, 120), (250, 250, 250), (200, 40, 200)),
    shirts=((250, 60, 60), (60, 220, 60), (250, 160, 0), (0, 200, 230)),
    colour_jitter=6.0,
    grain=3.0,
    blotch=4.0,
    top_light=0.05,
    brightness=(0.95, 1.08),
)

TARGET_STYLE = Style(
    fixed={
        M_SKY: (196, 202, 210),
        M_ROAD: (112, 110, 106),
        M_LANE: (200, 198, 190),
        M_SIDEWALK: (150, 146, 140),
        M_GRASS: (88, 104, 60),
        M_TREE: (60, 82, 48),
        M_TRUNK: (72, 62, 52),
        M_POLE: (92, 92, 96),
        M_WINDOW: (62, 66, 74),
        M_WHEEL: (34, 34, 36),
        M_GLASS: (80, 90, 100),
        M_SKIN: (190, 150, 125),
        M_PANTS: (50, 52, 62),
    },
    buildings=((140, 128, 118), (120, 112, 104), (164, 150, 132), (104, 100, 98), (150, 140, 128)),
    cars=((60, 62, 66), (150, 152, 156), (40, 44, 70), (120, 40, 36), (200, 200, 198), (90, 96, 88)),
    shirts=((80, 70, 110), (150, 60, 50), (60, 90, 70), (170, 160, 140)),
    colour_jitter=9.0,
    grain=7.0,
    blotch=10.0,
    top_light=0.25,
    brightness=(0.85, 1.12),
)


@dataclass(frozen=True)
class Domain:
    name: str
    code: int  # keeps the random streams of domains apart for the same seed
    style: Style
    labelled: bool
    shadow_probability: float
    rare_probability: float  # dusk, glare or fog
    default_size: int


DOMAINS = {
    d.name: d
    for d in (
        Domain(
            "source",
            1,
            SOURCE_STYLE,
            labelled=True,
            shadow_probability=0.5,
            rare_probability=0.1,
            default_size=1000,
        ),
        Domain(
            "target",
            2,
            TARGET_STYLE,
            labelled=True,
            shadow_probability=0.0,
            rare_probability=0.0,
            default_size=64,
        ),
        Domain(
            "proximity",
            3,
            TARGET_STYLE,
            labelled=False,
            shadow_probability=0.8,
            rare_probability=0.35,
            default_size=512,
        ),
        Domain(
            "test",
            4,
            TARGET_STYLE,
            labelled=True,
            shadow_probability=0.6,
            rare_probability=0.0,
            default_size=200,
        ),
    )
}


@lru_cache(maxsize=8)
def _grids(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    ys = ((np.arange(height, dtype=np.float32) + 0.5) / height)[:, None]
    xs = ((np.arange(width, dtype=np.float32) + 0.5) / width)[None, :]
    return ys, xs


@lru_cache(maxsize=16)
def _texture_tile(height: int, width: int, grain_amplitude: float, blotch_amplitude: float) -> np.ndarray:
    grain, blotch = _noise_tiles(height, width)
    return grain_amplitude * grain + blotch_amplitude * blotch


@lru_cache(maxsize=8)
def _noise_tiles(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Fine grain and low-frequency blotches, twice the image size; images take random windows.

    Drawing fresh Gaussian noise per image would cost more than the rest of the rendering.
    """
    rng = np.random.default_rng(12345)
    grain = rng.standard_normal((2 * height, 2 * width), dtype=np.float32)
    coarse = rng.standard_normal((2 * height // 16 + 2, 2 * width // 16 + 2), dtype=np.float32)
    blotch = torch.nn.functional.interpolate(
        torch.from_numpy(coarse)[None, None], scale_factor=16, mode="bilinear", align_corners=False
    )[0, 0, : 2 * height, : 2 * width].numpy()
    return grain, np.ascontiguousarray(blotch)


def _box(mat: np.ndarray, top: float, bottom: float, left: float, right: float):
    """Clip a pixel box to the image; returns (row slice, column slice) or None if empty."""
    h, w = mat.shape
    r0, r1 = max(int(round(top)), 0), min(int(round(bottom)), h)
    c0, c1 = max(int(round(left)), 0), min(int(round(right)), w)
    if r0 >= r1 or c0 >= c1:
        return None
    return slice(r0, r1), slice(c0, c1)


def _fill(mat: np.ndarray, material: int, top: float, bottom: float, left: float, right: float) -> None:
    box = _box(mat, top, bottom, left, right)
    if box is not None:
        mat[box] = material


def _fill_ellipse(mat: np.ndarray, material: int | bool, cy: float, cx: float, ry: float, rx: float) -> None:
    box = _box(mat, cy - ry, cy + ry + 1, cx - rx, cx + rx + 1)
    if box is None:
        return
    rows = np.arange(box[0].start, box[0].stop, dtype=np.float32)[:, None]
    cols = np.arange(box[1].start, box[1].stop, dtype=np.float32)[None, :]
    inside = ((rows - cy) / max(ry, 0.5)) ** 2 + ((cols - cx) / max(rx, 0.5)) ** 2 <= 1.0
    mat[box][inside] = material


def _layout(rng: np.random.Generator, height: int, width: int):
    """Materials of one scene plus the geometry that shadows need."""
    ys, xs = _grids(height, width)
    horizon = rng.uniform(0.36, 0.5)
    vanish_x = rng.uniform(0.38, 0.62)
    road_half = rng.uniform(0.28, 0.5)  # half-width of the road at the bottom row, in image widths
    walk_edge = road_half + rng.uniform(0.12, 0.25)  # outer edge of the sidewalk at the bottom row
    depth = np.clip((ys - horizon) / (1.0 - horizon), 0.0, None)  # 0 at the horizon, 1 at the bottom
    dx = xs - vanish_x
    adx = np.abs(dx)

    walk = adx < walk_edge * depth
    mat = np.where(depth > 0, np.uint8(M_GRASS), np.uint8(M_SKY)) * np.ones((1, width), np.uint8)
    mat[walk] = M_SIDEWALK
    mat[adx < road_half * depth] = M_ROAD
    lane = (adx < 0.004 + 0.006 * depth) & (np.modf(2.5 / np.maximum(depth, 1e-3))[0] < 0.5) & (depth > 0.05)
    mat[lane] = M_LANE

    # Facades: per side, blocks of different height; their walls come down to the sidewalk's outer edge.
    top_row = np.full((1, width), 2.0, np.float32)  # 2.0 = no building in this column
    facade = np.zeros((1, width), np.uint8)
    for side in (-1.0, 1.0):
        if rng.random() > 0.85:
            continue
        gap = rng.uniform(0.02, 0.08)
        edges = np.sort(rng.uniform(gap, 0.75, size=rng.integers(1, 4)))
        edges = np.concatenate([[gap], edges, [1.5]])
        on_side = np.sign(dx) == side
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            cols = on_side & (adx >= a) & (adx < b)
            slope = rng.uniform(0.4, 2.2)
            top_row[cols] = horizon - slope * adx[cols]
            facade[cols] = M_BUILDING + rng.integers(0, 4)
    building = (ys >= top_row) & ~walk
    mat = np.where(building, facade, mat)
    safe_adx = np.maximum(adx, 1e-3)
    windows = (
        building
        & (np.modf(0.35 / safe_adx)[0] < 0.45)
        & (np.modf((horizon - ys) / safe_adx * 3.0)[0] < 0.4)
        & (ys < horizon + 0.3 * adx)
    )
    mat[windows] = M_WINDOW

    # Objects, far to near so that near ones cover far ones.
    objects = []
    for _ in range(rng.integers(0, 4)):
        objects.append(("tree", rng.uniform(0.15, 0.9), rng.choice((-1.0, 1.0))))
    for _ in range(rng.integers(0, 3)):
        objects.append(("pole", rng.uniform(0.15, 0.9), rng.choice((-1.0, 1.0))))
    for i in range(rng.integers(0, 5)):
        objects.append(("car", rng.uniform(0.12, 1.0), rng.uniform(-0.7, 0.7), i))
    for i in range(rng.integers(0, MAX_PEOPLE)):
        objects.append(("person", rng.uniform(0.15, 0.95), rng.choice((-1.0, 1.0)), i))
    objects.sort(key=lambda o: o[1])
    car_feet = []
    for kind, d, where, *rest in objects:
        ground_y = (horizon + d * (1.0 - horizon)) * height
        car_w = 0.55 * road_half * d * width
        if kind == "car":
            cx = (vanish_x + where * road_half * d) * width
            car_h = 0.75 * car_w
            body = M_CAR + rest[0] % MAX_CARS
            _fill(mat, body, ground_y - 0.6 * car_h, ground_y, cx - car_w / 2, cx + car_w / 2)
            _fill(mat, body, ground_y - car_h, ground_y - 0.55 * car_h, cx - 0.35 * car_w, cx + 0.35 * car_w)
            _fill(
                mat,
                M_GLASS,
                ground_y - 0.92 * car_h,
                ground_y - 0.6 * car_h,
                cx - 0.3 * car_w,
                cx + 0.3 * car_w,
            )
            for wx in (cx - 0.33 * car_w, cx + 0.33 * car_w):
                _fill(mat, M_WHEEL, ground_y - 0.15 * car_h, ground_y, wx - 0.1 * car_w, wx + 0.1 * car_w)
            car_feet.append((ground_y, cx, car_w))
        elif kind == "person":
            cx = (vanish_x + where * 0.5 * (road_half + walk_edge) * d) * width
            h = 0.9 * car_w
            w = 0.28 * h
            _fill(mat, M_PANTS, ground_y - 0.45 * h, ground_y, cx - w / 2, cx + w / 2)
            _fill(
                mat,
                M_SHIRT + rest[0] % MAX_PEOPLE,
                ground_y - 0.82 * h,
                ground_y - 0.45 * h,
                cx - w / 2,
                cx + w / 2,
            )
            _fill_ellipse(mat, M_SKIN, ground_y - 0.9 * h, cx, 0.09 * h, 0.3 * w)
        else:
            cx = (vanish_x + where * walk_edge * d) * width
            if kind == "tree":
                trunk_h = 1.2 * car_w
                _fill(mat, M_TRUNK, ground_y - trunk_h, ground_y, cx - 0.06 * car_w, cx + 0.06 * car_w)
                _fill_ellipse(mat, M_TREE, ground_y - trunk_h - 0.3 * car_w, cx, 0.5 * car_w, 0.55 * car_w)
            else:
                _fill(mat, M_POLE, ground_y - 2.2 * car_w, ground_y, cx - 0.035 * car_w, cx + 0.035 * car_w)
    return mat, dict(
        horizon=horizon,
        vanish_x=vanish_x,
        road_half=road_half,
        walk_edge=walk_edge,
        depth=depth,
        dx=dx,
        car_feet=car_feet,
    )


def _colours(rng: np.random.Generator, style: Style) -> np.ndarray:
    colours = np.zeros((NUM_MATERIALS, 3), np.float32)
    for material, colour in style.fixed.items():
        colours[material] = colour
    palette = [
        (M_BUILDING, 4, style.buildings),
        (M_CAR, MAX_CARS, style.cars),
        (M_SHIRT, MAX_PEOPLE, style.shirts),
    ]
    for start, count, choices in palette:
        colours[start : start + count] = np.asarray(choices, np.float32)[rng.integers(0, len(choices), count)]
    colours += rng.normal(0.0, style.colour_jitter, colours.shape).astype(np.float32)
    return colours


def _shadow_mask(rng: np.random.Generator, mat: np.ndarray, geo: dict) -> np.ndarray:
    """Cast shadows on the ground: bands across the road (from buildings, trees off-screen) and car shadows.

    Drawn in ground-plane coordinates (lateral position, inverse depth) so they lie flat in perspective.
    """
    depth, dx = geo["depth"], geo["dx"]
    inv_depth = 1.0 / np.maximum(depth, 1e-3)
    lateral = dx * inv_depth
    shadow = np.zeros(mat.shape, bool)
    for _ in range(rng.integers(1, 4)):
        start = rng.uniform(1.0, 4.0)
        length = rng.uniform(0.3, 1.5)
        slant = rng.uniform(-2.0, 2.0)
        side = rng.choice((-1.0, 1.0))
        reach = rng.uniform(-0.3, geo["walk_edge"])
        along = inv_depth - slant * lateral
        shadow |= (along > start) & (along < start + length) & (side * lateral > -reach)
    for ground_y, cx, car_w in geo["car_feet"]:
        _fill_ellipse(shadow, True, ground_y, cx, 0.12 * car_w, 0.62 * car_w)
    return shadow & IS_GROUND[mat] & (depth > 0)


def render(
    seed: int, domain: str | Domain, index: int, height: int = 256, width: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (RGB uint8 [H,W,3], class labels uint8 [H,W] with 255 = void)."""
    image, labels, _ = _draw(seed, domain, index, height, width)
    return image, labels


def ground_light(
    seed: int, domain: str | Domain, index: int, height: int = 256, width: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Where a scene's ground (road, lane, sidewalk, grass) lies in a cast shadow, and where in
    sunlight: (shadowed bool [H,W], sunlit bool [H,W]). Only the ground takes shadows, so the two
    cover the same materials and a score on each compares light, not classes."""
    _, _, (shadow, ground) = _draw(seed, domain, index, height, width)
    return shadow, ground & ~shadow


def _draw(seed: int, domain: str | Domain, index: int, height: int, width: int):
    """(image, labels, (shadowed pixels, ground pixels)) of one scene."""
    spec = DOMAINS[domain] if isinstance(domain, str) else domain
    rng = np.random.default_rng([seed, spec.code, index])
    mat, geo = _layout(rng, height, width)
    labels = MATERIAL_CLASS[mat]
    ground = IS_GROUND[mat] & (geo["depth"] > 0)
    shadow = np.zeros(mat.shape, bool)
    style = spec.style
    colours = _colours(rng, style)
    ys, xs = _grids(height, width)
    oy, ox = rng.integers(0, height), rng.integers(0, width)
    texture = _texture_tile(height, width, style.grain, style.blotch)[oy : oy + height, ox : ox + width]
    light = rng.uniform(*style.brightness) * (1.0 + style.top_light * (0.5 - ys))
    if rng.random() < spec.shadow_probability:
        # Shadowed pixels index a darker copy of the colour table: one gather instead of a masked pass.
        tint = np.array((0.42, 0.45, 0.55), np.float32) * rng.uniform(0.85, 1.15)
        colours = np.concatenate([colours, colours * tint])
        shadow = _shadow_mask(rng, mat, geo)
        mat = mat + np.uint8(NUM_MATERIALS) * shadow
    image = colours[mat]
    image += texture[..., None]
    image *= light[..., None]
    if rng.random() < spec.rare_probability:
        condition = rng.integers(0, 3)
        if condition == 0:  # dusk: dark and warm
            image *= np.array((0.62, 0.5, 0.42), np.float32)
        elif condition == 1:  # low sun glare
            gy, gx, radius = rng.uniform(0.2, 0.6), rng.uniform(0.1, 0.9), rng.uniform(0.15, 0.4)
            glow = np.exp(-((ys - gy) ** 2) / radius**2) * np.exp(-((xs - gx) ** 2) / (2 * radius) ** 2)
            image += (160.0 * glow)[..., None]
        else:  # fog: contrast falls with distance
            veil = np.clip(1.2 - 1.5 * geo["depth"], 0.3, 0.9) * rng.uniform(0.6, 1.0)
            image += (205.0 - image) * veil[..., None]
    np.clip(image, 0.0, 255.0, out=image)
    return image.astype(np.uint8), labels, (shadow, ground)


class SyntheticRoadScenes(torch.utils.data.Dataset):
    """One synthetic domain as a dataset with the same samples as the real ones.

    Unlabelled domains (proximity) return masks that are all IGNORE_INDEX; `render`
    still gives their hidden labels for diagnostics.
    """

    def __init__(
        self,
        domain: str,
        size: int | None = None,
        image_size: tuple[int, int] = (256, 512),
        seed: int = 0,
        label_set: str = "full",
        first_n: int | None = None,
    ):
        if domain not in DOMAINS:
            raise DatasetError(f"unknown synthetic domain {domain!r}; choose one of {', '.join(DOMAINS)}.")
        self.domain = DOMAINS[domain]
        self.size = self.domain.default_size if size is None else size
        if self.size < 1:
            raise DatasetError(f"synthetic domain {domain!r}: size must be at least 1, got {self.size}.")
        if first_n is not None:
            if not 1 <= first_n <= self.size:
                raise DatasetError(
                    f"synthetic {domain}: asked for the first {first_n} images but it has {self.size}; "
                    f"choose a number between 1 and {self.size}."
                )
            self.size = first_n
        height, width = image_size
        if height < 16 or width < 16:
            raise DatasetError(f"synthetic images must be at least 16x16 pixels, got {height}x{width}.")
        self.image_size = (int(height), int(width))
        self.seed = seed
        self.name = f"synthetic {domain}"
        self.labelled = self.domain.labelled
        self.label_set = label_set
        self.classes = SYNTHETIC_LABELS.class_names(label_set)
        self.num_classes = len(self.classes)
        self.ignore_index = IGNORE_INDEX
        self._lut = SYNTHETIC_LABELS.lut(label_set).astype(np.int64)

    def __len__(self) -> int:
        return self.size

    @property
    def ids(self) -> list[str]:
        return [f"{self.domain.name}_{i:05d}" for i in range(self.size)]

    def regions(self, image_id: str) -> dict[str, np.ndarray]:
        """Named pixel regions of the image `image_id` (one of `ids`), each a bool [H,W] array:
        "shadow" and "sunlit" ground (ground_light). kd.engine.evaluate scores each region apart
        where a dataset offers them; an image without shadows has an empty "shadow"."""
        domain, _, number = image_id.rpartition("_")
        if domain != self.domain.name or not number.isdigit() or not 0 <= int(number) < self.size:
            raise DatasetError(
                f"{self.name} has no image {image_id!r}; its ids run {self.ids[0]}..{self.ids[-1]}."
            )
        shadow, sunlit = ground_light(self.seed, self.domain, int(number), *self.image_size)
        return {"shadow": shadow, "sunlit": sunlit}

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.size:
            raise IndexError(f"{self.name} has {self.size} images, no index {index}")
        image, labels = render(self.seed, self.domain, index, *self.image_size)
        mask = self._lut[labels] if self.labelled else np.full(labels.shape, IGNORE_INDEX, np.int64)
        return {
            "image": tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1)),
            "mask": tv_tensors.Mask(torch.from_numpy(mask)),
            "index": index,
            "id": f"{self.domain.name}_{index:05d}",
        }
