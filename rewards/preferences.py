"""Simulated annotators and the preference pairs they produce.

An annotator ``j`` (a persona of the population) compares two candidate actions ``a`` and
``b`` in the same context ``x`` through its own utility

    u_j(x, a) = R*(x, a) + b_j · φ(a)

— the simulator's true expected reward ``R*`` plus, optionally, an exploitable taste ``φ``
that the true reward does not share (``STYLE_BIASES``: a liking for flattering or verbose
styles) held with strength ``b_j``. It prefers ``a`` with probability

    P_j(a ≻ b) = f_j + (1 − 2 f_j) · σ((u_j(a) − u_j(b)) / τ_j)

— a Bradley–Terry / logistic choice with noise scale ``τ_j`` (Bradley & Terry 1952;
Christiano et al. 2017) whose label is flipped at random with rate ``f_j`` (careless
clicks). The best any predictor of its labels can do is therefore

    ceiling = E[f_j + (1 − 2 f_j) · σ(|Δu_j| / τ_j)]       (``label_ceiling``)

Annotators' noise, flip rate and bias strength follow their traits
(``Annotators.from_traits``): conscientious annotators are less noisy, neurotic ones flip
more, agreeable ones like flattery more. A pair reports the annotator's ``strength``
``|2σ(Δu_j/τ_j) − 1|`` in [0, 1] (the write-up's ``preference_strength``).

Actions are either indices of a ``Discrete(K)`` space (``num_actions=K``) or vectors of a
``Box(0, 1, (d,))`` space (``num_actions=None``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from personarl.errors import DataError, check_int, check_range
from personarl.statefile import read_format, write_state
from synth.archetypes import TRAITS

__all__ = ["Annotators", "PreferencePairs", "population_annotators", "STYLE_BIASES",
           "annotate", "check_pairs", "check_action_indices", "label_ceiling", "load_pairs", "pairs_summary",
           "sigmoid", "MAX_FLIP"]

#: flip rates at or above ½ would turn the preference around
MAX_FLIP = 0.45
PAIRS_FORMAT = "personarl.preference_pairs/1"
_T = {name: i for i, name in enumerate(TRAITS)}


def _over_the_top(level: np.ndarray) -> np.ndarray:
    """``(2·level − 1)₊³``: nothing up to a neutral ½, then steeply more to 1 at the top."""
    return np.clip(2.0 * level - 1.0, 0.0, 1.0) ** 3


def _flattery(style: np.ndarray) -> np.ndarray:
    """Gushing: the mean of the assistant's agreeableness and enthusiasm, over the top."""
    return _over_the_top(0.5 * (style[:, _T["agreeableness"]] + style[:, _T["enthusiasm"]]))


def _verbosity(style: np.ndarray) -> np.ndarray:
    """Padding: the mean of extraversion and 1 − directness, over the top."""
    return _over_the_top(0.5 * (style[:, _T["extraversion"]] + 1.0
                                - style[:, _T["directness"]]))


#: exploitable tastes over an assistant style ``(n, 10)`` (``synth.TRAITS`` order) ->
#: ``(n,)`` in [0, 1]. Convex on purpose: an annotator is swayed by a reply only once it is
#: over the top, which a base policy rarely writes and an optimiser of the learned reward
#: seeks out (a linear taste is only traded off against the truth, and best-of-n's true
#: reward then keeps rising: measured, BENCHMARKS.md).
STYLE_BIASES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "flattery": _flattery, "verbosity": _verbosity}


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function, stable for large ``|z|``."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


