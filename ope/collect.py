"""Logging a behaviour policy in the simulator, and the ground truth OPE is checked against.

* ``behaviour_distribution`` — what an exploring behaviour policy draws from, given the
  policy's own probabilities: ``greedy`` (its most probable action), ``epsilon`` (greedy
  with probability 1 − ε, uniform otherwise) or ``softmax`` (its log-probabilities divided by
  a temperature τ, renormalised; τ = 1 is the policy itself).
* ``collect`` — ``episodes`` whole episodes of a behaviour policy on a vector env, logged as
  ``LoggedData`` with the probability of every logged action and the full distribution.
* ``evaluation_probs`` — an evaluation policy's distribution on logged observations: its
  most probable action (``greedy``, how trained policies and greedy baselines act) or its
  own distribution (``stochastic``).
* ``true_value`` — the on-policy Monte-Carlo value of an evaluation policy acting exactly as
  ``evaluation_probs`` says, with a 95% CI: what every estimate is compared with.

Policies are anything with ``action_probs(obs)`` — the baselines (``agents.baselines.policies``) and
loaded bundles (``agents.serving.loader``).

``seed`` is always the run's seed; each function draws from its own purposes' streams
(``personarl.seeds``): ``collect`` from ``logged_users`` and ``behaviour``, ``true_value``
from ``truth`` and ``evaluation_actions``. So a log and the truth it is scored against are
never simulated on the same users, whatever seeds the two commands were given, while every
policy's truth uses the same users (paired).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
from gymnasium.vector import VectorEnv

from agents.baselines.evaluation import run_episodes
from personarl.stats import mean_ci, softmax
# what a served decision draws from: the behaviour policy of logged data
from agents.serving.exploration import behaviour_probs, sample_categorical
from ope.data import DataError, LoggedData
from personarl.seeds import chunk_seeds, generator

__all__ = ["behaviour_distribution", "collect", "evaluation_probs", "true_value",
           "EXPLORATION", "EVALUATION_MODES"]

EXPLORATION = ("greedy", "epsilon", "softmax")
EVALUATION_MODES = ("greedy", "stochastic")


def behaviour_distribution(probs: np.ndarray, mode: str, epsilon: float = 0.0,
                           temperature: float = 1.0) -> np.ndarray:
    """``(B, K)`` distribution an exploring behaviour policy draws from."""
    if mode not in EXPLORATION:
        raise ValueError(f"exploration {mode!r}; valid: {list(EXPLORATION)}")
    if mode == "softmax":
        if not temperature > 0:
            raise ValueError(f"temperature={temperature!r} must be > 0")
        return softmax(np.log(np.maximum(probs, 1e-300)) / temperature)
    return behaviour_probs(probs, "greedy" if mode == "greedy" else "epsilon", epsilon)


def evaluation_probs(policy: Any, obs: np.ndarray, mode: str = "greedy",
                     context: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """``(N, K)``: the evaluation policy's distribution on ``obs`` (see the module doc). A
    privileged policy (one that reads the simulator's truth, like the planner) also needs
    the logged ``context`` of those decisions."""
    if mode not in EVALUATION_MODES:
        raise ValueError(f"evaluation mode {mode!r}; valid: {list(EVALUATION_MODES)}")
    if policy.privileged:
        if not context:
            raise DataError(f"{getattr(policy, 'name', policy)!r} reads the simulator's "
                            "truth, which this log does not hold; collect with "
                            "record_truth=true (simulated logs only)")
        probs = np.asarray(policy.action_probs(obs, context), dtype=np.float64)
    else:
        probs = np.asarray(policy.action_probs(obs), dtype=np.float64)
    return behaviour_distribution(probs, "greedy") if mode == "greedy" else probs


def collect(policy: Any, make_env: Callable[[int], VectorEnv], episodes: int, seed: int,
            exploration: str = "epsilon", epsilon: float = 0.2, temperature: float = 1.0,
            batch: int = 4096, meta: Mapping[str, Any] | None = None,
            record_truth: bool = False) -> LoggedData:
    """Log ``episodes`` whole episodes of ``policy`` exploring as configured.

    Each of up to ``batch`` lanes runs one episode (the vector env's first), so rows come out
    grouped by episode in step order. ``make_env(n)`` builds the vector env (with
    ``info_level="full"`` if the policy is privileged or ``record_truth`` is on).
    ``record_truth`` keeps the env's per-user ground truth at every decision (its numeric
    ``info`` entries) as ``context``, so privileged policies can be evaluated on the log.
    ``seed`` is the run's seed: users are its ``logged_users`` stream, exploration draws its
    ``behaviour`` stream.
    """
    rng = generator(seed, "behaviour")
    parts: list[dict[str, np.ndarray]] = []
    offset = 0
    for chunk_seed, b in chunk_seeds(seed, "logged_users", episodes, batch):
        env = make_env(b)
        obs, info = env.reset(seed=chunk_seed)
        active = np.ones(b, dtype=bool)
        rows: dict[str, list[np.ndarray]] = {k: [] for k in
                                             ("obs", "action", "reward", "probs", "done",
                                              "active")}
        truth_keys = sorted(k for k, v in info.items() if not k.startswith("_")
                            and np.ndim(v) in (1, 2) and np.shape(v)[0] == b
                            and np.asarray(v).dtype.kind in "biuf") if record_truth else []
        rows.update({f"context.{k}": [] for k in truth_keys})
        while active.any():
            probs = policy.action_probs(obs, info) if policy.privileged \
                else policy.action_probs(obs)
            dist = behaviour_distribution(np.asarray(probs, dtype=np.float64), exploration,
                                          epsilon, temperature)
            action = (dist.argmax(axis=1) if exploration == "greedy"
                      else sample_categorical(dist, rng))
            for k in truth_keys:                      # the truth the decision was made in
                rows[f"context.{k}"].append(np.array(info[k]))
            nxt, reward, term, _, info = env.step(action)
            for k, v in (("obs", obs), ("action", action), ("reward", reward),
                         ("probs", dist), ("done", term), ("active", active.copy())):
                rows[k].append(np.asarray(v))
            active &= ~term
            obs = nxt
        env.close()
        keep = np.stack(rows["active"], axis=1)                 # (b, T), lane-major
        lane, step = np.nonzero(keep)
        table = {k: np.stack(v, axis=1)[lane, step] for k, v in rows.items() if k != "active"}
        table["episode"], table["step"] = lane + offset, step
        parts.append(table)
        offset += b
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    n = len(cat["action"])
    context = {k.split(".", 1)[1]: v for k, v in cat.items() if k.startswith("context.")}
    return LoggedData(episode=cat["episode"], step=cat["step"], obs=cat["obs"],
                      action=cat["action"], reward=cat["reward"], context=context or None,
                      propensity=cat["probs"][np.arange(n), cat["action"]], done=cat["done"],
                      n_actions=cat["probs"].shape[1], action_probs=cat["probs"],
                      meta=dict(meta or {}, exploration=exploration, epsilon=epsilon,
                                temperature=temperature, seed=seed, episodes=episodes))


class _Acting:
    """An evaluation policy acting as ``evaluation_probs`` describes (for ``run_episodes``)."""

    privileged = False
    learning = False

    def __init__(self, policy: Any, mode: str, seed: int) -> None:
        self.policy, self.mode = policy, mode
        self.rng = generator(seed, "evaluation_actions")

    def act(self, obs: np.ndarray, info: Mapping[str, Any] | None = None) -> np.ndarray:
        probs = evaluation_probs(self.policy, obs, self.mode)
        return probs.argmax(axis=1) if self.mode == "greedy" else sample_categorical(
            probs, self.rng)


def true_value(policy: Any, make_env: Callable[[int], VectorEnv], episodes: int, seed: int,
               mode: str = "greedy") -> dict[str, float]:
    """On-policy Monte-Carlo value (mean undiscounted return) with its 95% CI, on the
    ``truth`` users of the run's ``seed`` (the same for every policy: paired; never a log's
    users). ``policy`` may also be privileged (e.g. the oracle: the normalisation's top)."""
    actor = policy if policy.privileged else _Acting(policy, mode, seed)
    returns = run_episodes(actor, make_env, episodes, seed=seed, purpose="truth").returns
    mean, low, high = mean_ci(returns)
    return dict(value=mean, ci_low=low, ci_high=high, episodes=episodes)
