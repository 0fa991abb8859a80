"""Plain helpers shared by test modules: made-up images, run folders written by hand, tiny networks,
a headless browser and the smoke study. Fixtures live in conftest.py; no test module imports another."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from PIL import Image

from kd.data import PairedTransform, SyntheticRoadScenes
from kd.engine import Engine, RunData, RunSettings
from kd.metrics import METRICS
from kd.models import build_student, build_teacher
from study import config as study_config

# ---------------------------------------------------------------- images


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


def rgb(height: int = 8, width: int = 12, value: int = 100) -> np.ndarray:
    return np.full((height, width, 3), value, np.uint8)


# ------------------------------------------------ run folders made by hand (no Ray, no training)


IMAGES = ["img0", "img1", "img2", "img3"]
# Baseline b1, per seed: mIoU_i of the four images; miou_img per seed 0.5, 0.6, 0.7.
B1 = {0: [0.4, 0.6, 0.5, 0.5], 1: [0.5, 0.7, 0.6, 0.6], 2: [0.6, 0.8, 0.7, 0.7]}
# sd's chosen trial s1 = b1 + these differences, pair by pair (seed-major, image order).
DIFF = [0.1, 0.2, -0.05, 0.3, 0.15, 0.05, -0.1, 0.25, 0.12, 0.08, 0.0, 0.22]


def trial(trial_id, method, status="completed", **values):
    row = {
        "trial_id": trial_id,
        "method": method,
        "status": status,
        "split_point": "stage5",
        "seeds": 3,
        "params": 1_000_000,
        "flops": 2_500_000_000,
        "duration_s": 10.0,
        "error": None,
        "trial_dir": f"trials/{trial_id}",
        "node": "n0",
    }
    for metric in METRICS:
        row[metric] = np.nan if status != "completed" else 0.5
        row[f"{metric}_std"] = np.nan if status != "completed" else 0.01
    row.update(values)
    return row


def trial_rows():
    return [
        trial("b1", "baseline", lr=0.01, miou=0.62, miou_img=0.6, hp_acc=0.083, var=0.005, miou_std=0.05),
        trial("b2", "baseline", lr=0.05, miou_img=0.55, var=0.001),
        trial(
            "s1",
            "sd",
            lr=0.01,
            feature_lr=0.003,
            miou_img=0.7,
            hp_acc=0.3,
            var=0.004,
            params=800_000,
            flops=1_000_000_000,
        ),
        trial(
            "s2", "sd", "failed", lr=0.5, feature_lr=0.9, error="NonFiniteLossError: loss term 'kd' is nan"
        ),
        trial("e1", "esd", lr=0.01, r=3.0, miou=0.55, hp_acc=0.2, var=0.006, miou_std=0.02, hp_acc_std=0.05),
        trial("e2", "esd", lr=0.02, r=0.0, miou=0.45, hp_acc=0.1, var=0.009, miou_std=0.03, hp_acc_std=0.04),
        trial("e3", "esd", lr=0.03, r=1.0, miou=0.60, hp_acc=0.25, var=0.004, miou_std=0.01, hp_acc_std=0.02),
    ]


def per_image_rows():
    rows = []
    k = 0
    for seed, scores in B1.items():
        for image, score in zip(IMAGES, scores, strict=True):
            rows.append(
                {"trial_id": "b1", "method": "baseline", "seed": seed, "image_id": image, "miou": score}
            )
            rows.append(
                {"trial_id": "s1", "method": "sd", "seed": seed, "image_id": image, "miou": score + DIFF[k]}
            )
            k += 1
    rng = np.random.default_rng(0)
    for trial_id in ("e1", "e2", "e3"):
        for seed in range(3):
            rows += [
                {
                    "trial_id": trial_id,
                    "method": "esd",
                    "seed": seed,
                    "image_id": image,
                    "miou": float(rng.uniform(0.3, 0.9)),
                }
                for image in IMAGES
            ]
    for row in rows:  # esd's chosen trial e1 finds img3 hardest: a fourth row of samples
        if (row["trial_id"], row["seed"], row["image_id"]) == ("e1", 0, "img3"):
            row["miou"] = 0.1

    return rows


def curve_rows(trial_id, method):
    rows, shift = [], {"baseline": 0.0, "sd": 0.05, "esd": 0.1}[method]  # lines apart in the screenshot
    for epoch in range(4):
        rows.append(
            {
                "trial_id": trial_id,
                "method": method,
                "seed": 0,
                "epoch": epoch,
                "stage": epoch // 2,
                "stage_epoch": epoch % 2,
                "loss": 1.0 / (epoch + 1) + shift,
                "loss_ce": 0.5 / (epoch + 1) + shift,
                "loss_kd": 0.1 if method != "baseline" else np.nan,
                "lr": 0.01,
                "seconds": 1.0,
                "miou": 0.5 + 0.05 * epoch + shift if epoch % 2 else np.nan,
                "miou_img": np.nan,
                "hp_acc": np.nan,
                "var": np.nan,
            }
        )
    return rows


def journal(path: Path, name: str, directions=("maximize",), n_trials: int = 8, fail: bool = False) -> None:
    def objective(t):  # define-by-run with a conditional parameter, as the study's search spaces
        method = t.suggest_categorical("method", ["baseline", "esd"])
        lr = t.suggest_float(f"{method}.lr", 1e-4, 1e-1, log=True)
        r = t.suggest_float("esd.r", 0.0, 10.0) if method == "esd" else 0.0
        if fail:
            raise RuntimeError("diverged")
        value = 0.5 + 0.1 * math.log10(lr) / 4 + 0.01 * r
        return value if len(directions) == 1 else (value, 0.01 / (1 + r))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=JournalStorage(JournalFileBackend(str(path))),
        study_name=name,
        directions=list(directions),
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    study.optimize(objective, n_trials=n_trials, catch=(RuntimeError,))


def make_run(
    root: Path,
    *,
    config=None,
    trials=True,
    per_image=True,
    curves=True,
    samples=True,
    predictions=True,
    with_journal=True,
    rows=None,
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    config = {
        "name": "hand",
        "methods": ["baseline", "sd", "esd"],
        "objectives": ["miou_img"],
        "sampler": "tpe",
        "seeds": 3,
        "trials": 10,
        "data": "synthetic",
        **(config or {}),
    }
    (root / "config.json").write_text(json.dumps(config))
    rows = trial_rows() if rows is None else rows
    if trials:
        pd.DataFrame(rows).to_parquet(root / "trials.parquet")
    if per_image:
        pd.DataFrame(per_image_rows()).to_parquet(root / "per_image.parquet")
    if curves:
        frames = [curve_rows("b1", "baseline"), curve_rows("s1", "sd"), curve_rows("e1", "esd")]
        pd.DataFrame([r for f in frames for r in f]).to_parquet(root / "curves.parquet")
    rng = np.random.default_rng(1)
    masks = rng.integers(0, 2, (4, 12, 16), dtype=np.uint8)
    masks[:, 0, :] = 255
    if samples:
        np.savez(
            root / "samples.npz",
            ids=np.array(IMAGES),
            images=rng.integers(0, 255, (4, 12, 16, 3), dtype=np.uint8),
            masks=masks,
            classes=np.array(["background", "road"]),
        )
    if predictions:
        for row in rows:
            folder = root / "trials" / row["trial_id"]
            folder.mkdir(parents=True, exist_ok=True)
            np.savez(
                folder / "predictions.npz",
                ids=np.array(IMAGES),
                predictions=rng.integers(0, 2, masks.shape, dtype=np.uint8),
            )
    if with_journal:
        journal(root / "optuna.journal", config["name"])
    return root


TEST_IMAGES = ["t0", "t1", "t2"]
# The chosen trials on the test images, per seed: b1 and s1 (esd was not scored, as after a failure).
TEST_B1 = {0: [0.3, 0.5, 0.4], 1: [0.35, 0.55, 0.45], 2: [0.2, 0.6, 0.4]}
TEST_GAIN = {0: 0.05, 1: 0.02, 2: 0.06}  # s1 = b1 + this on every test image of the seed


def score_on_test(root: Path, scores: dict, miou=None) -> Path:
    """What the driver writes once the chosen trials are scored: final.parquet and the test rows of
    per_image. `scores`: {(trial_id, method): {seed: {image_id: mIoU_i}}}; `miou(trial_id, seed)`:
    the pooled mIoU (default: the images' mean)."""
    val = pd.read_parquet(root / "per_image.parquet").assign(split="val")
    rows, finals = [], []
    for (trial_id, method), seeds in scores.items():
        for seed, images in seeds.items():
            ids = {"trial_id": trial_id, "method": method}
            rows += [
                {**ids, "split": "test", "seed": seed, "image_id": i, "miou": v} for i, v in images.items()
            ]
            values = np.array(list(images.values()))
            finals.append(
                {**ids, "variant": method, "seed": seed}
                | {
                    "miou": miou(trial_id, seed) if miou else float(values.mean()),
                    "miou_img": float(values.mean()),
                    "hp_acc": float((values > 0.75).mean()),
                    "var": float(values.var()),
                }
            )
    pd.concat([val, pd.DataFrame(rows)]).to_parquet(root / "per_image.parquet")
    pd.DataFrame(finals).to_parquet(root / "final.parquet")
    return root


def scored_on_test(root: Path, pooled_gain: dict | None = None) -> Path:
    """b1 and s1 (s1 = b1 + TEST_GAIN) scored on TEST_IMAGES; esd not scored. `pooled_gain`: s1's
    pooled mIoU over b1's per seed, when it should differ from the images' TEST_GAIN."""
    gains = {"b1": dict.fromkeys(TEST_GAIN, 0.0), "s1": TEST_GAIN}
    pooled = {"b1": gains["b1"], "s1": pooled_gain or TEST_GAIN}
    scores = {
        (trial_id, method): {
            seed: {i: v + gains[trial_id][seed] for i, v in zip(TEST_IMAGES, values, strict=True)}
            for seed, values in TEST_B1.items()
        }
        for trial_id, method in (("b1", "baseline"), ("s1", "sd"))
    }
    return score_on_test(root, scores, miou=lambda trial_id, seed: 0.4 + seed / 100 + pooled[trial_id][seed])


# ---------------------------------------------------------------- tiny networks on synthetic scenes

SIZE = (48, 96)
POINT = "stage3"


def tiny_data():
    # 8 target images: two optimiser steps of 4 per epoch.
    target = SyntheticRoadScenes("target", size=8, image_size=SIZE, seed=0, label_set="binary")
    val = SyntheticRoadScenes("test", size=3, image_size=SIZE, seed=0, label_set="binary")
    return RunData(target, val, train_transform=PairedTransform(crop=(40, 80), hflip=True, normalize=False))


def tiny_teacher():
    torch.manual_seed(0)
    return build_teacher(num_classes=2, pretrained=False).eval()


def train_alone(recipe):
    """`recipe`'s student trained without a teacher on 4 small synthetic images; the engine's result."""
    target = SyntheticRoadScenes("target", size=4, image_size=(32, 64), label_set="binary")
    val = SyntheticRoadScenes("test", size=2, image_size=(32, 64), label_set="binary")
    torch.manual_seed(0)
    student = build_student(recipe.student, 2)
    return Engine(recipe, student, None, RunData(target, val), RunSettings(batch_size=2), progress=None).run()


def tiny_student(recipe, teacher, seed=0):
    torch.manual_seed(seed)
    if recipe.student == "sd":
        return build_student("sd", 2, teacher=teacher, split_point=POINT)
    return build_student("pspnet_resnet18_half", 2)


# ---------------------------------------------------------------- the report in a headless browser


def find_chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("chromium not installed (Debian package 'chromium'); .ci/run installs it")
    return found


def headless(chromium: str, *args: str) -> subprocess.CompletedProcess:
    # Parcoords (Optuna's parallel coordinates) needs WebGL: software WebGL is opt-in in recent Chromium.
    return subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-unsafe-swiftshader",
            "--hide-scrollbars",
            "--virtual-time-budget=10000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


# ---------------------------------------------------------------- studies


def smoke(tmp_path, **overrides):
    """The smoke preset, writing under `tmp_path`."""
    return study_config.resolve("smoke", overrides={"out": str(tmp_path), **overrides})
