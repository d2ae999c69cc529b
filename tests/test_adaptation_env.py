"""PersonalityAdaptation-v0: the compatibility model and bad input (the contract every env
keeps, in both action modes, is tests/test_env_contract.py)."""

from __future__ import annotations

import numpy as np
import pytest

from envs.adaptation import PersonalityAdaptationEnv, PersonalityAdaptationVectorEnv
from envs.adaptation_model import (STYLES, AdaptationModel, Preferences, satisfaction,
                                   style_vectors)
from synth import ConfigError, InvalidActionError, PopulationConfig, default_table


def test_preferred_style_is_the_continuous_optimum_and_beats_every_discrete_style():
    env = PersonalityAdaptationVectorEnv(2000, action_mode="continuous")
    _, info = env.reset(seed=0)
    core = env._core
    best = satisfaction(info["oracle_action"], core.preferences(), core.phase(core.t),
                        core.state.sentiment, core.model)
    np.testing.assert_allclose(best, 1.0)
    for style in range(len(STYLES)):
        sat = satisfaction(style_vectors(np.full(2000, style), core.perceived),
                           core.preferences(), core.phase(core.t), core.state.sentiment,
                           core.model)
        assert (sat <= best + 1e-12).all()


def test_compatibility_rules_from_the_write_up():
    table = default_table()
    pure = np.eye(6)
    prefs = Preferences.of(table.traits, pure)
    m = AdaptationModel()
    optimizer, socializer = 1, 2
    phase, calm = np.array([1]), np.zeros(1)

    def sat(user, style):
        return satisfaction(style_vectors(np.array([STYLES.index(style)]),
                                          table.traits[user:user + 1]),
                            Preferences(prefs.target[user:user + 1],
                                        prefs.importance[user:user + 1]), phase, calm, m)[0]

    assert sat(optimizer, "mirror_direct") > sat(optimizer, "mirror_warm")
    assert sat(socializer, "mirror_warm") > sat(socializer, "mirror_direct")
    # high neuroticism raises the empathy the user wants and how much it matters
    neurotic = table.traits[:1].copy()
    neurotic[0, 4] = 0.95
    p_neurotic = Preferences.of(neurotic, pure[:1])
    assert p_neurotic.target[0, 6] > prefs.target[0, 6]
    assert p_neurotic.importance[0, 6] > prefs.importance[0, 6]


def test_continuous_actions_are_clipped_and_bad_ones_rejected():
    a, b = (PersonalityAdaptationEnv(action_mode="continuous") for _ in range(2))
    a.reset(seed=0)
    b.reset(seed=0)
    wild = np.linspace(-1, 2, 10)
    assert a.step(wild)[1] == b.step(np.clip(wild, 0, 1))[1]
    for bad, fragment in ((np.full(10, np.nan), "finite"), (np.zeros(9), "shape"),
                          ("warm", "numbers")):
        with pytest.raises(InvalidActionError, match=fragment):
            a.step(bad)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(action_mode="sliders"), "action_mode='sliders'"),
    (dict(horizon=2), "horizon=2"),
    (dict(model={"mismatch_scale": 0}), "mismatch_scale=0"),
    (dict(reward_weights={"resonance": 11}), "resonance=11"),
    (dict(population=PopulationConfig(archetypes=[
        dict(name="a", traits=[.5] * 10, behaviour=[.5] * 5, task_preferences=[.2] * 5),
        dict(name="b", traits=[.5] * 10, behaviour=[.5] * 5, task_preferences=[.2] * 5)])),
     "six default archetypes"),
])
def test_invalid_arguments_raise_value_error(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        PersonalityAdaptationEnv(**kwargs)
