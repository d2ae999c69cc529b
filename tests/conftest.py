"""Shared fixtures."""

from __future__ import annotations

import os

import numpy as np
import pytest

# the server keyed-hashes identifiers before writing them and refuses to start without a key;
# every test (and every server a test starts) uses this fixed one
os.environ.setdefault("PERSONARL_PII_KEY", "personarl-tests-fixed-pii-key-0123456789abcdef")


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


class TinyActor:
    """Builds small untrained torch actors in the bundle's output layout (tests only)."""

    @staticmethod
    def make(obs_dim: int, out_dim: int, discrete: bool, seed: int = 0):
        import torch

        torch.manual_seed(seed)

        class Actor(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.discrete = discrete
                self.net = torch.nn.Sequential(torch.nn.Linear(obs_dim, 16), torch.nn.Tanh(),
                                               torch.nn.Linear(16, out_dim))
                self.log_std = torch.nn.Parameter(torch.full((out_dim,), -3.0))

            def forward(self, obs):
                z = self.net(obs)
                return z if self.discrete else (z, self.log_std.expand_as(z))

        return Actor().eval()


@pytest.fixture(scope="session")
def tiny_bundles(tmp_path_factory):
    """Bundles of untrained actors: ``discrete`` (AgentRouting, 6 agents) and
    ``continuous`` (PersonalityAdaptation, 10 traits); made once per session."""
    pytest.importorskip("onnxruntime")
    from agents.learners.export import write_bundle
    from envs import ADAPTATION_ID, ROUTING_ID

    root = tmp_path_factory.mktemp("bundles")
    source = {"learner": "test", "checkpoint": None, "iteration": 0, "env_steps": 0}
    return {
        "discrete": write_bundle(TinyActor.make(34, 6, True), root / "discrete",
                                 env_id=ROUTING_ID, env_config={}, source=source),
        "continuous": write_bundle(TinyActor.make(33, 10, False), root / "continuous",
                                   env_id=ADAPTATION_ID,
                                   env_config={"action_mode": "continuous"}, source=source),
    }
