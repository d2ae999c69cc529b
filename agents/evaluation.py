"""Roll policies through the batched env and compare them with confidence intervals.

Pairing: every policy is run on the same seeds, so lane ``i`` of chunk ``c`` is the same
user for every policy. Because each user's exogenous randomness (signal noise, churn draws)
is drawn when the user arrives, policies also share those draws — common random numbers —
and paired differences are much tighter than the returns' spread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from scipy import stats

from agents.baselines import Policy
from envs.routing import AgentRoutingVectorEnv
from synth.errors import check_int

__all__ = ["EpisodeBatch", "run_episodes", "train_online", "mean_ci", "paired_ci"]


@dataclass
class EpisodeBatch:
    """Per-episode outcomes of one policy (first episode of each lane)."""

    returns: np.ndarray
    lengths: np.ndarray
    primary: np.ndarray
    is_bot: np.ndarray
    consent: np.ndarray
    group: np.ndarray
    oracle_agreement: np.ndarray


def _chunk_seeds(seed: int, num_episodes: int, batch: int) -> list[tuple[int, int]]:
    out, done, i = [], 0, 0
    while done < num_episodes:
        b = min(batch, num_episodes - done)
        out.append((int(np.random.SeedSequence([seed, i]).generate_state(1)[0]), b))
        done, i = done + b, i + 1
    return out


def run_episodes(policy: Policy, env_kwargs: Mapping[str, Any], num_episodes: int,
                 seed: int, batch: int = 4096) -> EpisodeBatch:
    """Run ``num_episodes`` whole episodes of ``policy``; learning policies keep learning
    only if their ``learning`` flag is on."""
    check_int("num_episodes", num_episodes, 1)
    parts: list[dict[str, np.ndarray]] = []
    for chunk_seed, b in _chunk_seeds(seed, num_episodes, batch):
        env = AgentRoutingVectorEnv(b, info_level="full", **env_kwargs)
        obs, info = env.reset(seed=chunk_seed)
        first = {k: info[k].copy() for k in ("latent_primary", "is_bot", "consent", "group")}
        active = np.ones(b, dtype=bool)
        ret, length, agree = np.zeros(b), np.zeros(b, dtype=np.int64), np.zeros(b)
        while active.any():
            action = policy.act(obs, info if policy.privileged else None)
            agree += active * (action == info["oracle_action"])
            nxt, reward, term, _, info = env.step(action)
            if policy.learning:
                policy.update(obs[active], action[active], reward[active])
            ret += reward * active
            length += active
            active &= ~term
            obs = nxt
        parts.append(dict(returns=ret, lengths=length, primary=first["latent_primary"],
                          is_bot=first["is_bot"], consent=first["consent"],
                          group=first["group"], oracle_agreement=agree / length))
        env.close()
    return EpisodeBatch(**{k: np.concatenate([p[k] for p in parts]) for k in parts[0]})


def train_online(policy: Policy, env_kwargs: Mapping[str, Any], num_steps: int, seed: int,
                 num_envs: int = 256) -> None:
    """Let a learning baseline learn online for ``num_steps`` batched steps."""
    if not policy.learning:
        return
    env = AgentRoutingVectorEnv(num_envs, info_level="full" if policy.privileged else "none",
                                **env_kwargs)
    obs, info = env.reset(seed=seed)
    restarting = np.zeros(num_envs, dtype=bool)
    for _ in range(check_int("num_steps", num_steps, 0)):
        action = policy.act(obs, info if policy.privileged else None)
        nxt, reward, term, _, info = env.step(action)
        live = ~restarting            # NEXT_STEP: a restarting lane ignored its action
        policy.update(obs[live], action[live], reward[live])
        restarting = term
        obs = nxt
    env.close()


def mean_ci(x: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval."""
    x = np.asarray(x, dtype=np.float64)
    m = float(x.mean())
    if len(x) < 2:
        return m, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return m, m - half, m + half


def paired_ci(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``a - b`` over paired episodes with its t-interval."""
    return mean_ci(np.asarray(a) - np.asarray(b), level)
