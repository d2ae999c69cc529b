"""Roll policies through batched envs and compare them with confidence intervals.

Pairing: every policy is run on the same users — the stream of one purpose of one run's
seed (``personarl.seeds``) — so lane ``i`` of chunk ``c`` is the same user for every policy.
Because each user's exogenous randomness (signal noise, churn draws) is drawn when the user
arrives, policies also share those draws — common random numbers — and paired differences
are much tighter than the returns' spread. Different purposes (evaluation users, the OPE
truth, warm-up users) never share users. The intervals are ``personarl.stats``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from gymnasium.vector import VectorEnv

from agents.baselines.policies import Policy
from agents.learners.base import OnlineBaseline
from envs.rollout import first_episodes
from personarl.stats import paired_ci
from personarl.errors import check_int

__all__ = ["EpisodeBatch", "run_episodes", "warm_up", "paired_row", "per_archetype"]


@dataclass
class EpisodeBatch:
    """Outcomes of one policy's episodes (the first episode of each lane).

    Attributes:
        returns, lengths: per episode.
        oracle_agreement: share of decisions equal to ``info["oracle_action"]`` (discrete
            actions; NaN for continuous ones, where equality is meaningless).
        first: ``info`` values at each episode's start (``first_keys``).
        final: ``info`` values after each episode's last step (``final_keys``).
    """

    returns: np.ndarray
    lengths: np.ndarray
    oracle_agreement: np.ndarray
    first: dict[str, np.ndarray] = field(default_factory=dict)
    final: dict[str, np.ndarray] = field(default_factory=dict)


def run_episodes(policy: Policy, make_env: Callable[[int], VectorEnv], num_episodes: int,
                 seed: int, purpose: str = "evaluation_users", batch: int = 4096,
                 first_keys: Sequence[str] = (), final_keys: Sequence[str] = ()
                 ) -> EpisodeBatch:
    """Run ``num_episodes`` whole episodes of ``policy`` on ``make_env(n)`` vector envs
    (built with ``info_level="full"``) whose users are the ``purpose`` stream of the run's
    ``seed`` (``envs.rollout.first_episodes``); learning policies keep learning only if
    their ``learning`` flag is on."""
    check_int("num_episodes", num_episodes, 1)
    parts: list[EpisodeBatch] = []
    act = lambda obs, info: policy.act(obs, info if policy.privileged else None)  # noqa: E731
    for lanes in first_episodes(make_env, num_episodes, seed, purpose, batch):
        b = lanes.size
        first = {k: np.array(lanes.info[k]) for k in first_keys}
        final: dict[str, np.ndarray] = {}
        ret, length, agree = np.zeros(b), np.zeros(b, dtype=np.int64), np.zeros(b)
        for t in lanes.run(act):
            live = t.live
            agree += live * (t.action == t.info["oracle_action"] if t.action.ndim == 1
                             else np.nan)
            if policy.learning:
                policy.update(t.obs[live], t.action[live], t.reward[live])
            ret += t.reward * live
            length += live
            ended = t.ended
            for k in final_keys:
                final.setdefault(k, np.zeros(b, dtype=np.asarray(t.next_info[k]).dtype))
                final[k][ended] = np.asarray(t.next_info[k])[ended]
        parts.append(EpisodeBatch(ret, length, agree / length, first, final))
    cat = lambda dicts, k: np.concatenate([d[k] for d in dicts])  # noqa: E731
    return EpisodeBatch(
        returns=np.concatenate([p.returns for p in parts]),
        lengths=np.concatenate([p.lengths for p in parts]),
        oracle_agreement=np.concatenate([p.oracle_agreement for p in parts]),
        first={k: cat([p.first for p in parts], k) for k in first_keys},
        final={k: cat([p.final for p in parts], k) for k in final_keys})


def warm_up(policy: Policy, make_env: Callable[[int], VectorEnv], num_steps: int, seed: int,
            num_envs: int = 256) -> Policy:
    """Warm a baseline up, then freeze it: a learning baseline learns online for
    ``num_steps`` batched steps of ``num_envs`` users (the ``warmup`` users of the run's
    ``seed``, never the evaluation users), then ``learning`` is switched off so that it is
    compared as a fixed policy. Returns ``policy``; a fixed policy is returned as it is."""
    if policy.learning:
        learner = OnlineBaseline(policy, make_env, num_envs,
                                 check_int("num_steps", num_steps, 0), seed, purpose="warmup")
        if num_steps:
            learner.train()
        learner.close()
        policy.learning = False
    return policy


def paired_row(better: str, worse: str, results: dict[str, EpisodeBatch]) -> dict[str, Any]:
    """``{better, worse, diff, ci_low, ci_high, excludes_zero}`` for two policies' returns
    on the same episodes."""
    d, lo, hi = paired_ci(results[better].returns, results[worse].returns)
    return dict(better=better, worse=worse, diff=d, ci_low=lo, ci_high=hi,
                excludes_zero=bool(lo > 0 or hi < 0))


def per_archetype(results: dict[str, EpisodeBatch], archetypes: Sequence[str]
                  ) -> dict[str, dict[str, float | int]]:
    """Users and mean return of every policy per latent primary archetype (humans only),
    bots under ``"(bots)"``; needs ``first_keys=("latent_primary", "is_bot")``."""
    any_r = next(iter(results.values()))
    primary, is_bot = any_r.first["latent_primary"], any_r.first["is_bot"].astype(bool)
    groups = [(a, (primary == i) & ~is_bot) for i, a in enumerate(archetypes)]
    return {label: dict(users=int(rows.sum()),
                        **{n: float(r.returns[rows].mean()) for n, r in results.items()})
            for label, rows in groups + [("(bots)", is_bot)] if rows.any()}
