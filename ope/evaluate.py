"""Every applicable estimator for every candidate policy, with intervals, bounds,
diagnostics, and — because the users are simulated — the truth beside each.

``estimate`` runs the estimators for one evaluation policy; ``rank_study`` compares the
estimators' rankings of several policies with the true ranking (Spearman's ρ, regret@1);
``recommend`` says which of the computed estimators to trust for this data and why — or
that none can be.

What an interval can and cannot back: the bootstrap resamples episodes with the reward or Q
model held fixed unless ``refit_bootstrap`` (``ci.refit=true``) supplied intervals with the
model refitted in every resample. For DM and FQE — the model alone — a fixed-model interval
leaves out the model's own error, so it is labelled "model error not included" and never
recommended; the doubly robust estimators keep the importance-weighted correction that
carries the model's error to first order.
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

__all__ = ["estimate", "estimator_names", "rank_study", "recommend", "normalised_error",
           "combine_diagnostics", "FEW_EPISODES", "MIN_ESS", "MIN_ESS_FRACTION",
           "MAX_UNDEFINED_SHARE"]

#: below this many episodes the percentile bootstrap is flagged as unreliable
FEW_EPISODES = 20
#: importance weights carry an estimate only with at least this effective sample size
#: (Kish, in episodes) and this share of the episodes: on the InterventionTiming journey,
#: WDR's interval covered the truth in 68% of 47 logs with 10–24 effective episodes and in
#: 94% of 100 logs with 250–317 (BENCHMARKS.md, issue 13)
MIN_ESS, MIN_ESS_FRACTION = 100.0, 0.01
#: an estimator undefined in more of its bootstrap resamples than this is not recommended:
#: its interval, taken over the defined ones only, is conditional on luck
MAX_UNDEFINED_SHARE = 0.01


def estimator_names(data: LoggedData, names: Sequence[str] | None = None) -> list[str]:
    """``names`` checked against the estimators that apply to ``data`` (one-step or
    sequential), or all of those.

    Raises:
        ValueError: an unknown or inapplicable name (listing the valid ones), or an empty list.
    """
    table = E.ONE_STEP if data.max_episode_length == 1 else E.SEQUENTIAL
    kind = "one-step" if data.max_episode_length == 1 else "sequential"
    if names is None:
        return list(table)
    names = list(names)
    unknown = [n for n in names if n not in table]
    if unknown or not names:
        raise ValueError(f"estimators={names} " + (f"do not apply to {kind} data" if unknown
                         else "must be a non-empty list") + f"; valid: {list(table)}")
    return names


def estimate(data: LoggedData, pi_e: np.ndarray, q_hat: np.ndarray | None,
             names: Sequence[str] | None = None, gamma: float = 1.0, lam: float = 100.0,
             n_resamples: int = 1000, alpha: float = 0.05, seed: int = 0,
             refit: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Every requested estimator for one evaluation policy.

    Args:
        data: logged data.
        pi_e: ``(N, K)`` the evaluation policy's distribution on the logged observations.
        q_hat: ``(N, K)`` reward/Q model predictions, or None (model-based estimators are
            then skipped).
        names: estimators (default: all that apply to one-step or sequential data).
        gamma, lam: discount (sequential) and Switch-DR's threshold.
        n_resamples, alpha, seed: the bootstrap (``ope.uncertainty.bootstrap``).
        refit: ``refit_bootstrap``'s intervals for this policy, replacing the fixed-model
            intervals of the model-based estimators.

    Returns:
        ``{"estimates": {name: {estimate, ci_low, ci_high, se, undefined_share,
        lower_bound, interval, model_error}}, "diagnostics", "warnings"}``. ``estimate``,
        the bounds and ``se`` (the bootstrap standard error) are None where undefined; ``undefined_share`` is the share of bootstrap resamples in
        which the estimator is undefined; ``interval`` says how the interval was made
        (``bootstrap``, ``bootstrap, model fixed``, ``bootstrap, model refitted``, or
        ``none`` for a one-episode log); ``model_error`` is ``"not included"`` for DM/FQE
        with the model held fixed, ``"included"`` when refitted, else None;
        ``lower_bound`` (empirical Bernstein, 1 − α) exists for the plain-mean estimators
        that are not the model alone (for DM/FQE it would hold the model fixed too).

    Raises:
        ValueError: an estimator that does not apply to this data (listing those that do),
            or a model-based one asked for without ``q_hat``.
    """
    table = E.ONE_STEP if data.max_episode_length == 1 else E.SEQUENTIAL
    explicit = names is not None
    names = estimator_names(data, names)
    if q_hat is None:
        needs = [n for n in names if n in E.MODEL_BASED]
        if needs and explicit:
            raise ValueError(f"estimators {needs} need a reward/Q model's predictions "
                             "(q_hat); pass q_hat or leave them out")
        names = [n for n in names if n not in E.MODEL_BASED]
    terms = {n: table[n](data, pi_e, q_hat=q_hat, gamma=gamma, lam=lam) for n in names}
    intervals = {**bootstrap(terms, n_resamples=n_resamples, alpha=alpha, seed=seed),
                 **{n: v for n, v in (refit or {}).items() if n in terms}}
    diag = diagnostics(data, pi_e)
    notes = _data_notes(data, diag)
    one = data.n_episodes == 1                  # resamples of one episode are all the same
    out = {}
    for n, t in terms.items():
        value, ci = t.value(), intervals[n]
        kind = ("bootstrap, model refitted" if refit and n in refit else
                "bootstrap, model fixed" if n in E.MODEL_BASED else "bootstrap")
        defined = math.isfinite(value)
        if not defined:
            notes.append(f"{n} is undefined on this log: " + (
                "no logged decision carries weight under the evaluation policy where it "
                "needs one" if _no_weight(t) else f"it is not finite ({value}: the rewards "
                "or weights overflow)"))
        elif ci["undefined"] > 0:
            why = ("the model had nothing to fit on in those resamples" if kind ==
                   "bootstrap, model refitted" else "no weight on the evaluation policy's "
                   "actions")
            notes.append(f"{n} is undefined in {ci['undefined']:.1%} of the bootstrap "
                         f"resamples ({why}); its interval is over the "
                         f"{1 - ci['undefined']:.1%} where it is defined")
        if defined and kind == "bootstrap, model fixed" and n in E.MODEL_ONLY:
            notes.append(f"{n}'s interval holds the fitted model fixed: model error not "
                         "included (ci.refit=true refits it in every resample)")
        out[n] = dict(estimate=value if defined else None,
                      ci_low=None if one or not math.isfinite(ci["low"]) else ci["low"],
                      ci_high=None if one or not math.isfinite(ci["high"]) else ci["high"],
                      se=None if one or not math.isfinite(ci["se"]) else ci["se"],
                      undefined_share=ci["undefined"],
                      lower_bound=(bernstein_lower(t.plain, alpha) if t.num is None
                                   and n not in E.MODEL_ONLY and not one else None),
                      interval="none" if one else kind,
                      model_error=("included" if kind == "bootstrap, model refitted" else
                                   "not included" if n in E.MODEL_ONLY else None))
    return dict(estimates=out, diagnostics=diag, warnings=notes)


