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
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from gymnasium.vector import VectorEnv

from agents.baselines.policies import Policy
from envs.rollout import Lanes, Transition, first_episodes
from personarl.seeds import stream_seed
from personarl.stats import paired_ci
from personarl.errors import check_int

__all__ = ["EpisodeBatch", "policy_steps", "run_episodes", "warm_up", "paired_row",
           "per_archetype"]


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


def policy_steps(policy: Policy, lanes: Lanes, steps: int | None = None
                 ) -> Iterator[Transition]:
    """``lanes.run`` with ``policy`` acting — a privileged policy also reads the env's
    ``info`` — and, while its ``learning`` flag is on, learning from every step's live rows
    before the step is yielded. The loop of evaluation, warm-up and online training."""
    act = lambda obs, info: policy.act(obs, info if policy.privileged else None)  # noqa: E731
    for t in lanes.run(act, steps):
        if policy.learning:
            policy.update(t.obs[t.live], t.action[t.live], t.reward[t.live])
        yield t


def run_episodes(policy: Policy, make_env: Callable[[int], VectorEnv], num_episodes: int,
                 seed: int, purpose: str = "evaluation_users", batch: int = 4096,
                 first_keys: Sequence[str] = (), final_keys: Sequence[str] = ()
                 ) -> EpisodeBatch:
    """Run ``num_episodes`` whole episodes of ``policy`` on ``make_env(n)`` vector envs
    (built with ``info_level="full"``) whose users are the ``purpose`` stream of the run's
    ``seed`` (``envs.rollout.first_episodes``); learning policies keep learning only if
    their ``learning`` flag is on."""
    parts: list[EpisodeBatch] = []                   # first_episodes checks num_episodes
    for lanes in first_episodes(make_env, num_episodes, seed, purpose, batch):
        b = lanes.size
        first = {k: np.array(lanes.info[k]) for k in first_keys}
        final: dict[str, np.ndarray] = {}
        ret, length, agree = np.zeros(b), np.zeros(b, dtype=np.int64), np.zeros(b)
        for t in policy_steps(policy, lanes):
            live = t.live
            agree += live * (t.action == t.info["oracle_action"] if t.action.ndim == 1
                             else np.nan)
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
    ``seed``, never the evaluation users; lanes run on across episodes), then ``learning``
    is switched off so that it is compared as a fixed policy. Returns ``policy``; a fixed
    policy is returned as it is."""
    if policy.learning:
        if check_int("num_steps", num_steps, 0):
            env = make_env(num_envs)
            try:
                lanes = Lanes(env, *env.reset(seed=stream_seed(seed, "warmup", 0)),
                              first_episode_only=False)
                for _ in policy_steps(policy, lanes, num_steps):
                    pass
            finally:
                env.close()
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
