"""Rewards: signal definitions, the composite reward and the bot-quality score.

Pure functions over NumPy arrays; the environments receive them by injection.
"""

from rewards.composite import composite_reward
from rewards.intervention import (InterventionRewardFn, InterventionRewardWeights,
                                  intervention_reward)
from rewards.quality import QualityModel
from rewards.signals import (DWELL_CAP_S, SIGNAL_NAMES, SIGNALS, SignalSpec, SignalWeights,
                             normalise_dwell, normalise_rating, normalise_scroll)

__all__ = ["composite_reward", "InterventionRewardFn", "InterventionRewardWeights",
           "intervention_reward",
           "QualityModel", "DWELL_CAP_S", "SIGNAL_NAMES", "SIGNALS",
           "SignalSpec", "SignalWeights", "normalise_dwell", "normalise_rating",
           "normalise_scroll"]