def _no_weight(t: E.Terms) -> bool:
    """A self-normalised ratio of ``t`` has no weight at all (its denominator is 0)."""
    return t.den is not None and bool((t.den.sum(axis=0) == 0).any())


def _data_notes(data: LoggedData, diag: Mapping[str, Any]) -> list[str]:
    notes = []
    if data.n_episodes == 1:
        notes.append("the log holds one episode: a bootstrap over episodes cannot measure "
                     "uncertainty, so no interval is given — log more episodes")
    elif data.n_episodes < FEW_EPISODES:
        notes.append(f"the log holds {data.n_episodes} episodes: percentile-bootstrap "
                     "intervals are too narrow with so few (they under-cover)")
    if diag["unsupported_mass"]:
        notes.append(f"the evaluation policy puts {diag['unsupported_mass']:.1%} of its "
                     "probability on actions the behaviour policy never takes: importance "
                     "sampling cannot see them (IPS/SNIPS/PDIS are biased; trust model-based "
                     "estimators only as far as the model extrapolates)")
    if diag["ess_fraction"] < MIN_ESS_FRACTION or diag["ess"] < MIN_ESS:
        notes.append(f"effective sample size {diag['ess']:.1f} ({diag['ess_fraction']:.2%} "
                     "of the episodes): importance-weighted estimates rest on a handful of "
                     "episodes, and their intervals under-cover")
    return notes


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


_DESCRIBE = {"sndr": "the doubly robust estimator with self-normalised weights has the "
                     "lowest variance without giving up consistency",
             "wdr": "the weighted doubly robust estimator has the lowest variance without "
                    "giving up consistency",
             "dr": "the doubly robust estimator is unbiased if either the weights or the "
                   "model are right",
             "switch_dr": "Switch-DR falls back on the model only where a weight is large",
             "snips": "self-normalised importance sampling", "wpdis": "weighted per-decision "
             "importance sampling", "ips": "importance sampling",
             "pdis": "per-decision importance sampling"}


