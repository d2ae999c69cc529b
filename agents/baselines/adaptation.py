"""PersonalityAdaptation baselines (discrete styles), besides random and the myopic oracle.

* ``ObservedStyleGreedy`` — myopic greedy on what is observed: running mean reward per
  (phase, observed sentiment, perceived neuroticism) bucket and style.
* ``AdaptationPlanner`` — rolls the model's expected dynamics forward behind each first
  style (later turns: the myopic style on the imagined state) and weighs turns by the
  chance the user is still talking; privileged (reads the latent state from ``info``).
* ``FixedStyle`` — always the same style (the archetype × style table).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from agents.baselines.policies import FixedPolicy, MeanTablePolicy, Policy
from envs.adaptation_core import OBS_COLUMNS
from envs.adaptation_model import (STYLES, AdaptationModel, ChatState, Preferences,
                                   chat_transition, phase_of, satisfaction, style_rewards,
                                   style_vectors)
from rewards.adaptation import AdaptationRewardFn, AdaptationRewardWeights
from synth.archetypes import TRAITS
from personarl.errors import ConfigError, check_int

__all__ = ["ObservedStyleGreedy", "AdaptationPlanner", "FixedStyle", "adaptation_baselines"]

_K = len(STYLES)
_PERCEIVED = OBS_COLUMNS["perceived"]
_NEUROTICISM = _PERCEIVED.start + TRAITS.index("neuroticism")
_SENTIMENT, _TURN = OBS_COLUMNS["sentiment"].start, OBS_COLUMNS["turn"].start


class FixedStyle(FixedPolicy):
    """Always the same discrete style."""

    def __init__(self, style: int | str) -> None:
        super().__init__(_K)
        self.style = STYLES.index(style) if isinstance(style, str) else int(style)
        self.name = STYLES[self.style]

    def action_probs(self, obs: np.ndarray, info: Mapping[str, Any] | None = None
                     ) -> np.ndarray:
        return np.broadcast_to(np.eye(_K)[self.style], (len(obs), _K))


class ObservedStyleGreedy(MeanTablePolicy):
    """Greedy over (phase 4 × observed sentiment 3 × perceived neuroticism 2) buckets."""

    name = "greedy"

    def __init__(self, optimism: float = 1.0, epsilon: float = 0.1, seed: int = 0) -> None:
        super().__init__(_K, 24, optimism=optimism, epsilon=epsilon, seed=seed)

    def bucket(self, obs: np.ndarray) -> np.ndarray:
        phase = obs[:, OBS_COLUMNS["phase"]].argmax(axis=1)
        sentiment = np.digitize(obs[:, _SENTIMENT], [1 / 3, 2 / 3])
        neurotic = obs[:, _NEUROTICISM] > 0.5
        return (phase * 3 + sentiment) * 2 + neurotic


class AdaptationPlanner(FixedPolicy):
    """Rollout planner over the expected conversation dynamics (see the module docstring).

    Args:
        model: the env's conversation model.
        reward_fn: the env's reward (default: the documented weights).
        depth: turns looked ahead, the first included (>= 1).
        horizon: the env's turns per conversation (``horizon``).
    """

    name = "planner"
    privileged = True
    learning = False

    def __init__(self, model: AdaptationModel = AdaptationModel(),
                 reward_fn: AdaptationRewardFn | None = None, depth: int = 4,
                 horizon: int = 16) -> None:
        super().__init__(_K)
        self.model = model
        self.reward_fn = reward_fn or AdaptationRewardWeights().function()
        self.depth = check_int("depth", depth, 1, 1000)
        self.horizon = check_int("horizon", horizon, 4)

    def values(self, obs: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        """``(B, 9)`` look-ahead value of each first style."""
        if not info or "preferred_style" not in info:
            raise ConfigError("the planner reads the latent state from info: build the env "
                              "with info_level='full'")
        m, b = self.model, len(obs)
        rep = np.repeat(np.arange(b), _K)
        perceived = obs[:, _PERCEIVED].astype(np.float64)[rep]
        prefs = Preferences(np.asarray(info["preferred_style"]),
                            np.asarray(info["style_importance"])).take(rep)
        state = ChatState(np.asarray(info["latent_sentiment"], dtype=np.float64),
                          np.asarray(info["latent_engagement"], dtype=np.float64)).take(rep)
        turn = np.rint(obs[:, _TURN] * self.horizon).astype(np.int64)[rep]
        style = np.tile(np.arange(_K), b)
        total, alive = np.zeros(b * _K), np.ones(b * _K)
        for d in range(self.depth):
            phase = phase_of(turn + d, self.horizon)
            if d > 0:                       # later turns: the myopic style, imagined
                style = style_rewards(perceived, prefs, phase, state, m,
                                      self.reward_fn).argmax(axis=1)
            sat = satisfaction(style_vectors(style, perceived), prefs, phase, state.sentiment,
                               m)
            reward, _ = chat_transition(state, sat, None, m, self.reward_fn, expected=True)
            total += alive * ((turn + d) < self.horizon) * reward
            alive = alive * np.where(state.engagement < m.leave_below, 1 - m.leave_prob, 1.0)
        return total.reshape(b, _K)

    def action_probs(self, obs: np.ndarray, info: Mapping[str, Any] | None = None
                     ) -> np.ndarray:
        return np.eye(_K)[self.values(obs, info).argmax(axis=1)]


def adaptation_baselines(core: Any) -> dict[str, Callable[..., Policy]]:
    """PersonalityAdaptation's baselines entry (``envs.adaptation.RECORD.baselines``):
    observed greedy and the planner on ``core``'s own model and reward (discrete styles;
    continuous actions get only the baselines every env gets, ``agents.baselines.factory``)."""
    if not core.discrete:
        return {}
    return {"greedy": lambda seed=0, **kw: ObservedStyleGreedy(seed=seed, **kw),
            "planner": lambda seed=0, **kw: AdaptationPlanner(
                core.model, core.reward_fn, horizon=core.horizon, **kw)}
