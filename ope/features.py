"""Per-user behaviour features of one time window, from logged interactions.

The features (names, units, and their expectation under the simulator) are
``synth.features.BEHAVIOUR_FEATURES``: the share of each task type, the mean and standard
deviation of log response latency, and the share of interactions in which the user
explored. None depends on the action the platform took, so a window logged under any
policy gives the same features. ``synth.discovery`` clusters them.

``session_features`` reads the same features, per episode, from a logged AgentRouting
dataset (``ope.data.LoggedData``; one episode is one user's session), and adds the mean
of signals the env observes (``rewards.SIGNAL_NAMES``): engagement depth (``scroll_depth``,
``dwell``), ``conversion`` and ``share`` by default. Signals answer the agent the platform
chose, so they describe the user *under the logging policy* (the log's
``meta["behaviour"]`` and exploration): compare them only between logs of one policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from typing import Any, Mapping, Sequence

from envs.routing_core import LATENCY_NORM
from personarl.errors import DataError
from synth.archetypes import TASK_TYPES
from synth.features import BEHAVIOUR_FEATURES

__all__ = ["WindowFeatures", "behaviour_features", "window_features", "session_features",
           "user_table",
           "SESSION_SIGNALS"]

#: the signals ``session_features`` averages by default: engagement depth, conversion, sharing
SESSION_SIGNALS = ("scroll_depth", "dwell", "conversion", "share")


@dataclass(frozen=True)
class WindowFeatures:
    """One window's features.

    Attributes:
        users: ``(n,)`` the user ids, sorted (one row each).
        values: ``(n, F)`` float64 features in ``names`` order.
        interactions: ``(n,)`` interactions each user had in the window.
        names: the feature names (``BEHAVIOUR_FEATURES``).
    """

    users: np.ndarray
    values: np.ndarray
    interactions: np.ndarray
    names: tuple[str, ...] = BEHAVIOUR_FEATURES


def _column(name: str, values: np.ndarray, n: int) -> np.ndarray:
    a = np.asarray(values)
    if a.shape != (n,):
        raise DataError(f"column {name!r} has shape {a.shape}; expected ({n},), one value "
                        "per interaction like 'user'")
    return a


def behaviour_features(user: np.ndarray, task: np.ndarray, latency: np.ndarray,
                       explore: np.ndarray) -> WindowFeatures:
    """Each user's ``BEHAVIOUR_FEATURES`` over the window's interactions.

    Args:
        user: ``(N,)`` user id of each interaction (any integers or strings).
        task: ``(N,)`` task type index, ``0..len(TASK_TYPES) - 1``.
        latency: ``(N,)`` response latency in seconds, finite and > 0.
        explore: ``(N,)`` whether the user explored (bool or 0/1).

    Returns:
        ``WindowFeatures`` with one row per distinct user.

    Raises:
        DataError: an empty window, columns of different lengths, a task outside the task
            types, a latency that is not finite and positive, an exploring flag that is
            not 0/1 — each naming the first bad row.
    """
    user = np.asarray(user)
    if user.ndim != 1 or len(user) == 0:
        raise DataError(f"an empty window: 'user' has shape {user.shape}; a window needs "
                        "at least one interaction")
    n = len(user)
    task, latency, explore = (_column("task", task, n), _column("latency", latency, n),
                              _column("explore", explore, n))
    if not np.issubdtype(task.dtype, np.integer):
        raise DataError(f"column 'task' has dtype {task.dtype}; expected integers "
                        f"0..{len(TASK_TYPES) - 1} ({', '.join(TASK_TYPES)})")
    bad = np.flatnonzero((task < 0) | (task >= len(TASK_TYPES)))
    if bad.size:
        raise DataError(f"column 'task' row {bad[0]} is {int(task[bad[0]])}; valid: "
                        f"0..{len(TASK_TYPES) - 1} ({', '.join(TASK_TYPES)})")
    latency = latency.astype(np.float64)
    bad = np.flatnonzero(~(np.isfinite(latency) & (latency > 0)))
    if bad.size:
        raise DataError(f"column 'latency' row {bad[0]} is {float(latency[bad[0]])!r}; a latency "
                        "is a finite number of seconds > 0")
    bad = np.flatnonzero((explore != 0) & (explore != 1))
    if bad.size:
        raise DataError(f"column 'explore' row {bad[0]} is {explore[bad[0]].item()!r}; valid: "
                        "true/false or 0/1")
    users, row = np.unique(user, return_inverse=True)
    m = len(users)
    count = np.bincount(row, minlength=m)
    return WindowFeatures(users=users, values=np.column_stack([
        _shares(row, task, m), *_latency_and_rates(row, np.log(latency), explore, m)]),
        interactions=count)


def window_features(window: Any, quality: Any = None) -> tuple[WindowFeatures, np.ndarray]:
    """A simulated window's features (``behaviour_features`` of its log,
    ``synth.windows.Window.flat``) and ``(n,)`` the users the platform keeps: those the
    quality score (``rewards.quality.QualityModel``, default settings unless ``quality``)
    does not flag as bots after the window — rows in the window's user order."""
    from rewards.quality import QualityModel

    quality = quality or QualityModel()
    kept = ~quality.flagged_after(window.latency, window.metadata_missing)
    return behaviour_features(*window.flat()), kept


