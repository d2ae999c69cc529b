"""A non-myopic planner for InterventionTiming that uses the ground-truth model.

For every candidate first action the planner rolls the simulator's own *expected*
transition (``envs.intervention_model.transition(..., expected=True)``: outcomes replaced
by their probabilities, stress shocks by their mean) forward ``depth`` steps, choosing the
later actions with a base policy (the myopic oracle on the imagined state, or no action),
and sums the rewards weighted by the chance that the user is still there (no opt-out, and
coming back at each day's end). It picks the first action with the largest sum: a rollout
policy, so with an exact model it improves on its base policy.

It is privileged: it reads the latent state and the user's parameters from ``info``
(``info_level="full"``).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping

import numpy as np

from agents.baselines.policies import FixedPolicy
from envs.intervention_model import (ACTIONS, InterventionModel, State, UserTraits,
                                     action_rewards, transition)
from rewards.intervention import InterventionRewardFn, InterventionRewardWeights
from personarl.errors import ConfigError, check_int

__all__ = ["LookaheadPlanner"]

_STATE = tuple(f.name for f in fields(State))
_USER = tuple(f.name for f in fields(UserTraits))


class LookaheadPlanner(FixedPolicy):
    """Rollout planner over the expected dynamics.

    Args:
        model: the dynamics (the env's own, so the planner knows the truth).
        reward_fn: the reward (the env's own; default: the documented linear reward).
        depth: steps looked ahead, the first included (>= 1); a pairing is only worth
            suggesting if ``depth > model.pairing_delay``.
        slots_per_day: decisions per day (day ends may lose the user).
        horizon: steps per episode (nothing counts beyond it).
        base: ``"myopic"`` or ``"noop"`` — how the imagined future is played.
    """

    name = "planner"
    privileged = True
    learning = False

    def __init__(self, model: InterventionModel = InterventionModel(),
                 reward_fn: InterventionRewardFn | None = None,
                 depth: int = 8, slots_per_day: int = 4, horizon: int = 28,
                 base: str = "myopic") -> None:
        if base not in ("myopic", "noop"):
            raise ConfigError(f"base={base!r}; valid: 'myopic', 'noop'")
        super().__init__(len(ACTIONS))
        self.model, self.base = model, base
        self.reward_fn = reward_fn or InterventionRewardWeights().function()
        self.depth = check_int("depth", depth, 1, 1000)
        self.slots = check_int("slots_per_day", slots_per_day, 1)
        self.horizon = check_int("horizon", horizon, 1)

    def values(self, info: Mapping[str, Any]) -> np.ndarray:
        """``(B, K)`` look-ahead value of each first action."""
        if not info or "latent_stress" not in info:
            raise ConfigError("the planner reads the latent state from info: build the env "
                              "with info_level='full'")
        m, k = self.model, self.k
        b = len(info["consent"])
        rep = np.repeat(np.arange(b), k)
        state = State(**{f: np.asarray(info[f"latent_{f}"], dtype=np.float64)[rep].copy()
                         for f in _STATE})
        user = UserTraits(**{f: np.asarray(info[f"user_{f}"])[rep] for f in _USER})
        consent = np.asarray(info["consent"])[rep]
        step = np.asarray(info["step"])[rep]
        mean_shock = m.mean_shock(user.shock_prob)
        action = np.tile(np.arange(k), b)
        shock = np.asarray(info["shock"])[rep]
        total, alive = np.zeros(b * k), np.ones(b * k)
        for d in range(self.depth):
            live = (step + d) < self.horizon
            if d > 0:
                action = (action_rewards(state, user, consent, mean_shock, m,
                                         self.reward_fn).argmax(axis=1)
                          if self.base == "myopic" else np.zeros(b * k, dtype=np.int64))
                shock = mean_shock
            out = transition(state, action, user, consent, shock, None, m, self.reward_fn,
                             expected=True)
            total += alive * live * out.reward
            alive = alive * (1.0 - out.optout_prob)
            day_end = (step + d + 1) % self.slots == 0
            alive = np.where(day_end, alive * m.come_back(state.engagement, state.annoyance),
                             alive)
        return total.reshape(b, k)

    def action_probs(self, obs: np.ndarray, info: Mapping[str, Any] | None = None
                     ) -> np.ndarray:
        return np.eye(self.k)[self.values(info).argmax(axis=1)]
