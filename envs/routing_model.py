"""The latent parts of AgentRouting: how good each agent is for whom, and how users answer.

``AgentWorld`` — each of ``K`` agents has a base quality per task type and a *style*, a
direction in trait space. A user with traits ``x`` bringing task ``τ`` is satisfied with
agent ``a`` to degree ``s = σ(base[a, τ] + persona_sensitivity · style[a] · (x − ½))``.
The per-(task type × archetype) quality is this at the archetype's trait means; a user's own
traits scatter around it, which is what a privileged oracle knows and a router does not.

``ResponseModel`` — given satisfaction ``s`` and the behaviour of the user's active mode,
each signal has a probability/mean ``p = base + slope · s`` (all linear in ``s``):

=============== ===================================== =====================================
signal          p                                     realised value
=============== ===================================== =====================================
click           ``click_base + click_slope·s``        ``U < p``
scroll_depth    ``depth·(scroll_base + scroll_slope·s)`` ``min(1, p·(½ + U))``
dwell           ``depth·(dwell_base + dwell_slope·s)``   ``min(1, p·(½ + U))``
thumbs_up       ``s``                                 ``U < p`` when feedback is given
thumbs_down     ``1 − s``                             the same event's other outcome
rating          ``s``                                 ``Binomial(4, p) / 4`` when given
conversion      ``conversion_propensity · s``         ``U < p``; arrives 1..max_delay later
share           ``sharing · s``                       ``U < p``
=============== ===================================== =====================================

Explicit feedback is sparse: a thumb with probability ``thumbs_rate``, a rating with
``rating_rate``. Bots answer with a fixed pattern regardless of the agent. Dissatisfied
humans churn: ``P(leave) = churn_base + churn_slope · max(0, churn_threshold − s)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rewards.signals import SIGNAL_NAMES
from synth.archetypes import TASK_TYPES, TRAITS
from personarl.errors import check_int, check_range

__all__ = ["AgentWorld", "ResponseModel", "COLUMNS", "COLLAPSE", "CONTINUOUS", "RATING",
           "CONVERSION", "THUMBS_UP", "THUMBS_DOWN", "BIG", "column_weights",
           "expected_clipped"]

# Internally the 1-5 star rating is four Bernoulli(p) draws (stars = 1 + successes), so each
# of the 11 *columns* is one draw and every value is ``clip((p - threshold) · multiplier)``.
COLUMNS: tuple[str, ...] = tuple(
    c for name in SIGNAL_NAMES
    for c in ([f"rating_{i}" for i in range(4)] if name == "rating" else [name]))
_COL = {n: i for i, n in enumerate(COLUMNS)}
THUMBS_UP, THUMBS_DOWN = _COL["thumbs_up"], _COL["thumbs_down"]
RATING = np.array([_COL[f"rating_{i}"] for i in range(4)])
CONVERSION = _COL["conversion"]
CONTINUOUS = np.array([c in ("scroll_depth", "dwell") for c in COLUMNS])
CONTINUOUS_COLUMNS = slice(_COL["scroll_depth"], _COL["dwell"] + 1)
assert CONTINUOUS[CONTINUOUS_COLUMNS].all() and CONTINUOUS.sum() == 2
#: ``(columns, signals)``: column values -> the 8 normalised signals (rating = mean of 4)
COLLAPSE = np.zeros((len(COLUMNS), len(SIGNAL_NAMES)))
for _i, _c in enumerate(COLUMNS):
    COLLAPSE[_i, SIGNAL_NAMES.index(_c.split("_")[0] if _c.startswith("rating_") else _c)] = (
        0.25 if _c.startswith("rating_") else 1.0)
#: a threshold multiplier large enough that ``clip((p - u) · BIG)`` is the step ``u < p``
BIG = 1e12


def column_weights(signal_weights: np.ndarray) -> np.ndarray:
    """Per-signal effective weights ``(8,)`` -> per-column weights ``(11,)``."""
    return COLLAPSE @ signal_weights


class AgentWorld:
    """Latent quality of ``num_agents`` agents, fixed by ``world_seed``.

    Args:
        num_agents: number of agents K (>= 2).
        world_seed: seed of the agents' base qualities and styles.
        persona_sensitivity: how strongly traits move satisfaction (>= 0).
        task_spread: std of the per-(agent, task) base quality in logits (>= 0).
    """

    def __init__(self, num_agents: int = 6, world_seed: int = 0,
                 persona_sensitivity: float = 2.5, task_spread: float = 0.6) -> None:
        self.num_agents = check_int("num_agents", num_agents, 2, 64)
        self.world_seed = check_int("world_seed", world_seed, 0)
        self.persona_sensitivity = check_range("persona_sensitivity", persona_sensitivity,
                                               0, 100)
        check_range("task_spread", task_spread, 0, 100)
        rng = np.random.default_rng([0x5EED, self.world_seed])
        self.base = rng.normal(0.0, task_spread, size=(self.num_agents, len(TASK_TYPES)))
        self.style = rng.normal(0.0, 1.0, size=(self.num_agents, len(TRAITS)))
        #: ``(10, K)`` ``persona_sensitivity · style``: the trait term of each agent's logit
        self.trait_weights = self.persona_sensitivity * self.style.T
        #: ``(T, K)`` the task term, with ``−½ · Σ trait_weights`` folded in
        self.task_offset = self.base.T - 0.5 * self.trait_weights.sum(axis=0)

    def satisfaction(self, traits: np.ndarray, task: np.ndarray) -> np.ndarray:
        """``(..., K)`` satisfaction with each agent for traits ``(..., 10)``, tasks ``(...)``."""
        # β·(x − ½)·style = x·(β·style) − ½·β·Σ style, folded into the task term
        logits = traits @ self.trait_weights
        logits += self.task_offset[task]
        np.negative(logits, out=logits)
        np.exp(logits, out=logits)
        logits += 1.0
        return np.reciprocal(logits, out=logits)

    def quality_table(self, trait_means: np.ndarray) -> np.ndarray:
        """``(A, T, K)`` satisfaction at each archetype's trait means, per task type."""
        T = len(TASK_TYPES)
        tasks = np.broadcast_to(np.arange(T), (len(trait_means), T))
        return self.satisfaction(np.repeat(trait_means[:, None, :], T, axis=1), tasks)


