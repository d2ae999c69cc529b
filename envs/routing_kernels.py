"""AgentRouting's compiled step (the ``numba`` backend, ``envs.backend``).

``RoutingCore.step`` (the NumPy reference) lane by lane: the signals the chosen agent's
satisfaction produces, conversions queued for later steps, the reward, churn and the next
observation. Everything random about a session is drawn when the user arrives
(``RoutingCore.generate_users``) and comes in as the session arrays, so both backends read
the same draws; ``tests/test_env_backends.py`` holds them to the same trajectories.

``cols``: the step row's ``a``, ``b``, ``leave_below`` and ``quality`` column starts, then
the observation's ``signals`` and ``last_action`` starts, then the conversion column and
the conversion signal's index.
"""

from __future__ import annotations

import numpy as np

from envs.backend import kernel

__all__ = ["step_lanes", "kernel_columns"]

A_COL, B_COL, LEAVE_COL, QUALITY_COL, OBS_SIGNALS, OBS_LAST_ACTION, CONVERSION, \
    SIGNAL_CONVERSION = range(8)


def kernel_columns(step_cols: dict[str, slice], obs_cols: dict[str, slice], conversion: int,
                   signal_conversion: int) -> np.ndarray:
    """``cols`` for ``step_lanes`` (see the module doc)."""
    return np.array([step_cols["a"].start, step_cols["b"].start,
                     step_cols["leave_below"].start, step_cols["quality"].start,
                     obs_cols["signals"].start, obs_cols["last_action"].start, conversion,
                     signal_conversion], dtype=np.int64)


@kernel
def step_lanes(action, t, step, arrival, exo, queue, weights, collapse, signal_weights_now,
               cols, values, reward, terminated, satisfaction, obs):
    """One interaction for every lane; writes ``reward``, ``terminated``,
    ``satisfaction``, the next observation ``obs`` and advances ``t`` and the conversion
    ``queue`` (``values`` ``(C,)`` is a work array)."""
    n_cols = values.shape[0]
    n_signals = collapse.shape[1]
    conv_col = cols[CONVERSION]
    for i in range(action.shape[0]):
        ti = t[i]
        row = step[i, ti]
        s = row[action[i]]
        for c in range(n_cols):
            v = row[cols[B_COL] + c] * s + row[cols[A_COL] + c]
            values[c] = min(max(v, 0.0), 1.0)
        q = row[cols[QUALITY_COL]]
        queue[i, arrival[i, ti]] += values[conv_col] * (weights[conv_col] * q)
        arrived = queue[i, ti]
        queue[i, ti] = 0.0
        o = obs[i]
        o[:] = exo[i, ti + 1]
        total = 0.0
        for k in range(n_signals):
            signal = 0.0
            for c in range(n_cols):
                signal += values[c] * collapse[c, k]
            total += signal * signal_weights_now[k]
            o[cols[OBS_SIGNALS] + k] = signal
        r = total * q + arrived
        o[cols[OBS_SIGNALS] + cols[SIGNAL_CONVERSION]] = 1.0 if arrived > 0 else 0.0
        ended = s < row[cols[LEAVE_COL]]
        if ended:                               # pay conversions still in flight
            pending = 0.0
            for j in range(queue.shape[1]):
                pending += queue[i, j]
            r += pending
        o[cols[OBS_LAST_ACTION] + action[i]] = 1.0
        reward[i], terminated[i], satisfaction[i] = r, ended, s
        t[i] = ti + 1
