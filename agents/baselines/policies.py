"""Baseline policies behind one small interface (AgentRouting's and the shared ones).

A policy sees a batch of observations (and, if it is privileged, the env's ``info``) and
returns one action per row. Learning baselines update online from ``(obs, action,
reward)`` while ``learning`` is on; evaluation switches it off so every policy is compared
as a fixed policy on the same users.

* ``RandomPolicy`` — uniform over agents.
* ``GreedyRouter`` — myopic greedy on what is observed: running mean reward per
  (task type, agent), argmax; optimistic start and ε-greedy exploration while learning.
* ``PersonaRouter`` — the status-quo product router: running mean reward per
  (task type, estimated primary persona, agent); routing weights are a softmax of those
  means and the top-weighted agent is chosen. Users without a usable estimate — no consent,
  or fusion confidence below ``min_confidence`` (e.g. before any interaction, when the
  estimate is just the population prior) — form their own bucket.
* ``MyopicOracle`` — privileged: the myopic oracle action from ``info`` (the ground truth).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol

import numpy as np

from envs.routing_core import ObsLayout
from agents.baselines.rankings import AgentRankings, fusion_persona, routing_weights
from personarl.errors import ConfigError, check_range

__all__ = ["Policy", "FixedPolicy", "RandomPolicy", "RandomVector", "GreedyRouter",
           "PersonaRouter", "MyopicOracle",
           "MeanTablePolicy", "routing_baselines"]


class Policy(Protocol):
    """What evaluation, OPE and serving need from a policy."""

    name: str
    privileged: bool
    learning: bool

    def act(self, obs: np.ndarray, info: Mapping[str, Any] | None = None) -> np.ndarray:
        """``(B,)`` actions for ``(B, D)`` observations."""

    def action_probs(self, obs: np.ndarray,
                     info: Mapping[str, Any] | None = None) -> np.ndarray:
        """``(B, K)`` probability of each action (what ``act`` samples from)."""

    def update(self, obs: np.ndarray, action: np.ndarray, reward: np.ndarray) -> None:
        """Learn from one step of a batch (no-op for fixed policies)."""


class FixedPolicy:
    """Base of policies that do not learn: ``act`` is the most probable action of
    ``action_probs``; ``update`` does nothing."""

    privileged = False
    learning = False

    def __init__(self, num_actions: int) -> None:
        self.k = num_actions

    def update(self, obs: np.ndarray, action: np.ndarray, reward: np.ndarray) -> None:
        return None

    def act(self, obs: np.ndarray, info: Mapping[str, Any] | None = None) -> np.ndarray:
        return self.action_probs(obs, info).argmax(axis=1)


class RandomPolicy(FixedPolicy):
    """Uniformly random action; ``seed`` fixes its draws."""

    name = "random"

    def __init__(self, num_actions: int, seed: int = 0) -> None:
        super().__init__(num_actions)
        self.rng = np.random.default_rng(seed)

    def action_probs(self, obs: np.ndarray, info: Mapping[str, Any] | None = None
                     ) -> np.ndarray:
        return np.full((len(obs), self.k), 1.0 / self.k)

    def act(self, obs: np.ndarray, info: Mapping[str, Any] | None = None) -> np.ndarray:
        return self.rng.integers(0, self.k, size=len(obs))


class RandomVector(FixedPolicy):
    """Uniformly random action vector in ``[low, high]^dim`` (continuous action spaces)."""

    name = "random"

    def __init__(self, dim: int, low: float = 0.0, high: float = 1.0, seed: int = 0) -> None:
        super().__init__(dim)
        self.low, self.high = low, high
        self.rng = np.random.default_rng(seed)

    def action_probs(self, obs: np.ndarray, info: Mapping[str, Any] | None = None
                     ) -> np.ndarray:
        raise ConfigError("a continuous policy has no action probabilities; it has a density")

    def act(self, obs: np.ndarray, info: Mapping[str, Any] | None = None) -> np.ndarray:
        return self.rng.uniform(self.low, self.high, size=(len(obs), self.k))


class MyopicOracle(FixedPolicy):
    """Privileged myopic oracle (any env): the action with the highest expected immediate
    reward given the latent state, ``info["oracle_action"]``."""

    name = "oracle"
    privileged = True

    @staticmethod
    def _oracle_action(info: Mapping[str, Any] | None) -> np.ndarray:
        if not info or "oracle_action" not in info:
            raise ConfigError("the oracle reads info['oracle_action']: build the env with "
                              "info_level='full'")
        return np.asarray(info["oracle_action"])

    def action_probs(self, obs: np.ndarray, info: Mapping[str, Any] | None = None
                     ) -> np.ndarray:
        return np.eye(self.k)[self._oracle_action(info)]

    def act(self, obs: np.ndarray, info: Mapping[str, Any] | None = None) -> np.ndarray:
        """The oracle action itself: an index, or a vector for continuous actions."""
        return self._oracle_action(info)


class MeanTablePolicy(FixedPolicy):
    """Running mean reward per (bucket, agent) with an optimistic start.

    While ``learning``, a fraction ``epsilon`` of decisions is a uniformly random agent:
    optimism alone stops exploring once one early-lucky agent leads, which made what these
    baselines learned depend on the order of their warm-up users. Frozen, they are greedy.
    """

    def __init__(self, num_actions: int, num_buckets: int, optimism: float = 1.0,
                 temperature: float = 0.05, epsilon: float = 0.1, seed: int = 0) -> None:
        super().__init__(num_actions)
        self.temperature = check_range("temperature", temperature, 0, np.inf, low_open=True,
                                       high_open=True)
        self.epsilon = check_range("epsilon", epsilon, 0, 1)
        self.rng = np.random.default_rng(seed)
        self.optimism = float(optimism)
        self.sums = np.full((num_buckets, self.k), self.optimism)  # one optimistic reward
        self.counts = np.ones((num_buckets, self.k))
        self.learning = True

    def bucket(self, obs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def means(self, obs: np.ndarray) -> np.ndarray:
        """``(B, K)`` running mean reward of each agent in each row's bucket."""
        b = self.bucket(obs)
        return self.sums[b] / self.counts[b]

    def action_probs(self, obs: np.ndarray, info: Mapping[str, Any] | None = None
                     ) -> np.ndarray:
        """The routing weights of each row's bucket (``agents.baselines.rankings``)."""
        return routing_weights(self.means(obs), self.temperature)

    def act(self, obs: np.ndarray, info: Mapping[str, Any] | None = None) -> np.ndarray:
        greedy = self.means(obs).argmax(axis=1)
        if not self.learning or self.epsilon == 0:
            return greedy
        explore = self.rng.random(len(obs)) < self.epsilon
        return np.where(explore, self.rng.integers(0, self.k, size=len(obs)), greedy)

    def update(self, obs: np.ndarray, action: np.ndarray, reward: np.ndarray) -> None:
        if self.learning:
            b = self.bucket(obs)
            np.add.at(self.sums, (b, action), reward)
            np.add.at(self.counts, (b, action), 1.0)


