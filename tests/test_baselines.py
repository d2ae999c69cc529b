"""Baseline policies behind the shared interface."""

from __future__ import annotations

import numpy as np
import pytest

from agents.baselines.policies import GreedyRouter, MyopicOracle, PersonaRouter
from agents.baselines.factory import baselines_for, make_policy
from envs import ROUTING_ID, AgentRoutingVectorEnv
from synth import ConfigError


@pytest.fixture(scope="module")
def batch():
    env = AgentRoutingVectorEnv(512)
    obs, info = env.reset(seed=0)
    return env, obs, info


@pytest.mark.parametrize("name", ["random", "greedy", "persona_router", "oracle", "linucb",
                                  "thompson"])
def test_every_baseline_returns_valid_actions_and_distributions(batch, name):
    env, obs, info = batch
    assert baselines_for(ROUTING_ID, {}) == ["random", "linucb", "thompson", "oracle",
                                             "greedy", "persona_router"]
    policy = make_policy(ROUTING_ID, name, {})
    action = policy.act(obs, info)
    probs = policy.action_probs(obs, info)
    assert action.shape == (512,) and ((action >= 0) & (action < 6)).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert env.step(action)[0].shape == obs.shape


def test_oracle_follows_the_ground_truth_and_needs_it(batch):
    env, obs, info = batch
    oracle = MyopicOracle(env.layout.num_agents)
    assert (oracle.act(obs, info) == info["oracle_action"]).all()
    with pytest.raises(ConfigError, match="info_level='full'"):
        oracle.act(obs, None)


def test_greedy_learns_the_best_agent_per_task(batch):
    env, obs, _ = batch
    greedy = GreedyRouter(env.layout)
    task = obs[:, :5].argmax(axis=1)
    best = (task + 2) % 6                      # a made-up world: one good agent per task
    for _ in range(30):
        for a in range(6):
            action = np.full(len(obs), a)
            greedy.update(obs, action, (action == best).astype(float))
    greedy.learning = False                    # frozen: greedy, no exploration
    assert (greedy.act(obs) == best).all()
    before = greedy.sums.copy()
    greedy.update(obs, best, np.zeros(len(obs)))
    assert np.array_equal(before, greedy.sums)


def test_persona_router_keeps_users_without_consent_in_their_own_bucket(batch):
    env, _, _ = batch
    router = PersonaRouter(env.layout, min_confidence=0.6)
    env = AgentRoutingVectorEnv(2000, horizon=10)
    obs, info = env.reset(seed=1)
    none = router._personas - 1
    # before any interaction the estimate is the population prior: nobody has a persona yet
    assert (router.bucket(obs) % router._personas == none).all()
    for _ in range(5):
        obs, _, _, _, info = env.step(np.zeros(2000, np.int64))
    persona = router.bucket(obs) % router._personas
    confident = obs[:, env.layout.slices()["persona_confidence"]][:, 0] >= 0.6
    assert (persona[~info["consent"]] == none).all()
    assert np.array_equal(persona != none, confident & info["consent"])
    assert (persona != none).mean() > 0.2


def test_unknown_baseline_lists_valid_names(batch):
    with pytest.raises(ConfigError, match="valid: .*persona_router"):
        make_policy(ROUTING_ID, "ppo_magic", {})
