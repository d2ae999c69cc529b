"""PersonalityAdaptation baselines and the archetype × style finding."""

from __future__ import annotations

import numpy as np
import pytest

from agents.baselines.adaptation import AdaptationPlanner, FixedStyle, ObservedStyleGreedy
from agents.baselines.factory import baselines_for, make_policy
from agents.baselines.evaluation import run_episodes
from envs import ADAPTATION_ID, PersonalityAdaptationVectorEnv
from envs.adaptation_model import STYLES
from synth import ConfigError


def make_env(n: int) -> PersonalityAdaptationVectorEnv:
    return PersonalityAdaptationVectorEnv(n, info_level="full")


@pytest.mark.slow
def test_the_best_fixed_style_differs_across_archetypes():
    primary, means = None, []
    for style in STYLES:
        r = run_episodes(FixedStyle(style), make_env, 1500, seed=11,
                         first_keys=("latent_primary",))
        primary = r.first["latent_primary"]
        means.append([r.returns[primary == a].mean() for a in range(6)])
    best = np.array(means).argmax(axis=0)            # best style per archetype
    assert len(set(best.tolist())) >= 3, [STYLES[b] for b in best]


def test_planner_with_depth_one_is_the_myopic_oracle():
    env = make_env(800)
    obs, info = env.reset(seed=1)
    values = AdaptationPlanner(depth=1).values(obs, info)
    np.testing.assert_allclose(values, info["expected_reward"], atol=1e-6)
    assert (values.argmax(axis=1) == info["oracle_action"]).mean() > 0.99


def test_baselines_act_validly_and_the_planner_needs_ground_truth():
    env = make_env(300)
    obs, info = env.reset(seed=0)
    assert baselines_for(ADAPTATION_ID, {"action_mode": "continuous"}) == ["random", "oracle"]
    for name in baselines_for(ADAPTATION_ID, {}):
        action = make_policy(ADAPTATION_ID, name, {}).act(obs, info)
        assert action.shape == (300,) and ((action >= 0) & (action < 9)).all()
    assert (ObservedStyleGreedy().bucket(obs) < 24).all()
    with pytest.raises(ConfigError, match="info_level='full'"):
        AdaptationPlanner().act(obs, {})
    with pytest.raises(ConfigError, match="valid: .*planner"):
        make_policy(ADAPTATION_ID, "mind_reader", {})
    assert FixedStyle("balance_direct").act(obs).tolist() == [8] * 300


def test_continuous_policies_are_evaluated_too():
    class PreferredStyle:                       # the continuous myopic oracle
        privileged, learning, name = True, False, "preferred"

        def act(self, obs, info=None):
            return info["oracle_action"]

    result = run_episodes(PreferredStyle(),
                          lambda n: PersonalityAdaptationVectorEnv(n, action_mode="continuous"),
                          200, seed=0)
    assert result.returns.mean() > 10 and np.isnan(result.oracle_agreement).all()
