"""AgentRouting-v0: batch lanes against single envs in distribution, what the observation
hides, bad input, the creator (the contract every env keeps is tests/test_env_contract.py)."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from scipy import stats

import envs
from envs import AgentRoutingEnv, AgentRoutingVectorEnv
from envs.creator import create_env
from synth import ConfigError, InvalidActionError, ResetNeededError

ID = "personarl/AgentRouting-v0"


def task_policy(obs: np.ndarray) -> np.ndarray:
    """A deterministic, observation-dependent policy (no RNG of its own)."""
    obs = np.atleast_2d(obs)
    task = obs[:, :5].argmax(axis=1)
    return (task + (obs[:, 5] * 20).astype(np.int64)) % 6


def test_lanes_of_a_large_batch_match_single_envs_in_distribution():
    """Two-sample Kolmogorov-Smirnov on episode returns and a chi-square test on click
    counts: B=4096 lanes vs 2000 episodes of the single env, same policy. A correct batch
    passes each at the 0.1% level."""
    vec = AgentRoutingVectorEnv(4096, info_level="none")
    obs, _ = vec.reset(seed=1)
    active, v_ret, v_clicks, v_steps = np.ones(4096, bool), np.zeros(4096), 0, 0
    while active.any():
        obs, r, term, _, _ = vec.step(task_policy(obs))
        v_ret += r * active
        v_clicks += int((obs[:, 6] * active).sum())
        v_steps += int(active.sum())
        active &= ~term
    single = AgentRoutingEnv(info_level="none")
    s_ret, s_clicks, s_steps = [], 0, 0
    obs, _ = single.reset(seed=2)
    for _ in range(2000):
        total, term = 0.0, False
        while not term:
            obs, r, term, _, _ = single.step(int(task_policy(obs)[0]))
            total += r
            s_clicks += int(obs[6])
            s_steps += 1
        s_ret.append(total)
        obs, _ = single.reset()
    assert stats.ks_2samp(v_ret, s_ret).pvalue > 1e-3
    table = [[v_clicks, v_steps - v_clicks], [s_clicks, s_steps - s_clicks]]
    assert stats.chi2_contingency(table).pvalue > 1e-3


def test_observation_hides_the_persona_of_users_without_consent():
    env = AgentRoutingVectorEnv(4000, population={"consent_rate": 0.5})
    obs, info = env.reset(seed=0)
    for _ in range(3):
        obs, _, _, _, info = env.step(np.zeros(4000, np.int64))
    cols = env.layout.slices()
    no = ~info["consent"]
    assert no.any() and info["consent"].any()
    prior = env._core.fusion.prior
    np.testing.assert_allclose(obs[no][:, cols["persona_scores"]],
                               np.broadcast_to(prior, (no.sum(), 6)), rtol=1e-6)
    assert (obs[no][:, cols["persona_confidence"]] == 0).all()
    assert (obs[~no][:, cols["persona_confidence"]] > 0).all()
    assert obs.shape[1] == env.layout.size == 34


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(num_agents=1), "num_agents=1"),
    (dict(horizon=0), "horizon=0"),
    (dict(population={"bot_fraction": 1.2}), "bot_fraction=1.2"),
    (dict(population={"proportions": {"explorer": 0.9}}), "sum to 0.9"),
    (dict(population={"proportions": {"explorer": 0.5, "pirate": 0.5}}), "'pirate'"),
    (dict(population={"bots": 0.1}), "bots"),
    (dict(info_level="some"), "info_level='some'"),
    (dict(behaviour={"latency_sd": float("nan")}), r"latency_sd=nan .* \[0, 100\]"),
    (dict(behaviour={"latency_scale_s": 0.0}), r"latency_scale_s=0.0 .* \(0, "),
    (dict(behaviour={"bot_latency_s": -1.0}), "bot_latency_s=-1.0"),
    (dict(pool_chunk=10**8), r"pool_chunk=100000000 .* \[1, 1048576\]"),
    (dict(signal_weights={"weights": [0.1] * 8}), "signal weights=.* must be a mapping"),
    (dict(fusion_prior_strength=-1.0), "fusion_prior_strength=-1.0"),
])
def test_invalid_constructor_values_raise_value_error(kwargs, fragment):
    for cls in (AgentRoutingEnv, AgentRoutingVectorEnv):
        with pytest.raises(ValueError, match=fragment) as err:
            cls(**kwargs)
        assert isinstance(err.value, ConfigError)


def test_step_before_reset_and_bad_actions_raise_clear_errors():
    env = AgentRoutingEnv()
    with pytest.raises(ResetNeededError, match="reset"):
        env.step(0)
    env.reset(seed=0)
    for bad in (6, -1, 1.5, "two", None):
        with pytest.raises(InvalidActionError, match="outside Discrete|not an integer"):
            env.step(bad)
    assert isinstance(env.step(np.int64(2))[1], float)     # numpy ints are fine
    env = AgentRoutingEnv(horizon=1)
    env.reset(seed=0)
    env.step(0)
    with pytest.raises(ResetNeededError):
        env.step(0)                                          # the episode has ended
    vec = AgentRoutingVectorEnv(3)
    with pytest.raises(ResetNeededError):
        vec.step(np.zeros(3, np.int64))
    vec.reset(seed=0)
    for bad in (np.zeros(2, np.int64), np.array([0, 1, 6]), np.zeros(3)):
        with pytest.raises(InvalidActionError, match="3 integers in"):
            vec.step(bad)


def test_creator_returns_the_native_vector_env_when_given_num_envs():
    vec = create_env(ID, {"num_envs": 16, "info_level": "none"})
    assert isinstance(vec, AgentRoutingVectorEnv) and vec.num_envs == 16
    assert isinstance(create_env(ID, {"horizon": 1}), AgentRoutingEnv)
    with pytest.raises(ConfigError, match="unknown env id"):
        create_env("personarl/Nope-v0", {})
    with pytest.raises(ConfigError, match=r"has no argument\(s\) \['horizn'\]; valid: .*'horizon'"):
        create_env(ID, {"num_envs": 2, "horizn": 3})
    vec = gym.make_vec(ID, num_envs=8, vectorization_mode="vector_entry_point")
    assert isinstance(vec.unwrapped, AgentRoutingVectorEnv)


def test_importing_envs_pulls_in_neither_ray_nor_torch():
    # nor the privacy extra's libraries (issue 21), nor synth.privacy itself, nor the
    # rlhf extra's (issue 23: learned reward models score in NumPy)
    heavy = ("ray", "torch", "opendp", "dp_accounting", "opacus", "pandas", "pyarrow",
             "sklearn", "scipy", "synth.privacy.ledger", "transformers", "trl", "datasets")
    code = ("import sys, envs, synth, rewards, agents, envs.creator, synth.privacy, "
            "synth.demographics, synth.fidelity, rewards.preferences, "
            "rewards.reward_model, envs.turns; "
            f"bad = [m for m in {heavy!r} if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert envs.env_ids()[:3] == (ID, "personarl/PersonalityAdaptation-v0",
                                  "personarl/InterventionTiming-v0")


def test_precomputed_leave_threshold_is_the_churn_model():
    from envs.routing_model import ResponseModel

    model = ResponseModel()
    rng = np.random.default_rng(0)
    u, s = rng.random(200_000), rng.random(200_000)
    leaves = u < model.churn_probability(s)
    assert np.array_equal(leaves, s < model.leave_threshold(u, np.zeros_like(u, bool)))
    assert 0.05 < leaves.mean() < 0.5
    assert not (s < model.leave_threshold(u, np.ones_like(u, bool))).any()   # bots stay
