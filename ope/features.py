"""Per-user behaviour features of one time window, from logged interactions.

The features (names, units, and their expectation under the simulator) are
``synth.features.BEHAVIOUR_FEATURES``: the share of each task type, the mean and standard
deviation of log response latency, and the share of interactions in which the user
explored. None depends on the action the platform took, so a window logged under any
policy gives the same features. ``synth.discovery`` clusters them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from personarl.errors import DataError
from synth.archetypes import TASK_TYPES
from synth.features import BEHAVIOUR_FEATURES

__all__ = ["WindowFeatures", "behaviour_features"]


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
    count = np.bincount(row, minlength=m).astype(np.float64)
    shares = np.bincount(row * len(TASK_TYPES) + task, minlength=m * len(TASK_TYPES))
    shares = shares.reshape(m, len(TASK_TYPES)) / count[:, None]
    log_latency = np.log(latency)
    mean = np.bincount(row, log_latency, m) / count
    resid = log_latency - mean[row]                     # two passes: no cancellation
    sd = np.sqrt(np.bincount(row, resid * resid, m) / count)
    rate = np.bincount(row, explore.astype(np.float64), m) / count
    return WindowFeatures(users=users, values=np.column_stack([shares, mean, sd, rate]),
                          interactions=count.astype(np.int64))
