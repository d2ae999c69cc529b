"""How close synthetic rows are to real ones, how much of the real data they cover, and
whether they copy their training rows.

All functions take ``(n, d)`` float arrays of the same ``d`` features (standardise them
first: distances mix the features' units).

* ``mmd2`` — the unbiased estimator of the squared maximum mean discrepancy with an RBF
  kernel ``k(a, b) = exp(−‖a − b‖² / (2 σ²))`` (Gretton et al. 2012, JMLR 13, eq. 3);
  ``σ`` defaults to ``median_distance`` of the real rows (the median heuristic, ibid.
  §8). 0 in expectation when both samples come from one distribution; it can be slightly
  negative.
* ``feature_kl`` — per feature, ``KL(real ‖ synthetic)`` over ``bins`` quantile bins of
  the real values (edges at the real data's quantiles; a value beyond the outer edges falls
  in the outer bins; repeated edges — a feature with ties — merge bins), each bin's count
  plus ½ (add-½ smoothing, Krichevsky & Trofimov 1981) before normalising.
* ``categorical_kl`` — the same for a categorical column: ``KL(real ‖ synthetic)`` of the
  category frequencies, each count plus ½.
* ``coverage`` — the share of real rows whose ``k``-nearest-real-neighbour ball holds at
  least one synthetic row (Naeem et al. 2020, "Reliable fidelity and diversity metrics for
  generative models", ICML): the diversity of the synthetic rows, 1 when they spread over
  all of the real data.
* ``dcr_share`` — the distance-to-closest-record share: the fraction of synthetic rows
  closer to the training rows than to an equally large held-out set (ties count ½). A
  generator that does not memorise scores ≈ 0.5; one that copies training rows scores
  above (Platzer & Reutterer 2021, "Holdout-based fidelity and privacy assessment of
  mixed-type synthetic data"). Computed on the full data, never subsampled.
  ``memorisation_gate`` passes a share within ``tolerance`` of 0.5.

Nearest neighbours come from scikit-learn and distances from SciPy (the ``privacy`` or
``discover`` extra), imported when a function needs them; the rest is NumPy.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from personarl.errors import DataError, check_int, check_matrix, check_range

__all__ = ["median_distance", "mmd2", "feature_kl", "categorical_kl", "coverage", "dcr_share",
           "memorisation_gate", "MEDIAN_ROWS"]

#: ``median_distance`` uses every pair of at most this many rows (a random subset above)
MEDIAN_ROWS = 5_000
_BLOCK = 1_024        # rows of a kernel block: 1,024 × n doubles at a time


def median_distance(real: np.ndarray, rng: np.random.Generator | None = None) -> float:
    """The median Euclidean distance between pairs of distinct real rows — over every pair
    of up to ``MEDIAN_ROWS`` rows, else of a random subset of that many (``rng``).

    Raises:
        DataError: fewer than two rows, or bad values (``personarl.errors.check_matrix``).
    """
    real = check_matrix("real", real)
    if len(real) < 2:
        raise DataError("the median distance needs at least two real rows")
    if len(real) > MEDIAN_ROWS:
        rng = rng if rng is not None else np.random.default_rng(0)
        real = real[rng.choice(len(real), MEDIAN_ROWS, replace=False)]
    from scipy.spatial.distance import pdist

    return float(np.median(pdist(real)))


def _kernel_sum(a: np.ndarray, b: np.ndarray, gamma: float, same: bool) -> float:
    """``Σ_{i,j} exp(−γ ‖a_i − b_j‖²)``, without the diagonal if ``same``."""
    from scipy.spatial.distance import cdist

    total = 0.0
    for lo in range(0, len(a), _BLOCK):
        k = np.exp(-gamma * cdist(a[lo:lo + _BLOCK], b, "sqeuclidean"))
        total += float(k.sum())
    return total - (len(a) if same else 0.0)            # the diagonal: exp(0) = 1 each


def mmd2(real: np.ndarray, synthetic: np.ndarray, bandwidth: float | None = None) -> float:
    """The unbiased MMD² between ``real`` ``(m, d)`` and ``synthetic`` ``(n, d)`` with an
    RBF kernel of ``bandwidth`` σ (default: ``median_distance(real)``).

    Raises:
        DataError: fewer than two rows on either side, different feature counts, or values
            that are not finite.
        ConfigError: a bandwidth that is not > 0 and finite.
    """
    real = check_matrix("real", real)
    synthetic = check_matrix("synthetic", synthetic, real.shape[1])
    m, n = len(real), len(synthetic)
    if m < 2 or n < 2:
        raise DataError(f"the unbiased MMD² needs at least two rows on each side; got {m} "
                        f"real and {n} synthetic")
    sigma = median_distance(real) if bandwidth is None else check_range(
        "bandwidth", bandwidth, 0.0, math.inf, low_open=True, high_open=True)
    if sigma == 0.0:
        raise DataError("every real row is the same: the median distance is 0, so no RBF "
                        "bandwidth follows from it; give bandwidth=")
    gamma = 1.0 / (2.0 * sigma * sigma)
    xx = _kernel_sum(real, real, gamma, True) / (m * (m - 1))
    yy = _kernel_sum(synthetic, synthetic, gamma, True) / (n * (n - 1))
    xy = _kernel_sum(real, synthetic, gamma, False) / (m * n)
    return float(xx + yy - 2.0 * xy)


def feature_kl(real: np.ndarray, synthetic: np.ndarray, bins: int = 20) -> np.ndarray:
    """``(d,)`` ``KL(real ‖ synthetic)`` of each feature over ``bins`` quantile bins of the
    real values, with add-½ smoothing (module doc), in nats.

    Raises:
        DataError: bad tables (``personarl.errors.check_matrix``) or different feature counts.
        ConfigError: ``bins`` < 2.
    """
    real = check_matrix("real", real)
    synthetic = check_matrix("synthetic", synthetic, real.shape[1])
    bins = check_int("bins", bins, 2)
    out = np.empty(real.shape[1])
    quantiles = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    for j in range(real.shape[1]):
        edges = np.unique(np.quantile(real[:, j], quantiles))
        p = np.bincount(np.searchsorted(edges, real[:, j], side="right"),
                        minlength=len(edges) + 1) + 0.5
        q = np.bincount(np.searchsorted(edges, synthetic[:, j], side="right"),
                        minlength=len(edges) + 1) + 0.5
        p, q = p / p.sum(), q / q.sum()
        out[j] = float(np.sum(p * np.log(p / q)))
    return out


def categorical_kl(real: Sequence[Any], synthetic: Sequence[Any],
                   categories: Sequence[Any]) -> float:
    """``KL(real ‖ synthetic)`` of the frequencies of ``categories`` with add-½ smoothing,
    in nats.

    Raises:
        DataError: no real or no synthetic values, or a value outside ``categories``
            (naming it).
    """
    index = {c: i for i, c in enumerate(categories)}
    counts = []
    for name, values in (("real", real), ("synthetic", synthetic)):
        values = list(values)
        if not values:
            raise DataError(f"{name} holds no values")
        bad = [v for v in values if v not in index]
        if bad:
            raise DataError(f"{name} holds {bad[0]!r}; the categories are {list(categories)}")
        counts.append(np.bincount([index[v] for v in values], minlength=len(index)) + 0.5)
    p, q = (c / c.sum() for c in counts)
    return float(np.sum(p * np.log(p / q)))


def _nearest(reference: np.ndarray, queries: np.ndarray, k: int = 1) -> np.ndarray:
    """``(len(queries), k)`` distances to the ``k`` nearest reference rows (exact)."""
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=k).fit(reference)
    return index.kneighbors(queries, return_distance=True)[0]


def coverage(real: np.ndarray, synthetic: np.ndarray, k: int = 5) -> float:
    """The share of real rows whose ball to their ``k``-th nearest other real row holds a
    synthetic row (Naeem et al. 2020), in [0, 1].

    Raises:
        DataError: bad tables, or no more than ``k`` real rows.
        ConfigError: ``k`` < 1.
    """
    real = check_matrix("real", real)
    synthetic = check_matrix("synthetic", synthetic, real.shape[1])
    k = check_int("k", k, 1)
    if len(real) <= k:
        raise DataError(f"coverage with k={k} needs more than {k} real rows; got {len(real)}")
    radius = _nearest(real, real, k + 1)[:, k]        # the first neighbour is the row itself
    nearest_synthetic = _nearest(synthetic, real, 1)[:, 0]
    return float(np.mean(nearest_synthetic <= radius))


def dcr_share(synthetic: np.ndarray, train: np.ndarray, holdout: np.ndarray) -> float:
    """The fraction of synthetic rows closer to their nearest training row than to their
    nearest held-out row, ties counting ½ (module doc); ≈ 0.5 when nothing is memorised.

    Raises:
        DataError: bad tables, or a held-out set of another size than the training set
            (the share's 0.5 assumes equal sizes).
    """
    train = check_matrix("train", train)
    holdout = check_matrix("holdout", holdout, train.shape[1])
    synthetic = check_matrix("synthetic", synthetic, train.shape[1])
    if len(train) != len(holdout):
        raise DataError(f"the training set has {len(train)} rows and the held-out set "
                        f"{len(holdout)}; the distance-to-closest-record share compares "
                        "sets of equal size")
    to_train = _nearest(train, synthetic)[:, 0]
    to_holdout = _nearest(holdout, synthetic)[:, 0]
    return float(np.mean((to_train < to_holdout) + 0.5 * (to_train == to_holdout)))


def memorisation_gate(share: float, tolerance: float = 0.03) -> bool:
    """Whether a DCR share passes: within ``tolerance`` of 0.5.

    Raises:
        ConfigError: ``share`` outside [0, 1] or ``tolerance`` outside [0, 0.5].
    """
    share = check_range("share", share, 0.0, 1.0)
    tolerance = check_range("tolerance", tolerance, 0.0, 0.5)
    return abs(share - 0.5) <= tolerance