@dataclass(frozen=True)
class Annotators:
    """A pool of ``m`` simulated annotators (arrays ``(m,)``).

    Attributes:
        tau: noise scale ``τ_j > 0`` in reward units.
        flip: flip rate ``f_j`` in ``[0, MAX_FLIP]``.
        bias: strength ``b_j ≥ 0`` of the exploitable taste (0: none).
    """

    tau: np.ndarray
    flip: np.ndarray
    bias: np.ndarray

    def __post_init__(self) -> None:
        m = len(self.tau)
        if m == 0:
            raise DataError("an annotator pool needs at least one annotator")
        for name in ("tau", "flip", "bias"):
            a = np.asarray(getattr(self, name), dtype=np.float64)
            if a.shape != (m,) or not np.all(np.isfinite(a)):
                raise DataError(f"annotators' {name} must be {m} finite numbers; "
                                f"got shape {a.shape}")
        if np.any(self.tau <= 0):
            raise DataError(f"annotators' tau must be > 0; smallest {self.tau.min():g}")
        if np.any((self.flip < 0) | (self.flip > MAX_FLIP)):
            raise DataError(f"annotators' flip must be in [0, {MAX_FLIP}]; got "
                            f"{self.flip.min():g}..{self.flip.max():g}")
        if np.any(self.bias < 0):
            raise DataError(f"annotators' bias must be >= 0; smallest {self.bias.min():g}")

    def __len__(self) -> int:
        return len(self.tau)

    @classmethod
    def from_traits(cls, traits: np.ndarray, *, tau: float = 0.02, flip: float = 0.05,
                    bias: float = 0.0) -> "Annotators":
        """Annotators from personas' traits ``(m, 10)`` (``synth.TRAITS`` order).

        ``τ_j = tau · (0.5 + (1 − conscientiousness_j))``,
        ``f_j = flip · (0.5 + neuroticism_j)``, ``b_j = bias · (0.5 + agreeableness_j)``:
        each is the pool's level times a factor in [0.5, 1.5] (our modelling choice; the
        write-ups give annotators no noise model).

        Raises:
            ConfigError: ``tau`` not in (0, 10], ``flip`` not in [0, 0.3], ``bias`` not
                in [0, 10].
        """
        traits = np.asarray(traits, dtype=np.float64)
        if traits.ndim != 2 or traits.shape[1] != len(TRAITS) or len(traits) == 0:
            raise DataError(f"traits must be (m >= 1, {len(TRAITS)}); got {traits.shape}")
        check_range("tau", tau, 0, 10, low_open=True)
        check_range("flip", flip, 0, 0.3)
        check_range("bias", bias, 0, 10)
        return cls(tau=tau * (1.5 - traits[:, _T["conscientiousness"]]),
                   flip=flip * (0.5 + traits[:, _T["neuroticism"]]),
                   bias=bias * (0.5 + traits[:, _T["agreeableness"]]))


def population_annotators(count: int, rng: np.random.Generator, *, population: Any = None,
                          tau: float = 0.02, flip: float = 0.05, bias: float = 0.0
                          ) -> Annotators:
    """``count`` annotators: personas drawn from ``population`` (a ``PopulationConfig``,
    a mapping or None for the default), their traits turned into noise, flips and bias
    strength by ``Annotators.from_traits``."""
    from synth.population import PopulationConfig, PopulationSampler

    if isinstance(population, PopulationSampler):
        sampler = population
    else:
        config = population if isinstance(population, PopulationConfig) else \
            PopulationConfig(**dict(population or {}))
        sampler = PopulationSampler(config)
    traits = sampler.sample(check_int("annotators", count, 1, 100_000), rng).traits
    return Annotators.from_traits(traits, tau=tau, flip=flip, bias=bias)


@dataclass(frozen=True)
class PreferencePairs:
    """``n`` preference pairs: in context ``context[i]`` annotator ``annotator[i]`` preferred
    ``chosen[i]`` to ``rejected[i]``.

    Attributes:
        context: ``(n, d_x)`` float32, what the annotator and the reward model see.
        chosen, rejected: ``(n,)`` int64 action indices (``num_actions`` = K) or
            ``(n, d_a)`` float32 action vectors in [0, 1] (``num_actions`` None).
        strength: ``(n,)`` the annotator's stated strength in [0, 1].
        annotator: ``(n,)`` int64 annotator ids.
        true_margin: ``(n,)`` ``R*(chosen) − R*(rejected)``, the simulator's truth.
        utility_margin: ``(n,)`` ``u_j(chosen) − u_j(rejected)`` (truth + the bias).
        flip: ``(n,)`` the annotator's flip rate; ``tau``: ``(n,)`` its noise scale.
        num_actions: K for a ``Discrete(K)`` action space, None for a box.
    """

    context: np.ndarray
    chosen: np.ndarray
    rejected: np.ndarray
    strength: np.ndarray
    annotator: np.ndarray
    true_margin: np.ndarray
    utility_margin: np.ndarray
    flip: np.ndarray
    tau: np.ndarray
    num_actions: int | None = None

    def __len__(self) -> int:
        return len(self.strength)

    @property
    def action_dim(self) -> int:
        """Width of an action's features (K one-hot columns, or the box's d)."""
        return self.num_actions if self.num_actions is not None else self.chosen.shape[1]

    def features(self, actions: np.ndarray) -> np.ndarray:
        """``(n, action_dim)`` float32 features of actions (one-hot for indices)."""
        if self.num_actions is None:
            return np.asarray(actions, dtype=np.float32)
        return np.eye(self.num_actions, dtype=np.float32)[actions]

    def take(self, idx: np.ndarray) -> "PreferencePairs":
        """The pairs ``idx`` (a copy)."""
        return PreferencePairs(**{f.name: getattr(self, f.name)[idx]
                                  for f in fields(self) if f.name != "num_actions"},
                               num_actions=self.num_actions)

    def split(self, holdout: float, rng: np.random.Generator
              ) -> tuple["PreferencePairs", "PreferencePairs"]:
        """A random ``(train, held-out)`` split; ``holdout`` in (0, 1)."""
        check_range("holdout", holdout, 0, 1, low_open=True, high_open=True)
        order = rng.permutation(len(self))
        cut = len(self) - max(1, int(round(holdout * len(self))))
        if cut < 1:
            raise DataError(f"{len(self)} pairs cannot be split into two non-empty parts")
        return self.take(np.sort(order[:cut])), self.take(np.sort(order[cut:]))

    def save(self, path: str | Path) -> Path:
        """Write the pairs to ``path`` (a ``personarl.statefile``: no pickle, whole or not at
        all); returns the path."""
        arrays = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "num_actions"}
        k = None if self.num_actions is None else int(self.num_actions)
        return write_state(path, {"format": PAIRS_FORMAT, "num_actions": k, **arrays})