def expected_clipped(p: np.ndarray) -> np.ndarray:
    """``E[min(1, p·(½ + U))]`` for ``U ~ Uniform(0, 1)``, exactly."""
    p = np.asarray(p, dtype=np.float64)
    c = np.clip(1.0 / np.maximum(p, 1e-12) - 0.5, 0.0, 1.0)
    return np.where(p <= 2.0 / 3.0, p, p * (0.5 * c + 0.5 * c * c) + 1.0 - c)


@dataclass(frozen=True)
class ResponseModel:
    """How users turn satisfaction into signals (fixed, documented defaults)."""

    click_base: float = 0.15
    click_slope: float = 0.70
    scroll_base: float = 0.30
    scroll_slope: float = 0.70
    dwell_base: float = 0.20
    dwell_slope: float = 0.80
    thumbs_rate: float = 0.20
    rating_rate: float = 0.10
    max_delay: int = 3
    churn_base: float = 0.03
    churn_threshold: float = 0.5
    churn_slope: float = 0.6
    bot_feedback_rate: float = 0.8

    def __post_init__(self) -> None:
        for name in ("click_base", "click_slope", "scroll_base", "scroll_slope", "dwell_base",
                     "dwell_slope", "thumbs_rate", "rating_rate", "churn_base",
                     "churn_threshold", "churn_slope", "bot_feedback_rate"):
            check_range(name, getattr(self, name), 0, 1)
        check_int("max_delay", self.max_delay, 1, 100)
        check_range("click_base + click_slope", self.click_base + self.click_slope, 0, 1)
        check_range("churn_base + churn_slope * churn_threshold",
                    self.churn_base + self.churn_slope * self.churn_threshold, 0, 1)

    def signal_params(self, behaviour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(base, slope)`` of ``p = base + slope · s`` per column, each ``(..., 11)``.

        Args:
            behaviour: ``(..., 5)`` behaviour rows (``synth.BEHAVIOURS``), typically one per
                archetype; index the result by the active mode.
        """
        depth, conv, share = behaviour[..., 0], behaviour[..., 2], behaviour[..., 3]
        zero, one = np.zeros_like(depth), np.ones_like(depth)
        base = np.stack([one * self.click_base, depth * self.scroll_base,
                         depth * self.dwell_base, zero, one] + [zero] * 4 + [zero, zero],
                        axis=-1)
        slope = np.stack([one * self.click_slope, depth * self.scroll_slope,
                          depth * self.dwell_slope, one, -one] + [one] * 4 + [conv, share],
                         axis=-1)
        return base, slope

    #: a bot's fixed answer pattern, whatever the agent (slope 0): always clicks, scrolls to
    #: the end, leaves at once, gives a thumbs up and five stars when it gives feedback
    BOT_BASE = np.array([1.0, 0.95, 0.05, 1.0, 0.0] + [1.0] * 4 + [0.0, 0.0])

    def draw_columns(self, u: np.ndarray, is_bot: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
        """``(threshold, multiplier)`` per column from uniforms ``u (n, H, 13)``.

        A column's value is ``clip((p - threshold) · multiplier, 0, 1)``: binary columns use
        ``threshold = u, multiplier = BIG`` (the step ``u < p``), continuous ones
        ``threshold = 0, multiplier = ½ + u`` (bots: exactly 1, a fixed pattern). Absent
        explicit feedback has multiplier 0. Uniform 11 and 12 decide whether a thumb and a
        rating are given; thumbs down reuses thumbs up's uniform (one event, two outcomes).

        Args:
            u: uniforms per user and step.
            is_bot: ``(n,)`` bot flags.
        """
        n_col = len(COLUMNS)
        threshold = u[..., :n_col].copy()
        threshold[..., THUMBS_DOWN] = 1.0 - threshold[..., THUMBS_UP]
        multiplier = np.full(threshold.shape, BIG)
        multiplier[..., CONTINUOUS_COLUMNS] = 0.5 + threshold[..., CONTINUOUS_COLUMNS]
        threshold[..., CONTINUOUS_COLUMNS] = 0.0
        multiplier[np.flatnonzero(is_bot), :, CONTINUOUS_COLUMNS] = 1.0
        thumbs_rate = np.where(is_bot, self.bot_feedback_rate, self.thumbs_rate)[:, None]
        rating_rate = np.where(is_bot, self.bot_feedback_rate, self.rating_rate)[:, None]
        multiplier[..., THUMBS_UP] *= u[..., n_col] < thumbs_rate
        multiplier[..., THUMBS_DOWN] *= u[..., n_col] < thumbs_rate
        multiplier[..., RATING] *= (u[..., n_col + 1] < rating_rate)[..., None]
        return threshold, multiplier

    def column_rates(self, is_bot: np.ndarray) -> np.ndarray:
        """``(..., 11)`` chance that each column's signal is given at all."""
        bot = np.asarray(is_bot)[..., None]
        rate = np.ones(len(COLUMNS))
        rate[[THUMBS_UP, THUMBS_DOWN]] = self.thumbs_rate
        rate[RATING] = self.rating_rate
        return np.where(bot, np.where(rate < 1, self.bot_feedback_rate, 1.0), rate)

    def leave_threshold(self, u: np.ndarray, is_bot: np.ndarray) -> np.ndarray:
        """Satisfaction below which a user with churn uniform ``u`` leaves.

        ``u < churn_probability(s)`` is equivalent to ``s < leave_threshold(u)``, because the
        churn probability falls linearly in ``s`` to ``churn_base`` at ``churn_threshold``:
        users with ``u < churn_base`` always leave (threshold 2), those above the maximum
        never do (-1). Bots never leave.
        """
        slope = max(self.churn_slope, 1e-300)
        s_star = self.churn_threshold - (u - self.churn_base) / slope
        s_star = np.where(u < self.churn_base, 2.0, np.where(s_star < 0, -1.0, s_star))
        return np.where(is_bot, -1.0, s_star)

    def churn_probability(self, s: np.ndarray) -> np.ndarray:
        """Chance a human leaves after an interaction with satisfaction ``s``."""
        return self.churn_base + self.churn_slope * np.maximum(0.0, self.churn_threshold - s)
