"""Agent rankings per task type × persona, with a routing weight for each agent.

The persona fusion write-up (``../shared/seeds/rlhf-persona-fusion-engine.md``,
``agent_rewards``: reward score, performance by persona, routing weight, current rank)
ranks every AI agent per task type and persona. Here, from logged decisions — each a task
type, a persona (fusion's estimate, a discovered cluster, or in a simulation the latent
archetype) and the agent that answered, with its reward:

* ``mean`` — the mean reward of each agent in each cell, with a Student-t interval
  (``personarl.stats``; needs two rewards), after ``prior_count`` pseudo-rewards of
  ``prior_mean`` (an optimistic start, as the persona router's; 0 by default);
* ``rank`` — 1 for the best mean in its cell (ties share the better rank);
* ``weight`` — the routing weight: ``softmax(mean / temperature)`` over the agents
  (Boltzmann selection, Sutton & Barto 2018 §2.8; ``routing_weights``), the rule the
  persona router (``agents.baselines.policies.PersonaRouter``) routes by.

``true_quality`` is the same table of the simulator's expected rewards (AgentRouting's
``info["expected_reward"]`` of every agent at each decision), and ``kendall_tau`` scores an
estimated ranking against it per cell (Kendall 1938, the τ-b of ``scipy.stats``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from personarl.errors import ConfigError, DataError, check_range
from personarl.stats import softmax, t_quantile

__all__ = ["ROUTING_TEMPERATURE", "routing_weights", "fusion_persona", "AgentRankings",
           "true_quality", "kendall_tau"]

#: the persona router's default temperature: a cell's best agent gets nearly all traffic
ROUTING_TEMPERATURE = 0.05


def routing_weights(means: np.ndarray, temperature: float = ROUTING_TEMPERATURE
                    ) -> np.ndarray:
    """``(..., K)`` routing weights ``softmax(means / temperature)`` over the last axis."""
    return softmax(means, temperature)


def fusion_persona(obs: np.ndarray, cols: Mapping[str, slice], min_confidence: float
                   ) -> np.ndarray:
    """``(N,)`` fusion's persona estimate in AgentRouting observations ``obs`` (columns
    ``cols``): the argmax of its scores where its confidence is at least
    ``min_confidence`` (and above zero: no consent reads 0), else ``A`` — the number of
    archetypes, a row of its own for "no usable estimate"."""
    scores = cols["persona_scores"]
    known = obs[:, cols["persona_confidence"].start] >= max(min_confidence, 1e-12)
    return np.where(known, obs[:, scores].argmax(axis=1), scores.stop - scores.start)


def _cells(name: str, values: np.ndarray, size: int, n: int) -> np.ndarray:
    a = np.asarray(values)
    if a.shape != (n,):
        raise DataError(f"column {name!r} has shape {a.shape}; expected ({n},)")
    if not np.issubdtype(a.dtype, np.integer):
        raise DataError(f"column {name!r} has dtype {a.dtype}; expected integers 0..{size - 1}")
    bad = np.flatnonzero((a < 0) | (a >= size))
    if bad.size:
        raise DataError(f"column {name!r} row {bad[0]} is {int(a[bad[0]])}; valid: "
                        f"0..{size - 1}")
    return a.astype(np.int64)


@dataclass(frozen=True)
class AgentRankings:
    """Every agent's standing per task type × persona (module doc). Arrays are
    ``(T, P, K)``: task types × personas × agents.

    Attributes:
        count: rewards logged in each cell.
        mean: mean reward (after the prior's pseudo-rewards; ``nan`` with neither).
        low, high: the ``level`` Student-t interval of the logged rewards' mean (``nan``
            below two rewards).
        rank: 1 for the best mean of its cell (``nan`` means rank last).
        weight: the routing weight (``routing_weights`` of the means; an agent without a
            mean gets none, and a cell with no mean at all spreads its weight evenly).
    """

    count: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    rank: np.ndarray
    weight: np.ndarray
    temperature: float
    level: float

    @classmethod
    def from_log(cls, task: np.ndarray, persona: np.ndarray, agent: np.ndarray,
                 reward: np.ndarray, shape: tuple[int, int, int], *,
                 temperature: float = ROUTING_TEMPERATURE, level: float = 0.95,
                 prior_mean: float = 0.0, prior_count: float = 0.0) -> "AgentRankings":
        """Rankings from ``N`` logged decisions.

        Args:
            task, persona, agent: ``(N,)`` integer indices into ``shape`` ``(T, P, K)``.
            reward: ``(N,)`` finite rewards.
            temperature: of the routing weights (> 0).
            level: of the intervals, in (0, 1).
            prior_mean, prior_count: pseudo-rewards every mean starts from.

        Raises:
            DataError: columns of different lengths, an index outside ``shape`` or a
                non-finite reward (naming the first bad row).
            ConfigError: a bad temperature, level or prior count.
        """
        if len(shape) != 3 or not all(isinstance(d, (int, np.integer)) and d >= 1
                                       for d in shape):
            raise ConfigError(f"shape={shape!r}; expected (task types, personas, agents), "
                              "each a positive integer")
        if not np.isfinite(prior_mean):
            raise ConfigError(f"prior_mean={prior_mean!r} must be a finite reward")
        T, P, K = shape
        r = np.asarray(reward, dtype=np.float64)
        n = len(r)
        if r.shape != (n,):
            raise DataError(f"column 'reward' has shape {r.shape}; expected (N,)")
        bad = np.flatnonzero(~np.isfinite(r))
        if bad.size:
            raise DataError(f"column 'reward' row {bad[0]} is {float(r[bad[0]])!r}; rewards "
                            "must be finite")
        cell = ((_cells("task", task, T, n) * P + _cells("persona", persona, P, n)) * K
                + _cells("agent", agent, K, n))
        size = T * P * K
        count = np.bincount(cell, minlength=size).astype(np.float64).reshape(T, P, K)
        total = np.bincount(cell, r, size).reshape(T, P, K)
        squares = np.bincount(cell, r * r, size).reshape(T, P, K)
        prior = check_range("prior_count", prior_count, 0, np.inf, high_open=True)
        return cls.from_sums(count, total, squares, temperature=temperature, level=level,
                             prior_sum=prior_mean * prior, prior_count=prior)

    @classmethod
    def from_sums(cls, count: np.ndarray, total: np.ndarray, squares: np.ndarray | None,
                  *, temperature: float = ROUTING_TEMPERATURE, level: float = 0.95,
                  prior_sum: float = 0.0, prior_count: float = 0.0) -> "AgentRankings":
        """Rankings from per-cell ``count``, reward ``total`` and ``squares`` (``None``:
        no intervals) of the logged rewards, each ``(T, P, K)``."""
        check_range("temperature", temperature, 0, np.inf, low_open=True, high_open=True)
        check_range("level", level, 0, 1, low_open=True, high_open=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (prior_sum + total) / (prior_count + count)
            raw = total / count
            var = (squares - count * raw * raw) / (count - 1) if squares is not None \
                else np.full_like(raw, np.nan)
        half = np.full_like(raw, np.nan)
        ok = count >= 2 if squares is not None else np.zeros(count.shape, bool)
        for m in np.unique(count[ok]).astype(int):
            where = count == m
            half[where] = t_quantile(0.5 + level / 2, m - 1) * np.sqrt(
                np.maximum(var[where], 0.0) / m)
        order = np.where(np.isnan(mean), -np.inf, mean)
        rank = 1 + (order[..., None, :] > order[..., :, None]).sum(axis=-1)
        unseen = np.isnan(mean).all(axis=-1, keepdims=True)
        with np.errstate(invalid="ignore"):
            weight = routing_weights(np.where(np.isnan(mean), -np.inf, mean), temperature)
        weight = np.where(unseen, 1.0 / mean.shape[-1], weight)
        return cls(count=count, mean=mean, low=raw - half, high=raw + half, rank=rank,
                   weight=weight, temperature=float(temperature), level=float(level))


def true_quality(task: np.ndarray, archetype: np.ndarray, expected_reward: np.ndarray,
                 shape: tuple[int, int, int]) -> np.ndarray:
    """``(T, A, K)`` the simulator's true quality of each agent per task type × latent
    archetype: the mean over the logged decisions in the cell of every agent's expected
    reward there (``expected_reward`` ``(N, K)``, AgentRouting's ``info``); ``nan`` for
    a cell without decisions."""
    T, A, K = shape
    e = np.asarray(expected_reward, dtype=np.float64)
    n = len(e)
    if e.shape != (n, K):
        raise DataError(f"expected_reward has shape {e.shape}; expected ({n}, {K})")
    cell = _cells("task", task, T, n) * A + _cells("archetype", archetype, A, n)
    count = np.bincount(cell, minlength=T * A).reshape(T, A)
    out = np.stack([np.bincount(cell, e[:, k], T * A) for k in range(K)], axis=-1)
    with np.errstate(invalid="ignore"):
        return out.reshape(T, A, K) / count[..., None]


def kendall_tau(estimated: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``(T, P)`` Kendall's τ-b between the agents' order by ``estimated`` and by
    ``truth`` means in each cell (``(T, P, K)`` each); ``nan`` where either is missing.

    Raises:
        ConfigError: the two tables' shapes differ.
    """
    from scipy.stats import kendalltau
    if np.shape(estimated) != np.shape(truth):
        raise ConfigError(f"tables of shapes {np.shape(estimated)} and {np.shape(truth)} "
                          "cannot be compared")
    T, P, _ = np.shape(truth)
    out = np.full((T, P), np.nan)
    for t in range(T):
        for p in range(P):
            a, b = estimated[t, p], truth[t, p]
            if np.isfinite(a).all() and np.isfinite(b).all():
                out[t, p] = kendalltau(a, b).statistic
    return out