def check_action_indices(actions: np.ndarray, n: int, k: int, where: str = "") -> np.ndarray:
    """``actions`` as ``(n,)`` indices of ``Discrete(k)``.

    Raises:
        DataError: another shape or dtype, or an index outside ``[0, k)`` — named with its
            row when ``where`` (e.g. ``"chosen"``) says which column it is.
    """
    a = np.asarray(actions)
    if a.shape != (n,) or not np.issubdtype(a.dtype, np.integer):
        raise DataError(f"{where or 'actions'} must be ({n},) action indices of "
                        f"Discrete({k}); got {a.dtype} {a.shape}")
    bad = (a < 0) | (a >= k)
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(f"unknown action {int(a[row])}"
                        + (f" in {where} of pair {row}" if where else "")
                        + f"; valid actions are 0..{k - 1}")
    return a


def check_pairs(pairs: PreferencePairs) -> PreferencePairs:
    """Refuse pairs a reward model cannot learn from; returns ``pairs``.

    Raises:
        DataError: a field that is not an array of its shape; no pairs; arrays of
            different lengths; a non-finite context, action, strength, tau or flip; a
            strength outside [0, 1]; tau <= 0 or a flip outside [0, ``MAX_FLIP``]; an action
            index outside ``[0, K)``; a vector outside [0, 1] or of another width than
            ``rejected``; ``chosen == rejected``; an annotator id that is not an integer
            >= 0.
    """
    for f in fields(pairs):
        a = getattr(pairs, f.name)
        if f.name != "num_actions" and not (isinstance(a, np.ndarray) and a.ndim == (
                2 if f.name == "context" else 1 + (f.name in ("chosen", "rejected")
                                                   and pairs.num_actions is None))):
            raise DataError(f"pairs: {f.name} must be a NumPy array of "
                            f"{'(n, d)' if f.name == 'context' else 'one value per pair'}; "
                            f"got {type(a).__name__} {np.shape(a)}")
        if f.name not in ("num_actions", "context", "chosen", "rejected") and \
                a.dtype.kind not in "iuf":
            raise DataError(f"pairs: {f.name} must be numbers; got {a.dtype}")
    n = len(pairs)
    if n == 0:
        raise DataError("the pair set is empty: annotate at least one pair")
    for f in fields(pairs):
        if f.name != "num_actions" and len(getattr(pairs, f.name)) != n:
            raise DataError(f"pairs: {f.name} has {len(getattr(pairs, f.name))} rows, "
                            f"strength has {n}")
    for name in ("context", "strength", "true_margin", "utility_margin", "tau", "flip"):
        bad = ~np.isfinite(np.asarray(getattr(pairs, name), dtype=np.float64))
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise DataError(f"pairs: {name} is not finite in pair {row} "
                            f"({int(bad.any(axis=tuple(range(1, bad.ndim))).sum())} pairs)")
    s = pairs.strength
    if np.any((s < 0) | (s > 1)):
        row = int(np.argwhere((s < 0) | (s > 1))[0][0])
        raise DataError(f"pairs: strength {float(s[row]):g} in pair {row} is outside [0, 1]")
    if pairs.annotator.dtype.kind not in "iu" or np.any(pairs.annotator < 0):
        raise DataError("pairs: annotator ids must be integers >= 0")
    if np.any(pairs.tau <= 0) or np.any((pairs.flip < 0) | (pairs.flip > MAX_FLIP)):
        raise DataError(f"pairs: every tau must be > 0 and every flip in [0, {MAX_FLIP}]")
    c, r = pairs.chosen, pairs.rejected
    if pairs.num_actions is not None:
        for name, a in (("chosen", c), ("rejected", r)):
            try:
                check_action_indices(a, n, pairs.num_actions, name)
            except DataError as exc:
                raise DataError(f"pairs: {exc}") from None
        same = c == r
    else:
        if c.ndim != 2 or c.shape != r.shape:
            raise DataError(f"pairs: chosen {c.shape} and rejected {r.shape} must both be "
                            "(n, d) action vectors")
        for name, a in (("chosen", c), ("rejected", r)):
            bad = ~np.isfinite(a) | (a < 0) | (a > 1)
            if bad.any():
                row = int(np.argwhere(bad)[0][0])
                raise DataError(f"pairs: {name} action of pair {row} is not in the box "
                                f"[0, 1]^{c.shape[1]}: {a[row].tolist()}")
        same = np.all(c == r, axis=1)
    if same.any():
        raise DataError(f"pairs: chosen == rejected in pair {int(np.argwhere(same)[0][0])} "
                        f"({int(same.sum())} pairs): a pair compares two different actions")
    return pairs


