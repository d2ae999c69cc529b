"""Shared fixtures."""

from __future__ import annotations

import os

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def ray_session():
    """One Ray instance for the whole session (2 CPUs, no dashboard, a short temp dir:
    Ray's socket paths must stay under 107 characters)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ray = pytest.importorskip("ray")
    import torch

    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=f"/tmp/ray-{os.getpid()}",
             log_to_driver=False)
    yield ray
    ray.shutdown()
