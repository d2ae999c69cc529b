"""Differentially private releases of a user table, spending from its privacy ledger.

    >>> ledger = PrivacyLedger.open("users.parquet", epsilon=1.0, delta=1e-5)
    >>> release_count(users, epsilon=0.5, ledger=ledger, label="users")
    Release(value=1012, epsilon=0.5, scale=2.0, entry=1)

**The privacy unit is a user.** A table has one row per user (``user_id``, if present, must
not repeat) and a boolean ``consent`` column: users without consent are dropped before
anything is measured — they never enter a release. Neighbouring tables differ by one user
added or removed (OpenDP's symmetric distance 1), so a count or a histogram changes by at
most 1 in one cell and a sum clamped to ``[L, U]`` by at most ``max(|L|, |U|)``.

**Mechanisms are OpenDP's** (Laplace on the integer counts — the discrete Laplace of
Canonne, Kamath & Steinke 2020 — and on the float sum, with the sum's sensitivity widened for
floating-point rounding; OpenDP Library, "Measurements"), so the privacy relation holds for
the floats a computer actually adds. The noise scale is OpenDP's ``binary_search_param``: the
smallest scale whose privacy map gives at most the ε asked for, so rounding never takes a
release over an exact budget. The ledger records a release of ε (what the map reports) as
``DiscreteLaplaceDpEvent(ε, sensitivity 1)``: its privacy loss is ±ε, that of randomised
response — the worst case of every ε-DP mechanism (Kairouz, Oh & Viswanath 2015) — so the
account is exact for the counts and histograms and an upper bound for the float sum. It
refuses the release before any noise is drawn if it would cross the budget.

A release holds only the noisy statistic: how many users it was computed on is itself a
count, and is not returned. ``import`` turns on OpenDP's ``contrib`` features (its
counting, clamping and summing transformations) for the process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import opendp.prelude as dp
import pandas as pd
from dp_accounting.dp_event import DiscreteLaplaceDpEvent

from personarl.errors import ConfigError, DataError, check_range
from synth.privacy.consent import consenting
from synth.privacy.ledger import PrivacyLedger

__all__ = ["Release", "release_count", "release_histogram", "release_sum"]

dp.enable_features("contrib")


@dataclass(frozen=True)
class Release:
    """A released statistic.

    Attributes:
        value: the noisy statistic (an ``int`` count, a ``{category: int}`` histogram or a
            ``float`` sum).
        epsilon: the ε the release spent (OpenDP's privacy map at one user: ≤ the ε asked).
        scale: the Laplace noise scale.
        entry: the ledger entry's id.
    """

    value: Any
    epsilon: float
    scale: float
    entry: int


def _column(rows: pd.DataFrame, column: str) -> pd.Series:
    if column not in rows.columns:
        raise ConfigError(f"column={column!r} is not in the table; columns: "
                          f"{list(rows.columns)}")
    return rows[column]


#: the ε of one release: beyond these the accountants or OpenDP's search cannot go
MIN_EPSILON, MAX_EPSILON = 1e-6, 1e3


def _release(measurement_of: Any, data: Any, epsilon: float, ledger: PrivacyLedger,
             label: str) -> Release:
    """Search the scale, spend, then measure."""
    epsilon = check_range("epsilon", epsilon, MIN_EPSILON, MAX_EPSILON)
    try:
        scale = float(dp.binary_search_param(measurement_of, d_in=1, d_out=epsilon))
        measurement = measurement_of(scale)
        used = float(measurement.map(1))
    except (dp.OpenDPException, OverflowError, ValueError) as exc:
        raise ConfigError(f"no Laplace scale meets epsilon={epsilon} here: {exc}") from None
    event = DiscreteLaplaceDpEvent(noise_parameter=used, sensitivity=1)
    with ledger.spend(event, kind="release", label=label) as entry:
        value = measurement(data)
    return Release(value=value, epsilon=used, scale=scale, entry=entry["id"])


def release_count(table: pd.DataFrame, epsilon: float, ledger: PrivacyLedger,
                  label: str = "count") -> Release:
    """The number of consenting users, with discrete Laplace noise.

    Raises:
        ConfigError: ``epsilon`` outside [1e-6, 1e3].
        DataError: see ``consenting``.
        PrivacyBudgetExceeded: the ledger's budget would be crossed (nothing is measured).
    """
    rows = consenting(table)
    domain = dp.vector_domain(dp.atom_domain(T=dp.i64))
    count = dp.t.make_count(domain, dp.symmetric_distance())
    return _release(lambda s: count >> dp.m.then_laplace(scale=s),
                    [0] * len(rows), epsilon, ledger, label)


def release_histogram(table: pd.DataFrame, column: str, categories: Sequence[str],
                      epsilon: float, ledger: PrivacyLedger,
                      label: str | None = None) -> Release:
    """Consenting users per category of ``column`` (categories fixed in advance — they are
    public), with discrete Laplace noise on every count.

    Returns:
        a ``Release`` whose value is ``{category: noisy count}``.

    Raises:
        ConfigError: ``epsilon`` outside [1e-6, 1e3], no such column, categories that are
            not a list, empty or repeated, or a value outside them (naming it).
        DataError: see ``consenting``.
        PrivacyBudgetExceeded: the budget would be crossed (nothing is measured).
    """
    rows = consenting(table)
    values = _column(rows, column).astype(str)
    if isinstance(categories, (str, bytes)) or not isinstance(categories, Sequence):
        raise ConfigError(f"categories={categories!r:.80} must be a list of the categories")
    categories = [str(c) for c in categories]
    if not categories or len(set(categories)) != len(categories):
        raise ConfigError(f"categories={categories!r} must be distinct and not empty")
    outside = values[~values.isin(categories)]
    if len(outside):
        raise ConfigError(f"column {column!r} holds {outside.iloc[0]!r}, which is not one of "
                          f"the categories {categories}")
    domain = dp.vector_domain(dp.atom_domain(T=str))
    counts = dp.t.make_count_by_categories(domain, dp.symmetric_distance(),
                                           categories=categories, null_category=False)
    released = _release(lambda s: counts >> dp.m.then_laplace(scale=s), values.tolist(),
                        epsilon, ledger, label or f"histogram of {column}")
    return Release(value=dict(zip(categories, (int(v) for v in released.value))),
                   epsilon=released.epsilon, scale=released.scale, entry=released.entry)


def release_sum(table: pd.DataFrame, column: str, bounds: tuple[float, float],
                epsilon: float, ledger: PrivacyLedger, label: str | None = None) -> Release:
    """The sum of ``column`` over consenting users, each value clamped to ``bounds``
    (fixed in advance), with Laplace noise.

    Raises:
        ConfigError: ``epsilon`` outside [1e-6, 1e3], no such column, bounds not finite with
            ``low < high``.
        DataError: see ``consenting``; a value that is not a finite number (naming it).
        PrivacyBudgetExceeded: the budget would be crossed (nothing is measured).
    """
    rows = consenting(table)
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ConfigError(f"bounds={bounds!r} must be two numbers (low, high)") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ConfigError(f"bounds={bounds!r} must be finite with low < high")
    values = pd.to_numeric(_column(rows, column), errors="coerce").to_numpy(np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise DataError(f"column {column!r} holds {rows[column].iloc[bad[0]]!r}; a summed "
                        "column needs finite numbers")
    domain = dp.vector_domain(dp.atom_domain(T=float, nan=False))
    try:
        total = (dp.t.make_clamp(domain, dp.symmetric_distance(), bounds=(low, high))
                 >> dp.t.then_sum())
    except dp.OpenDPException as exc:
        raise ConfigError(f"bounds={bounds!r} cannot be summed safely: {exc}") from None
    released = _release(lambda s: total >> dp.m.then_laplace(scale=s), values.tolist(),
                        epsilon, ledger, label or f"sum of {column}")
    return Release(value=float(released.value), epsilon=released.epsilon,
                   scale=released.scale, entry=released.entry)
