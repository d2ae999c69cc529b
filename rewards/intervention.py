"""The intervention-timing reward (synthetic-training-loop write-up).

``r = sentiment · Δvalence + engagement · Δengagement + compliance · complied
− false_penalty · false_intervention`` with the write-up's weights .4 / .4 / .2; the
penalty for intervening when no support was needed is ours (the write-up names false
interventions as a safety metric with a < 5% target). The environment pays nothing for
an action taken without consent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from personarl.errors import check_range

__all__ = ["InterventionRewardWeights", "intervention_reward", "InterventionRewardFn"]

#: ``reward_fn(d_valence, d_engagement, complied, false_intervention) -> reward``, elementwise
InterventionRewardFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class InterventionRewardWeights:
    """Weights of the intervention reward; each in [0, 10]."""

    sentiment: float = 0.4
    engagement: float = 0.4
    compliance: float = 0.2
    false_penalty: float = 0.1

    def __post_init__(self) -> None:
        for name in ("sentiment", "engagement", "compliance", "false_penalty"):
            check_range(name, getattr(self, name), 0, 10)

    def function(self) -> InterventionRewardFn:
        """The reward with these weights, as the function the environment injects. It
        carries the weights (``reward_fn.weights``): a compiled env kernel computes the same
        linear reward from them instead of calling back into Python."""
        def reward_fn(d_valence: np.ndarray, d_engagement: np.ndarray, complied: np.ndarray,
                      false_intervention: np.ndarray) -> np.ndarray:
            return intervention_reward(d_valence, d_engagement, complied, false_intervention,
                                       self)
        reward_fn.weights = self            # type: ignore[attr-defined]
        return reward_fn


def intervention_reward(d_valence: np.ndarray, d_engagement: np.ndarray,
                        complied: np.ndarray, false_intervention: np.ndarray,
                        weights: InterventionRewardWeights = InterventionRewardWeights()
                        ) -> np.ndarray:
    """The reward of one step, elementwise over users."""
    w = weights
    return (w.sentiment * d_valence + w.engagement * d_engagement + w.compliance * complied
            - w.false_penalty * false_intervention)
