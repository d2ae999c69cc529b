"""The statistics several reports share: Student-t intervals and the percentile bootstrap.

NumPy only at import; the t quantile comes from ``scipy.stats`` (the ``train`` extra),
imported when first asked for, so ``import personarl`` — and with it the simulator — never
needs SciPy.

* ``mean_ci`` / ``paired_ci`` — the mean with its Student-t interval
  ``x̄ ± t_{(1+level)/2, n−1} · s / √n`` (Student 1908; ``s`` with ``ddof=1``); paired: the
  same on ``a − b`` over paired units (the final evaluation's common users).
* ``softmax`` — probabilities from scores (every policy that turns scores into a
  distribution uses this one).
* ``bootstrap_ci`` — the percentile bootstrap (Efron & Tibshirani 1993, ch. 13): resample
  each sample with replacement, independently, ``reps`` times; the interval is the
  ``(1 ∓ level)/2`` quantiles of the statistic over the resamples.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from personarl.errors import ConfigError, check_int, check_range

__all__ = ["mean_ci", "paired_ci", "t_quantile", "bootstrap_ci", "softmax"]


def softmax(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax at temperature τ, ``exp((z − max z)/τ) / Σ exp((z − max z)/τ)``,
    over the last axis of ``z`` (``(N, K)`` logits or scores -> ``(N, K)`` probabilities;
    Boltzmann / softmax action selection, Sutton & Barto 2018, §2.8). Shifting by the row
    maximum before dividing keeps ``exp`` from overflowing for every τ > 0 (the largest
    scores keep ``exp(0) = 1``) and does not change the result."""
    z = z - z.max(axis=-1, keepdims=True)
    if temperature != 1.0:
        with np.errstate(over="ignore"):      # −inf for the far-below-max: exp gives 0
            z = z / temperature
    z = np.exp(z)
    return z / z.sum(axis=-1, keepdims=True)


def t_quantile(q: float, dof: int) -> float:
    """The ``q`` quantile of Student's t with ``dof`` degrees of freedom (``scipy.stats``)."""
    from scipy import stats

    return float(stats.t.ppf(q, dof))


def mean_ci(x: np.ndarray, level: float = 0.95, axis: int | None = None
            ) -> tuple[float, float, float] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and Student-t interval ``(mean, low, high)``.

    Args:
        x: the observations; ``axis=None`` flattens them, an int takes means along it
            (``(n, m)`` with ``axis=0`` gives three ``(m,)`` arrays).
        level: coverage in (0, 1).

    Returns floats (arrays with ``axis``); ``low``/``high`` are NaN with fewer than two
    observations. Raises ``ConfigError`` for a level outside (0, 1).
    """
    check_range("level", level, 0, 1, low_open=True, high_open=True)
    x = np.asarray(x, dtype=np.float64)
    if axis is None:
        x = x.ravel()
        axis = 0
    n = x.shape[axis]
    m = x.mean(axis=axis)
    if n < 2:
        nan = np.full_like(m, np.nan)
        return (float(m), float("nan"), float("nan")) if m.ndim == 0 else (m, nan, nan.copy())
    half = t_quantile(0.5 + level / 2, n - 1) * x.std(axis=axis, ddof=1) / np.sqrt(n)
    if m.ndim == 0:
        return float(m), float(m - half), float(m + half)
    return m, m - half, m + half


def paired_ci(a: np.ndarray, b: np.ndarray, level: float = 0.95
              ) -> tuple[float, float, float]:
    """Mean of ``a − b`` over paired units ``(n,)`` with its Student-t interval."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ConfigError(f"paired samples must have one shape; got {a.shape} and {b.shape}")
    return mean_ci(a - b, level)


def bootstrap_ci(samples: Sequence[np.ndarray], statistic: Callable[..., np.ndarray],
                 rng: np.random.Generator, reps: int = 2000, level: float = 0.95
                 ) -> tuple[float, float, float]:
    """``(point, low, high)``: ``statistic(*samples)`` and its percentile-bootstrap interval.

    Args:
        samples: one or more 1-D samples, each resampled independently (in order, from
            ``rng``: the first sample's ``(reps, n₁)`` indices, then the second's, …).
        statistic: ``(*arrays) -> value``; called once on the samples (``(n,)`` each) and
            once on the resamples (``(reps, n)`` each), where it must reduce the last axis
            and return ``(reps,)``.
        rng: the generator (a purpose stream of ``personarl.seeds``).
        reps: resamples, >= 1.
        level: coverage in (0, 1).

    ``low``/``high`` are NaN when a sample holds fewer than two observations.
    """
    check_int("reps", reps, 1)
    check_range("level", level, 0, 1, low_open=True, high_open=True)
    arrays = [np.asarray(s, dtype=float) for s in samples]
    point = float(statistic(*arrays))
    if min(len(s) for s in arrays) < 2:
        return point, float("nan"), float("nan")
    boot = statistic(*[s[rng.integers(0, len(s), size=(reps, len(s)))] for s in arrays])
    return (point, float(np.quantile(boot, 0.5 - level / 2)),
            float(np.quantile(boot, 0.5 + level / 2)))
