"""A Gaussian mixture over a table's encoded rows — fitted by scikit-learn, or with
differential privacy by noisy sufficient statistics (DP-GMM, written here).

**Without DP** ``fit_gmm`` fits ``sklearn.mixture.GaussianMixture`` (full covariances,
EM from k-means++ starts, ``reg_covar`` added to each diagonal) to the encoded matrix
(``synth.generators.table``: numeric columns standardised, categorical ones one-hot).

**With DP** (``epsilon`` given) no maintained library ships a DP Gaussian mixture, so it is
written here from two published pieces, every step a Gaussian mechanism on sums whose
per-user contribution is bounded by clipping (add/remove one user):

1. *Private standardisation.* Each numeric value is clipped to its column's public bounds
   and mapped to ``u ∈ [−1, 1]``; the per-user vector ``(1, u, u²) / √(1 + 2d)`` has norm
   ≤ 1, so its sum released with Gaussian noise gives the count and each column's mean and
   variance (centre and scale of the encoder).
2. *DP k-means initialisation* — DPLloyd (Blum, Dwork, McSherry & Nissim 2005, "Practical
   privacy: the SuLQ framework"; Su et al. 2016, "Differentially private k-means
   clustering", CODASPY): from data-independent random centres, ``lloyd_rounds`` rounds of
   assigning each (norm-clipped) row to its nearest centre and moving each centre to its
   cluster's noisy sum over its noisy count. A centre whose noisy count falls below
   ``MIN_COUNT_SIGMAS`` noise standard deviations is re-drawn at random.
3. *Noisy sufficient statistics* — the M-step of DP-EM (Park, Foulds, Chaudhuri & Welling
   2017, "DP-EM: Differentially private expectation maximization", AISTATS) on the hard
   assignment to the final centres ``μ̃``: per component the count ``N_k``, the sum
   ``S_k = Σ z_i`` (rows clipped to norm ``C``) and the scatter
   ``Q_k = Σ r_i r_iᵀ`` of residuals ``r_i = z_i − μ̃_k`` clipped to norm ``C_Q``, released
   together with Gaussian noise (``Q_k``'s upper triangle, mirrored). Then
   ``π_k ∝ N̂_k``, ``m_k = Ŝ_k / N̂_k`` and ``Σ_k = Q̂_k / N̂_k − (m_k − μ̃_k)(m_k − μ̃_k)ᵀ``
   projected onto the positive-definite matrices (eigenvalues clipped to
   ``[EIGEN_FLOOR, C²]``); components whose noisy count is below the threshold are dropped.

**Components under DP.** ``n_components`` is a ceiling: a component's scatter carries noise
of SD ``σ_c · C_Q² / w_Q`` per entry (``w_Q`` its weight in the final release), so its
covariance is only as good as its count is large. The DP fit uses
``K = min(n_components, ⌊n̂ · w_Q · COVARIANCE_TOLERANCE / (σ_c · C_Q²)⌋)`` (at least 1),
with ``n̂`` the noisy count of step 1 — post-processing, it costs nothing — so that the
noise on an average component's covariance stays below ``COVARIANCE_TOLERANCE``
(standardised units²). On 5,000 users of the behaviour table that is 8 components at
ε ≥ 1 and 1 at ε = 0.1, where eight would give an MMD² three times larger
(``BENCHMARKS.md``). The count used is in the generator's ``privacy["components"]``.

The clipping radii are public functions of the spec, not of the data: ``C = clip · √w``
and ``C_Q = residual_clip · √w`` where ``w`` is the expected squared norm of a standardised
row (one per numeric column, one per categorical column). Each release's vector is scaled
to sensitivity 1, so the whole fit is the composition of Gaussian mechanisms with noise
multipliers ``σ_a`` (standardisation), ``σ_b`` (each Lloyd round) and ``σ_c`` (the
statistics), ``σ_i = t / √ρ_i`` for budget shares ``ρ`` that sum to 1; ``t`` is calibrated
so that the ledger's PLD accountant gives exactly the ε asked for
(``synth.privacy.ledger.calibrate``). The fit is one ledger entry (``kind="fit"``): refused
before anything is computed if it would cross the ledger's budget.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from personarl.errors import ConfigError, DataError, check_int, check_range
from synth.generators.base import MAX_FIT_SEED, Generator, fitting_rows
from synth.generators.table import TableEncoder, TableSpec, check_table
from synth.population import categorical

__all__ = ["GaussianMixtureGenerator", "fit_gmm", "dp_components", "BUDGET_SHARES",
           "EIGEN_FLOOR", "MIN_COUNT_SIGMAS", "COVARIANCE_TOLERANCE"]

#: the DP fit's budget shares: standardisation, all Lloyd rounds, the final statistics
BUDGET_SHARES = {"standardise": 0.1, "lloyd": 0.3, "statistics": 0.6}
#: within a Lloyd release: (count, sum) weights; within the final one: (count, sum, scatter)
_LLOYD_WEIGHTS = (0.5, math.sqrt(0.75))
_FINAL_WEIGHTS = (0.35, 0.55, math.sqrt(1 - 0.35 ** 2 - 0.55 ** 2))
#: the smallest eigenvalue a DP component's covariance keeps (standardised units²)
EIGEN_FLOOR = 1e-3
#: a DP centre or component needs a noisy count of this many noise standard deviations
MIN_COUNT_SIGMAS = 3.0
#: the noise SD a DP component's covariance may carry per entry (standardised units²)
COVARIANCE_TOLERANCE = 0.1


class GaussianMixtureGenerator(Generator):
    """A fitted Gaussian mixture: arrays ``weights (K,)``, ``means (K, D)`` and
    ``cholesky (K, D, D)`` (lower factors of the covariances), in encoded units."""

    kind = "gmm"

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        k, d = np.shape(self.arrays.get("weights", ()))[:1] or (-1,), self.spec.width
        return {"weights": (k[0],), "means": (k[0], d), "cholesky": (k[0], d, d)}

    def _draw(self, n: int, rng: np.random.Generator) -> pd.DataFrame:
        w, means, chol = (self.arrays[k] for k in ("weights", "means", "cholesky"))
        comp = categorical(w, rng.random(n))
        e = rng.standard_normal((n, means.shape[1]))
        z = means[comp] + np.einsum("nij,nj->ni", chol[comp], e)
        return self.encoder.decode(z)


def _clip_rows(z: np.ndarray, radius: float) -> np.ndarray:
    norm = np.linalg.norm(z, axis=1, keepdims=True)
    return z * np.minimum(1.0, radius / np.maximum(norm, 1e-300))


def _nearest(z: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Each row's nearest centre."""
    from scipy.spatial.distance import cdist

    return cdist(z, centres, "sqeuclidean").argmin(axis=1)


