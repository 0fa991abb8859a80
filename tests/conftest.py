from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kd.data import locate_camvid


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