class GreedyRouter(MeanTablePolicy):
    """Myopic greedy on observed features: best running mean per task type."""

    name = "greedy"

    def __init__(self, layout: ObsLayout, optimism: float = 1.0, epsilon: float = 0.1,
                 seed: int = 0) -> None:
        self._task = layout.slices()["task"]
        super().__init__(layout.num_agents, self._task.stop - self._task.start,
                         optimism=optimism, epsilon=epsilon, seed=seed)

    def bucket(self, obs: np.ndarray) -> np.ndarray:
        return obs[:, self._task].argmax(axis=1)


class PersonaRouter(MeanTablePolicy):
    """The status-quo product router: per (task type, estimated primary persona) means."""

    name = "persona_router"

    def __init__(self, layout: ObsLayout, optimism: float = 1.0, temperature: float = 0.05,
                 epsilon: float = 0.1, seed: int = 0, min_confidence: float = 0.6) -> None:
        self.min_confidence = check_range("min_confidence", min_confidence, 0, 1)
        cols = layout.slices()
        self._task = cols["task"]
        self._tasks = cols["task"].stop - cols["task"].start
        self._personas = layout.num_archetypes + 1       # + "no consent, no estimate"
        super().__init__(layout.num_agents, self._tasks * self._personas, optimism,
                         temperature, epsilon, seed)
        self._cols = cols

    def bucket(self, obs: np.ndarray) -> np.ndarray:
        task = obs[:, self._task].argmax(axis=1)
        return task * self._personas + fusion_persona(obs, self._cols, self.min_confidence)

    def rankings(self) -> AgentRankings:
        """What the router has learned, as ``AgentRankings`` ``(T, A + 1, K)``: per task
        type × estimated persona (the last: no usable estimate), each agent's mean with
        its optimistic start, rank and routing weight (no intervals: the router keeps no
        squares)."""
        shape = (self._tasks, self._personas, self.k)
        return AgentRankings.from_sums(
            (self.counts - 1.0).reshape(shape), (self.sums - self.optimism).reshape(shape),
            None, temperature=self.temperature, prior_sum=self.optimism, prior_count=1.0)


def routing_baselines(core: Any) -> dict[str, Callable[..., Policy]]:
    """AgentRouting's baselines entry (``envs.routing.RECORD.baselines``): the routers that
    read the observation layout of ``core``, besides the baselines every env gets
    (``agents.baselines.factory``)."""
    return {"greedy": lambda seed=0, **kw: GreedyRouter(core.layout, seed=seed, **kw),
            "persona_router": lambda seed=0, **kw: PersonaRouter(core.layout, seed=seed,
                                                                 **kw)}
