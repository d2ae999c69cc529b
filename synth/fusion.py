"""Persona fusion: the platform's running estimate of who a user is.

``PersonaFusion`` is the online estimator the environments use (the "Persona Fusion
Engine"). It keeps Dirichlet pseudo-counts ``α`` over the known archetypes, starting at
``prior_strength · proportions``. Each interaction with per-archetype likelihoods ``ℓ`` and
signal quality ``q`` adds ``q · r`` where ``r ∝ (α / Σα) ⊙ ℓ`` is the responsibility of
each archetype — an online EM step for the user's mixture weights. It reports

* ``scores = α / Σα`` (estimated mixture weights), ``primary`` (argmax) and ``hybrid``
  (scores above 0.2);
* ``confidence``: probability that the primary beats the runner-up if the weights were
  distributed ``Dirichlet(α)``, via a normal approximation of ``w₁ − w₂``
  (``Φ(x) ≈ σ(1.702 x)``);
* ``stability``: ``1 − TV(scores, EMA of past scores)`` with a half-life in interactions.

``BayesPersonaFilter`` is the yardstick: the exact posterior ``P(primary = k | data)`` for
the same generative model (static weights), computed by Monte Carlo integration over the
population prior ``p(w | primary = k)`` — the best primary-persona accuracy any estimator
can reach on that model, up to Monte Carlo error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from personarl.errors import check_int, check_range
from synth.population import HYBRID_THRESHOLD, PopulationSampler

__all__ = ["PersonaFusion", "FusionState", "FusionTrajectory", "BayesPersonaFilter"]


@dataclass
class FusionState:
    """Per-user fusion state, ``n`` rows."""

    alpha: np.ndarray
    ema: np.ndarray


@dataclass
class FusionTrajectory:
    """Fusion readouts after 0..H interactions: ``scores (n, H+1, A)``, others ``(n, H+1)``."""

    scores: np.ndarray
    confidence: np.ndarray
    stability: np.ndarray

    @property
    def primary(self) -> np.ndarray:
        """Estimated primary archetype after each interaction."""
        return self.scores.argmax(axis=-1)

    def hybrid(self, threshold: float = HYBRID_THRESHOLD) -> np.ndarray:
        """Estimated hybrid personas (scores above ``threshold``)."""
        return self.scores > threshold


class PersonaFusion:
    """Online persona estimator over the archetypes the platform knows.

    Args:
        prior: ``(A,)`` population proportions of the known archetypes.
        prior_strength: pseudo-count mass of the prior (> 0).
        stability_halflife: EMA half-life in interactions for ``stability`` (> 0).
    """

    def __init__(self, prior: np.ndarray, prior_strength: float = 4.0,
                 stability_halflife: float = 5.0) -> None:
        self.prior = np.asarray(prior, dtype=np.float64)
        self.prior_strength = check_range("prior_strength", prior_strength, 0, np.inf,
                                          low_open=True, high_open=True)
        hl = check_range("stability_halflife", stability_halflife, 0, np.inf, low_open=True,
                         high_open=True)
        self.ema_rate = 1.0 - 0.5 ** (1.0 / hl)

    def init(self, n: int) -> FusionState:
        """State of ``n`` users before any interaction."""
        alpha = np.tile(self.prior_strength * self.prior, (n, 1))
        return FusionState(alpha=alpha, ema=np.tile(self.prior, (n, 1)))

    def update(self, state: FusionState, loglik: np.ndarray, weight: np.ndarray) -> None:
        """Fold one interaction per user into ``state`` (in place).

        Args:
            loglik: ``(n, A)`` per-archetype log-likelihood of the interaction.
            weight: ``(n,)`` signal quality in [0, 1] (suspected bots count less).
        """
        scores = state.alpha / state.alpha.sum(axis=1, keepdims=True)
        r = scores * np.exp(loglik - loglik.max(axis=1, keepdims=True))
        r /= r.sum(axis=1, keepdims=True)
        state.alpha += weight[:, None] * r

    def readout(self, state: FusionState) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(scores, confidence, stability)`` and advance the stability EMA."""
        total = state.alpha.sum(axis=1, keepdims=True)
        scores = state.alpha / total
        top2 = np.partition(scores, -2, axis=1)
        s1, s2 = top2[:, -1], top2[:, -2]
        var = (s1 * (1 - s1) + s2 * (1 - s2) + 2 * s1 * s2) / (total[:, 0] + 1.0)
        confidence = 1.0 / (1.0 + np.exp(-1.702 * (s1 - s2) / np.sqrt(var)))
        stability = 1.0 - 0.5 * np.abs(scores - state.ema).sum(axis=1)
        state.ema += self.ema_rate * (scores - state.ema)
        return scores, confidence, stability

    def run(self, loglik: np.ndarray, weight: np.ndarray) -> FusionTrajectory:
        """Readouts after 0..H interactions for ``loglik (n, H, A)`` and ``weight (n, H)``.

        Same arithmetic as ``update``/``readout`` step by step, batched over time where the
        recursion allows: the pseudo-count total is ``prior_strength + cumsum(weight)``.
        """
        n, H, A = loglik.shape
        # time-major (H, n, A) so every step of the recursions reads contiguous rows
        ll = loglik.transpose(1, 0, 2)
        lik = np.exp(ll - ll.max(axis=2, keepdims=True))
        alpha = np.empty((H + 1, n, A))
        alpha[0] = self.prior_strength * self.prior
        q = np.ascontiguousarray(weight.T)
        for t in range(H):
            r = alpha[t] * lik[t]
            r *= (q[t] / r.sum(axis=1))[:, None]
            np.add(alpha[t], r, out=alpha[t + 1])
        total = self.prior_strength + np.concatenate(
            [np.zeros((1, n)), np.cumsum(q, axis=0)], axis=0)[..., None]
        scores = alpha / total
        top2 = np.partition(scores, A - 2, axis=2)
        s1, s2 = top2[..., -1], top2[..., -2]
        var = (s1 * (1 - s1) + s2 * (1 - s2) + 2 * s1 * s2) / (total[..., 0] + 1.0)
        confidence = 1.0 / (1.0 + np.exp(-1.702 * (s1 - s2) / np.sqrt(var)))
        stability = np.empty((H + 1, n))
        ema = np.broadcast_to(self.prior, (n, A)).copy()
        for t in range(H + 1):
            diff = scores[t] - ema
            stability[t] = 1.0 - 0.5 * np.abs(diff).sum(axis=1)
            diff *= self.ema_rate
            ema += diff
        scores, confidence, stability = (scores.transpose(1, 0, 2), confidence.T,
                                          stability.T)
        return FusionTrajectory(scores=scores, confidence=confidence, stability=stability)


