"""Parity end to end: policies trained by experiments.train (RLlib PPO and SB3 PPO, on a
discrete and a continuous env) are exported to bundles at the end of the run; on 1,000 raw
observations from env rollouts the bundle's outputs match the trained torch policy within
1e-5 and its greedy actions are identical. Also: experiments.export on a checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.serving.loader import load_policy
from envs.creator import create_env
from experiments.job import export_checkpoint
from experiments.schema import register_configs
from experiments.job import train
from experiments.wiring import env_kwargs
from tests.readme import command, overrides

from .test_train_run import SMALL_PPO, SMOKE, load

ROOT = Path(__file__).resolve().parents[1]
register_configs()
TOL = 1e-5
#: the README's runs of other envs (their own experiment overlays, so smoke's is spelt out)
OTHER_ENVS = ["checkpoint.every=1", "progress=false", "eval.baseline_warmup_steps=50",
              "eval.baseline_warmup_envs=64"]
CASES = {
    "ppo-discrete": ["agent=ppo"],
    "ppo-continuous": [*overrides("experiment=adaptation_continuous"), *OTHER_ENVS],
    "ppo-intervention-discrete": [*overrides("experiment=intervention"), *OTHER_ENVS],
    "sb3-discrete": ["agent=sb3_ppo"],
    "sb3-continuous": ["agent=sb3_ppo", "env=adaptation", "env.action_mode=continuous"],
}


@pytest.fixture(scope="module")
def runs(ray_session, tmp_path_factory):
    """One tiny training run per case (the bundle is written at the end of each)."""
    out = {}
    for case, extra in CASES.items():
        cfg = load(*SMOKE, *SMALL_PPO, *extra, "budget=2048", "eval.episodes=32",
                   "eval.baselines=[random]")
        run = tmp_path_factory.mktemp(case)
        result = train(cfg, run)
        out[case] = (cfg, run, Path(result["bundle"]))
    return out


def rollout_observations(cfg, policy, n: int = 1000) -> np.ndarray:
    """``n`` raw observations from 50 users acting with the bundle's sampled actions."""
    env_id, kwargs = env_kwargs(cfg)
    env = create_env(env_id, {**kwargs, "num_envs": 50, "info_level": "none"})
    obs, _ = env.reset(seed=123)
    seen = []
    while sum(len(o) for o in seen) < n:
        seen.append(obs)
        obs, *_ = env.step(policy.act_batch(obs, exploration="sample"))
    env.close()
    return np.concatenate(seen)[:n]


def reference(case: str, checkpoint: Path, obs: np.ndarray) -> tuple[dict, np.ndarray]:
    """The trained torch policy's distribution parameters and greedy actions."""
    x = torch.from_numpy(obs)
    if case.startswith("ppo"):
        from ray.rllib.core.rl_module.rl_module import RLModule

        from agents.learners.rllib_ppo import ModulePolicy
        module = RLModule.from_checkpoint(str(
            checkpoint / "learner_group" / "learner" / "rl_module" / "default_policy"))
        greedy = ModulePolicy(module, module.action_space).act(obs)
        z = ModulePolicy(module, module.action_space).dist_inputs(obs)
        if case.endswith("discrete"):
            return {"logits": z}, greedy
        mean, log_std = np.split(z, 2, axis=1)
        return {"mean": mean, "log_std": log_std}, greedy
    from stable_baselines3 import PPO
    policy = PPO.load(checkpoint / "model.zip", device="cpu").policy
    with torch.no_grad():
        dist = policy.get_distribution(x).distribution
    greedy = policy.predict(obs, deterministic=True)[0]
    if case.endswith("discrete"):
        return {"log_probs": dist.logits.numpy()}, greedy       # SB3 normalises its logits
    return {"mean": dist.mean.numpy(), "log_std": dist.stddev.log().numpy()}, greedy


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_bundle_matches_the_trained_policy(runs, case):
    cfg, run, bundle = runs[case]
    assert bundle == run / "policy"
    policy = load_policy(bundle, seed=0)
    spec = json.loads((bundle / "policy.json").read_text())
    assert spec["source"]["learner"] == ("rllib_ppo" if case.startswith("ppo") else "sb3_ppo")
    assert spec["config_hash"] == json.loads((run / "run.json").read_text())["config_hash"]
    assert spec["training"]["evaluation"]["train"]["episodes"] == 32
    obs = rollout_observations(cfg, policy)
    assert obs.shape == (1000, policy.obs_dim) and len(np.unique(obs, axis=0)) > 500
    checkpoint = Path(spec["source"]["checkpoint"])
    want, greedy = reference(case, checkpoint, obs)
    got = policy.distribution(obs)
    if "log_probs" in want:
        z = got["logits"]
        got = {"log_probs": z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
               - z.max(1, keepdims=True)}
    for key, value in want.items():
        assert np.abs(got[key] - value).max() <= TOL, (key, np.abs(got[key] - value).max())
    actions = policy.act_batch(obs)
    if policy.discrete:
        assert np.array_equal(actions, greedy)
    else:
        assert np.abs(actions - greedy).max() <= TOL


@pytest.mark.slow
def test_export_command_and_refusals(runs, tmp_path):
    _, run, _ = runs["ppo-discrete"]
    checkpoint = sorted((run / "checkpoints").glob("iter_*"))[-1]
    out = subprocess.run(command("experiments.export", {           # as the README says
        "outputs/<date>/<time>/checkpoints/iter_000214": checkpoint,
        "bundles/routing": tmp_path / "b"}, [f"hydra.run.dir={tmp_path / 'hydra'}"]),
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"bundle: {tmp_path / 'b'}" in out.stdout
    # the same policy: the same outputs (not necessarily the same bytes — the exporter's node
    # names depend on what the exporting process exported before)
    again_policy, run_policy = load_policy(tmp_path / "b"), load_policy(run / "policy")
    obs = np.random.default_rng(0).random((256, run_policy.obs_dim), dtype=np.float32)
    np.testing.assert_allclose(again_policy.logits(obs), run_policy.logits(obs), rtol=0,
                               atol=1e-6)
    again = subprocess.run([sys.executable, "-m", "experiments.export",
                            f"checkpoint={checkpoint}", f"out={tmp_path / 'b'}",
                            f"hydra.run.dir={tmp_path / 'hydra2'}"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "already exists" in again.stdout + again.stderr
    from personarl.errors import ConfigError
    with pytest.raises(ConfigError, match="not a complete training checkpoint"):
        export_checkpoint(run)
