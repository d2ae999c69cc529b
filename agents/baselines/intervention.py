"""InterventionTiming baselines (besides the shared random policy and myopic oracle).

* ``ObservedGreedy`` — myopic greedy on what the platform observes: running mean reward
  per (observed stress, observed valence, fatigue, consent) bucket and action, ε-greedy
  while learning, greedy once frozen.
* ``LookaheadPlanner`` (``agents.baselines.planning``) — the non-myopic ground-truth planner.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from agents.baselines.policies import MeanTablePolicy, Policy
from agents.baselines.planning import LookaheadPlanner
from envs.intervention_core import OBS_FEATURES
from envs.intervention_model import ACTIONS

__all__ = ["ObservedGreedy", "intervention_baselines"]

_BINS = np.array([1 / 3, 2 / 3])


def _from_end(name: str) -> int:
    """Column of feature ``name`` counted from the end of the observation: the features
    after the time-of-day one-hot do not depend on ``slots_per_day``."""
    names = [n for n, _ in OBS_FEATURES]
    return -sum(width for _, width in OBS_FEATURES[names.index(name):])


_FATIGUE, _CONSENT = _from_end("fatigue"), _from_end("consent")


class ObservedGreedy(MeanTablePolicy):
    """Myopic greedy over discretised observations (3 × 3 × 2 × 2 = 36 buckets)."""

    name = "greedy"

    def __init__(self, optimism: float = 0.5, epsilon: float = 0.1, seed: int = 0) -> None:
        super().__init__(len(ACTIONS), 36, optimism=optimism, epsilon=epsilon, seed=seed)

    def bucket(self, obs: np.ndarray) -> np.ndarray:
        valence = np.digitize(obs[:, 0], _BINS)          # observed valence, mapped to [0, 1]
        stress = np.digitize(obs[:, 2], _BINS)
        tired = obs[:, _FATIGUE] > 0.5                    # fatigue f/(1+f) > 0.5: f > 1
        consent = obs[:, _CONSENT] > 0.5
        return ((valence * 3 + stress) * 2 + tired) * 2 + consent


def intervention_baselines(core: Any) -> dict[str, Callable[..., Policy]]:
    """InterventionTiming's baselines entry (``envs.intervention.RECORD.baselines``):
    observed greedy and the lookahead planner on ``core``'s own model and reward."""
    return {"greedy": lambda seed=0, **kw: ObservedGreedy(seed=seed, **kw),
            "planner": lambda seed=0, **kw: LookaheadPlanner(
                core.model, core.reward_fn, slots_per_day=core.slots, horizon=core.horizon, **kw)}
