"""The users of a simulated online experiment and their outcomes under each arm.

Every arm's policy meets the *same* users — the ``experiment_users`` stream of a seed,
lane ``i`` of chunk ``c`` one user (``envs.rollout.first_episodes``) — in one session each
(its first episode), with common random numbers: so each user has a potential outcome
under every arm, and the true effect of a treatment is the mean of the differences,
known exactly. A *pre-period* is the same users' earlier session under the control: the
same users, their per-step noise from the ``experiment_sessions`` stream instead
(``CoreVectorEnv.reseed_session``) — the covariate CUPED may use, measured before any
assignment.

Per user: ``return`` (the episode's reward), ``length`` (decisions), ``reward_per_step``,
``churned`` (1 when the episode ended before the env's horizon) and, for an env whose step
``info`` reports it, ``conversions`` (their count); and the user's demographic ``group``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from gymnasium.vector import VectorEnv

from personarl.errors import ConfigError, DataError, check_int
from personarl.seeds import stream_seed

__all__ = ["UserOutcomes", "user_outcomes", "METRICS"]

#: the metrics every simulated user has (``conversions`` where the env reports them)
METRICS = ("return", "reward_per_step", "length", "churned")


@dataclass(frozen=True)
class UserOutcomes:
    """``metrics``: name -> ``(n,)`` one value per user; ``group``: ``(n,)`` their groups."""

    metrics: dict[str, np.ndarray]
    group: np.ndarray

    def __len__(self) -> int:
        return len(self.group)

    def take(self, rows: np.ndarray) -> "UserOutcomes":
        """The users ``rows`` (a copy)."""
        return UserOutcomes({k: v[rows] for k, v in self.metrics.items()}, self.group[rows])


def user_outcomes(policy: object, make_env: Callable[[int], VectorEnv], users: int, seed: int,
                  *, session: int = 0, batch: int = 4096,
                  final_keys: tuple[str, ...] = ()) -> UserOutcomes:
    """``users`` users' first session under ``policy`` (module docstring); ``session`` 0 is
    the experiment's, ``k >= 1`` an earlier session of the same users (other per-step
    noise). ``final_keys``: ``info`` keys read at each session's last step as metrics (an
    env record's ``safety_keys``: InterventionTiming's false interventions, interventions
    and opt-outs).

    Raises:
        ConfigError: ``users`` or ``session`` out of range; a policy still learning.
        DataError: the env does not report the users' ``group``.
    """
    from agents.baselines.evaluation import policy_steps
    from envs.rollout import first_episodes

    check_int("users", users, 1)
    check_int("session", session, 0, 2**20)
    if getattr(policy, "learning", False):
        raise ConfigError(f"policy {getattr(policy, 'name', policy)!r} is still learning: "
                          "an arm serves a fixed policy (agents.baselines.evaluation.warm_up "
                          "freezes a learning baseline)")
    parts = []
    for c, lanes in enumerate(first_episodes(make_env, users, seed, "experiment_users",
                                             batch)):
        if session:
            lanes.env.unwrapped.reseed_session(stream_seed(seed, "experiment_sessions",
                                                           session, c))
        if "group" not in lanes.info:
            raise DataError("the env reports no 'group' in info: an experiment's users "
                            "need their demographic group")
        b = lanes.size
        group = np.array(lanes.info["group"])
        total, length, conversions = np.zeros(b), np.zeros(b, np.int64), np.zeros(b)
        final = {k: np.zeros(b) for k in final_keys}
        counts_conversions = False
        for t in policy_steps(policy, lanes):
            total += t.reward * t.live
            length += t.live
            for k in final_keys:
                final[k][t.ended] = np.asarray(t.next_info[k], dtype=np.float64)[t.ended]
            if "conversion" in t.next_info:
                counts_conversions = True
                conversions += np.nan_to_num(np.asarray(t.next_info["conversion"],
                                                        dtype=np.float64)) * t.live
        metrics = {"return": total, "reward_per_step": total / np.maximum(length, 1),
                   "length": length.astype(np.float64),
                   "churned": (length < lanes.env.unwrapped.horizon).astype(np.float64)}
        if counts_conversions:
            metrics["conversions"] = conversions
        metrics.update(final)
        parts.append(UserOutcomes(metrics, group))
    return UserOutcomes({k: np.concatenate([p.metrics[k] for p in parts])
                         for k in parts[0].metrics},
                        np.concatenate([p.group for p in parts]))
