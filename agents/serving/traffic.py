"""Who decides: exploration and traffic splits over loaded bundles, with the propensities
an offline evaluation needs.

A ``Decider`` serves a primary bundle, optionally with a candidate:

* ``single`` — the primary decides everything;
* ``canary`` / ``ab`` — the candidate serves a ``share`` of users, the primary the rest.
  A user with a ``user_id`` is assigned by a salted hash of the id, so the same user always
  meets the same version (sticky); a request without one is assigned at random. ``canary``
  and ``ab`` differ only in intent (a small share that grows, or a fixed split);
* ``shadow`` — the primary decides; the candidate decides too, on the same observation, and
  its choice is returned separately for the shadow log (it is never shown).

Exploration (``agents.serving.exploration.Exploration``) applies to every arm: ``greedy``
(the most probable action / the Gaussian mean), ``sample`` (the policy's own distribution,
tempered by ``temperature``) or ``epsilon`` (greedy with probability 1 − ε, uniform
otherwise; discrete only).

For a discrete policy each decision records the full behaviour distribution
``Σ_arm share_arm · b_arm(·|x)`` and the served action's probability under it
(``propensity``), plus its probability under the serving arm alone (``arm_propensity``).
The mixture is the behaviour policy marginalised over the split: hashed assignment does not
depend on the observation, so this is the probability an off-policy estimator needs. For a
continuous policy with ``sample``, the same holds for Gaussian densities of the unclipped
draw; a greedy continuous action is deterministic and has no density (``None``).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from agents.serving.exploration import GREEDY, Exploration
from agents.serving.loader import ModelOutputError, ServedPolicy

__all__ = ["Arm", "Decider", "Decisions", "TRAFFIC_MODES"]

TRAFFIC_MODES = ("single", "canary", "ab", "shadow")


@dataclass
class Arm:
    """A loaded bundle under a name (``primary``/``candidate``) and a version label."""

    name: str
    version: str
    policy: ServedPolicy


@dataclass
class Decisions:
    """Decisions for a batch of ``N`` observations (arrays over the batch)."""

    arm: list[str]
    version: list[str]
    action: np.ndarray                    # (N,) int64 or (N, dim) float32 (clipped)
    propensity: list[float | None]
    arm_propensity: list[float | None]
    action_probs: np.ndarray | None       # (N, K) behaviour distribution (discrete)
    shadow: "Decisions | None" = None


class Decider:
    """Exploration and a traffic split over ``primary`` (and ``candidate``). ``decide``
    raises ``ModelOutputError`` when a sampled action's density is not finite.

    Raises:
        ValueError: an unknown traffic mode, a share outside [0, 1], a candidate missing
            or present when the mode says otherwise, or arms whose env or spaces differ.
        ConfigError (a ``ValueError``): a bad exploration setting, or ``epsilon`` for a
            continuous policy.
    """

    def __init__(self, primary: Arm, candidate: Arm | None = None, *, mode: str = "single",
                 share: float = 0.0, exploration: Exploration | str = GREEDY,
                 salt: str = "personarl", seed: int | None = None) -> None:
        if mode not in TRAFFIC_MODES:
            raise ValueError(f"traffic mode {mode!r}; valid: {list(TRAFFIC_MODES)}")
        exploration = Exploration.of(exploration)
        if (candidate is None) != (mode == "single"):
            raise ValueError(f"traffic mode {mode!r} " + ("needs a candidate" if candidate
                             is None else "takes no candidate (use canary, ab or shadow)"))
        if mode in ("canary", "ab") and not 0.0 <= share <= 1.0:
            raise ValueError(f"share={share!r} is outside the valid range [0, 1]")
        self.discrete = primary.policy.discrete
        exploration.check_action_space(self.discrete)
        if candidate is not None:
            _check_compatible(primary, candidate)
        self.primary, self.candidate, self.mode = primary, candidate, mode
        self.share = share if mode in ("canary", "ab") else 0.0
        self.exploration, self.salt = exploration, salt
        self.rng = np.random.default_rng(seed)

    @property
    def arms(self) -> list[Arm]:
        return [a for a in (self.primary, self.candidate) if a is not None]

    def describe(self) -> dict[str, Any]:
        """The split as configured: mode, exploration, and each arm's share of traffic."""
        shares = self._shares() + [0.0]             # a shadow candidate serves nobody
        return dict(mode=self.mode, exploration=self.exploration.describe(),
                    arms=[dict(arm=a.name, version=a.version, share=shares[i])
                          for i, a in enumerate(self.arms)])

    def _shares(self) -> list[float]:
        return [1.0 - self.share, self.share] if self.mode in ("canary", "ab") else [1.0]

    def assign(self, user_ids: Sequence[str | None]) -> np.ndarray:
        """``(N,)`` bool: which requests the candidate serves (sticky per user id)."""
        n = len(user_ids)
        if self.mode not in ("canary", "ab"):
            return np.zeros(n, dtype=bool)
        u = self.rng.random(n)
        for i, uid in enumerate(user_ids):
            if uid is not None:
                digest = hashlib.sha256(f"{self.salt}:{uid}".encode()).digest()
                u[i] = int.from_bytes(digest[:8], "big") / 2.0**64
        return u < self.share

    def decide(self, obs: np.ndarray, user_ids: Sequence[str | None]) -> Decisions:
        """Decisions for a checked ``(N, obs_dim)`` batch (``ServedPolicy.check_obs``)."""
        to_candidate = self.assign(user_ids)
        served = [self.primary, self.candidate] if self.mode in ("canary", "ab") else [
            self.primary]
        out = (self._discrete if self.discrete else self._continuous)(obs, served,
                                                                      to_candidate)
        if self.mode == "shadow":
            out.shadow = (self._discrete if self.discrete else self._continuous)(
                obs, [self.candidate], np.zeros(len(obs), dtype=bool))
        return out

    def _discrete(self, obs: np.ndarray, served: list[Arm], to_candidate: np.ndarray
                  ) -> Decisions:
        rows = np.arange(len(obs))
        behaviour = [self.exploration.probs(a.policy.action_probs(obs)) for a in served]
        own = np.where(to_candidate[:, None], behaviour[-1], behaviour[0])
        action = self.exploration.choose(own, self.rng)
        mixture = sum(w * b for w, b in zip(self._shares()[:len(served)], behaviour))
        return Decisions(arm=self._names(served, to_candidate, "name"),
                         version=self._names(served, to_candidate, "version"),
                         action=action.astype(np.int64),
                         propensity=mixture[rows, action].tolist(),
                         arm_propensity=own[rows, action].tolist(),
                         action_probs=mixture)

    def _continuous(self, obs: np.ndarray, served: list[Arm], to_candidate: np.ndarray
                    ) -> Decisions:
        params = [(m, self.exploration.log_std(s)) for m, s in
                  (a.policy.gaussian(obs) for a in served)]
        mean = np.where(to_candidate[:, None], params[-1][0], params[0][0])
        log_std = np.where(to_candidate[:, None], params[-1][1], params[0][1])
        if self.exploration.greedy:
            raw, dens, own = mean, [None] * len(obs), [None] * len(obs)
        else:
            raw = mean + np.exp(log_std) * self.rng.standard_normal(mean.shape)
            logs = np.stack([_log_density(raw, m, s) for m, s in params])      # (arms, N)
            shares = np.asarray(self._shares()[:len(served)])[:, None]
            dens = np.exp(logs + np.log(np.maximum(shares, 1e-300))).sum(axis=0).tolist()
            own = np.exp(np.where(to_candidate, logs[-1], logs[0])).tolist()
        if not all(p is None or math.isfinite(p) for p in dens):
            raise ModelOutputError("the behaviour density of a sampled action is not finite "
                                   "(the policy's log_std is extreme); no action taken")
        policy = served[0].policy
        action = np.clip(raw, policy.action_low, policy.action_high).astype(np.float32)
        return Decisions(arm=self._names(served, to_candidate, "name"),
                         version=self._names(served, to_candidate, "version"),
                         action=action, propensity=dens, arm_propensity=own,
                         action_probs=None)

    @staticmethod
    def _names(served: list[Arm], to_candidate: np.ndarray, attr: str) -> list[str]:
        first, last = getattr(served[0], attr), getattr(served[-1], attr)
        return [last if c else first for c in to_candidate]


def _log_density(x: np.ndarray, mean: np.ndarray, log_std: np.ndarray) -> np.ndarray:
    """Row-wise log-density of a diagonal Gaussian."""
    z = (x - mean) / np.exp(log_std)
    return (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(axis=1)


def _check_compatible(a: Arm, b: Arm) -> None:
    """Refuse a split between bundles for different envs, observations or actions (names
    of columns and actions may differ)."""
    sa, sb = a.policy.spec, b.policy.spec
    if sa["env"]["id"] != sb["env"]["id"]:
        raise ValueError(f"the {a.name} bundle is for {sa['env']['id']} and the {b.name} "
                         f"bundle for {sb['env']['id']}")
    for key in ("observation", "action", "distribution"):
        left, right = sa[key], sb[key]
        if isinstance(left, dict):
            left = {k: v for k, v in left.items() if k not in ("names", "columns")}
            right = {k: v for k, v in right.items() if k not in ("names", "columns")}
        if left != right:
            raise ValueError(f"the {a.name} ({a.version}) and {b.name} ({b.version}) bundles "
                             f"differ in {key}; a traffic split needs policies for the same "
                             "observations and actions")
