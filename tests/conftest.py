"""Fixtures shared by test modules; plain helper functions live in helpers.py."""

import os
from pathlib import Path

import pytest
import torch

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


@pytest.fixture(scope="module")
def local_ray():
    """A real local Ray of 2 CPUs, started as a study starts it, for one test module; yields `ray`."""
    # Ray Tune takes seconds to import, and most test runs never start Ray
    import ray

    from study.cluster import start_ray

    # another module's Ray, or one a study left running: this one must be the study's own
    if ray.is_initialized():
        ray.shutdown()
    # Ray's default, not the developer's: a local Ray turns token authentication on unless told not to
    auth_mode = os.environ.pop("RAY_AUTH_MODE", None)
    start_ray(None, num_cpus=2)
    yield ray
    ray.shutdown()
    os.environ.pop("RAY_AUTH_MODE", None)
    if auth_mode is not None:
        os.environ["RAY_AUTH_MODE"] = auth_mode
