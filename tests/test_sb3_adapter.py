"""The SB3 VecEnv adapter over our same-step vector env."""

from __future__ import annotations

import numpy as np
import pytest

from envs import AgentRoutingVectorEnv
from personarl.errors import ConfigError

sb3 = pytest.importorskip("stable_baselines3")


def test_same_step_autoreset_matches_next_step_episodes():
    """Same seed and actions: same-step rewards are next-step's without the restart steps,
    and each final observation is next-step's last observation of that episode."""
    nxt = AgentRoutingVectorEnv(1, info_level="full")
    same = AgentRoutingVectorEnv(1, info_level="full", autoreset_mode="same_step")
    nxt.reset(seed=3)
    same.reset(seed=3)
    acts = np.random.default_rng(0).integers(0, 6, 400)
    r_same, final_same = [], []
    for t in range(300):
        _, r, term, _, info = same.step(acts[t:t + 1])
        r_same.append(r[0])
        if term[0]:
            final_same.append(info["final_obs"][0].copy())
            assert info["_final_obs"][0] and "latent_primary" in info["final_info"]
    r_next, final_next, j = [], [], 0
    while len(r_next) < 300:
        obs, r, term, _, _ = nxt.step(acts[j:j + 1])
        r_next.append(r[0])
        j += 1
        if term[0]:
            final_next.append(obs[0].copy())
            nxt.step(acts[j:j + 1])                 # the restart step ignores its action
    np.testing.assert_allclose(r_same, r_next)
    assert len(final_same) == len(final_next) > 5
    for a, b in zip(final_same, final_next):
        np.testing.assert_array_equal(a, b)


def test_sb3_vecenv_returns_reset_obs_and_terminal_observation():
    from agents.learners.sb3_ppo import SB3VecEnv

    vec = SB3VecEnv(AgentRoutingVectorEnv(8, info_level="none", autoreset_mode="same_step",
                                          horizon=1))
    vec.seed(5)
    obs = vec.reset()
    assert obs.shape == (8, 34)
    vec.step_async(np.zeros(8, dtype=np.int64))
    new_obs, reward, done, infos = vec.step_wait()
    assert done.all() and reward.dtype == np.float32           # horizon 1: every lane ends
    for i in range(8):
        assert infos[i]["terminal_observation"].shape == (34,)
        assert not infos[i]["TimeLimit.truncated"]
    assert not np.array_equal(new_obs, np.stack([i["terminal_observation"] for i in infos]))


def test_sb3_vecenv_needs_same_step_mode():
    from agents.learners.sb3_ppo import SB3VecEnv

    with pytest.raises(ConfigError, match="same_step"):
        SB3VecEnv(AgentRoutingVectorEnv(2))


def test_unknown_autoreset_mode_is_refused():
    with pytest.raises(ConfigError, match="autoreset_mode"):
        AgentRoutingVectorEnv(2, autoreset_mode="sometimes")
