"""Fidelity and memorisation metrics of synthetic rows (the measuring side of issue 22)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from personarl.errors import ConfigError, DataError
from synth.fidelity import (coverage, dcr_share, feature_kl, median_distance,
                            memorisation_gate, mmd2)


def _normal(n, d=4, shift=0.0, seed=0):
    return np.random.default_rng(seed).normal(shift, 1.0, size=(n, d))


def test_mmd2_is_the_unbiased_estimator():
    x, y = _normal(40, seed=1), _normal(30, shift=0.5, seed=2)
    sigma = 1.3
    k = lambda a, b: np.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / (2 * sigma ** 2))
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    brute = ((kxx.sum() - np.trace(kxx)) / (40 * 39) + (kyy.sum() - np.trace(kyy)) / (30 * 29)
             - 2 * kxy.mean())
    assert mmd2(x, y, bandwidth=sigma) == pytest.approx(brute, rel=1e-10)


def test_mmd2_is_near_zero_for_one_distribution_and_grows_with_the_shift():
    real = _normal(2000, seed=3)
    same = mmd2(real, _normal(2000, seed=4))
    assert abs(same) < 2e-3
    shifts = [mmd2(real, _normal(2000, shift=s, seed=5)) for s in (0.1, 0.3, 1.0)]
    assert same < shifts[0] < shifts[1] < shifts[2]
    # the difference of two N(0, I₄) rows is N(0, 2 I₄): its length is sqrt(2 χ²₄)
    assert median_distance(real) == pytest.approx(np.sqrt(2 * stats.chi2(4).median()),
                                                  rel=0.02)


def test_feature_kl_per_feature():
    real = _normal(5000, d=2, seed=6)
    synthetic = real.copy()
    synthetic[:, 1] += 1.0                            # only the second feature moves
    kl = feature_kl(real, synthetic)
    assert kl.shape == (2,) and kl[0] == pytest.approx(0.0, abs=1e-12) and kl[1] > 0.3
    # a hand-computed case: 2 bins split at the real median, every synthetic row above it
    real2 = np.array([[0.0], [1.0], [2.0], [3.0]])
    p = (np.array([2, 2]) + 0.5) / 5
    q = (np.array([0, 4]) + 0.5) / 5
    assert feature_kl(real2, np.full((4, 1), 5.0), bins=2)[0] == pytest.approx(
        np.sum(p * np.log(p / q)))


def test_coverage_sees_a_collapsed_generator():
    real = _normal(1000, seed=7)
    assert coverage(real, _normal(1000, seed=8)) > 0.9
    assert coverage(real, np.zeros((1000, 4))) < 0.1


def test_dcr_gate_fails_a_planted_leak_and_passes_a_clean_generator():
    train, holdout = _normal(2000, seed=9), _normal(2000, seed=10)
    clean = _normal(2000, seed=11)
    leak = np.vstack([train[:1000], _normal(1000, seed=12)])  # half copied from training
    clean_share, leak_share = dcr_share(clean, train, holdout), dcr_share(leak, train, holdout)
    assert memorisation_gate(clean_share) and abs(clean_share - 0.5) < 0.03
    assert not memorisation_gate(leak_share) and leak_share > 0.7
    with pytest.raises(DataError, match="equal size"):
        dcr_share(clean, train, holdout[:10])


def test_bad_tables_are_named():
    real = _normal(10)
    for bad, message in ((np.empty((0, 4)), "at least one row"),
                         (np.ones(4), "at least one row"),
                         (_normal(10, d=3), "has 3 features"),
                         (np.where(np.eye(10, 4) == 1, np.nan, 0.0), "row 0 feature 0"),
                         ([["a", "b", "c", "d"]], "not numbers")):
        with pytest.raises(DataError, match=message):
            mmd2(real, bad)
    with pytest.raises(ConfigError, match="bandwidth"):
        mmd2(real, real, bandwidth=0)
    with pytest.raises(ConfigError, match="bins"):
        feature_kl(real, real, bins=1)
    with pytest.raises(DataError, match="median distance is 0"):
        mmd2(np.ones((5, 2)), np.zeros((5, 2)))
    with pytest.raises(ConfigError, match="share"):
        memorisation_gate(1.5)


def test_categorical_kl_counts_categories_with_add_half():
    from synth.fidelity import categorical_kl

    assert categorical_kl(["a", "b"] * 50, ["b", "a"] * 50, ["a", "b"]) == 0.0
    # real 3:1, synthetic 1:3 -> p = (3.5, 1.5)/5, q = (1.5, 3.5)/5
    p, q = np.array([3.5, 1.5]) / 5, np.array([1.5, 3.5]) / 5
    got = categorical_kl(["a", "a", "a", "b"], ["a", "b", "b", "b"], ["a", "b"])
    assert got == pytest.approx(float(np.sum(p * np.log(p / q))))
    with pytest.raises(DataError, match="'c'; the categories are"):
        categorical_kl(["a"], ["c"], ["a", "b"])
