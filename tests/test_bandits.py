"""LinUCB and linear Thompson sampling learn a linear contextual bandit; the online-baseline
learner checkpoints them without pickle."""

from __future__ import annotations

import numpy as np
import pytest

from agents.baselines.bandits import LinearThompson, LinUCB
from agents.learners.base import OnlineBaseline
from envs.creator import create_env
from personarl.errors import ConfigError

THETA = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.3, 0.3, 0.3]])   # arm x feature


def play(policy, rng, rounds=300, batch=32):
    regret = []
    for _ in range(rounds):
        x = rng.random((batch, 3))
        means = x @ THETA.T
        a = policy.act(x)
        r = means[np.arange(batch), a] + rng.normal(0, 0.1, batch)
        policy.update(x, a, r)
        regret.append((means.max(axis=1) - means[np.arange(batch), a]).mean())
    return np.array(regret)


@pytest.mark.parametrize("cls", [LinUCB, LinearThompson])
def test_bandit_learns_the_best_arm_and_its_regret_falls(cls, rng):
    policy = cls(3, 3, seed=0)
    regret = play(policy, rng)
    assert regret[-50:].mean() < 0.25 * regret[:10].mean()
    policy.learning = False
    x = rng.random((2000, 3))
    best = (x @ THETA.T).argmax(axis=1)
    assert (policy.act(x) == best).mean() > 0.9
    np.testing.assert_allclose(policy.action_probs(x[:5]).sum(axis=1), 1.0)


def test_frozen_bandits_do_not_learn(rng):
    policy = LinUCB(3, 3)
    policy.learning = False
    before = policy.A.copy()
    policy.update(rng.random((10, 3)), np.zeros(10, dtype=int), np.ones(10))
    np.testing.assert_array_equal(policy.A, before)


def test_thompson_action_probs_estimate_its_sampling(rng):
    policy = LinearThompson(3, 3, scale=1.0, seed=1)
    probs = policy.action_probs(rng.random((4, 3)))
    assert probs.shape == (4, 3) and np.allclose(probs.sum(axis=1), 1.0)
    assert (probs.max(axis=1) < 1.0).any()          # an untrained posterior is uncertain


@pytest.mark.parametrize("kwargs, key", [({"alpha": -1}, "alpha"), ({"ridge": 0}, "ridge"),
                                         ({"scale": 0}, "scale")])
def test_bad_bandit_parameters_name_the_value(kwargs, key):
    cls = LinearThompson if "scale" in kwargs else LinUCB
    with pytest.raises(ConfigError, match=key):
        cls(3, 3, **kwargs)


def test_online_baseline_checkpoint_round_trip(tmp_path):
    make = lambda n: create_env("personarl/AgentRouting-v0",  # noqa: E731
                                {"num_envs": n, "info_level": "none"})
    a = OnlineBaseline(LinUCB(6, 34, seed=3), make, num_envs=32, steps_per_iteration=8, seed=0)
    metrics = a.train()
    assert metrics["charts/episodes"] >= 0 and a.env_steps == 256 and a.iteration == 1
    a.save(tmp_path)
    assert not any(p.suffix == ".pkl" for p in tmp_path.iterdir())
    b = OnlineBaseline(LinUCB(6, 34, seed=99), make, num_envs=32, steps_per_iteration=8,
                       seed=0)
    b.restore(tmp_path)
    assert (b.iteration, b.env_steps) == (1, 256)
    np.testing.assert_array_equal(a._policy.A, b._policy.A)
    np.testing.assert_array_equal(a._policy.theta, b._policy.theta)
    obs = np.random.default_rng(0).random((16, 34)).astype(np.float32)
    np.testing.assert_array_equal(a.policy().act(obs), b.policy().act(obs))
