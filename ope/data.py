"""Logged decisions for offline evaluation, checked on the way in.

``LoggedData`` holds ``N`` logged decisions of ``E`` episodes, rows of one episode
contiguous and in step order:

==================  =================  ==================================================
``episode``         (N,) int64         episode index ``0..E-1`` (non-decreasing)
``step``            (N,) int64         decision index within the episode (0, 1, …)
``obs``             (N, D) float32     the observation the decision was made on
``action``          (N,) int64         the logged action, ``0..K-1``
``reward``          (N,) float64       its reward
``propensity``      (N,) float64       the behaviour policy's probability of ``action``
``action_probs``    (N, K) float64     the behaviour policy's full distribution (optional)
``done``            (N,) bool          the episode ended after this decision
``context``         {key: (N, ...)}    simulator truth at each decision (optional; only
                                       simulated logs have it — it lets privileged
                                       policies such as the planner be evaluated)
``users``           {key: (N,)}        who made the decision (optional, ``USER_COLUMNS``):
                                       ``user_id`` (a keyed hash, or absent), the
                                       quasi-identifiers ``age_band``, ``city``, ``group``
                                       (labels, ``synth.demographics``) and ``consent``
``meta``            dict               env id/version, seed, behaviour, exploration, …
==================  =================  ==================================================

Building one refuses what would make an estimate silently wrong, with a ``DataError``
naming the column and the first bad row: ragged rows, nulls, strings, booleans where numbers
are meant, non-integral actions or indices, a missing or non-positive propensity or one above
1, actions outside ``0..K-1``, non-finite rewards or observations, a full distribution that
does not sum to one or disagrees with the logged propensity, episodes out of order, ``done``
before an episode's last decision. Reading and writing them (Parquet files, the server's
decision logs) is ``ope.files``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from personarl.errors import DataError

__all__ = ["LoggedData", "DataError", "REQUIRED", "USER_COLUMNS"]

REQUIRED = ("episode", "step", "observation", "action", "reward", "propensity", "done")
#: the optional columns that say who made each decision (``LoggedData.users``)
USER_COLUMNS = ("user_id", "age_band", "city", "group", "consent")
_PROB_TOL = 1e-6


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and \
        not isinstance(v, (bool, np.bool_))


def _rows_of(name: str, rows: list[Any], ndim: int, flags: bool = False) -> np.ndarray:
    """A sequence checked row by row as given (``np.asarray`` would turn 1 into '1' among
    strings and True into 1 among numbers): the first row that is not a number (``ndim`` 1;
    true/false also allowed if ``flags``) or a list of numbers (``ndim`` 2) is named; then
    the lengths."""
    for i, v in enumerate(rows):
        if ndim == 1 and not (_is_number(v) or flags and isinstance(v, (bool, np.bool_))):
            raise DataError(f"column {name!r} row {i} is {v!r:.60}; every row needs "
                            + ("true/false" if flags else "a number"))
        if ndim == 2:
            if v is None or isinstance(v, (str, bytes)) or np.ndim(v) != 1:
                raise DataError(f"column {name!r} row {i} is {v!r:.60}; every row needs a "
                                "list of numbers")
            if not all(_is_number(x) for x in v):
                raise DataError(f"column {name!r} row {i} holds a value that is not a number "
                                f"({v!r:.60})")
    if ndim == 2:
        lengths = np.array([len(v) for v in rows])
        bad = np.flatnonzero(lengths != lengths[0])
        if bad.size:
            raise DataError(f"column {name!r} row {bad[0]} has {lengths[bad[0]]} values, "
                            f"row 0 has {lengths[0]}; every row needs the same number")
    a = np.array(rows)
    if a.dtype == object:                               # integers beyond 64 bits
        raise DataError(f"column {name!r} holds an integer too large for 64 bits")
    return a


def _array(name: str, values: Any, dtype: Any, ndim: int | None) -> np.ndarray:
    """``values`` as an array of ``dtype`` (``None``: its own numeric dtype) with ``ndim``
    dimensions (``None``: 1 or 2). Refused with a ``DataError`` naming the column and, where
    it can, the row: ragged rows, nulls, non-numbers; booleans where numbers are meant
    (``dtype`` ``bool`` and ``None`` accept them; a ``bool`` column also accepts numbers
    that are all 0 or 1); non-integral or out-of-range values of an ``int64`` column; values
    beyond float32 in a ``float32`` column."""
    if isinstance(values, (str, bytes, Mapping)) or not hasattr(values, "__len__") or \
            getattr(values, "ndim", 1) == 0:
        what = "a mapping" if isinstance(values, Mapping) else "a single value"
        raise DataError(f"column {name!r} is {what} ({values!r:.40}); it needs a sequence "
                        "with one value per logged decision")
    if len(values) == 0:
        return np.zeros((0,) * (ndim or 1), dtype=dtype or np.float64)
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
        a = values
    else:                                               # lists, object and string arrays
        rows = list(values)
        first = next((v for v in rows if v is not None), None)
        all_flags = all(isinstance(v, (bool, np.bool_)) for v in rows)
        a = np.array(rows) if all_flags else _rows_of(
            name, rows, ndim or (2 if np.ndim(first) == 1 else 1),
            flags=dtype is bool or dtype is None)
    if (ndim is not None and a.ndim != ndim) or a.ndim not in (1, 2):
        raise DataError(f"column {name!r} must be {ndim or '1- or 2'}-dimensional (one "
                        f"{'value' if ndim == 1 else 'row'} per decision); got shape {a.shape}")
    if a.dtype.kind not in "biuf":
        raise DataError(f"column {name!r} must hold numbers; got {a.dtype} values")
    if dtype is bool:
        if a.dtype.kind != "b" and not np.isin(a, (0, 1)).all():
            row = int(np.argmax(~np.isin(a, (0, 1))))
            raise DataError(f"column {name!r} row {row} is {a[row].item()!r}; it must be "
                            "true/false (or 0/1)")
        return a.astype(bool)
    if a.dtype.kind == "b" and dtype is not None:
        raise DataError(f"column {name!r} holds true/false values; it needs numbers")
    if dtype == np.int64 and a.dtype.kind == "u" and (a >= 2**63).any():
        row = int(np.argmax((a >= 2**63).reshape(len(a), -1).any(axis=1)))
        raise DataError(f"column {name!r} row {row} is {a[row].item()!r}; it must be an "
                        "integer below 2**63")
    big = (np.isfinite(a) & (np.abs(a) > np.finfo(np.float32).max)
           if dtype == np.float32 and a.dtype.kind == "f" else None)
    if big is not None and big.any():
        row = int(np.argmax(big.reshape(len(a), -1).any(axis=1)))
        raise DataError(f"column {name!r} row {row} holds a value beyond float32's range "
                        f"(±{np.finfo(np.float32).max:.3g})")
    if dtype == np.int64 and a.dtype.kind == "f":
        bad = ~np.isfinite(a) | (a != np.round(a)) | (np.abs(a) >= 2.0**63)
        if bad.any():
            row = int(np.argmax(bad.reshape(len(a), -1).any(axis=1)))
            raise DataError(f"column {name!r} row {row} is {a[row].item()!r}; it must be an "
                            "integer")
    return a if dtype is None else a.astype(dtype, copy=False)


@dataclass
class LoggedData:
    """Logged decisions (see the module docstring for the fields)."""

    episode: np.ndarray
    step: np.ndarray
    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    propensity: np.ndarray
    done: np.ndarray
    n_actions: int
    action_probs: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    context: dict[str, np.ndarray] | None = None
    row_labels: np.ndarray | None = None      # (N,) names for rows in messages (decision ids)
    users: dict[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        self.episode = _array("episode", self.episode, np.int64, 1)
        self.step = _array("step", self.step, np.int64, 1)
        self.obs = _array("observation", self.obs, np.float32, 2)
        self.action = _array("action", self.action, np.int64, 1)
        self.reward = _array("reward", self.reward, np.float64, 1)
        self.propensity = _array("propensity", self.propensity, np.float64, 1)
        self.done = _array("done", self.done, bool, 1)
        if self.action_probs is not None:
            self.action_probs = _array("action_probs", self.action_probs, np.float64, 2)
        if self.context is not None:
            if not isinstance(self.context, Mapping):
                raise DataError(f"context must map names to per-row arrays; got "
                                f"{type(self.context).__name__}")
            self.context = {k: _array(f"context.{k}", v, None, None)
                            for k, v in self.context.items()}
        self.check()

    # ------------------------------------------------------------------ shape
    @property
    def n(self) -> int:
        return len(self.action)

    @property
    def n_episodes(self) -> int:
        return int(self.episode[-1]) + 1 if self.n else 0

    @property
    def max_episode_length(self) -> int:
        """The longest logged episode's number of decisions (``H`` of the per-episode
        tables; at most the env's ``horizon``: users may leave earlier)."""
        return int(self.step.max()) + 1 if self.n else 0

    @property
    def starts(self) -> np.ndarray:
        """Row index of each episode's first decision."""
        return np.flatnonzero(np.r_[True, np.diff(self.episode) != 0])

    def episode_returns(self) -> np.ndarray:
        """``(n_episodes,)`` each episode's undiscounted logged return."""
        return np.bincount(self.episode, weights=self.reward, minlength=self.n_episodes)

    def episode_users(self, key: str) -> np.ndarray | None:
        """``(n_episodes,)`` a ``users`` column at each episode's first decision (who the
        episode's user was), or None when the log has no such column."""
        if not self.users or key not in self.users:
            return None
        return np.asarray(self.users[key], dtype=object)[self.starts]

    def check(self) -> None:
        """Raise ``DataError`` naming the first problem found."""
        n = len(self.action)
        for name in ("episode", "step", "reward", "propensity", "done"):
            if len(getattr(self, name)) != n:
                raise DataError(f"column {name!r} has {len(getattr(self, name))} rows, "
                                f"'action' has {n}")
        if self.obs.ndim != 2 or len(self.obs) != n:
            raise DataError(f"'observation' must be (rows, dim); got shape {self.obs.shape} "
                            f"for {n} rows")
        if n == 0:
            raise DataError("no logged decisions")
        for key, values in (self.context or {}).items():
            if len(values) != n:
                raise DataError(f"context column {key!r} has {len(values)} rows, 'action' "
                                f"has {n}")
        for key, values in (self.users or {}).items():
            if key not in USER_COLUMNS:
                raise DataError(f"users column {key!r} is not one of {list(USER_COLUMNS)}")
            if len(values) != n:
                raise DataError(f"users column {key!r} has {len(values)} rows, 'action' has "
                                f"{n}")
        if isinstance(self.n_actions, (bool, np.bool_)) or \
                not isinstance(self.n_actions, (int, np.integer)) or self.n_actions < 1:
            raise DataError(f"n_actions={self.n_actions!r} must be an integer >= 1")
        if self.obs.shape[1] == 0:
            raise DataError("'observation' has no columns; every decision needs the "
                            "observation it was made on")
        bad = (self.action < 0) | (self.action >= self.n_actions)
        if bad.any():
            raise DataError(f"{int(bad.sum())} actions outside 0..{self.n_actions - 1} "
                            f"(first at {self._at(int(np.argmax(bad)))}: "
                            f"{int(self.action[bad][0])})")
        p = self.propensity
        bad = ~((p > 0) & (p <= 1 + _PROB_TOL))
        if bad.any():
            rows = np.flatnonzero(bad)
            raise DataError(f"{len(rows)} propensities outside (0, 1] (first at "
                            f"{self._at(rows[0])}: {p[rows[0]]!r}); the behaviour probability of a "
                            "logged action must be positive — it was taken — and at most 1")
        if not np.isfinite(self.reward).all():
            raise DataError(f"{int((~np.isfinite(self.reward)).sum())} non-finite rewards "
                            f"(first at {self._at(int(np.argmax(~np.isfinite(self.reward))))})")
        if not np.isfinite(self.obs).all():
            raise DataError("non-finite observations (first at "
                            f"{self._at(int(np.argmax(~np.isfinite(self.obs).all(axis=1))))})")
        step_up = np.diff(self.episode)
        if self.episode[0] != 0 or ((step_up != 0) & (step_up != 1)).any():
            row = int(np.argmax((step_up != 0) & (step_up != 1))) + 1 \
                if self.episode[0] == 0 else 0
            raise DataError(f"episodes must be numbered 0..E-1 with each episode's rows "
                            f"contiguous (sort by episode, then step); row {row} has episode "
                            f"{int(self.episode[row])}")
        first = np.r_[True, step_up != 0]
        expected = np.arange(n) - np.maximum.accumulate(np.where(first, np.arange(n), 0))
        if not np.array_equal(self.step, expected):
            row = int(np.argmax(self.step != expected))
            raise DataError(f"steps must count 0, 1, … within each episode; row {row} "
                            f"(episode {int(self.episode[row])}) has step "
                            f"{int(self.step[row])}, expected {int(expected[row])}")
        last = np.r_[step_up != 0, True]
        if (self.done & ~last).any():
            row = int(np.argmax(self.done & ~last))
            raise DataError(f"'done' is true at row {row} but episode "
                            f"{int(self.episode[row])} continues at row {row + 1}; an episode "
                            "ends at its last decision")
        if self.action_probs is not None:
            q = self.action_probs
            if q.shape != (n, self.n_actions):
                raise DataError(f"'action_probs' must be ({n}, {self.n_actions}); got "
                                f"{q.shape}")
            if (q < 0).any() or not np.allclose(q.sum(axis=1), 1.0, atol=1e-4):
                row = int(np.argmax((q < 0).any(axis=1) | ~np.isclose(q.sum(axis=1), 1.0,
                                                                       atol=1e-4)))
                raise DataError(f"'action_probs' at {self._at(row)} is not a distribution "
                                f"(sum {q[row].sum():.6f}, min {q[row].min():.3g})")
            logged = q[np.arange(n), self.action]
            off = ~np.isclose(logged, p, rtol=1e-4, atol=1e-6)
            if off.any():
                row = int(np.argmax(off))
                raise DataError(f"'propensity' disagrees with 'action_probs' at {self._at(row)}: "
                                f"{p[row]!r} vs {logged[row]!r} for action "
                                f"{int(self.action[row])}")

    def _at(self, row: int) -> str:
        """``row N`` in messages, with the row's label where there is one."""
        label = "" if self.row_labels is None else f" ({self.row_labels[row]!r})"
        return f"row {row}{label}"

    # ------------------------------------------------------------------ episodes
    def padded(self, values: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """``(E, H, ...)`` table of a per-row array (``H = max_episode_length``); steps
        after an episode's end hold ``fill``."""
        out = np.full((self.n_episodes, self.max_episode_length, *values.shape[1:]), fill,
                      dtype=np.result_type(values, type(fill)))
        out[self.episode, self.step] = values
        return out

    def next_rows(self) -> np.ndarray:
        """Row of the next decision in the same episode, or -1 after the episode's last."""
        nxt = np.arange(1, self.n + 1)
        last = np.r_[self.episode[1:] != self.episode[:-1], True]
        nxt[last] = -1
        return nxt
