import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kd.data import locate_camvid


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Teachers and teacher outputs cached by tests go to a temporary folder, never ~/.cache."""
    previous = os.environ.get("SEGKD_CACHE")
    os.environ["SEGKD_CACHE"] = str(tmp_path_factory.mktemp("segkd-cache"))
    yield
    if previous is None:
        os.environ.pop("SEGKD_CACHE", None)
    else:
        os.environ["SEGKD_CACHE"] = previous


@pytest.fixture
def one_thread():
    """Small CPU convolutions spend longer waking threads than computing on 2 shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def camvid_root() -> Path:
    root = locate_camvid()
    if root is None or not root.is_dir():
        pytest.skip("CamVid not found: set SEGKD_CAMVID or place it at ../shared/data/camvid")
    return root


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


def rgb(height: int = 8, width: int = 12, value: int = 100) -> np.ndarray:
    return np.full((height, width, 3), value, np.uint8)
