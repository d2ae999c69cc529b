"""The sampling maths of a served decision — NumPy only, what OPE reads back.

``behaviour_probs`` turns a discrete policy's probabilities into the distribution an
exploration setting actually draws from (``greedy``, ``sample``, ``epsilon``): the
probabilities a decision log records, which offline evaluation uses as the behaviour
policy's propensities. ``sample_categorical`` is the draw itself.
"""

from __future__ import annotations

import numpy as np

from personarl.errors import ConfigError

__all__ = ["EXPLORATION_MODES", "sample_categorical", "behaviour_probs"]

EXPLORATION_MODES = ("greedy", "sample", "epsilon")


def sample_categorical(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw per row of ``(N, K)`` probabilities (inverse CDF, vectorised)."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random((probs.shape[0], 1)) * cdf[:, -1:]
    return np.minimum((cdf <= u).sum(axis=1), probs.shape[1] - 1)


def behaviour_probs(probs: np.ndarray, mode: str, epsilon: float = 0.0) -> np.ndarray:
    """The distribution an exploration setting draws from, given policy probabilities
    ``(N, K)``: ``greedy`` puts all mass on the most probable action, ``sample`` is the
    policy itself, ``epsilon`` is greedy with probability ``1 − ε`` and uniform otherwise."""
    if mode == "sample":
        return probs
    if mode not in EXPLORATION_MODES:
        raise ConfigError(f"exploration mode {mode!r}; valid: {list(EXPLORATION_MODES)}")
    if not 0.0 <= epsilon <= 1.0:
        raise ConfigError(f"epsilon={epsilon!r} is outside the valid range [0, 1]")
    n, k = probs.shape
    out = np.zeros((n, k))
    out[np.arange(n), probs.argmax(axis=1)] = 1.0
    if mode == "epsilon":
        out = (1.0 - epsilon) * out + epsilon / k
    return out
