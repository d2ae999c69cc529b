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
``meta``            dict               env id/version, seed, behaviour, exploration, …
==================  =================  ==================================================

``check`` refuses what would make an estimate silently wrong: a missing propensity,
propensities outside (0, 1], actions outside ``0..K-1``, non-finite rewards, a full
distribution that does not sum to one or disagrees with the logged propensity, episodes
out of order. The readers refuse what a file can hold that an array cannot: a null in any
column, list columns whose rows have different lengths (``observation`` with 3, 1, 2 and 2
values must not be regrouped as 2 + 2 + 2 + 2), non-numeric lists. Every refusal is a
``DataError`` naming the column and the first bad row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from personarl import jsonio
from synth.errors import DataError

__all__ = ["LoggedData", "DataError", "read_logged", "write_logged", "from_decision_logs",
           "column_vector", "column_matrix", "REQUIRED"]

REQUIRED = ("episode", "step", "observation", "action", "reward", "propensity", "done")
_PROB_TOL = 1e-6


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and \
        not isinstance(v, (bool, np.bool_))


def _rows_of(name: str, values: Any, ndim: int) -> np.ndarray:
    """A ragged or mixed input, checked row by row: the first row that is not a number
    (``ndim`` 1) or a list of numbers (``ndim`` 2) is named; then the lengths."""
    rows = list(values)
    for i, v in enumerate(rows):
        if ndim == 1 and not _is_number(v):
            raise DataError(f"column {name!r} row {i} is {v!r:.60}; every row needs a number")
        if ndim == 2:
            if v is None or isinstance(v, (str, bytes)) or np.ndim(v) != 1:
                raise DataError(f"column {name!r} row {i} is {v!r:.60}; every row needs a "
                                "list of numbers")
            if not all(_is_number(x) for x in v):
                raise DataError(f"column {name!r} row {i} holds a value that is not a number "
                                f"({v!r:.60})")
    if ndim == 1:
        return np.array(rows, dtype=np.float64)
    lengths = np.array([len(v) for v in rows])
    bad = np.flatnonzero(lengths != lengths[0])
    if bad.size:
        raise DataError(f"column {name!r} row {bad[0]} has {lengths[bad[0]]} values, row 0 "
                        f"has {lengths[0]}; every row needs the same number")
    return np.array([[float(x) for x in v] for v in rows], dtype=np.float64)


