"""Uncertainty and diagnostics for off-policy estimates.

* ``bootstrap`` — percentile bootstrap intervals for many estimators at once, resampling
  whole episodes. A resample is a vector of counts ``c`` over episodes, and every estimator
  is a ratio of count-weighted sums of its ``Terms`` (``ope.estimators``), so ``B``
  resamples of all estimators are a few ``(B, E) @ (E, ·)`` matrix products, done in chunks
  that bound memory — no Python loop over resamples. Counts are multinomial (exactly ``E``
  episodes per resample) up to ``EXACT_MAX_EPISODES`` episodes; above that, independent
  Poisson(1) counts (the Poisson bootstrap: Hanley & MacGibbon 2006; Chamandy et al. 2012),
  drawn through a 16-bit lookup table of the Poisson CDF, which is what makes 1,000
  resamples of a million rows take seconds. A resample in which an estimator is undefined
  (a self-normalised ratio with no weight) is NaN for that estimator: its interval is taken
  over the defined resamples and ``undefined`` reports their complement's share.
* ``refit_bootstrap`` — the same resamples, with the reward or Q model refitted on each
  (the resample's counts as sample weights), so the intervals of model-based estimators
  include the model's own error (Efron & Tibshirani 1993, ch. 6: resample the whole
  procedure). It costs one model fit per resample.
* ``bernstein_lower`` — the empirical-Bernstein lower confidence bound on a mean of
  bounded i.i.d. terms (Maurer & Pontil 2009, Thm 4; used for off-policy evaluation by
  Thomas, Theocharous & Ghavamzadeh 2015), with the terms' observed range as the range.
* ``diagnostics`` — effective sample size of the importance weights (Kish), the largest
  weight, and the evaluation policy's mass on actions the behaviour policy never takes.

Resamples come from the ``bootstrap`` stream of the run's seed (``personarl.seeds``): every
policy evaluated with one seed is resampled with the same counts (paired), and no other
purpose draws those numbers.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from ope.data import LoggedData
from ope.estimators import Estimator, Terms, cumulative_weights, ratio, weights
from personarl.seeds import generator
from personarl.stats import mean_ci

__all__ = ["bootstrap", "refit_bootstrap", "resample_counts", "percentile_interval",
           "bernstein_lower", "diagnostics", "EXACT_MAX_EPISODES"]

EXACT_MAX_EPISODES = 20_000
_CHUNK_ELEMENTS = 16_000_000           # counts held at once (float32: 64 MB)


def _poisson_table() -> np.ndarray:
    """``table[u]`` for ``u`` uniform in ``0..65535`` is Poisson(1)-distributed (to 2^-16)."""
    k = np.arange(12)
    pmf = np.exp(-1.0) / np.array([math.factorial(int(i)) for i in k])
    edges = np.round(np.cumsum(pmf) * 65536).astype(np.int64)
    return np.searchsorted(edges, np.arange(65536), side="right").astype(np.uint8)


_POISSON = _poisson_table()


def resample_counts(n_episodes: int, n_resamples: int, rng: np.random.Generator
                    ) -> Iterator[np.ndarray]:
    """Chunks of ``(b, n_episodes)`` float32 bootstrap counts, ``n_resamples`` rows in all."""
    per_chunk = max(1, min(n_resamples, _CHUNK_ELEMENTS // max(n_episodes, 1)))
    done = 0
    while done < n_resamples:
        b = min(per_chunk, n_resamples - done)
        if n_episodes <= EXACT_MAX_EPISODES:
            counts = rng.multinomial(n_episodes, np.full(n_episodes, 1.0 / n_episodes),
                                     size=b)
        else:
            counts = _POISSON[rng.integers(0, 65536, size=(b, n_episodes), dtype=np.uint16)]
        yield counts.astype(np.float32)
        done += b


class _Stacked:
    """Several estimators' terms stacked into matrices: ``values(counts)`` is every
    estimator on every resample in a few matrix products — float64 up to
    ``EXACT_MAX_EPISODES`` episodes (so a resample of identical episodes is exactly the
    point estimate), float32 above, for speed. Each ratio column is scaled by its largest
    denominator first (the ratio does not change); if a positive weight still underflows
    float32, the ratios are resampled in float64, so no resample reads a tiny weight as no
    weight (a spurious "undefined")."""

    def __init__(self, terms: Mapping[str, Terms]) -> None:
        self.names = list(terms)
        plain = np.stack([terms[k].plain for k in self.names], axis=1)
        small = len(plain) <= EXACT_MAX_EPISODES
        self.plain = plain.astype(np.float64 if small else np.float32)
        self.spans: dict[int, slice] = {}
        nums, dens, start = [], [], 0
        for j, k in enumerate(self.names):
            t = terms[k]
            if t.num is not None:
                nums.append(t.num)
                dens.append(t.den)
                self.spans[j] = slice(start, start + t.num.shape[1])
                start += t.num.shape[1]
        self.num = self.den = None
        if nums:
            num, den = np.concatenate(nums, axis=1), np.concatenate(dens, axis=1)
            scale = np.abs(den).max(axis=0)
            scale[scale == 0] = 1.0
            num, den = num / scale, den / scale
            exact = small or bool(((den != 0) & (den.astype(np.float32) == 0)).any())
            kind = np.float64 if exact else np.float32
            self.num, self.den = num.astype(kind), den.astype(kind)

    def values(self, counts: np.ndarray) -> np.ndarray:
        """``(b, estimators)`` resampled estimates (NaN where undefined)."""
        total = counts.sum(axis=1, dtype=np.float64)[:, None]
        block = (counts.astype(self.plain.dtype, copy=False) @ self.plain).astype(
            np.float64) / np.maximum(total, 1.0)
        if self.num is not None:
            c = counts.astype(self.den.dtype, copy=False)
            ratios = ratio((c @ self.num).astype(np.float64),
                           (c @ self.den).astype(np.float64))
            for j, span in self.spans.items():
                block[:, j] += ratios[:, span].sum(axis=1)
        return block


def percentile_interval(samples: np.ndarray, alpha: float) -> dict[str, Any]:
    """``{"low", "high", "se", "samples", "undefined"}``: the percentile interval over the
    defined (non-NaN) resamples, their standard deviation (the bootstrap standard error;
    Efron & Tibshirani 1993, §6.2) and the share of undefined ones (NaN bounds and SE if
    too few are defined)."""
    defined = samples[~np.isnan(samples)]
    low, high = (np.quantile(defined, [alpha / 2, 1 - alpha / 2]) if defined.size
                 else (np.nan, np.nan))
    se = float(np.std(defined, ddof=1)) if defined.size > 1 else np.nan
    return dict(low=float(low), high=float(high), se=se, samples=samples,
                undefined=float(1.0 - defined.size / len(samples)))


def _check(n_resamples: int, alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha={alpha!r} must be in (0, 1)")
    if n_resamples < 1:
        raise ValueError(f"n_resamples={n_resamples!r} must be >= 1")


def bootstrap(terms: Mapping[str, Terms], n_resamples: int = 1000, alpha: float = 0.05,
              seed: int = 0) -> dict[str, dict[str, Any]]:
    """Percentile intervals: ``{name: {"low", "high", "samples", "undefined"}}`` for every
    estimator, all computed from the same resamples of episodes (the ``bootstrap`` stream
    of ``seed``). ``samples`` is ``(n_resamples,)``, NaN where undefined."""
    _check(n_resamples, alpha)
    stacked = _Stacked(terms)
    n_episodes = len(stacked.plain)
    samples = np.empty((n_resamples, len(stacked.names)))
    row = 0
    for counts in resample_counts(n_episodes, n_resamples, generator(seed, "bootstrap")):
        samples[row:row + len(counts)] = stacked.values(counts)
        row += len(counts)
    return {k: percentile_interval(samples[:, j], alpha) for j, k in enumerate(stacked.names)}


def refit_bootstrap(data: LoggedData, policies: Mapping[str, np.ndarray],
                    estimators: Mapping[str, Estimator],
                    fit: Callable[[np.ndarray, np.ndarray], np.ndarray],
                    n_resamples: int = 200, alpha: float = 0.05, seed: int = 0,
                    shared_model: bool = True, **estimator_kwargs: Any
                    ) -> dict[str, dict[str, dict[str, Any]]]:
    """Percentile intervals of model-based estimators with the model refitted in every
    resample: ``{policy: {estimator: {"low", "high", "samples", "undefined"}}}``.

    Args:
        data: the logged data.
        policies: ``{label: pi_e}``, each ``(N, K)``: the evaluation policies'
            distributions on the logged observations.
        estimators: ``{name: function}`` from ``ope.estimators`` (model-based ones).
        fit: ``fit(row_weights, pi_e) -> q_hat`` — the model fitted with ``row_weights``
            ``(N,)`` (a resample's episode counts, per row) as sample weights, predicting
            ``(N, K)`` for every logged row; a fit that is not finite (nothing to fit on in
            that resample) makes the resample undefined.
        n_resamples: resamples (each costs one fit per policy, or one in all if
            ``shared_model``).
        alpha: ``1 − alpha`` intervals.
        seed: the run's seed (the resamples come from the same ``bootstrap`` stream as
            ``bootstrap``'s, so every policy gets the same ones).
        shared_model: the model does not depend on the policy (one-step reward models):
            fit once per resample for all policies.
        **estimator_kwargs: passed to every estimator (``gamma``, ``lam``).
    """
    _check(n_resamples, alpha)
    samples = {p: np.empty((n_resamples, len(estimators))) for p in policies}
    row = 0
    for chunk in resample_counts(data.n_episodes, n_resamples, generator(seed, "bootstrap")):
        for counts in chunk:
            row_weights = counts[data.episode].astype(np.float64)
            shared = fit(row_weights, next(iter(policies.values()))) if shared_model else None
            for label, pi_e in policies.items():
                q_hat = shared if shared_model else fit(row_weights, pi_e)
                if not np.isfinite(q_hat).all():     # e.g. a fold with nothing to fit on
                    samples[label][row] = np.nan
                    continue
                terms = {n: f(data, pi_e, q_hat=q_hat, **estimator_kwargs)
                         for n, f in estimators.items()}
                samples[label][row] = _Stacked(terms).values(counts[None])[0]
            row += 1
    return {label: {n: percentile_interval(s[:, j], alpha) for j, n in enumerate(estimators)}
            for label, s in samples.items()}


def bernstein_lower(values: np.ndarray, delta: float = 0.05) -> float:
    """A ``1 − δ`` lower bound on the mean of i.i.d. terms (empirical Bernstein, with the
    observed range standing in for the terms' a-priori range)."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n < 2:
        return float("-inf")
    log_term = math.log(2.0 / delta)
    spread = float(x.max() - x.min())
    return float(x.mean() - math.sqrt(2.0 * x.var(ddof=1) * log_term / n)
                 - 7.0 * spread * log_term / (3.0 * (n - 1)))


def diagnostics(data: LoggedData, pi_e: np.ndarray) -> dict[str, float | None]:
    """Importance-weight health: ``ess`` (Kish: (Σw)² / Σw² over episodes' final weights,
    or per decision for one-step data), ``ess_fraction`` (of the episodes), ``max_weight``,
    ``mean_weight`` and its 95% t-interval ``mean_weight_ci`` (NaN for one episode;
    E_b[w] is 1 minus the evaluation policy's mass outside the behaviour's support when the
    propensities are right), and ``unsupported_mass`` — the evaluation policy's average
    probability on actions the behaviour policy gives probability 0 (``None`` without the
    behaviour's full distribution)."""
    if data.max_episode_length == 1:
        w = weights(data, pi_e)
    else:
        w = cumulative_weights(data, pi_e)[:, -1]
    ess = float(w.sum() ** 2 / max((w ** 2).sum(), 1e-300))
    unsupported = None
    if data.action_probs is not None:
        unsupported = float((pi_e * (data.action_probs <= 0)).sum(axis=1).mean())
    mean, low, high = mean_ci(w)
    return dict(ess=ess, ess_fraction=ess / len(w), max_weight=float(w.max()),
                mean_weight=mean, mean_weight_ci=(low, high), unsupported_mass=unsupported)