class BayesPersonaFilter:
    """Exact-model posterior over the primary archetype (static mixture weights).

    ``P(k | x_{1:t}) ∝ π_k ∫ p(x_{1:t} | w) p(w | primary = k) dw`` with
    ``p(x_{1:t} | w) = Π_s Σ_j w_j ℓ_s[j]``; the integral is a Monte Carlo average over
    ``particles_per_archetype`` draws from the sampler's own ``p(w | primary = k)``.

    Args:
        sampler: the population whose prior (time 0, no events) defines the model.
        particles_per_archetype: Monte Carlo draws per archetype.
        rng: generator for the particles.
    """

    def __init__(self, sampler: PopulationSampler, particles_per_archetype: int,
                 rng: np.random.Generator) -> None:
        P = check_int("particles_per_archetype", particles_per_archetype, 1)
        A = sampler.base.size
        self.log_prior = np.log(np.maximum(sampler.proportions[0, :A], 1e-300))
        primary = np.repeat(np.arange(A), P)
        w = sampler.sample_weights(primary, np.zeros(A * P, dtype=np.int64), rng)
        self.particles = w[:, :A]                      # (A*P, A)
        self.num_archetypes, self.per_class = A, P

    def posterior(self, loglik: np.ndarray, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """Posterior over the primary after 0..H interactions.

        Args:
            loglik: ``(n, H, A)`` per-archetype log-likelihoods of each interaction.
            chunk: users processed at a time (bounds memory to ``chunk × A·P`` floats).

        Returns:
            ``(n, H+1, A)`` posterior probabilities and ``(n,)`` the effective sample size
            of the particles of the final MAP class (a Monte Carlo health check).
        """
        n, H, A = loglik.shape
        out = np.empty((n, H + 1, A))
        ess = np.empty(n)
        for lo in range(0, n, chunk):
            ll = loglik[lo:lo + chunk]
            m = ll.shape[0]
            acc = np.zeros((m, A * self.per_class))
            out[lo:lo + m, 0] = np.exp(self.log_prior - np.logaddexp.reduce(self.log_prior))
            for t in range(H):
                lik = np.exp(ll[:, t] - ll[:, t].max(axis=1, keepdims=True))     # (m, A)
                acc += np.log(lik @ self.particles.T)
                by_class = acc.reshape(m, A, self.per_class)
                peak = by_class.max(axis=2, keepdims=True)
                log_ml = np.log(np.exp(by_class - peak).mean(axis=2)) + peak[..., 0]
                logp = self.log_prior + log_ml
                logp -= logp.max(axis=1, keepdims=True)
                p = np.exp(logp)
                out[lo:lo + m, t + 1] = p / p.sum(axis=1, keepdims=True)
            best = out[lo:lo + m, H].argmax(axis=1)
            wts = np.exp(by_class[np.arange(m), best] - peak[np.arange(m), best])
            ess[lo:lo + m] = wts.sum(axis=1) ** 2 / (wts * wts).sum(axis=1)
        return out, ess
