"""Reward over-optimisation: distances from the base policy and the scaling-law fits.

Along optimisation of a proxy (learned) reward, Gao, Schulman & Hilton (2023, "Scaling
Laws for Reward Model Overoptimization") measure the distance from the initial policy
``π₀`` as ``d = √KL(π ‖ π₀)`` and fit the gold (true) reward's change from ``π₀`` as

    best-of-n:  R_bon(d) = d · (α − β · d)
    RL:         R_RL(d)  = d · (α − β · log d)

Both are linear in ``(α, β)`` and are fitted by least squares without an intercept
(``R(0) = 0``). Their peaks are at ``d* = α / (2β)`` (best-of-n) and ``d* = exp(α/β − 1)``
(RL), when ``β > 0``.

KL of best-of-n from ``π₀`` for a continuous ``π₀`` and a proxy without ties is
``log n − (n − 1)/n`` (Stiennon et al. 2020; Beirami et al. 2024 show it is an upper bound
in general). KL between diagonal Gaussians (a PPO policy and its initial policy, before
actions are clipped into the box — clipping can only lower it):
``Σ_k log(σ0_k/σ_k) + (σ_k² + (μ_k − μ0_k)²) / (2 σ0_k²) − ½``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from personarl.errors import DataError

__all__ = ["best_of_n_kl", "gaussian_kl", "ScalingFit", "fit_scaling_law",
           "best_of_n_curve", "FORMS"]

#: the two functional forms of Gao et al. (2023)
FORMS = ("bon", "rl")


def best_of_n_kl(n: np.ndarray | int) -> np.ndarray:
    """``log n − (n − 1)/n`` nats, elementwise for ``n ≥ 1``.

    Raises:
        DataError: ``n < 1``.
    """
    n = np.asarray(n, dtype=np.float64)
    if not np.all(np.isfinite(n)) or np.any(n < 1) or np.any(n != np.round(n)):
        raise DataError(f"best-of-n needs whole numbers n >= 1; got {n.ravel()[:5].tolist()}")
    return np.log(n) - (n - 1.0) / n


def gaussian_kl(mean: np.ndarray, log_std: np.ndarray, mean0: np.ndarray,
                log_std0: np.ndarray) -> np.ndarray:
    """``(n,)`` KL(N(mean, σ²) ‖ N(mean0, σ0²)) in nats, diagonal, summed over the action's
    ``k`` dimensions; means ``(n, k)``, log standard deviations ``(k,)`` or ``(n, k)``.

    Raises:
        DataError: means that are not ``(n, k)`` of one shape, log-stds that do not
            broadcast to it, non-finite values.
    """
    mean, mean0 = np.asarray(mean, np.float64), np.asarray(mean0, np.float64)
    log_std, log_std0 = np.asarray(log_std, np.float64), np.asarray(log_std0, np.float64)
    if mean.ndim != 2 or mean.shape != mean0.shape or any(
            s.shape not in (mean.shape, mean.shape[1:]) for s in (log_std, log_std0)):
        raise DataError(f"gaussian_kl: means must be (n, k) of one shape and log-stds (k,) "
                        f"or (n, k); got {mean.shape}, {mean0.shape}, {log_std.shape}, "
                        f"{log_std0.shape}")
    if not all(np.all(np.isfinite(a)) for a in (mean, mean0, log_std, log_std0)):
        raise DataError("gaussian_kl: means and log-stds must be finite")
    var, var0 = np.exp(2 * log_std), np.exp(2 * log_std0)
    kl = log_std0 - log_std + (var + (mean - mean0) ** 2) / (2 * var0) - 0.5
    return np.broadcast_to(kl, mean.shape).sum(axis=-1)


@dataclass(frozen=True)
class ScalingFit:
    """A least-squares fit of ``R(d)`` (module docstring).

    Attributes:
        form: ``"bon"`` or ``"rl"``.
        alpha, beta: the coefficients.
        r2: coefficient of determination, ``1 − SS_res / Σ (R − mean R)²``.
        peak_d: ``d*`` where the fitted curve peaks (None when ``β ≤ 0``: no peak).
        peak_value: the fitted ``R(d*)``.
    """

    form: str
    alpha: float
    beta: float
    r2: float
    peak_d: float | None
    peak_value: float | None

    def predict(self, d: np.ndarray) -> np.ndarray:
        d = np.asarray(d, dtype=np.float64)
        return d * (self.alpha - self.beta * (d if self.form == "bon" else _log(d)))

    def as_dict(self) -> dict:
        return asdict(self)


def _log(d: np.ndarray) -> np.ndarray:
    return np.log(np.where(d > 0, d, 1.0))        # d·log d -> 0 at d = 0


def fit_scaling_law(d: np.ndarray, reward: np.ndarray, form: str) -> ScalingFit:
    """Fit ``reward ≈ R(d)`` for ``form`` in ``FORMS``.

    Raises:
        DataError: an unknown form, fewer than 3 points, non-finite or negative ``d``.
    """
    if form not in FORMS:
        raise DataError(f"form={form!r}; valid: {', '.join(FORMS)}")
    try:
        d, y = np.asarray(d, np.float64).ravel(), np.asarray(reward, np.float64).ravel()
    except (TypeError, ValueError):
        raise DataError("a scaling fit needs numbers (d, reward)") from None
    if d.shape != y.shape or len(d) < 3:
        raise DataError(f"a scaling fit needs >= 3 points (d, reward) of one length; got "
                        f"{d.shape} and {y.shape}")
    if not (np.all(np.isfinite(d)) and np.all(np.isfinite(y))) or np.any(d < 0):
        raise DataError("a scaling fit needs finite rewards and distances d >= 0")
    if np.count_nonzero(d) < 2:
        raise DataError("a scaling fit needs at least two points with d > 0 (the laws are "
                        "0 at d = 0)")
    second = d * d if form == "bon" else d * _log(d)
    X = np.stack([d, -second], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ np.array([alpha, beta])
    total = np.sum((y - y.mean()) ** 2)
    r2 = float(1.0 - np.sum(resid ** 2) / total) if total > 0 else float("nan")
    fit = ScalingFit(form, float(alpha), float(beta), r2, None, None)
    if beta <= 0:
        return fit
    with np.errstate(over="ignore"):
        peak = alpha / (2 * beta) if form == "bon" else np.exp(alpha / beta - 1.0)
    if not np.isfinite(peak):                 # β ≈ 0: no peak within reach
        return fit
    return ScalingFit(form, fit.alpha, fit.beta, r2, float(peak),
                      float(fit.predict(np.array([peak]))[0]))


def best_of_n_curve(proxy: np.ndarray, true: np.ndarray, ns: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Mean proxy and true reward of best-of-n for each ``n`` in ``ns``.

    Args:
        proxy, true: ``(C, N)`` the proxy and the true reward of ``N`` samples of ``π₀`` in
            each of ``C`` contexts.
        ns: sample counts, each dividing ``N``: the ``N`` samples form ``N / n`` disjoint
            groups and each group's proxy-best sample counts (an unbiased estimate with
            less variance than one group).

    Returns:
        ``(len(ns),)`` mean proxy and ``(len(ns),)`` mean true reward of the chosen samples.
    """
    proxy, true = np.asarray(proxy, np.float64), np.asarray(true, np.float64)
    if proxy.ndim != 2 or proxy.shape != true.shape:
        raise DataError(f"best-of-n: proxy and true must be (C, N) of one shape; got "
                        f"{proxy.shape} and {true.shape}")
    if not (np.all(np.isfinite(proxy)) and np.all(np.isfinite(true))):
        raise DataError("best-of-n: proxy and true rewards must be finite")
    c, total = proxy.shape
    out_p, out_t = [], []
    for n in np.asarray(ns, dtype=np.int64):
        if n < 1 or total % n:
            raise DataError(f"n={n} must be >= 1 and divide the {total} samples per context")
        p = proxy.reshape(c, total // n, n)
        pick = p.argmax(axis=2)[..., None]
        out_p.append(np.take_along_axis(p, pick, 2).mean())
        out_t.append(np.take_along_axis(true.reshape(c, total // n, n), pick, 2).mean())
    return np.array(out_p), np.array(out_t)
