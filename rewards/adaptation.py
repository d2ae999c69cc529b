"""The personality-adaptation reward: levels of engagement and resonance, plus feedback.

``r = engagement · g + resonance · (s + 1)/2 + explicit · thumb`` after each turn, with the
write-ups' weights .3 / .4 / .3 (engagement / resonance / explicit). ``thumb`` is +1, −1 or
0 (no feedback given).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from personarl.errors import check_range

__all__ = ["AdaptationRewardWeights", "adaptation_reward", "AdaptationRewardFn"]

#: ``reward_fn(engagement, resonance, explicit) -> reward``, elementwise
AdaptationRewardFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class AdaptationRewardWeights:
    """Weights of the adaptation reward; each in [0, 10]."""

    engagement: float = 0.3
    resonance: float = 0.4
    explicit: float = 0.3

    def __post_init__(self) -> None:
        for name in ("engagement", "resonance", "explicit"):
            check_range(name, getattr(self, name), 0, 10)

    def function(self) -> AdaptationRewardFn:
        """The reward with these weights, as the function the environment injects. It
        carries the weights (``reward_fn.weights``): a compiled env kernel computes the same
        linear reward from them instead of calling back into Python."""
        def reward_fn(engagement: np.ndarray, resonance: np.ndarray,
                      explicit: np.ndarray) -> np.ndarray:
            return adaptation_reward(engagement, resonance, explicit, self)
        reward_fn.weights = self            # type: ignore[attr-defined]
        return reward_fn


def adaptation_reward(engagement: np.ndarray, resonance: np.ndarray, explicit: np.ndarray,
                      weights: AdaptationRewardWeights = AdaptationRewardWeights()
                      ) -> np.ndarray:
    """The reward of one turn, elementwise over users."""
    w = weights
    return w.engagement * engagement + w.resonance * resonance + w.explicit * explicit