def combine_diagnostics(diags: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The weakest of several policies' weight diagnostics, for one estimator that must
    serve them all: the smallest ESS and share, the largest weight and unsupported mass,
    the widest mean-weight interval."""
    known = [d["unsupported_mass"] for d in diags if d["unsupported_mass"] is not None]
    unknown = len(known) < len(diags)
    return dict(ess=min(d["ess"] for d in diags),
                ess_fraction=min(d["ess_fraction"] for d in diags),
                max_weight=max(d["max_weight"] for d in diags),
                mean_weight=min(d["mean_weight"] for d in diags),
                mean_weight_ci=(min(d["mean_weight_ci"][0] for d in diags),
                                max(d["mean_weight_ci"][1] for d in diags)),
                unsupported_mass=max(known) if known and (max(known) > 0 or not unknown)
                else None)


def recommend(data: LoggedData, diag: Mapping[str, Any], model_r2: float | None,
              estimates: Mapping[str, Mapping[str, Any]]) -> tuple[str | None, str]:
    """``(estimator or None, reason)``: which of the computed ``estimates`` to trust.

    Only an estimator that was computed, has an estimate and an interval, and is undefined
    in at most ``MAX_UNDEFINED_SHARE`` of the resamples can be recommended, and only on a
    log of at least ``FEW_EPISODES`` episodes. With usable weights (an effective sample size
    of at least ``MIN_ESS`` episodes and ``MIN_ESS_FRACTION`` of them, no mass outside the
    behaviour's support): the doubly robust family (SNDR, DR, Switch-DR one-step; WDR, DR
    sequential) when the model explains something (out-of-fold R² ≥ 0, or unknown), else
    the importance-sampling family (SNIPS, IPS; WPDIS, PDIS) first. With degenerate weights
    only the model can carry the estimate: DM / FQE, and only if their interval was refitted
    per resample (``interval == "bootstrap, model refitted"``). With mass on actions the
    behaviour never takes — known from its full distribution, or, without one, a mean weight
    whose 95% interval excludes 1 — every estimator extrapolates there (a refitted interval
    cannot show extrapolation bias): nothing is recommended. The reason says why and what
    would help.
    """
    one_step = data.max_episode_length == 1
    dr_family = ("sndr", "dr", "switch_dr") if one_step else ("wdr", "dr")
    is_family = ("snips", "ips") if one_step else ("wpdis", "pdis")
    model_only = "dm" if one_step else "fqe"
    usable = {n for n, r in estimates.items() if r["estimate"] is not None
              and r["ci_low"] is not None and r["undefined_share"] <= MAX_UNDEFINED_SHARE}
    computed = ", ".join(sorted(estimates)) or "none"
    ess = diag["ess_fraction"]
    refitted = model_only in usable and \
        estimates[model_only]["interval"] == "bootstrap, model refitted"
    if data.n_episodes < FEW_EPISODES:
        return None, (f"the log holds {data.n_episodes} episodes: no bootstrap interval can "
                      f"be trusted below {FEW_EPISODES}; log more episodes")
    if diag.get("unsupported_mass"):
        return None, (f"{diag['unsupported_mass']:.1%} of the evaluation policy's mass is on "
                      "actions the behaviour policy never takes: importance weights cannot "
                      "see them and a model can only extrapolate to them, which no interval "
                      "shows — no estimator can be trusted here. Log data whose behaviour "
                      "takes every action the evaluation policy may take")
    low, high = diag["mean_weight_ci"]
    if diag.get("unsupported_mass") is None and math.isfinite(low) and not low <= 1.0 <= high:
        return None, (f"the importance weights average {diag['mean_weight']:.3f} (95% "
                      f"interval [{low:.3f}, {high:.3f}]) where correct propensities over the "
                      "behaviour's support give 1: the evaluation policy puts mass where the "
                      "behaviour never acts, or the logged propensities are wrong (log the "
                      "full action_probs to tell which) — no estimator can be trusted here")
    if ess < MIN_ESS_FRACTION or diag["ess"] < MIN_ESS:
        why = (f"the effective sample size is {diag['ess']:.1f} episodes ({ess:.2%} of the "
               f"episodes; weights carry an estimate from {MIN_ESS:.0f} and "
               f"{MIN_ESS_FRACTION:.0%})")
        if refitted:
            return model_only, (f"{why}: importance weights cannot carry the estimate; the "
                                f"model can, and {model_only}'s interval refits it in every "
                                "resample, so it includes the model's error")
        return None, (f"{why}: importance weights cannot carry the estimate, and "
                      f"{model_only.upper()}'s interval holds the model fixed (model error not "
                      f"included) — no computed estimator ({computed}) can be trusted here. "
                      f"Rerun with ci.refit=true for a {model_only.upper()} interval that "
                      "includes model error, or log data from a behaviour closer to the "
                      "evaluation policy")
    model_helps = model_r2 is None or model_r2 >= 0.0
    order = dr_family + is_family if model_helps else is_family + dr_family
    pick = next((n for n in order if n in usable), None)
    if pick is None:
        if refitted:
            return model_only, (f"none of {', '.join(order)} was computed with an interval; "
                                f"{model_only}'s interval refits the model in every resample")
        return None, (f"none of the estimators the weights support ({', '.join(order)}) was "
                      f"computed with an estimate and an interval defined in at least "
                      f"{1 - MAX_UNDEFINED_SHARE:.0%} of the resamples (computed: {computed}); "
                      "DM/FQE intervals with the model held fixed leave out model error")
    r2 = "n/a" if model_r2 is None else format(model_r2, ".2f")
    why = (f"the weights are usable (ESS {ess:.1%} of the episodes, max weight "
           f"{diag['max_weight']:.1f}) and the model "
           + (f"helps (out-of-fold R² {r2})" if model_helps else
              f"predicts worse than a constant (out-of-fold R² {r2})")
           + f": {_DESCRIBE[pick]}")
    if pick != order[0]:
        why += f" ({order[0]}, preferred here, was not computed with a usable interval)"
    return pick, why