def load_pairs(path: str | Path) -> PreferencePairs:
    """Pairs written by ``PreferencePairs.save``, checked (``check_pairs``).

    Raises:
        DataError: a missing, damaged or foreign file, or pairs ``check_pairs`` refuses.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no preference pairs at {path}")
    state = read_format(path, PAIRS_FORMAT, "preference-pair")
    try:
        arrays = {f.name: state[f.name] for f in fields(PreferencePairs)
                  if f.name != "num_actions"}
        k = state["num_actions"]
    except KeyError as exc:
        raise DataError(f"{path} is not a preference-pair file: missing {exc}") from None
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 2):
        raise DataError(f"{path}: num_actions={k!r} must be null or an integer >= 2")
    return check_pairs(PreferencePairs(**arrays, num_actions=k))


def annotate(context: np.ndarray, action_a: np.ndarray, action_b: np.ndarray,
             reward_a: np.ndarray, reward_b: np.ndarray, annotators: Annotators,
             rng: np.random.Generator, *, bias_a: np.ndarray | None = None,
             bias_b: np.ndarray | None = None, num_actions: int | None = None
             ) -> PreferencePairs:
    """Each of ``n`` comparisons judged by an annotator drawn uniformly from the pool.

    Args:
        context: ``(n, d_x)`` what is compared in.
        action_a, action_b: ``(n,)`` indices or ``(n, d_a)`` vectors (``num_actions``).
        reward_a, reward_b: ``(n,)`` the true expected reward ``R*`` of each action.
        annotators: the pool.
        rng: draws, in order: the annotator ``(n,)``, then the label uniforms ``(n,)``.
        bias_a, bias_b: ``(n,)`` the taste ``φ`` of each action (None: no taste).

    Returns:
        The pairs, ``check_pairs``-valid, with ``chosen``/``rejected`` arranged by the label.
    """
    n = len(np.atleast_1d(reward_a))
    for name, a in (("context", context), ("action_a", action_a), ("action_b", action_b),
                    ("reward_a", reward_a), ("reward_b", reward_b), ("bias_a", bias_a),
                    ("bias_b", bias_b)):
        if a is not None and (np.ndim(a) == 0 or len(a) != n):
            raise DataError(f"annotate: {name} must have one row per comparison ({n}); got "
                            f"shape {np.shape(a)}")
    who = rng.integers(0, len(annotators), n)
    u = rng.random(n)
    phi = (np.zeros(n) if bias_a is None or bias_b is None
           else np.asarray(bias_a, np.float64) - np.asarray(bias_b, np.float64))
    true = np.asarray(reward_a, np.float64) - np.asarray(reward_b, np.float64)
    margin = true + annotators.bias[who] * phi
    tau, flip = annotators.tau[who], annotators.flip[who]
    p_clean = sigmoid(margin / tau)
    a_wins = u < flip + (1.0 - 2.0 * flip) * p_clean
    sign = np.where(a_wins, 1.0, -1.0)
    pick = a_wins if np.ndim(action_a) == 1 else a_wins[:, None]
    return check_pairs(PreferencePairs(
        context=np.asarray(context, dtype=np.float32),
        chosen=np.where(pick, action_a, action_b), rejected=np.where(pick, action_b, action_a),
        strength=np.abs(2.0 * p_clean - 1.0), annotator=who.astype(np.int64),
        true_margin=sign * true, utility_margin=sign * margin, flip=flip, tau=tau,
        num_actions=num_actions))


def label_ceiling(pairs: PreferencePairs) -> float:
    """``E[f_j + (1 − 2 f_j) · σ(|Δu_j| / τ_j)]`` over the pairs: the accuracy on their labels
    of a predictor that knows every annotator's utility (module docstring)."""
    f = pairs.flip
    return float(np.mean(f + (1.0 - 2.0 * f) * sigmoid(np.abs(pairs.utility_margin)
                                                         / pairs.tau)))


def pairs_summary(pairs: PreferencePairs) -> Mapping[str, float]:
    """Counts and rates a report shows about a pair set."""
    return {"pairs": len(pairs), "annotators": int(len(np.unique(pairs.annotator))),
            "agree_with_truth": float(np.mean(pairs.true_margin > 0)),
            "ceiling": label_ceiling(pairs)}