def _shares(row: np.ndarray, task: np.ndarray, m: int) -> np.ndarray:
    """``(m, T)`` each user's share of interactions of each task type."""
    T = len(TASK_TYPES)
    counts = np.bincount(row * T + task, minlength=m * T).reshape(m, T)
    return counts / counts.sum(axis=1, keepdims=True)


def _latency_and_rates(row: np.ndarray, log_latency: np.ndarray, explore: np.ndarray,
                       m: int, *more: np.ndarray) -> list[np.ndarray]:
    """Each user's mean and SD (ddof 0, two passes: no cancellation) of ``log_latency``,
    exploring rate, and the mean of each of ``more`` — ``(m,)`` each, ``nan`` for a user
    without rows."""
    n = np.bincount(row, minlength=m).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(row, log_latency, m) / n
        resid = log_latency - mean[row]
        sd = np.sqrt(np.bincount(row, resid * resid, m) / n)
        return [mean, sd, *(np.bincount(row, np.asarray(x, np.float64), m) / n
                            for x in (explore, *more))]


def session_features(data: Any, layout: Mapping[str, slice],
                     signals: Sequence[str] = SESSION_SIGNALS) -> WindowFeatures:
    """Each logged session's behaviour features and mean ``signals`` (module doc).

    Per episode of ``data`` (``ope.data.LoggedData`` of AgentRouting; ``layout`` its
    observation's columns, ``envs.record(env_id).observation_layout``): the task shares
    over its decisions; the latency, exploring flag and signals the observation reports of
    the interaction before each decision (so from the second decision on; a latency of
    120 s or more reads as 120 s); names ``BEHAVIOUR_FEATURES`` then ``signal_<name>``
    (mean value in [0, 1]). Sessions with a single decision have no reported interaction
    and are left out.

    Raises:
        DataError: the layout lacks a column the features need, or a signal is unknown.
    """
    from rewards.signals import SIGNAL_NAMES

    needed = ("task", "latency", "explore", "signals")
    missing = [c for c in needed if c not in layout]
    if missing:
        raise DataError(f"the observation layout has no {missing} columns; session features "
                        "need AgentRouting's observation")
    unknown = [x for x in signals if x not in SIGNAL_NAMES]
    if unknown:
        raise DataError(f"unknown signals {unknown}; valid: {list(SIGNAL_NAMES)}")
    obs = data.obs
    users, row = np.unique(data.episode, return_inverse=True)
    m = len(users)
    later = data.step >= 1                     # rows that report the interaction before
    level = obs[later, layout["latency"].start].astype(np.float64)
    log_latency = np.log(np.maximum(np.expm1(level * LATENCY_NORM), 1e-3))
    signal = obs[later, layout["signals"]]
    values = np.column_stack([
        _shares(row, obs[:, layout["task"]].argmax(axis=1), m),
        *_latency_and_rates(row[later], log_latency, obs[later, layout["explore"].start],
                            m, *(signal[:, SIGNAL_NAMES.index(x)] for x in signals))])
    keep = np.bincount(row[later], minlength=m) > 0
    return WindowFeatures(users=users[keep], values=values[keep],
                          interactions=np.bincount(row, minlength=m)[keep],
                          names=BEHAVIOUR_FEATURES + tuple(f"signal_{x}" for x in signals))


def user_table(data: Any) -> Any:
    """One row per user of a log (``ope.data.LoggedData`` with ``users`` columns): the
    user's ``user_id`` (when logged), quasi-identifiers (``age_band``, ``city``, ``group``),
    ``consent``, and what the log says of them — ``episodes``, ``decisions`` and
    ``return`` (the sum of their rewards). A user is a ``user_id``; a log without one (a
    simulated log with ``user_id=drop``) has one user per episode. Rows are in order of
    first appearance. A pandas ``DataFrame`` (pandas: the ``privacy`` extra).

    Raises:
        DataError: the log has no ``users`` columns (collected before they existed, or from
            an env without them), or a user whose quasi-identifiers or consent differ
            between rows (naming them).
    """
    import pandas as pd

    profile = ("age_band", "city", "group", "consent")
    users = data.users or {}
    missing = [c for c in profile if c not in users]
    if missing:
        raise DataError(f"the log has no {missing} columns: who made each decision is not "
                        "in it (collect it again with experiments.collect)")
    frame = pd.DataFrame({c: users[c] for c in profile})
    frame["user"] = users["user_id"] if "user_id" in users else data.episode
    frame["episode"], frame["reward"] = data.episode, data.reward
    grouped = frame.groupby("user", sort=False)
    for c in profile:
        varies = grouped[c].nunique() > 1
        if varies.any():
            raise DataError(f"user {varies.idxmax()!r} has more than one {c!r} in the log; "
                            "a user has one profile")
    out = grouped.agg(**{c: (c, "first") for c in profile},
                      episodes=("episode", "nunique"), decisions=("reward", "size"),
                      **{"return": ("reward", "sum")}).reset_index()
    return out.rename(columns={"user": "user_id"}) if "user_id" in users else \
        out.drop(columns="user")

