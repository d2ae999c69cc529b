"""Behaviour features a platform can observe of a user, and their expectation.

Persona discovery (``synth.discovery``) clusters users by what they do, never by the
latent truth. Over a time window, from a user's interactions (``synth.behaviour``: each
interaction's task type, response latency and whether the user explored), the features are

========================  ========================  ========================================
``task_<type>``           share of interactions     one per ``TASK_TYPES`` entry: the share
                                                    of the window's interactions of that
                                                    task type (they sum to 1)
``log_latency_mean``      log seconds               mean of log response latency
``log_latency_sd``        log seconds               its standard deviation (ddof = 0)
``explore_rate``          share of interactions     share in which the user explored
========================  ========================  ========================================

None of them depends on what the platform did, so they can be collected under any policy.
``ope.features.behaviour_features`` computes them from logged interactions; this module
defines them and their *expectation* — the values an infinite number of interactions in the
window would give (the noiseless reference discovery is scored against). Expected values of
the shares and the mean are linear in the mixture, so a window's mean mixture
``w̄ = mean_t w_t`` gives them exactly under drift; so does the variance, which is the
behaviour model's ``latency_sd²`` plus the spread of the modes' medians under ``w̄``.
"""

from __future__ import annotations

import numpy as np

from synth.archetypes import TASK_TYPES
from synth.behaviour import BehaviourModel
from synth.population import PopulationSampler

__all__ = ["BEHAVIOUR_FEATURES", "FEATURE_UNITS", "expected_behaviour_features"]

BEHAVIOUR_FEATURES: tuple[str, ...] = (
    *(f"task_{t}" for t in TASK_TYPES), "log_latency_mean", "log_latency_sd", "explore_rate")
FEATURE_UNITS: dict[str, str] = {
    **{f"task_{t}": "share of interactions" for t in TASK_TYPES},
    "log_latency_mean": "log seconds", "log_latency_sd": "log seconds",
    "explore_rate": "share of interactions"}


def expected_behaviour_features(sampler: PopulationSampler, mean_weights: np.ndarray,
                                table_id: np.ndarray, is_bot: np.ndarray,
                                slow_bot: np.ndarray,
                                model: BehaviourModel = BehaviourModel()) -> np.ndarray:
    """``(n, F)`` expected ``BEHAVIOUR_FEATURES`` of ``n`` users over a window.

    Args:
        sampler: the population (its tables per epoch).
        mean_weights: ``(n, A)`` each user's mixture averaged over the window's
            interactions.
        table_id: ``(n,)`` or scalar epoch in force during the window.
        is_bot, slow_bot: ``(n,)`` flags; bots ignore their persona (uniform tasks, never
            exploring, log-normal latency around ``bot_latency_s`` or
            ``slow_bot_latency_s``: ``synth.behaviour.sample_interaction``).
    """
    w = np.asarray(mean_weights, dtype=np.float64)
    n = len(w)
    table_id = np.broadcast_to(np.asarray(table_id, dtype=np.int64), (n,))
    beh = sampler.behaviour_by_epoch[table_id]                        # (n, A, 5)
    tasks = np.einsum("na,nat->nt", w, sampler.task_table[table_id])
    mu = np.log(model.latency_scale_s) - model.latency_decay * beh[..., 1]   # (n, A)
    mean = np.einsum("na,na->n", w, mu)
    spread = np.maximum(np.einsum("na,na->n", w, mu * mu) - mean * mean, 0.0)
    sd = np.sqrt(model.latency_sd ** 2 + spread)
    explore = np.einsum("na,na->n", w, beh[..., 4])
    bot = np.asarray(is_bot, bool)
    slow = np.asarray(slow_bot, bool)
    tasks[bot] = 1.0 / tasks.shape[1]
    mean = np.where(bot, np.where(slow, np.log(model.slow_bot_latency_s),
                                  np.log(model.bot_latency_s)), mean)
    sd = np.where(bot, np.where(slow, model.slow_bot_latency_sd, model.bot_latency_sd), sd)
    explore = np.where(bot, 0.0, explore)
    return np.column_stack([tasks, mean, sd, explore])
