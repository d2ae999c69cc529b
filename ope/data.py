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
out of order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["LoggedData", "DataError", "read_logged", "write_logged", "from_decision_logs",
           "REQUIRED"]

REQUIRED = ("episode", "step", "observation", "action", "reward", "propensity", "done")
_PROB_TOL = 1e-6


class DataError(ValueError):
    """Logged data an estimator must not use, with the reason and where."""


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
        self.episode = np.asarray(self.episode, dtype=np.int64)
        self.step = np.asarray(self.step, dtype=np.int64)
        self.obs = np.asarray(self.obs, dtype=np.float32)
        self.action = np.asarray(self.action, dtype=np.int64)
        self.reward = np.asarray(self.reward, dtype=np.float64)
        self.propensity = np.asarray(self.propensity, dtype=np.float64)
        self.done = np.asarray(self.done, dtype=bool)
        if self.action_probs is not None:
            self.action_probs = np.asarray(self.action_probs, dtype=np.float64)
        if self.context is not None:
            self.context = {k: np.asarray(v) for k, v in self.context.items()}
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
        if self.n_actions < 1:
            raise DataError(f"n_actions={self.n_actions} must be >= 1")
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
    """One Parquet file; ``meta`` (with ``n_actions``) in the schema's metadata."""
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
    table = table.replace_schema_metadata({b"personarl": json.dumps(meta).encode()})
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path


def read_logged(path: str | Path) -> LoggedData:
    """A Parquet file written by ``write_logged`` (or by ``experiments.collect``).

    Raises:
        DataError: a missing column (naming it and the required ones) or invalid values.
    """
    table = pq.read_table(path)
    names = set(table.column_names)
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise DataError(f"{path} lacks the column(s) {missing}; logged data needs "
                        f"{list(REQUIRED)} (+ optional 'action_probs')")
    raw = (table.schema.metadata or {}).get(b"personarl")
    meta = json.loads(raw) if raw else {}
    obs = _matrix(table.column("observation"))
    probs = _matrix(table.column("action_probs")) if "action_probs" in names else None
    n_actions = int(meta.pop("n_actions", probs.shape[1] if probs is not None
                             else int(table.column("action").to_numpy().max()) + 1))
    context = {c.split(".", 1)[1]: _matrix(table.column(c)) if pa.types.is_list(
                   table.schema.field(c).type) or pa.types.is_fixed_size_list(
                   table.schema.field(c).type) else table.column(c).to_numpy()
               for c in table.column_names if c.startswith("context.")}
    return LoggedData(
        episode=table.column("episode").to_numpy(), step=table.column("step").to_numpy(),
        obs=obs, action=table.column("action").to_numpy(),
        reward=table.column("reward").to_numpy(),
        propensity=table.column("propensity").to_numpy(),
        done=table.column("done").to_numpy(), n_actions=n_actions, action_probs=probs,
        meta=meta, context=context or None)


def _matrix(column: pa.ChunkedArray) -> np.ndarray:
    """A list column as a 2-D array (every row the same length)."""
    flat = column.combine_chunks()
    values = flat.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(len(flat), -1)


def from_decision_logs(root: str | Path, meta: Mapping[str, Any] | None = None
                       ) -> LoggedData:
    """The server's decision logs (``agents.decision_log``) as one-step ``LoggedData``:
    every served decision with feedback becomes a one-decision episode (its reward the sum
    of its feedback rewards); decisions without feedback are left out and counted in
    ``meta['without_feedback']``. Needs a discrete policy (``action_probs`` logged)."""
    from agents.decision_log import read_log

    decisions, feedback = read_log(root, "decisions"), read_log(root, "feedback")
    if decisions.num_rows == 0:
        raise DataError(f"no decisions logged under {root}")
    actions = decisions.column("action")
    if actions.null_count:
        raise DataError("the decision log holds continuous actions; the estimators here are "
                        "for discrete actions")
    ids = decisions.column("decision_id").to_numpy(zero_copy_only=False)
    fb_ids = feedback.column("decision_id").to_numpy(zero_copy_only=False)
    if len(fb_ids) == 0:
        raise DataError(f"none of the {len(ids)} decisions under {root} has feedback")
    known, which = np.unique(fb_ids, return_inverse=True)
    reward_sums = np.bincount(which, weights=feedback.column("reward").to_numpy())
    pos = np.minimum(np.searchsorted(known, ids), len(known) - 1)
    has = known[pos] == ids
    if not has.any():
        raise DataError(f"none of the {len(ids)} decisions under {root} has feedback")
    rows = np.flatnonzero(has)
    n = len(rows)
    probs = _matrix(decisions.column("action_probs").take(rows))
    env_ids = decisions.column("env_id").take(rows).unique().to_pylist()
    versions = decisions.column("version").take(rows).unique().to_pylist()
    info = dict(meta or {}, source=str(root), env_id=env_ids[0] if len(env_ids) == 1
                else env_ids, without_feedback=int(len(ids) - n), versions=sorted(versions))
    return LoggedData(episode=np.arange(n), step=np.zeros(n, dtype=np.int64),
                      obs=_matrix(decisions.column("observation").take(rows)),
                      action=actions.take(rows).to_numpy(),
                      reward=reward_sums[pos[rows]],
                      propensity=decisions.column("propensity").take(rows).to_numpy(),
                      done=np.ones(n, dtype=bool), n_actions=probs.shape[1],
                      action_probs=probs, meta=info)
