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


def onnx_bundle(out, env_id: str, env_config: dict, seed: int = 0,
                weights: np.ndarray | None = None):
    """A bundle of a linear policy written with ``onnx.helper`` — no torch, so the
    serving wing's tests run in a ``pip install '.[serve,dev]'`` environment. Discrete:
    ``logits = obs · W``; continuous: ``mean = 0.5 + obs · W``, ``log_std = −3``; ``W`` is
    ``weights`` or random (``seed``)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from agents.serving.bundle import (FORMAT_VERSION, MODEL_FILE, SPEC_FILE, env_spec,
                                       sha256_file, write_manifest)
    from envs.creator import create_env
    from personarl import jsonio

    env = create_env(env_id, {**env_config, "info_level": "none"})
    spec = env_spec(env, env_id, env_config)
    d = spec["observation"]["dim"]
    k = spec["action"]["n"] if spec["distribution"] == "categorical" else spec["action"]["dim"]
    scale = 1.0 if spec["distribution"] == "categorical" else 0.05
    w = np.random.default_rng(seed).normal(0.0, scale, (d, k)) if weights is None else \
        np.asarray(weights, dtype=np.float64)
    def tensor(name, values):                        # raw bytes, as exporters write them
        values = np.asarray(values, dtype=np.float32)
        return helper.make_tensor(name, TensorProto.FLOAT, list(values.shape),
                                  values.tobytes(), raw=True)

    tensors = [tensor("w", w)]
    nodes = [helper.make_node("MatMul", ["obs", "w"], [spec["outputs"][0]])]
    if len(spec["outputs"]) == 2:     # Gaussian: mean around 0.5, constant log_std −3
        tensors += [tensor("half", np.full(k, 0.5)), tensor("zero", np.zeros((d, k))),
                    tensor("b", np.full(k, -3.0))]
        nodes = [helper.make_node("MatMul", ["obs", "w"], ["m"]),
                 helper.make_node("Add", ["m", "half"], ["mean"]),
                 helper.make_node("MatMul", ["obs", "zero"], ["z"]),
                 helper.make_node("Add", ["z", "b"], ["log_std"])]
    graph = helper.make_graph(
        nodes, "policy", [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", d])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["batch", k])
         for o in spec["outputs"]], tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    out.mkdir(parents=True)
    onnx.save_model(model, str(out / MODEL_FILE))
    spec = dict(format_version=FORMAT_VERSION, **spec,
                source={"learner": "test", "checkpoint": None, "iteration": 0,
                        "env_steps": 0, "opset": 17},
                config_hash=None, training={}, model_sha256=sha256_file(out / MODEL_FILE))
    (out / SPEC_FILE).write_text(jsonio.dumps(spec, indent=2) + "\n")
    write_manifest(out)
    return out


@pytest.fixture(scope="session")
def tiny_bundles(tmp_path_factory):
    """Bundles of untrained policies: ``discrete`` (AgentRouting, 6 agents) and
    ``continuous`` (PersonalityAdaptation, 10 traits); made once per session, without
    torch (``onnx_bundle``)."""
    pytest.importorskip("onnxruntime")
    from envs import ADAPTATION_ID, ROUTING_ID

    root = tmp_path_factory.mktemp("bundles")
    return {"discrete": onnx_bundle(root / "discrete", ROUTING_ID, {}),
            "continuous": onnx_bundle(root / "continuous", ADAPTATION_ID,
                                      {"action_mode": "continuous"}, seed=1)}