def _array(name: str, values: Any, dtype: Any, ndim: int | None) -> np.ndarray:
    """``values`` as an array of ``dtype`` (``None``: its own numeric dtype) with ``ndim``
    dimensions (``None``: 1 or 2). Refused with a ``DataError`` naming the column and, where
    it can, the row: ragged rows, nulls, non-numbers; booleans where numbers are meant
    (``dtype`` ``bool`` and ``None`` accept them; a ``bool`` column also accepts numbers
    that are all 0 or 1); non-integral or out-of-range values of an ``int64`` column."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or \
            getattr(values, "ndim", 1) == 0:
        raise DataError(f"column {name!r} is a single value ({values!r:.40}); it needs one "
                        "per logged decision")
    if len(values) == 0:
        return np.zeros((0,) * (ndim or 1), dtype=dtype or np.float64)
    try:
        a = np.asarray(values)
    except ValueError:                              # ragged nested sequences
        a = None
    if a is None or a.dtype.kind in "OUSV":         # None, strings, mixed: check the rows
        rows = list(values)                         # as given (asarray turns 1 into '1')
        first = next((v for v in rows if v is not None), None)
        a = _rows_of(name, rows, ndim or (2 if np.ndim(first) == 1 else 1))
    if ndim is not None and a.ndim != ndim or a.ndim not in (1, 2):
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
    def horizon(self) -> int:
        """The longest episode's number of decisions."""
        return int(self.step.max()) + 1 if self.n else 0

    @property
    def starts(self) -> np.ndarray:
        """Row index of each episode's first decision."""
        return np.flatnonzero(np.r_[True, np.diff(self.episode) != 0])

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
        if isinstance(self.n_actions, (bool, np.bool_)) or \
                not isinstance(self.n_actions, (int, np.integer)) or self.n_actions < 1:
            raise DataError(f"n_actions={self.n_actions!r} must be an integer >= 1")
        if self.obs.shape[1] == 0:
            raise DataError("'observation' has no columns; every decision needs the "
                            "observation it was made on")
        bad = (self.action < 0) | (self.action >= self.n_actions)
        if bad.any():
            raise DataError(f"{int(bad.sum())} actions outside 0..{self.n_actions - 1} "
                            f"(first at row {int(np.argmax(bad))}: {int(self.action[bad][0])})")
        p = self.propensity
        bad = ~((p > 0) & (p <= 1 + _PROB_TOL))
        if bad.any():
            rows = np.flatnonzero(bad)
            raise DataError(f"{len(rows)} propensities outside (0, 1] (first at row "
                            f"{rows[0]}: {p[rows[0]]!r}); the behaviour probability of a "
                            "logged action must be positive — it was taken — and at most 1")
        if not np.isfinite(self.reward).all():
            raise DataError(f"{int((~np.isfinite(self.reward)).sum())} non-finite rewards "
                            f"(first at row {int(np.argmax(~np.isfinite(self.reward)))})")
        if not np.isfinite(self.obs).all():
            raise DataError("non-finite observations (first at row "
                            f"{int(np.argmax(~np.isfinite(self.obs).all(axis=1)))})")
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
                raise DataError(f"'action_probs' row {row} is not a distribution "
                                f"(sum {q[row].sum():.6f}, min {q[row].min():.3g})")
            logged = q[np.arange(n), self.action]
            off = ~np.isclose(logged, p, rtol=1e-4, atol=1e-6)
            if off.any():
                row = int(np.argmax(off))
                raise DataError(f"'propensity' disagrees with 'action_probs' at row {row}: "
                                f"{p[row]!r} vs {logged[row]!r} for action "
                                f"{int(self.action[row])}")

    # ------------------------------------------------------------------ episodes
    def padded(self, values: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """``(E, horizon, ...)`` table of a per-row array; steps after an episode's end hold
        ``fill``."""
        out = np.full((self.n_episodes, self.horizon, *values.shape[1:]), fill,
                      dtype=np.result_type(values, type(fill)))
        out[self.episode, self.step] = values
        return out

    def next_rows(self) -> np.ndarray:
        """Row of the next decision in the same episode, or -1 after the episode's last."""
        nxt = np.arange(1, self.n + 1)
        last = np.r_[self.episode[1:] != self.episode[:-1], True]
        nxt[last] = -1
        return nxt


# ---------------------------------------------------------------------- Parquet
def write_logged(data: LoggedData, path: str | Path) -> Path:
    """One Parquet file with page checksums (verified by ``read_logged``); ``meta`` (with
    ``n_actions``) in the schema's metadata. Written to a temporary sibling and renamed, so
    ``path`` is the old file or the new one, and nothing is left behind on failure.

    Raises:
        OSError: ``path`` cannot be written (e.g. it is a directory).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {"episode": data.episode, "step": data.step,
               "observation": pa.FixedSizeListArray.from_arrays(
                   pa.array(data.obs.reshape(-1)), data.obs.shape[1]),
               "action": data.action, "reward": data.reward, "propensity": data.propensity,
               "done": data.done}
    if data.action_probs is not None:
        columns["action_probs"] = pa.FixedSizeListArray.from_arrays(
            pa.array(data.action_probs.reshape(-1)), data.n_actions)
    for key, values in (data.context or {}).items():
        columns[f"context.{key}"] = values if values.ndim == 1 else \
            pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
    table = pa.table(columns)
    meta = {**data.meta, "n_actions": data.n_actions}
    table = table.replace_schema_metadata({b"personarl": jsonio.dumps(meta).encode()})
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(table, tmp, write_page_checksum=True)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_logged(path: str | Path) -> LoggedData:
    """A Parquet file written by ``write_logged`` (or by ``experiments.collect``).

    Raises:
        DataError: a missing column (naming it and the required ones), a null, a list
            column with rows of different lengths or non-numeric values (naming the column
            and the first bad row), or invalid values (``LoggedData.check``).
    """
    try:
        table = pq.read_table(path, page_checksum_verification=True)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path} is not a readable Parquet file: {exc}") from None
    names = set(table.column_names)
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise DataError(f"{path} lacks the column(s) {missing}; logged data needs "
                        f"{list(REQUIRED)} (+ optional 'action_probs')")
    raw = (table.schema.metadata or {}).get(b"personarl")
    try:
        meta = json.loads(raw) if raw else {}
    except (UnicodeDecodeError, ValueError):
        raise DataError(f"{path}: its 'personarl' metadata is not JSON") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: its 'personarl' metadata must be a JSON object; got "
                        f"{type(meta).__name__}")
    action = column_vector(table, "action", numbers_only=True)
    probs = column_matrix(table, "action_probs") if "action_probs" in names else None
    n_actions = meta.pop("n_actions", probs.shape[1] if probs is not None
                         else int(action.max()) + 1 if len(action) else 1)
    if isinstance(n_actions, bool) or not isinstance(n_actions, int) or n_actions < 1:
        raise DataError(f"{path}: metadata n_actions={n_actions!r} must be an integer >= 1")
    context = {c.split(".", 1)[1]: column_matrix(table, c, numbers_only=False)
               if _is_list(table, c) else column_vector(table, c)
               for c in table.column_names if c.startswith("context.")}
    return LoggedData(
        episode=column_vector(table, "episode", numbers_only=True),
        step=column_vector(table, "step", numbers_only=True),
        obs=column_matrix(table, "observation"), action=action,
        reward=column_vector(table, "reward", numbers_only=True),
        propensity=column_vector(table, "propensity", numbers_only=True),
        done=column_vector(table, "done"), n_actions=n_actions, action_probs=probs,
        meta=meta, context=context or None)


def _is_list(table: pa.Table, name: str) -> bool:
    kind = table.schema.field(name).type
    return pa.types.is_list(kind) or pa.types.is_large_list(kind) or \
        pa.types.is_fixed_size_list(kind)


def _numeric(kind: pa.DataType, numbers_only: bool) -> bool:
    """Integers or floats; booleans too unless ``numbers_only``."""
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or \
        (pa.types.is_boolean(kind) and not numbers_only)


def _first_null(column: pa.Array) -> int:
    return int(np.argmax(column.is_null().to_numpy(zero_copy_only=False)))


def _label(name: str, where: str | None) -> str:
    return f"{where}: column {name!r}" if where else f"column {name!r}"


def column_vector(table: pa.Table, name: str, where: str | None = None,
                  numbers_only: bool = False) -> np.ndarray:
    """One value per row from column ``name`` of ``table`` (``where`` names the table in
    messages): numbers, or also booleans unless ``numbers_only``.

    Raises:
        DataError: the column holds lists, non-numbers (or booleans where numbers are
            needed) or a null (naming the first null row).
    """
    column, label = table.column(name).combine_chunks(), _label(name, where)
    if _is_list(table, name):
        raise DataError(f"{label} holds lists; it needs one value per row")
    if not _numeric(column.type, numbers_only):
        raise DataError(f"{label} must hold numbers; it holds {column.type}")
    if column.null_count:
        raise DataError(f"{label} is null at row {_first_null(column)} ({column.null_count} "
                        "null row(s)); every row needs a value")
    return column.to_numpy(zero_copy_only=False)


def column_matrix(table: pa.Table, name: str, where: str | None = None,
                  width: int | None = None, numbers_only: bool = True) -> np.ndarray:
    """A list column of ``table`` as an ``(N, width)`` array (``width``: row 0's length if
    not given; ``where`` names the table in messages); lists of numbers, or also of
    booleans unless ``numbers_only``.

    Raises:
        DataError: the column is not a list of numbers, a row is null, holds a null value, or
            has a different number of values (naming the first such row).
    """
    column, label = table.column(name).combine_chunks(), _label(name, where)
    if not _is_list(table, name) or not _numeric(column.type.value_type, numbers_only):
        raise DataError(f"{label} must hold a list of numbers per row; it holds "
                        f"{column.type}")
    if column.null_count:
        raise DataError(f"{label} is null at row {_first_null(column)} ({column.null_count} "
                        "null row(s)); every row needs a list")
    n = len(column)
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    expected = width if width is not None else (int(lengths[0]) if n else 0)
    bad = np.flatnonzero(lengths != expected)
    if bad.size:
        raise DataError(f"{label} row {bad[0]} has {lengths[bad[0]]} values, expected "
                        f"{expected} ({'as row 0' if width is None else 'its width'}); "
                        f"{bad.size} row(s) differ")
    values = column.flatten()
    if values.null_count:
        row = int(pc.list_parent_indices(column).to_numpy()[_first_null(values)])
        raise DataError(f"{label} row {row} holds a null value")
    return values.to_numpy(zero_copy_only=False).reshape(n, expected)


def from_decision_logs(root: str | Path, meta: Mapping[str, Any] | None = None
                       ) -> LoggedData:
    """The server's decision logs (``agents.decision_log``) as one-step ``LoggedData``:
    every served decision with feedback becomes a one-decision episode (its reward the sum
    of its feedback rewards); decisions without feedback are left out and counted in
    ``meta['without_feedback']`` (feedback for decisions not in the log, in
    ``meta['feedback_without_decision']``). Needs a discrete policy (``action_probs``
    logged).

    Raises:
        DataError: no decisions or no feedback, a continuous-action log, a decision logged
            twice, or a null / ragged / non-finite value in a column used here (naming the
            log, the column and the first bad row).
    """
    from agents.decision_log import read_log

    decisions, feedback = read_log(root, "decisions"), read_log(root, "feedback")
    if decisions.num_rows == 0:
        raise DataError(f"no decisions logged under {root}")
    if decisions.column("action").null_count == decisions.num_rows:
        raise DataError("the decision log holds continuous actions; the estimators here are "
                        "for discrete actions")
    d, f = f"{root} decisions", f"{root} feedback"
    ids = _strings(decisions, "decision_id", d)
    fb_ids = _strings(feedback, "decision_id", f)
    if len(fb_ids) == 0:
        raise DataError(f"none of the {len(ids)} decisions under {root} has feedback")
    unique, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = unique[np.argmax(counts > 1)]
        raise DataError(f"{d}: decision_id {dup!r} is logged {int(counts.max())} times (first "
                        f"at row {int(first[np.argmax(counts > 1)])}); each decision is "
                        "logged once")
    rewards = column_vector(feedback, "reward", f, numbers_only=True)
    _finite(rewards, "reward", f, fb_ids)
    known, which = np.unique(fb_ids, return_inverse=True)
    reward_sums = np.bincount(which, weights=rewards)
    pos = np.minimum(np.searchsorted(known, ids), len(known) - 1)
    has = known[pos] == ids
    if not has.any():
        raise DataError(f"none of the {len(ids)} decisions under {root} has feedback")
    rows = np.flatnonzero(has)
    n = len(rows)
    obs = column_matrix(decisions, "observation", d)
    _finite(obs, "observation", d, ids)
    probs = column_matrix(decisions, "action_probs", d)[rows]
    env_ids = decisions.column("env_id").take(rows).unique().to_pylist()
    versions = decisions.column("version").take(rows).unique().to_pylist()
    info = dict(meta or {}, source=str(root), env_id=env_ids[0] if len(env_ids) == 1
                else env_ids, without_feedback=int(len(ids) - n),
                feedback_without_decision=int((~np.isin(fb_ids, ids)).sum()),
                versions=sorted(str(v) for v in versions))
    return LoggedData(episode=np.arange(n), step=np.zeros(n, dtype=np.int64), obs=obs[rows],
                      action=column_vector(decisions, "action", d, numbers_only=True)[rows],
                      reward=reward_sums[pos[rows]],
                      propensity=column_vector(decisions, "propensity", d,
                                               numbers_only=True)[rows],
                      done=np.ones(n, dtype=bool), n_actions=probs.shape[1],
                      action_probs=probs, meta=info)


def _finite(values: np.ndarray, name: str, where: str, ids: np.ndarray) -> None:
    bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(f"{where}: column {name!r} is not finite at row {row} (decision_id "
                        f"{ids[row]!r})")


def _strings(table: pa.Table, name: str, where: str) -> np.ndarray:
    column = table.column(name).combine_chunks()
    if column.null_count:
        raise DataError(f"{_label(name, where)} is null at row {_first_null(column)}")
    return column.to_numpy(zero_copy_only=False)
