"""Sequential monitoring safe under continuous peeking: asymptotic confidence sequences.

A confidence sequence ``(L_n, U_n)`` covers the true change at *every* sample size at once
with probability ``≥ 1 − α`` (asymptotically), so an experiment can be looked at after
every user and stopped whenever the interval excludes a value, without inflating the
error rate — unlike a fixed-horizon interval read at many looks ("peeking").

We use the asymptotic confidence sequence of Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas
(2023, "Time-uniform central limit theory and asymptotic confidence sequences", eq. 9,
with the tuning of eq. 161), as GrowthBook's engine does for its sequential testing:
for an estimate with standard error ``se`` after ``N`` users in all,

    half-width = √(N·se²) · √( 2(Nρ² + 1) / (N²ρ²) · log(√(Nρ² + 1) / α) ),
    ρ = √( (−2 log α + log(−2 log α + 1)) / N* ),

``N*`` (``tuning``) being the number of users at which the sequence is tightest.
"""

from __future__ import annotations

import numpy as np

from abtest.stats import Difference
from personarl.errors import check_int, check_range

__all__ = ["confidence_sequence", "sequential_interval", "DEFAULT_TUNING"]

#: users at which the sequence is tightest by default (GrowthBook's default is 5,000)
DEFAULT_TUNING = 5_000


def confidence_sequence(estimate: float, se: float, n: int, *, alpha: float = 0.05,
                        tuning: int = DEFAULT_TUNING) -> tuple[float, float]:
    """``(low, high)`` of the asymptotic confidence sequence at ``n`` users (module
    docstring); ``se`` is the estimate's standard error at ``n``.

    Raises:
        ConfigError: ``alpha`` outside (0, 1), ``n`` or ``tuning`` < 1, a negative ``se``.
    """
    check_range("alpha", alpha, 0, 1, low_open=True, high_open=True)
    check_int("n", n, 1)
    check_int("tuning", tuning, 1)
    check_range("se", se, 0, np.inf, high_open=True)
    check_range("estimate", estimate, -np.inf, np.inf, low_open=True, high_open=True)
    rho2 = (-2 * np.log(alpha) + np.log(-2 * np.log(alpha) + 1)) / tuning
    half = np.sqrt(n * se ** 2) * np.sqrt(2 * (n * rho2 + 1) / (n ** 2 * rho2)
                                          * np.log(np.sqrt(n * rho2 + 1) / alpha))
    return float(estimate - half), float(estimate + half)


def sequential_interval(diff: Difference, *, alpha: float = 0.05,
                        tuning: int = DEFAULT_TUNING) -> tuple[float, float]:
    """The confidence sequence of a readout's change (``abtest.stats.welch``): absolute or
    relative as the readout is, over ``n_a + n_b`` users."""
    return confidence_sequence(diff.estimate, diff.se, diff.n_a + diff.n_b, alpha=alpha,
                               tuning=tuning)
