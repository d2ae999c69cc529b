"""One A/B readout: every metric compared, corrected for multiplicity, and a decision.

``readout(control, treatment, primary=...)`` takes each arm's users (``metric -> (n,)``
values, one per user) and gives, per metric, the Welch change (relative where the
control's mean is positive, else absolute; ``abtest.stats.welch``), its bootstrap interval,
CUPED's version when pre-assignment covariates are given (``abtest.stats.cuped``), and
Holm-adjusted p-values over all metrics (``abtest.stats.holm``). A sample-ratio mismatch
(``abtest.stats.srm_pvalue`` < ``SRM_ALPHA``) blocks the readout.

**Decision** (stated in advance; Kohavi et al. 2020, ch. 3's "ship / don't ship" with
guardrails): *blocked* on a sample-ratio mismatch; else *ship* when the primary metric
improves significantly (Holm-adjusted p < ``alpha``) and no other metric is significantly
worse; *keep* (the control) when the primary metric is significantly worse or a metric is
significantly worse; else *inconclusive*. "Worse" follows each metric's direction
(``DIRECTIONS``: churn is worse when it rises).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from abtest.stats import SRM_ALPHA, Difference, cuped, holm, srm_pvalue, welch
from personarl.errors import ConfigError, DataError, check_int, check_range
from personarl.stats import bootstrap_ci

__all__ = ["MetricResult", "Readout", "readout", "DIRECTIONS", "DECISIONS"]

#: +1: higher is better; −1: lower is better; 0: neither (never better or worse, so never
#: a guardrail); metrics not listed: higher is better
DIRECTIONS = {"churned": -1, "false_interventions": -1, "opted_out": -1, "interventions": 0}
DECISIONS = ("ship", "keep", "inconclusive", "blocked")


@dataclass(frozen=True)
class MetricResult:
    """One metric: the Welch change, its bootstrap interval, its Holm-adjusted p-value,
    whether CUPED adjusted it (and by which θ), and the significant direction (+1 better,
    −1 worse, 0 neither)."""

    diff: Difference
    boot_low: float
    boot_high: float
    p_adjusted: float
    cuped_theta: float | None
    verdict: int


@dataclass(frozen=True)
class Readout:
    """A readout: per-metric results, the SRM p-value, the decision and its reason."""

    metrics: dict[str, MetricResult]
    primary: str
    srm_p: float
    decision: str
    reason: str
    alpha: float


def readout(control: Mapping[str, np.ndarray], treatment: Mapping[str, np.ndarray], *,
            primary: str, shares: tuple[float, float] = (0.5, 0.5), alpha: float = 0.05,
            level: float = 0.95, covariates: tuple[Mapping[str, np.ndarray],
                                                   Mapping[str, np.ndarray]] | None = None,
            rng: np.random.Generator | None = None, bootstrap_reps: int = 1000) -> Readout:
    """Compare ``treatment`` with ``control`` on every metric (module docstring).

    Args:
        control, treatment: metric -> ``(n_arm,)`` per-user values; the same metrics.
        primary: the metric the decision is about.
        shares: the planned traffic shares (control, treatment), for the SRM check.
        covariates: per arm, metric -> ``(n_arm,)`` pre-assignment values (CUPED); a
            metric without one is read unadjusted.
        rng: the bootstrap's generator (None: no bootstrap interval).

    Raises:
        DataError: metrics missing in one arm, an arm with fewer than 2 users, bad values.
        ConfigError: an unknown primary metric, alpha or level outside (0, 1).
    """
    missing = sorted(set(control) ^ set(treatment))
    if missing:
        raise DataError(f"metric(s) {missing} are missing in one arm; both arms need the "
                        "same metrics")
    if primary not in control:
        raise ConfigError(f"primary={primary!r} is not a metric of the arms; valid: "
                          f"{', '.join(sorted(control))}")
    check_range("alpha", alpha, 0, 1, low_open=True, high_open=True)
    check_int("bootstrap_reps", bootstrap_reps, 1)
    n_a, n_b = len(control[primary]), len(treatment[primary])
    for name in control:
        if len(control[name]) != n_a or len(treatment[name]) != n_b:
            raise DataError(f"metric {name!r} has {len(control[name])}/{len(treatment[name])}"
                            f" users; the arms have {n_a}/{n_b}")
    srm_p = srm_pvalue([n_a, n_b], list(shares))
    names = sorted(control, key=lambda m: (m != primary, m))
    diffs, thetas, boots = {}, {}, {}
    for name in names:
        a, b = control[name], treatment[name]
        theta = None
        if covariates is not None and name in covariates[0] and name in covariates[1] and \
                np.ptp(np.concatenate([covariates[0][name], covariates[1][name]])) > 0:
            # (a constant covariate explains nothing: the metric is read unadjusted)
            a, b, theta = cuped(a, b, covariates[0][name], covariates[1][name])
        diffs[name] = welch(a, b, level)
        thetas[name] = theta
        boots[name] = (float("nan"), float("nan"))
        if rng is not None:
            rel = diffs[name].relative
            stat = (lambda x, y: y.mean(axis=-1) / x.mean(axis=-1) - 1) if rel else \
                (lambda x, y: y.mean(axis=-1) - x.mean(axis=-1))
            _, lo, hi = bootstrap_ci([a, b], stat, rng, bootstrap_reps, level)
            boots[name] = (lo, hi)
    adjusted, reject = holm([diffs[n].p_value for n in names], alpha)
    results = {}
    for name, p, r in zip(names, adjusted, reject):
        d = diffs[name]
        better = int(np.sign(d.estimate)) * DIRECTIONS.get(name, 1)
        results[name] = MetricResult(d, *boots[name], float(p), thetas[name],
                                     better if r else 0)
    decision, reason = _decide(results, primary, srm_p, alpha)
    return Readout(results, primary, srm_p, decision, reason, alpha)


def _decide(results: Mapping[str, MetricResult], primary: str, srm_p: float, alpha: float
            ) -> tuple[str, str]:
    if srm_p < SRM_ALPHA:
        return "blocked", (f"sample-ratio mismatch (chi-square p = {srm_p:.2g} < "
                           f"{SRM_ALPHA:g}): the assignment is broken, no metric is read")
    worse = [n for n, r in results.items() if r.verdict < 0]
    main = results[primary]
    if worse:
        return "keep", (f"{', '.join(worse)} significantly worse (Holm-adjusted p < "
                        f"{alpha:g})")
    if main.verdict > 0:
        return "ship", (f"{primary} significantly better (Holm-adjusted p = "
                        f"{main.p_adjusted:.2g}) and no metric significantly worse")
    return "inconclusive", (f"{primary} not significantly changed (Holm-adjusted p = "
                            f"{main.p_adjusted:.2g}); collect more users or keep the control")
