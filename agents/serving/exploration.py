"""How a policy's distribution becomes an action: one vocabulary for every command that acts
— NumPy only, and what offline evaluation reads back as the behaviour policy.

``Exploration(mode, epsilon, temperature)`` is the setting ``experiments.collect``,
``experiments.evaluate`` and ``experiments.serve`` take as their ``exploration`` group and
``ServedPolicy.act`` takes as ``exploration=``. Its modes (RLlib's exploration names in
brackets):

* ``greedy`` — the most probable action; a Gaussian policy's mean (``explore=False``);
* ``sample`` — a draw from the policy's own distribution tempered by ``temperature`` τ:
  probabilities ``∝ p^(1/τ)`` (a softmax of the log-probabilities over τ), for a Gaussian
  the same law, ``N(μ, τσ²)``; τ = 1 is the policy itself, τ → 0 greedy, τ → ∞ uniform
  (``StochasticSampling``; Boltzmann exploration, Sutton & Barto 2018, §2.8);
* ``epsilon`` — greedy with probability ``1 − ε``, uniformly random otherwise; discrete
  actions only (``EpsilonGreedy``; Sutton & Barto 2018, §2.2).

``Exploration.probs`` is the distribution a setting draws from — what a decision log
records as the behaviour policy's probabilities — and ``Exploration.choose`` the draw.
Renamed in issue 17: collect's ``softmax`` and evaluate's ``stochastic`` are ``sample``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from personarl.errors import ConfigError, check_range
from personarl.stats import softmax

__all__ = ["EXPLORATION_MODES", "Exploration", "GREEDY", "sample_categorical"]

EXPLORATION_MODES = ("greedy", "sample", "epsilon")
#: old names of the modes, named in the error a user of the old name gets
_RENAMED = {"softmax": "sample", "stochastic": "sample"}
#: the temperatures accepted: beyond them a tempered draw is greedy (below) or uniform
#: (above) to float precision — use ``greedy`` or ``behaviour=random`` instead
TEMPERATURE_RANGE = (1e-3, 1e3)


def sample_categorical(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw per row of ``(N, K)`` probabilities (inverse CDF, vectorised): ``(N,)``."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random((probs.shape[0], 1)) * cdf[:, -1:]
    return np.minimum((cdf <= u).sum(axis=1), probs.shape[1] - 1)


@dataclass(frozen=True)
class Exploration:
    """An exploration setting (see the module doc). ``epsilon`` counts in ``epsilon`` mode
    only and ``temperature`` in ``sample`` mode only; both are recorded either way.

    Raises:
        ConfigError: a mode not in ``EXPLORATION_MODES`` (an old name says its new one),
            ``epsilon`` outside [0, 1], ``temperature`` outside ``TEMPERATURE_RANGE`` (the
            message names the config key, ``exploration.<field>``).
    """

    mode: str = "greedy"
    epsilon: float = 0.0
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.mode, str) or self.mode not in EXPLORATION_MODES:
            renamed = (f" ({self.mode!r} was renamed {_RENAMED[self.mode]!r})"
                       if isinstance(self.mode, str) and self.mode in _RENAMED else "")
            raise ConfigError(f"exploration.mode={self.mode!r}; valid: "
                              f"{list(EXPLORATION_MODES)}{renamed}")
        object.__setattr__(self, "epsilon", check_range("exploration.epsilon", self.epsilon,
                                                        0.0, 1.0))
        t = check_range("exploration.temperature", self.temperature, *TEMPERATURE_RANGE)
        object.__setattr__(self, "temperature", t)

    @classmethod
    def of(cls, setting: "Exploration | str | Mapping[str, Any]") -> "Exploration":
        """``setting`` as an ``Exploration``: one already, a mode name, or a mapping with
        ``mode`` and optionally ``epsilon`` and ``temperature`` (a config group).

        Raises:
            ConfigError: anything else, or a mapping with other keys.
        """
        if isinstance(setting, Exploration):
            return setting
        if isinstance(setting, str):
            return cls(setting)
        if isinstance(setting, Mapping):
            fields = ("mode", "epsilon", "temperature")
            unknown = sorted(str(k) for k in setting if k not in fields)
            if "mode" not in setting or unknown:
                raise ConfigError(f"exploration={dict(setting)!r} needs 'mode' and takes "
                                  f"only {list(fields)}")
            return cls(**{k: setting[k] for k in fields if k in setting})
        raise ConfigError(f"exploration={setting!r} is not an exploration setting; give a "
                          f"mode ({'|'.join(EXPLORATION_MODES)}), an Exploration or a "
                          "mapping {mode, epsilon, temperature}")

    @property
    def greedy(self) -> bool:
        """Whether every action is the most probable one (a deterministic policy)."""
        return self.mode == "greedy"

    def check_action_space(self, discrete: bool) -> None:
        """Raise ``ConfigError`` for ``epsilon`` with continuous actions (there is no
        uniform distribution over an unbounded Gaussian's support to mix in)."""
        if self.mode == "epsilon" and not discrete:
            raise ConfigError("exploration.mode='epsilon' is for discrete actions; a "
                              "continuous policy explores with 'sample' (its Gaussian)")

    def probs(self, probs: np.ndarray) -> np.ndarray:
        """``(N, K)``: the distribution this setting draws from, given the policy's
        probabilities ``(N, K)``. ``sample`` at τ = 1 returns ``probs`` itself."""
        if self.mode == "sample":
            if self.temperature == 1.0:
                return probs
            return softmax(np.log(np.maximum(probs, 1e-300)), self.temperature)
        n, k = probs.shape
        out = np.zeros((n, k))
        out[np.arange(n), probs.argmax(axis=1)] = 1.0
        if self.mode == "epsilon":
            out = (1.0 - self.epsilon) * out + self.epsilon / k
        return out

    def choose(self, dist: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``(N,)`` actions drawn from ``dist = self.probs(...)``: its argmax when greedy
        (no random number used), else one categorical draw per row from ``rng``."""
        return dist.argmax(axis=1) if self.greedy else sample_categorical(dist, rng)

    def log_std(self, log_std: np.ndarray) -> np.ndarray:
        """A Gaussian policy's ``log σ`` under this setting: ``log σ + ½ log τ``
        (``sample``; the draw's law is ``N(μ, τσ²)``)."""
        return log_std if self.temperature == 1.0 else log_std + 0.5 * math.log(
            self.temperature)

    def describe(self) -> dict[str, Any]:
        """``{mode, epsilon, temperature}`` (what logs and reports record)."""
        return asdict(self)


#: the setting of a deterministic policy
GREEDY = Exploration()
