"""What a user does in each interaction, independent of how the platform responds.

Mixed-membership model: at interaction ``t`` a user acts in one *mode* ``z_t ~ Cat(w_t)``
(one of their archetypes). The mode emits

* the task type: ``task_t ~ Cat(task_preferences[z_t])``,
* the response latency: ``log latency_t ~ N(log(latency_scale_s) - latency_decay ·
  response_timing[z_t], latency_sd²)``,
* an exploration flag: ``explore_t ~ Bernoulli(exploration[z_t])``.

Bots ignore their persona: tasks are uniform, they never explore, and their latency is
rapid-fire (median ``bot_latency_s``) or, for slow bots, slower but very regular.

The noise parameters below are fixed before any accuracy is measured (see BENCHMARKS.md);
they are not tuned to reach a target.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from personarl.errors import check_range
from synth.archetypes import ArchetypeTable
from synth.population import Population, PopulationSampler, categorical, drift_trajectory

__all__ = ["BehaviourModel", "Session", "sample_session", "sample_interaction",
           "interaction_loglik"]


@dataclass(frozen=True)
class BehaviourModel:
    """Noise parameters of the per-interaction behaviour (fixed, documented defaults)."""

    latency_scale_s: float = 30.0
    latency_decay: float = 3.0
    latency_sd: float = 0.8
    bot_latency_s: float = 0.4
    bot_latency_sd: float = 0.15
    slow_bot_latency_s: float = 3.0
    slow_bot_latency_sd: float = 0.1

    def __post_init__(self) -> None:
        for name in ("latency_scale_s", "bot_latency_s", "slow_bot_latency_s"):
            check_range(name, getattr(self, name), 0, 1e6, low_open=True)   # seconds
        for name in ("latency_sd", "bot_latency_sd", "slow_bot_latency_sd"):
            check_range(name, getattr(self, name), 0, 100)          # log-seconds
        check_range("latency_decay", self.latency_decay, -100, 100)


@dataclass
class Session:
    """Exogenous trajectory of ``n`` users over ``H`` interactions (arrays ``(n, H, ...)``)."""

    weights: np.ndarray
    mode: np.ndarray
    task: np.ndarray
    latency: np.ndarray
    explore: np.ndarray


def sample_session(pop: Population, sampler: PopulationSampler, horizon: int,
                   rng: np.random.Generator, model: BehaviourModel = BehaviourModel()
                   ) -> Session:
    """Sample ``horizon`` interactions for every user of ``pop`` (drift included)."""
    n, A = pop.weights.shape
    noise = rng.standard_normal((n, max(horizon - 1, 0), A))
    u = rng.random((n, horizon, 3))
    z = rng.standard_normal((n, horizon))
    weights = drift_trajectory(pop.weights, noise, sampler.drift_rate)
    mode, task, latency, explore = sample_interaction(
        sampler, weights, pop.table_id[:, None], pop.is_bot[:, None], pop.slow_bot[:, None],
        u, z, model)
    return Session(weights=weights, mode=mode, task=task, latency=latency, explore=explore)


def sample_interaction(sampler: PopulationSampler, weights: np.ndarray, table_id: np.ndarray,
                       is_bot: np.ndarray, slow_bot: np.ndarray, u: np.ndarray, z: np.ndarray,
                       model: BehaviourModel = BehaviourModel()
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One interaction per entry of shape ``S``: ``(mode, task, latency, explore)``.

    Args:
        weights: ``S + (A,)`` mixture weights at the interaction.
        table_id, is_bot, slow_bot: each user's epoch and bot flags, broadcastable to ``S``.
        u: ``S + (3,)`` uniforms behind the mode, the task and exploring.
        z: ``S`` standard normals behind the latency (seconds, log-normal).
    """
    mode = categorical(weights, u[..., 0])
    table_id = np.broadcast_to(table_id, mode.shape)
    task_probs = sampler.task_table[table_id, mode]                       # S + (T,)
    beh = sampler.behaviour_by_epoch[table_id, mode]                      # S + (5,)
    n_tasks = task_probs.shape[-1]
    task = np.where(is_bot, np.minimum((u[..., 1] * n_tasks).astype(np.int64), n_tasks - 1),
                    categorical(task_probs, u[..., 1]))
    log_median = np.log(model.latency_scale_s) - model.latency_decay * beh[..., 1]
    log_lat = log_median + model.latency_sd * z
    bot_log_lat = np.where(slow_bot, np.log(model.slow_bot_latency_s),
                           np.log(model.bot_latency_s)) + np.where(
        slow_bot, model.slow_bot_latency_sd, model.bot_latency_sd) * z
    latency = np.exp(np.where(is_bot, bot_log_lat, log_lat))
    explore = (u[..., 2] < beh[..., 4]) & ~np.asarray(is_bot)
    return mode, task, latency, explore


def interaction_loglik(table: ArchetypeTable, task: np.ndarray, latency: np.ndarray,
                       explore: np.ndarray, model: BehaviourModel = BehaviourModel()
                       ) -> np.ndarray:
    """Log-likelihood of each interaction under each archetype of ``table``, up to a constant.

    Terms that do not depend on the archetype (the log-normal's normaliser) are dropped, so
    the result is only meaningful as a comparison across the last axis.

    Args:
        task, latency, explore: arrays of the same shape ``S``.

    Returns:
        ``S + (A,)`` log-likelihoods.
    """
    log_tp = np.log(np.maximum(table.task_preferences, 1e-12))           # (A, T)
    mu = np.log(model.latency_scale_s) - model.latency_decay * table.behaviour[:, 1]
    e = np.clip(table.behaviour[:, 4], 1e-6, 1 - 1e-6)
    resid = (np.log(latency)[..., None] - mu) / model.latency_sd
    return (log_tp.T[task] - 0.5 * resid * resid
            + np.where(explore[..., None], np.log(e), np.log1p(-e)))
