"""Group parity: a metric per demographic group, its parity and an alert every report shares.

For one metric measured per user and the users' ``group``:

* per group: users, mean and its Student-t interval (``personarl.stats.mean_ci``); a group
  with fewer than ``min_size`` users is marked *insufficient* and left out of the parity;
* **parity ratio** ``min_g mean_g / max_g mean_g`` over the sufficient groups (the
  write-ups' bias-parity guardrail: alert under 0.9, target above 0.95; the "four-fifths"
  form of disparate-impact ratios, Feldman et al. 2015) — when every group's mean is > 0;
  where a group's mean is <= 0 a ratio means nothing, and the **difference**
  ``max_g mean_g − min_g mean_g`` is reported instead (fairlearn's ``difference`` of a
  ``MetricFrame``);
* its percentile-bootstrap interval, resampling users within each group (the groups' sizes
  kept; ``personarl.stats`` conventions);
* the **alert**: the ratio's interval lies entirely below ``alert_below`` (its upper bound
  < 0.9) — a disparity the data show, not one noise could make.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from personarl.errors import DataError, check_int, check_range
from personarl.stats import mean_ci

__all__ = ["GroupParity", "group_parity", "ALERT_BELOW", "TARGET"]

#: the write-ups' guardrail: a parity ratio under this alerts
ALERT_BELOW = 0.9
#: and the target a fair policy should reach
TARGET = 0.95


@dataclass(frozen=True)
class GroupParity:
    """Per-group means and the parity across groups of one metric.

    Attributes:
        groups: group -> ``{"users", "mean", "low", "high"}`` for groups with at least
            ``min_size`` users.
        insufficient: group -> users, for the groups left out.
        measure: ``"ratio"`` (min / max of the means) or ``"difference"`` (max − min).
        value, low, high: the measure and its bootstrap interval (NaN with fewer than two
            sufficient groups).
        alert: ``measure == "ratio"`` and ``high < alert_below``.
    """

    groups: dict[str, dict[str, float]]
    insufficient: dict[str, int]
    measure: str
    value: float
    low: float
    high: float
    alert: bool
    alert_below: float = ALERT_BELOW
    target: float = TARGET

    def as_dict(self) -> dict[str, Any]:
        """What a report's JSON keeps (``experiments.rendering.fairness_blocks`` reads it)."""
        return {"groups": self.groups, "insufficient": self.insufficient,
                "measure": self.measure, "value": self.value, "low": self.low,
                "high": self.high, "alert": self.alert}


def group_parity(values: np.ndarray, groups: np.ndarray, rng: np.random.Generator, *,
                 min_size: int = 100, level: float = 0.95, reps: int = 1000,
                 alert_below: float = ALERT_BELOW) -> GroupParity:
    """Per-group means and their parity (module docstring).

    Args:
        values: ``(n,)`` the metric per user.
        groups: ``(n,)`` each user's group (any hashable labels).
        rng: the bootstrap's generator.
        min_size: users a group needs to be scored.

    Raises:
        DataError: values and groups of other shapes or lengths, non-finite values.
        ConfigError: ``min_size`` < 2, ``level`` outside (0, 1), ``reps`` < 1.
    """
    y = np.asarray(values, dtype=np.float64)
    g = np.asarray(groups)
    if y.ndim != 1 or g.shape != y.shape:
        raise DataError(f"parity needs one value and one group per user; got {y.shape} "
                        f"and {g.shape}")
    if not np.all(np.isfinite(y)):
        raise DataError("parity: the metric's values must be finite")
    check_int("min_size", min_size, 2)
    check_range("level", level, 0, 1, low_open=True, high_open=True)
    check_int("reps", reps, 1)
    labels, codes = np.unique(g, return_inverse=True)
    scored, insufficient, members = {}, {}, []
    for j, label in enumerate(labels):
        rows = np.flatnonzero(codes == j)
        if len(rows) < min_size:
            insufficient[str(label)] = int(len(rows))
            continue
        m, lo, hi = mean_ci(y[rows], level)
        scored[str(label)] = {"users": int(len(rows)), "mean": m, "low": lo, "high": hi}
        members.append(rows)
    ratio = all(y[r].mean() > 0 for r in members)
    measure = "ratio" if ratio else "difference"
    if len(members) < 2:
        nan = float("nan")
        return GroupParity(scored, insufficient, measure, nan, nan, nan, False, alert_below)

    def parity(means: np.ndarray) -> np.ndarray:
        if not ratio:
            return means.max(axis=-1) - means.min(axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):   # a resample's mean of 0
            return means.min(axis=-1) / means.max(axis=-1)

    point = float(parity(np.array([y[r].mean() for r in members])))
    boot = np.stack([_resampled_means(y[r], reps, rng) for r in members], axis=1)
    low, high = np.quantile(parity(boot), [0.5 - level / 2, 0.5 + level / 2])
    return GroupParity(scored, insufficient, measure, point, float(low), float(high),
                       bool(ratio and high < alert_below), alert_below)


def _resampled_means(x: np.ndarray, reps: int, rng: np.random.Generator) -> np.ndarray:
    """``(reps,)`` means of resamples of ``x`` with replacement, drawn a block of resamples
    at a time (at most ≈ 2²² draws in memory)."""
    block = max(1, (1 << 22) // len(x))
    return np.concatenate([x[rng.integers(0, len(x), size=(min(block, reps - i), len(x)))]
                           .mean(axis=1) for i in range(0, reps, block)])