def _cluster_sums(z: np.ndarray, label: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(counts (k,), sums (k, D))`` of the rows of ``z`` in each of ``k`` clusters."""
    members = np.zeros((len(z), k))
    members[np.arange(len(z)), label] = 1.0
    return members.sum(axis=0), members.T @ z


def _private_encoder(spec: TableSpec, table: pd.DataFrame, sigma: float,
                     rng: np.random.Generator) -> tuple[TableEncoder, float]:
    """Step 1: the encoder's centre and scale, and the noisy row count, from one Gaussian
    release (module doc)."""
    x = TableEncoder.numeric_values(spec, table)
    d = x.shape[1]
    low = np.array([c.bounds[0] for c in spec.numeric])
    high = np.array([c.bounds[1] for c in spec.numeric])
    mid, half = (low + high) / 2, (high - low) / 2
    u = (x - mid) / half
    norm = math.sqrt(1 + 2 * d)
    total = np.concatenate([[len(u)], u.sum(0), (u * u).sum(0)])
    noisy = (total / norm + rng.normal(0.0, sigma, total.shape)) * norm
    count = max(noisy[0], 1.0)
    mean = np.clip(noisy[1:1 + d] / count, -1, 1)
    # a variance below three noise SDs of its own estimate is noise: floored there (too
    # wide a scale only loosens the clipping; too narrow a one would clip everyone)
    floor = min(3 * sigma * norm / count, 1.0)
    var = np.clip(noisy[1 + d:] / count - mean ** 2, max(floor, 1e-6), 1.0)
    return TableEncoder(spec, mid + half * mean, half * np.sqrt(var)), float(noisy[0])


def _initial_centres(spec: TableSpec, k: int, rng: np.random.Generator) -> np.ndarray:
    """Data-independent centres: standard normals (× ½) in the numeric columns, each
    categorical block a jittered uniform distribution."""
    c = np.zeros((k, spec.width))
    m = len(spec.numeric)
    c[:, :m] = 0.5 * rng.standard_normal((k, m))
    for col, block in spec.blocks():
        c[:, block] = 1.0 / col.width + 0.1 * rng.standard_normal((k, col.width))
    return c


def _dp_mixture(z: np.ndarray, spec: TableSpec, k: int, sigmas: dict[str, float],
                rounds: int, clip: float, residual_clip: float,
                rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Steps 2 and 3 on the encoded matrix ``z`` (module doc)."""
    n, dim = z.shape
    z = _clip_rows(z, clip)
    centres = _initial_centres(spec, k, rng)
    a, b = _LLOYD_WEIGHTS
    for _ in range(rounds):
        label = _nearest(z, centres)
        counts, sums = _cluster_sums(z, label, k)
        sigma = sigmas["lloyd"]
        n_hat = counts + rng.normal(0, sigma / a, k)
        s_hat = sums + rng.normal(0, sigma * clip / b, (k, dim))
        alive = n_hat > MIN_COUNT_SIGMAS * sigma / a
        centres[alive] = s_hat[alive] / n_hat[alive, None]
        if (~alive).any():
            centres[~alive] = _initial_centres(spec, int((~alive).sum()), rng)
    label = _nearest(z, centres)
    resid = _clip_rows(z - centres[label], residual_clip)
    counts, sums = _cluster_sums(z, label, k)
    scatter = np.stack([resid[label == j].T @ resid[label == j] for j in range(k)])
    sigma = sigmas["statistics"]
    a, b, c = _FINAL_WEIGHTS
    n_hat = counts + rng.normal(0, sigma / a, k)
    s_hat = sums + rng.normal(0, sigma * clip / b, (k, dim))
    upper = np.triu(rng.normal(0, sigma * residual_clip ** 2 / c, (k, dim, dim)))
    q_hat = scatter + upper + np.triu(upper, 1).transpose(0, 2, 1)
    keep = n_hat > MIN_COUNT_SIGMAS * sigma / a
    if not keep.any():
        keep = n_hat == n_hat.max()
    n_hat, s_hat, q_hat, mu = n_hat[keep], s_hat[keep], q_hat[keep], centres[keep]
    means = s_hat / n_hat[:, None]
    shift = means - mu
    cov = q_hat / n_hat[:, None, None] - shift[:, :, None] * shift[:, None, :]
    values, vectors = np.linalg.eigh((cov + cov.transpose(0, 2, 1)) / 2)
    values = np.clip(values, EIGEN_FLOOR, clip ** 2)
    cov = np.einsum("kij,kj,klj->kil", vectors, values, vectors)
    return {"weights": n_hat / n_hat.sum(), "means": means,
            "cholesky": np.linalg.cholesky(cov)}


def dp_components(ceiling: int, count: float, sigma: float, residual_clip: float) -> int:
    """The DP fit's component count (module doc): at most ``ceiling``, at least 1.

    Args:
        count: the noisy row count ``n̂``.
        sigma: ``σ_c``, the final release's noise multiplier.
        residual_clip: ``C_Q`` in encoded units.
    """
    scatter_sd = sigma * residual_clip ** 2 / _FINAL_WEIGHTS[2]
    return int(min(ceiling, max(1, math.floor(count * COVARIANCE_TOLERANCE / scatter_sd))))


def _events(t: float, rounds: int) -> tuple[Any, dict[str, float]]:
    """The DP fit's composed event for calibration scale ``t``, and its noise multipliers."""
    from dp_accounting import ComposedDpEvent, GaussianDpEvent, SelfComposedDpEvent

    sigmas = {"standardise": t / math.sqrt(BUDGET_SHARES["standardise"]),
              "lloyd": t / math.sqrt(BUDGET_SHARES["lloyd"] / rounds),
              "statistics": t / math.sqrt(BUDGET_SHARES["statistics"])}
    event = ComposedDpEvent([GaussianDpEvent(sigmas["standardise"]),
                             SelfComposedDpEvent(GaussianDpEvent(sigmas["lloyd"]), rounds),
                             GaussianDpEvent(sigmas["statistics"])])
    return event, sigmas


def fit_gmm(table: pd.DataFrame, spec: TableSpec, n_components: int = 8, *, seed: int = 0,
            epsilon: float | None = None, ledger: Any = None, label: str = "gmm",
            lloyd_rounds: int = 4, clip: float = 1.5, residual_clip: float = 1.0,
            reg_covar: float = 1e-4) -> GaussianMixtureGenerator:
    """Fit a Gaussian mixture to ``table``'s ``spec`` columns (module doc).

    Only consenting users are fitted on when the table has a ``consent`` column; a DP fit
    requires one (``synth.privacy.consent.consenting``: one row per user).

    Args:
        table: one row per user.
        spec: the modelled columns.
        n_components: ``K``; without DP at most the number of rows; with DP a ceiling
            (``dp_components``).
        seed: the fit's randomness (EM starts; DP noise and initial centres).
        epsilon: fit with differential privacy at this ε (δ is the ledger's); ``None``:
            without.
        ledger: the dataset's ``PrivacyLedger`` — required with ``epsilon``.
        label: what the ledger entry is called.
        lloyd_rounds, clip, residual_clip: the DP fit's rounds and clipping (module doc).
        reg_covar: added to each covariance's diagonal without DP (scikit-learn's).

    Raises:
        ConfigError: a bad argument; ``epsilon`` without a ledger, or a ledger without
            ``epsilon``.
        DataError: the table does not fit the spec (``check_table``), or has fewer rows than
            components (without DP).
        PrivacyBudgetExceeded: the ledger cannot pay for the fit (nothing was computed).
    """
    k = check_int("n_components", n_components, 1, 1000)
    seed = check_int("seed", seed, 0, MAX_FIT_SEED)
    rows = check_table(fitting_rows(table, private=epsilon is not None), spec)
    rng = np.random.default_rng(seed)
    if epsilon is None:
        if ledger is not None:
            raise ConfigError("a ledger was given but no epsilon: a fit without differential "
                              "privacy spends nothing; give epsilon= to fit with it")
        if len(rows) < k:
            raise DataError(f"{len(rows)} row(s) cannot fit n_components={k}; give fewer "
                            "components or more rows")
        from sklearn.mixture import GaussianMixture

        encoder = TableEncoder.fit(spec, rows)
        z = encoder.encode(rows)
        model = GaussianMixture(n_components=k, covariance_type="full", reg_covar=reg_covar,
                                random_state=seed, max_iter=300).fit(z)
        arrays = {"weights": model.weights_, "means": model.means_,
                  "cholesky": np.linalg.cholesky(model.covariances_)}
        return GaussianMixtureGenerator(encoder, arrays, len(rows))
    rounds = check_int("lloyd_rounds", lloyd_rounds, 1, 100)
    clip = check_range("clip", clip, 0.1, 100)
    residual_clip = check_range("residual_clip", residual_clip, 0.1, 100)
    from synth.privacy.ledger import calibrate, check_ledger

    ledger = check_ledger(ledger, "a differentially private fit")
    t = calibrate(lambda s: _events(s, rounds)[0], epsilon, ledger.delta)
    event, sigmas = _events(t, rounds)
    width = math.sqrt(len(spec.numeric) + len(spec.categorical))
    with ledger.spend(event, kind="fit", label=label) as entry:
        encoder, count = _private_encoder(spec, rows, sigmas["standardise"], rng)
        k = dp_components(k, count, sigmas["statistics"], residual_clip * width)
        arrays = _dp_mixture(encoder.encode(rows), spec, k, sigmas, rounds, clip * width,
                             residual_clip * width, rng)
    privacy = {"epsilon": float(epsilon), "delta": ledger.delta, "ledger": str(ledger.path),
               "entry": entry["id"], "method": "dp-lloyd + noisy sufficient statistics",
               "noise_multipliers": sigmas, "components": k}
    # the exact row count is not released: the noisy one from step 1 is
    return GaussianMixtureGenerator(encoder, arrays, max(round(count), 0), privacy)
