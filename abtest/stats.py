"""The statistics of one A/B readout: tests, intervals, CUPED, sample-ratio mismatch, power.

All per metric, on the users of a control arm ``a`` and a treatment arm ``b`` (one value
per user, ``(n_a,)`` and ``(n_b,)``):

* **Welch's t-test** of ``mean_b − mean_a`` (``scipy.stats.ttest_ind(equal_var=False)``),
  its t interval with the Welch–Satterthwaite degrees of freedom.
* **Relative change** ``mean_b / mean_a − 1`` with a delta-method interval (Kohavi, Tang &
  Xu 2020, *Trustworthy Online Controlled Experiments*, §18):
  ``Var ≈ (1/μ_a²)·(s_b²/n_b + (μ_b/μ_a)²·s_a²/n_a)`` — reported where the control's mean is
  positive; otherwise the absolute difference is the readout, in the metric's units.
* **Bootstrap** percentile interval of the same quantity (``personarl.stats.bootstrap_ci``,
  arms resampled independently).
* **CUPED** (Deng, Xu, Kohavi & Walker 2013): with a covariate ``x`` measured *before*
  assignment, ``y − θ(x − x̄)`` with ``θ = Cov(x, y) / Var(x)`` pooled over both arms; the
  variance falls by the factor ``1 − ρ²``, ``ρ`` the covariate's correlation with ``y``.
* **Sample-ratio mismatch**: a chi-square goodness-of-fit test of the arms' counts against
  the planned split (``scipy.stats.chisquare``; Fabijan et al. 2019): ``p < 0.001`` blocks
  the readout.
* **Power** (``statsmodels``' ``tt_ind_solve_power``): users per arm for a two-sided Welch
  test to detect a minimum detectable effect.
* **Multiple metrics**: Holm's step-down correction of the metrics' p-values
  (``statsmodels.stats.multitest.multipletests``), controlling the family-wise error rate.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from personarl.errors import ConfigError, DataError, check_range

__all__ = ["Difference", "welch", "cuped", "srm_pvalue", "users_per_arm", "holm",
           "SRM_ALPHA", "check_arm"]

#: a sample-ratio mismatch test below this blocks a readout (Fabijan et al. 2019)
SRM_ALPHA = 1e-3


def check_arm(values: np.ndarray, name: str, min_users: int = 2) -> np.ndarray:
    """``values`` as a finite 1-D float array of at least ``min_users`` users.

    Raises:
        DataError: another shape, non-finite values, too few users (naming the arm).
    """
    try:
        y = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name}: the values must be numbers") from None
    if y.ndim != 1:
        raise DataError(f"{name}: one value per user is needed; got shape {y.shape}")
    if len(y) < min_users:
        raise DataError(f"{name} has {len(y)} users; a readout needs at least {min_users} "
                        "per arm")
    if not np.all(np.isfinite(y)):
        raise DataError(f"{name}: {int((~np.isfinite(y)).sum())} values are not finite")
    return y


@dataclass(frozen=True)
class Difference:
    """Treatment minus control on one metric.

    Attributes:
        mean_a, mean_b: the arms' means; ``n_a``, ``n_b`` their users.
        relative: True when the change is relative (``mean_b / mean_a − 1``; control mean
            > 0), False for the absolute difference in the metric's units.
        estimate, low, high: the change and its ``level`` interval (Welch t, or the delta
            method for a relative change).
        p_value: Welch's two-sided p-value of ``mean_b − mean_a = 0``.
        se: the standard error of ``estimate``.
    """

    mean_a: float
    mean_b: float
    n_a: int
    n_b: int
    relative: bool
    estimate: float
    low: float
    high: float
    p_value: float
    se: float


def welch(a: np.ndarray, b: np.ndarray, level: float = 0.95, relative: bool | None = None
          ) -> Difference:
    """Welch's test and interval of the change from ``a`` (control) to ``b`` (module
    docstring). ``relative=None`` chooses: relative when ``mean_a > 0``.

    Raises:
        DataError: an arm with fewer than 2 users or non-finite values; ``relative=True``
            with a control mean <= 0.
    """
    from scipy import stats

    a, b = check_arm(a, "control"), check_arm(b, "treatment")
    check_range("level", level, 0, 1, low_open=True, high_open=True)
    ma, mb = float(a.mean()), float(b.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if relative is None:
        relative = ma > 0
    if relative and not ma > 0:
        raise DataError(f"a relative change needs a positive control mean; got {ma:g}")
    with np.errstate(divide="ignore", invalid="ignore"):
        p = float(stats.ttest_ind(b, a, equal_var=False).pvalue) if va + vb > 0 else (
            1.0 if mb == ma else 0.0)
        dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) \
            if va + vb > 0 else np.inf
    t = float(stats.t.ppf(0.5 + level / 2, dof)) if np.isfinite(dof) else \
        float(stats.norm.ppf(0.5 + level / 2))
    if relative:
        estimate = mb / ma - 1.0
        se = float(np.sqrt(vb + (mb / ma) ** 2 * va) / ma)
    else:
        estimate, se = mb - ma, float(np.sqrt(va + vb))
    return Difference(ma, mb, len(a), len(b), bool(relative), float(estimate),
                      float(estimate - t * se), float(estimate + t * se), p, se)


def cuped(y_a: np.ndarray, y_b: np.ndarray, x_a: np.ndarray, x_b: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, float]:
    """CUPED-adjusted outcomes of both arms and ``θ`` (module docstring). The covariate
    must be measured before assignment (a pre-period outcome of the same user).

    Raises:
        DataError: a covariate of another length than its arm's outcomes, or constant.
    """
    y_a, y_b = check_arm(y_a, "control"), check_arm(y_b, "treatment")
    x_a, x_b = check_arm(x_a, "control covariate"), check_arm(x_b, "treatment covariate")
    if len(x_a) != len(y_a) or len(x_b) != len(y_b):
        raise DataError("CUPED needs one covariate value per user of each arm; got "
                        f"{len(x_a)}/{len(y_a)} (control) and {len(x_b)}/{len(y_b)}")
    x, y = np.concatenate([x_a, x_b]), np.concatenate([y_a, y_b])
    var_x = x.var(ddof=1)
    if var_x <= 0:
        raise DataError("the CUPED covariate is constant: it cannot explain any variance")
    theta = float(np.cov(x, y, ddof=1)[0, 1] / var_x)
    mean_x = x.mean()
    return y_a - theta * (x_a - mean_x), y_b - theta * (x_b - mean_x), theta


def srm_pvalue(counts: Sequence[int], shares: Sequence[float]) -> float:
    """The chi-square p-value of arm ``counts`` against planned traffic ``shares``.

    Raises:
        ConfigError: shares that are not positive or do not sum to 1.
        DataError: negative counts, no users, or counts and shares of different lengths.
    """
    from scipy import stats

    try:
        counts = np.asarray(counts, dtype=np.float64)
        shares = np.asarray(shares, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError("SRM needs numbers: arm counts and planned shares") from None
    if not (np.all(np.isfinite(counts)) and np.all(np.isfinite(shares))):
        raise DataError(f"SRM needs finite counts and shares; got {counts.tolist()} and "
                        f"{shares.tolist()}")
    if counts.shape != shares.shape or counts.ndim != 1 or len(counts) < 2:
        raise DataError(f"SRM needs one count per arm and one planned share per arm; got "
                        f"{counts.shape} and {shares.shape}")
    if np.any(shares <= 0) or abs(shares.sum() - 1) > 1e-9:
        raise ConfigError(f"planned shares {shares.tolist()} must be positive and sum to 1")
    if np.any(counts < 0) or counts.sum() == 0:
        raise DataError(f"arm counts {counts.tolist()} must be >= 0 with some users")
    return float(stats.chisquare(counts, counts.sum() * shares).pvalue)


def users_per_arm(mde: float, sd: float, *, alpha: float = 0.05, power: float = 0.8,
                  ratio: float = 1.0) -> int:
    """Users per control arm (the treatment gets ``ratio`` times as many) for a two-sided
    test at ``alpha`` to detect an absolute change ``mde`` with ``power``, the outcome's
    standard deviation being ``sd`` (Cohen's d = mde / sd; ``statsmodels``).

    Raises:
        ConfigError: ``mde <= 0``, ``sd <= 0``, alpha or power outside (0, 1), ratio <= 0.
    """
    from statsmodels.stats.power import tt_ind_solve_power
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    if not (isinstance(mde, (int, float)) and mde > 0 and np.isfinite(mde)):
        raise ConfigError(f"mde={mde!r} must be a positive, finite minimum detectable effect")
    if not (isinstance(sd, (int, float)) and sd > 0 and np.isfinite(sd)):
        raise ConfigError(f"sd={sd!r} must be positive and finite")
    check_range("alpha", alpha, 0, 1, low_open=True, high_open=True)
    check_range("power", power, 0, 1, low_open=True, high_open=True)
    check_range("ratio", ratio, 0, 1e6, low_open=True)
    with warnings.catch_warnings():       # no solution is the error below, not a warning
        warnings.simplefilter("ignore", ConvergenceWarning)
        n = tt_ind_solve_power(effect_size=mde / sd, alpha=alpha, power=power, ratio=ratio,
                               alternative="two-sided")
    if not np.isfinite(n):                # the solver finds no n (an effect far too small
        raise ConfigError(f"no sample size gives power {power:g} for mde={mde:g} with "  # or
                          f"sd={sd:g} (effect size {mde / sd:.3g})")     # too large to search)
    return int(np.ceil(n))


def holm(p_values: Sequence[float], alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Holm-adjusted p-values and which hypotheses are rejected at family-wise ``alpha``."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or len(p) == 0 or np.any((p < 0) | (p > 1)) or not np.all(np.isfinite(p)):
        raise DataError(f"p-values must be a non-empty list in [0, 1]; got {p.tolist()}")
    reject, adjusted, *_ = multipletests(p, alpha=alpha, method="holm")
    return adjusted, reject
