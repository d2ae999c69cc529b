"""Linear contextual bandits on the raw observation: LinUCB and linear Thompson sampling.

Both keep, per action ``a``, a ridge regression of the immediate reward on the context
``x = [obs, 1]``: ``A_a = λI + Σ x xᵀ`` and ``b_a = Σ r x`` over the rows where ``a`` was
taken, so ``θ_a = A_a⁻¹ b_a``. They are myopic (they model the reward of this step only)
and work for any env with discrete actions and a flat observation.

* ``LinUCB`` — disjoint LinUCB (Li, Chu, Langford & Schapire 2010, Algorithm 1): while
  learning, choose ``argmax_a xᵀθ_a + α √(xᵀ A_a⁻¹ x)``.
* ``LinearThompson`` — Thompson sampling with a Gaussian posterior (Agrawal & Goyal 2013):
  while learning, draw ``θ̃_a ~ N(θ_a, v² A_a⁻¹)`` independently for every row and choose
  ``argmax_a xᵀθ̃_a``.

Frozen (``learning = False``), both choose ``argmax_a xᵀθ_a``: the exploration bonus and the
posterior draw are how they learn, and evaluation compares what they learned, as for the
other learning baselines.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from agents.baselines.policies import FixedPolicy
from personarl.errors import check_int, check_range

__all__ = ["LinUCB", "LinearThompson"]


class _LinearBandit(FixedPolicy):
    """Per-action ridge regressions updated in batches; subclasses choose how to explore."""

    def __init__(self, num_actions: int, obs_dim: int, ridge: float = 1.0,
                 seed: int = 0) -> None:
        super().__init__(check_int("num_actions", num_actions, 2))
        self.dim = check_int("obs_dim", obs_dim, 1) + 1
        self.ridge = check_range("ridge", ridge, 0, np.inf, low_open=True, high_open=True)
        self.rng = np.random.default_rng(seed)
        self.A = np.tile(np.eye(self.dim) * self.ridge, (self.k, 1, 1))   # (K, D, D)
        self.b = np.zeros((self.k, self.dim))
        self._refresh()
        self.learning = True

    def _refresh(self) -> None:
        self.A_inv = np.linalg.inv(self.A)
        self.theta = np.einsum("kij,kj->ki", self.A_inv, self.b)

    def features(self, obs: np.ndarray) -> np.ndarray:
        """``[obs, 1]`` as float64."""
        obs = np.asarray(obs, dtype=np.float64)
        return np.concatenate([obs, np.ones((len(obs), 1))], axis=1)

    def mean_rewards(self, obs: np.ndarray) -> np.ndarray:
        """``(B, K)`` estimated immediate reward ``xᵀθ_a``."""
        return self.features(obs) @ self.theta.T

    def scores(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def action_probs(self, obs: np.ndarray, info: Mapping[str, Any] | None = None
                     ) -> np.ndarray:
        """One-hot of the frozen (greedy) choice; while learning, of the exploring one
        (Thompson sampling: the share of 64 posterior draws choosing each action)."""
        choice = self.act(obs, info)
        return np.eye(self.k)[choice]

    def act(self, obs: np.ndarray, info: Mapping[str, Any] | None = None) -> np.ndarray:
        if not self.learning:
            return self.mean_rewards(obs).argmax(axis=1)
        return self.scores(self.features(obs)).argmax(axis=1)

    def update(self, obs: np.ndarray, action: np.ndarray, reward: np.ndarray) -> None:
        if not self.learning or len(obs) == 0:
            return
        x = self.features(obs)
        action = np.asarray(action)
        for a in np.unique(action):          # a loop over actions, not over users
            rows = action == a
            self.A[a] += x[rows].T @ x[rows]
            self.b[a] += x[rows].T @ np.asarray(reward, dtype=np.float64)[rows]
        self._refresh()


class LinUCB(_LinearBandit):
    """Disjoint LinUCB; ``alpha`` scales the confidence bonus (>= 0)."""

    name = "linucb"

    def __init__(self, num_actions: int, obs_dim: int, alpha: float = 1.0, ridge: float = 1.0,
                 seed: int = 0) -> None:
        self.alpha = check_range("alpha", alpha, 0, np.inf, high_open=True)
        super().__init__(num_actions, obs_dim, ridge, seed)

    def scores(self, x: np.ndarray) -> np.ndarray:
        width = np.sqrt(np.einsum("bi,kij,bj->bk", x, self.A_inv, x))
        return x @ self.theta.T + self.alpha * width


class LinearThompson(_LinearBandit):
    """Linear Thompson sampling; ``scale`` is the posterior scale ``v`` (> 0)."""

    name = "thompson"

    def __init__(self, num_actions: int, obs_dim: int, scale: float = 0.5,
                 ridge: float = 1.0, seed: int = 0) -> None:
        self.scale = check_range("scale", scale, 0, np.inf, low_open=True, high_open=True)
        super().__init__(num_actions, obs_dim, ridge, seed)

    def _refresh(self) -> None:
        super()._refresh()
        self._chol = np.linalg.cholesky(self.A_inv)                      # (K, D, D)

    def scores(self, x: np.ndarray) -> np.ndarray:
        z = self.rng.standard_normal((len(x), self.k, self.dim))
        theta = self.theta + self.scale * np.einsum("kij,bkj->bki", self._chol, z)
        return np.einsum("bi,bki->bk", x, theta)

    def action_probs(self, obs: np.ndarray, info: Mapping[str, Any] | None = None
                     ) -> np.ndarray:
        if not self.learning:
            return super().action_probs(obs, info)
        x = self.features(obs)
        counts = np.zeros((len(x), self.k))
        for _ in range(64):
            np.add.at(counts, (np.arange(len(x)), self.scores(x).argmax(axis=1)), 1.0)
        return counts / 64
