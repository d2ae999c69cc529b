"""Off-policy estimators of an evaluation policy's value from logged data.

Every estimator returns ``Terms``: per-episode pieces whose (resampled) sums give the
estimate,

    V̂ = Σ_i c_i·plain_i / Σ_i c_i  +  Σ_j ( Σ_i c_i·num_ij / Σ_i c_i·den_ij ),

with ``c_i = 1`` for the point estimate and bootstrap counts for a resample — so a thousand
resamples of every estimator are a few matrix products (``ope.uncertainty``). Plain means
(IPS, DM, DR, …) use ``plain`` only; self-normalised estimators put their weighted sums in
``num``/``den`` (one column per time step, or per correction term).

A self-normalised ratio whose denominator is 0 — no logged decision (or, at step ``t``, no
episode) carries weight under the evaluation policy — is undefined: the data say nothing
about that part of the value. It is NaN, never 0, in the point estimate and in every
bootstrap resample where it happens (``ope.uncertainty`` reports the share).

Notation: ``w_i = π_e(a_i|x_i) / π_b(a_i|x_i)`` (the logged propensity), ``q̂(x, a)`` a
reward (one-step) or Q model, ``v̂(x) = Σ_a π_e(a|x) q̂(x, a)``.

One-step decisions (``data.max_episode_length == 1``):

* ``ips`` — inverse propensity scoring, mean of ``w r`` (Horvitz & Thompson 1952; for
  bandits e.g. Dudík et al. 2011, eq. 1).
* ``snips`` — self-normalised IPS, ``Σ w r / Σ w`` (Swaminathan & Joachims 2015).
* ``dm`` — the direct method, mean of ``v̂(x)`` (Dudík et al. 2011).
* ``dr`` — doubly robust, mean of ``v̂(x) + w (r − q̂(x, a))`` (Dudík et al. 2011).
* ``sndr`` — self-normalised DR: mean of ``v̂(x)`` plus ``Σ w (r − q̂) / Σ w``.
* ``switch_dr`` — Switch-DR with threshold λ: mean of ``v̂(x) + 1[w ≤ λ] w (r − q̂)``, DR
  where the weight is small and DM where it is large (Wang, Agarwal & Dudík 2017).

Sequential decisions, with ``ρ_{i,t} = Π_{k≤t} w_{i,k}`` and discount γ (steps after an
episode's end count as an absorbing state: reward 0, the weight frozen):

* ``pdis`` — per-decision importance sampling, mean over episodes of ``Σ_t γ^t ρ_t r_t``
  (Precup, Sutton & Singh 2000).
* ``wpdis`` — weighted per-decision IS, ``Σ_t γ^t Σ_i ρ_{i,t} r_{i,t} / Σ_i ρ_{i,t}``
  (Precup et al. 2000; Thomas & Brunskill 2016, the weighted form).
* ``dr_seq`` — doubly robust for sequences (Jiang & Li 2016), in its per-decision form
  ``Σ_t γ^t (ρ_t r_t − ρ_t q̂_t + ρ_{t−1} v̂_t)`` with ``ρ_{−1} = 1`` (Thomas & Brunskill
  2016, eq. 11).
* ``wdr`` — weighted doubly robust (Thomas & Brunskill 2016, eq. 12): the same with
  ``ρ_{i,t} / Σ_j ρ_{j,t}`` in place of ``ρ_{i,t} / n``.
* ``dm_seq`` — the direct method with a fitted Q (FQE, ``ope.models``): mean of
  ``v̂(x_0)`` over first decisions (Le, Voloshin & Yue 2019).

``pi_e`` is always the evaluation policy's full action distribution on every logged
observation, ``(N, K)`` — for a greedy policy a one-hot table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ope.data import DataError, LoggedData

__all__ = ["Terms", "ONE_STEP", "SEQUENTIAL", "MODEL_BASED", "MODEL_ONLY", "weights",
           "ratio", "ips", "snips", "dm", "dr", "sndr", "switch_dr", "pdis", "wpdis", "dr_seq",
           "wdr", "dm_seq", "cumulative_weights"]


@dataclass
class Terms:
    """Per-episode pieces of an estimate (see the module docstring)."""

    plain: np.ndarray                       # (E,)
    num: np.ndarray | None = None           # (E, J)
    den: np.ndarray | None = None           # (E, J)

    def value(self) -> float:
        """The point estimate (every count 1); NaN where a ratio is undefined."""
        v = float(self.plain.mean())
        if self.num is not None:
            v += float(ratio(self.num.sum(axis=0), self.den.sum(axis=0)).sum())
        return v


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den``, NaN where ``den`` is 0 (no weight there: the ratio is undefined)."""
    out = np.full(np.broadcast_shapes(num.shape, den.shape), np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _check(data: LoggedData, pi_e: np.ndarray, q_hat: np.ndarray | None = None) -> None:
    want = (data.n, data.n_actions)
    if pi_e.shape != want:
        raise DataError(f"the evaluation policy's probabilities must be {want} (one row per "
                        f"logged decision); got {pi_e.shape}")
    if not np.allclose(pi_e.sum(axis=1), 1.0, atol=1e-4) or (pi_e < 0).any():
        raise DataError("the evaluation policy's probabilities must be distributions (rows "
                        "of non-negative numbers summing to 1)")
    if q_hat is not None and q_hat.shape != want:
        raise DataError(f"the reward/Q model's predictions must be {want}; got {q_hat.shape}")
    if q_hat is not None and not np.isfinite(q_hat).all():
        row = int(np.argmax(~np.isfinite(q_hat).all(axis=1)))
        raise DataError(f"the reward/Q model's predictions are not finite (first at row {row})")


def weights(data: LoggedData, pi_e: np.ndarray) -> np.ndarray:
    """``w_i = π_e(a_i|x_i) / π_b(a_i|x_i)`` per logged decision."""
    _check(data, pi_e)
    return pi_e[np.arange(data.n), data.action] / data.propensity


def _one_step(data: LoggedData) -> None:
    if data.max_episode_length != 1:
        raise DataError(f"one-step estimators need one decision per episode; this data has "
                        f"episodes of up to {data.max_episode_length} decisions (use pdis, wpdis, "
                        "dr_seq, wdr or dm_seq)")


def ips(data: LoggedData, pi_e: np.ndarray, **_: object) -> Terms:
    _one_step(data)
    return Terms(plain=weights(data, pi_e) * data.reward)


def snips(data: LoggedData, pi_e: np.ndarray, **_: object) -> Terms:
    _one_step(data)
    w = weights(data, pi_e)
    return Terms(plain=np.zeros(data.n), num=(w * data.reward)[:, None], den=w[:, None])


def _model_parts(data: LoggedData, pi_e: np.ndarray, q_hat: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(w, v̂(x), r − q̂(x, a))``."""
    if q_hat is None:
        raise DataError("this estimator needs a reward model's predictions (q_hat)")
    _check(data, pi_e, q_hat)
    w = pi_e[np.arange(data.n), data.action] / data.propensity     # checked just above
    return w, (pi_e * q_hat).sum(axis=1), data.reward - q_hat[np.arange(data.n), data.action]


def dm(data: LoggedData, pi_e: np.ndarray, q_hat: np.ndarray | None = None,
       **_: object) -> Terms:
    _one_step(data)
    _, v, _ = _model_parts(data, pi_e, q_hat)
    return Terms(plain=v)


def dr(data: LoggedData, pi_e: np.ndarray, q_hat: np.ndarray | None = None,
       **_: object) -> Terms:
    _one_step(data)
    w, v, residual = _model_parts(data, pi_e, q_hat)
    return Terms(plain=v + w * residual)


def sndr(data: LoggedData, pi_e: np.ndarray, q_hat: np.ndarray | None = None,
         **_: object) -> Terms:
    _one_step(data)
    w, v, residual = _model_parts(data, pi_e, q_hat)
    return Terms(plain=v, num=(w * residual)[:, None], den=w[:, None])


def switch_dr(data: LoggedData, pi_e: np.ndarray, q_hat: np.ndarray | None = None,
              lam: float = 100.0, **_: object) -> Terms:
    _one_step(data)
    if not lam >= 0:
        raise DataError(f"switch_dr threshold lam={lam!r} must be >= 0")
    w, v, residual = _model_parts(data, pi_e, q_hat)
    return Terms(plain=v + np.where(w <= lam, w * residual, 0.0))


# ---------------------------------------------------------------------- sequential
def cumulative_weights(data: LoggedData, pi_e: np.ndarray | None = None,
                       w: np.ndarray | None = None) -> np.ndarray:
    """``(E, H)`` table of ``ρ_{i,t}``, frozen after each episode's end, from the evaluation
    policy's probabilities or from per-decision weights ``w`` already computed."""
    return np.cumprod(data.padded(weights(data, pi_e) if w is None else w, fill=1.0), axis=1)


def _discount(data: LoggedData, gamma: float) -> np.ndarray:
    if not 0.0 <= gamma <= 1.0:
        raise DataError(f"gamma={gamma!r} is outside the valid range [0, 1]")
    return gamma ** np.arange(data.max_episode_length)


def pdis(data: LoggedData, pi_e: np.ndarray, gamma: float = 1.0, **_: object) -> Terms:
    rho = cumulative_weights(data, pi_e)
    r = data.padded(data.reward)
    return Terms(plain=(_discount(data, gamma) * rho * r).sum(axis=1))


def wpdis(data: LoggedData, pi_e: np.ndarray, gamma: float = 1.0, **_: object) -> Terms:
    rho = cumulative_weights(data, pi_e)
    r = data.padded(data.reward)
    return Terms(plain=np.zeros(data.n_episodes), num=_discount(data, gamma) * rho * r,
                 den=rho)


def _seq_model_parts(data: LoggedData, pi_e: np.ndarray, q_hat: np.ndarray | None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(ρ_t, ρ_{t−1}, r_t − q̂_t, v̂_t)`` as ``(E, H)`` tables (0 after the end)."""
    w, v, residual = _model_parts(data, pi_e, q_hat)
    rho = cumulative_weights(data, w=w)
    before = np.concatenate([np.ones((data.n_episodes, 1)), rho[:, :-1]], axis=1)
    return rho, before, data.padded(residual), data.padded(v)


def dr_seq(data: LoggedData, pi_e: np.ndarray, q_hat: np.ndarray | None = None,
           gamma: float = 1.0, **_: object) -> Terms:
    rho, before, residual, v = _seq_model_parts(data, pi_e, q_hat)
    return Terms(plain=(_discount(data, gamma) * (rho * residual + before * v)).sum(axis=1))


def wdr(data: LoggedData, pi_e: np.ndarray, q_hat: np.ndarray | None = None,
        gamma: float = 1.0, **_: object) -> Terms:
    rho, before, residual, v = _seq_model_parts(data, pi_e, q_hat)
    g = _discount(data, gamma)
    return Terms(plain=np.zeros(data.n_episodes),
                 num=np.concatenate([g * rho * residual, g * before * v], axis=1),
                 den=np.concatenate([rho, before], axis=1))


def dm_seq(data: LoggedData, pi_e: np.ndarray, q_hat: np.ndarray | None = None,
           **_: object) -> Terms:
    _, v, _ = _model_parts(data, pi_e, q_hat)
    return Terms(plain=v[data.starts])


Estimator = Callable[..., Terms]
ONE_STEP: dict[str, Estimator] = {"ips": ips, "snips": snips, "dm": dm, "dr": dr,
                                  "sndr": sndr, "switch_dr": switch_dr}
SEQUENTIAL: dict[str, Estimator] = {"pdis": pdis, "wpdis": wpdis, "dr": dr_seq, "wdr": wdr,
                                    "fqe": dm_seq}
MODEL_BASED = {"dm", "dr", "sndr", "switch_dr", "wdr", "fqe"}
#: estimators that are the model alone: an interval with the model held fixed leaves out
#: the model's own error
MODEL_ONLY = {"dm", "fqe"}
