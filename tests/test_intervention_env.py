"""InterventionTiming-v0: the model's documented mechanics and bad input (the contract every
env keeps — Gymnasium, determinism, batch of one, expectations — is tests/test_env_contract.py)."""

from __future__ import annotations

import numpy as np
import pytest

from envs.intervention import InterventionTimingEnv, InterventionTimingVectorEnv
from envs.intervention_model import InterventionModel, State, UserTraits, transition
from rewards.intervention import InterventionRewardWeights

REWARD = InterventionRewardWeights().function()
from synth import ConfigError, InvalidActionError


def _users(n: int, traits: float = 0.5) -> UserTraits:
    return UserTraits.from_traits(np.full((n, 10), traits))


def _state(n: int, stress: float, valence: float) -> State:
    z = np.zeros(n)
    return State(valence=z + valence, arousal=z + stress, stress=z + stress,
                 engagement=z + 0.5, fatigue=z.copy(), annoyance=z.copy(),
                 pairing=z.copy(), pair_value=z.copy(), base_valence=z + 0.2,
                 base_engagement=z + 0.5)


def test_interventions_help_when_needed_and_annoy_when_not():
    args = dict(user=_users(1), consent=np.ones(1, bool), shock=np.zeros(1), u=None,
                model=InterventionModel(), reward_fn=REWARD, expected=True)
    distressed, calm = _state(1, 0.8, -0.4), _state(1, 0.1, 0.3)
    help_ = transition(distressed, np.array([1]), **args)
    assert help_.needed[0] and not help_.false_intervention[0]
    assert distressed.stress[0] < _after_noop(0.8, -0.4).stress[0]
    false = transition(calm, np.array([1]), **args)
    assert false.false_intervention[0] and calm.annoyance[0] > 0


def _after_noop(stress: float, valence: float) -> State:
    s = _state(1, stress, valence)
    transition(s, np.array([0]), _users(1), np.ones(1, bool), np.zeros(1), None,
               InterventionModel(), REWARD, expected=True)
    return s


def test_pairing_pays_off_after_its_delay_and_nothing_without_consent():
    m, w = InterventionModel(pairing_delay=3), REWARD
    s = _state(1, 0.1, 0.2)
    user = _users(1, traits=0.9)
    kw = dict(user=user, consent=np.ones(1, bool), shock=np.zeros(1), u=np.zeros((1, 2)),
              model=m, reward_fn=w)
    transition(s, np.array([5]), **kw)                       # accepted (u = 0)
    assert s.pairing[0] == 2
    engagement = []
    for _ in range(3):
        transition(s, np.array([0]), **kw)
        engagement.append(s.engagement[0])
    assert engagement[1] - engagement[0] > 0.1 and s.pairing[0] == 0
    refused = transition(_state(1, 0.8, -0.4), np.array([1]), user, np.zeros(1, bool),
                         np.zeros(1), np.zeros((1, 2)), m, w)
    assert refused.reward[0] == 0.0 and refused.acted_without_consent[0]


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(days=0), "days=0"), (dict(slots_per_day=25), "slots_per_day=25"),
    (dict(obs_noise=2.0), "obs_noise=2.0"), (dict(model={"shock_rate": 1.5}), "shock_rate"),
    (dict(reward_weights={"sentiment": -1}), "sentiment=-1"),
    (dict(model={"nope": 1}), "valid keys"),
])
def test_invalid_arguments_raise_value_error(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        InterventionTimingEnv(**kwargs)


def test_an_injected_reward_function_replaces_the_reward():
    def compliance_only(d_valence, d_engagement, complied, false_intervention):
        return np.asarray(complied, dtype=np.float64)

    env = InterventionTimingVectorEnv(3000, reward_fn=compliance_only)
    _, info = env.reset(seed=0)
    _, reward, _, _, info = env.step(np.full(3000, 1))
    np.testing.assert_array_equal(reward, info["complied"].astype(float) * info["consent"])
    with pytest.raises(ConfigError, match="not both"):
        InterventionTimingEnv(reward_fn=compliance_only, reward_weights={"sentiment": 1})
    with pytest.raises(ConfigError, match="not callable"):
        InterventionTimingEnv(reward_fn=3)


def test_bad_actions_raise_clear_errors():
    env = InterventionTimingEnv()
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match="Discrete\\(6\\)"):
        env.step(6)


@pytest.mark.parametrize("drift, moves", [(0.0, False), (0.3, True)])
def test_the_persona_drifts_from_day_to_day(drift, moves):
    env = InterventionTimingVectorEnv(500, population={"drift_rate": drift, "bot_fraction": 0},
                                      model={"optout_scale": 0.0, "return_base": 1.0})
    _, info = env.reset(seed=0)
    first = info["user_tone_fit"].copy(), info["latent_weights"].copy()
    for _ in range(4):                                   # one day: four decisions
        _, _, _, _, info = env.step(np.zeros(500, np.int64))
    moved = np.abs(info["user_tone_fit"] - first[0]).max(axis=1) > 1e-9
    assert moved.all() if moves else not moved.any()
    np.testing.assert_allclose(info["latent_weights"].sum(axis=1), 1.0)
