"""Every applicable estimator for every candidate policy, with intervals, bounds,
diagnostics, and — because the users are simulated — the truth beside each.

``estimate`` runs the estimators for one evaluation policy; ``rank_study`` compares the
estimators' rankings of several policies with the true ranking (Spearman's ρ, regret@1);
``recommend`` says which estimator to trust for this data and why.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.stats import spearmanr

from ope import estimators as E
from ope.data import LoggedData
from ope.uncertainty import bernstein_lower, bootstrap, diagnostics

__all__ = ["estimate", "rank_study", "recommend", "normalised_error"]


def estimate(data: LoggedData, pi_e: np.ndarray, q_hat: np.ndarray | None,
             names: Sequence[str] | None = None, gamma: float = 1.0, lam: float = 100.0,
             n_resamples: int = 1000, alpha: float = 0.05, seed: int = 0
             ) -> dict[str, Any]:
    """``{"estimates": {name: {estimate, ci_low, ci_high, lower_bound}}, "diagnostics",
    "warnings"}`` for one evaluation policy. ``lower_bound`` (empirical Bernstein, 1 − α)
    exists for the plain-mean estimators only."""
    table = E.ONE_STEP if data.horizon == 1 else E.SEQUENTIAL
    names = list(names or table)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"estimators {unknown} do not apply to "
                         f"{'one-step' if data.horizon == 1 else 'sequential'} data; valid: "
                         f"{list(table)}")
    if q_hat is None:
        names = [n for n in names if n not in E.MODEL_BASED]
    terms = {n: table[n](data, pi_e, q_hat=q_hat, gamma=gamma, lam=lam) for n in names}
    intervals = bootstrap(terms, n_resamples=n_resamples, alpha=alpha, seed=seed)
    diag = diagnostics(data, pi_e)
    notes = []
    if diag["unsupported_mass"]:
        notes.append(f"the evaluation policy puts {diag['unsupported_mass']:.1%} of its "
                     "probability on actions the behaviour policy never takes: importance "
                     "sampling cannot see them (IPS/SNIPS/PDIS are biased; trust model-based "
                     "estimators only as far as the model extrapolates)")
    if diag["ess_fraction"] < 0.01:
        notes.append(f"effective sample size {diag['ess']:.1f} ({diag['ess_fraction']:.2%} "
                     "of the episodes): importance-weighted estimates rest on a handful of "
                     "episodes")
    out = {}
    for n, t in terms.items():
        value = t.value()
        if not math.isfinite(value):
            notes.append(f"{n} is not finite ({value}); it is left out")
            continue
        out[n] = dict(estimate=value, ci_low=intervals[n]["low"], ci_high=intervals[n]["high"],
                      lower_bound=(bernstein_lower(t.plain, alpha) if t.num is None else None))
    return dict(estimates=out, diagnostics=diag, warnings=notes)


def normalised_error(estimate: float, truth: float, v_top: float, v_random: float) -> float:
    """``|V̂ − V| / (V_top − V_random)``: error on the scale from random to the best
    (privileged) policy, defined where plain relative error is not (values near 0)."""
    span = v_top - v_random
    if not span > 0:
        raise ValueError(f"the normalisation needs V_top > V_random; got {v_top} and "
                         f"{v_random}")
    return abs(estimate - truth) / span


def rank_study(estimates: Mapping[str, Mapping[str, float]], truths: Mapping[str, float]
               ) -> dict[str, dict[str, Any]]:
    """Per estimator: Spearman's ρ between its values and the true values over the policies,
    the policy it would pick, and regret@1 (true value of the best policy minus that of the
    pick)."""
    policies = list(truths)
    best = max(truths.values())
    names = sorted({e for p in policies for e in estimates[p]})
    out = {}
    for e in names:
        have = [p for p in policies if e in estimates[p]]
        values = [estimates[p][e] for p in have]
        pick = have[int(np.argmax(values))]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")        # constant inputs: ρ undefined
            rho = spearmanr(values, [truths[p] for p in have]).statistic if len(have) > 2 \
                else float("nan")
        out[e] = dict(spearman=None if not np.isfinite(rho) else float(rho), pick=pick,
                      regret_at_1=float(best - truths[pick]))
    return out


def recommend(data: LoggedData, diag: Mapping[str, Any], model_r2: float | None
              ) -> tuple[str, str]:
    """``(estimator, reason)``: which estimator to trust for this data.

    The doubly robust family (SNDR one-step, WDR sequential) when the weights are usable and
    the model explains something; the self-normalised IS estimator when the model is poor;
    the model-only estimator (DM / FQE) when the weights are degenerate or the evaluation
    policy leaves the behaviour's support.
    """
    one_step = data.horizon == 1
    dr, snis, dm = ("sndr", "snips", "dm") if one_step else ("wdr", "wpdis", "fqe")
    ess = diag["ess_fraction"]
    if diag.get("unsupported_mass") or ess < 0.01:
        why = (f"{diag['unsupported_mass']:.1%} of the evaluation policy's mass is outside the "
               "behaviour's support" if diag.get("unsupported_mass") else
               f"the effective sample size is {ess:.2%} of the episodes")
        return dm, f"{why}: importance weights cannot carry the estimate; the model can"
    if model_r2 is not None and model_r2 < 0.0:
        return snis, (f"the model predicts worse than a constant (out-of-fold R² "
                      f"{model_r2:.2f}) while the weights are usable (ESS {ess:.1%})")
    return dr, (f"the weights are usable (ESS {ess:.1%} of the episodes, max weight "
                f"{diag['max_weight']:.1f}) and the model helps (out-of-fold R² "
                f"{'n/a' if model_r2 is None else format(model_r2, '.2f')}): the doubly "
                "robust estimator with self-normalised weights has the lowest variance "
                "without giving up consistency")
