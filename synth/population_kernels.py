"""``PopulationSampler.sample``'s arithmetic compiled (the ``numba`` backend,
``personarl.backend``).

The sampler draws every random number in NumPy, in the same order on both backends; these
kernels then do, for one user at a time, what the NumPy reference does array by array.
They come in three stages, each needing only the draws made before it, so that a block of
users can be finished while the next block is drawn (``PopulationSampler.sample``'s
``num_threads``):

1. ``mixture_means`` (after the gamma variates): the Dirichlet's normalisation, the swap
   that makes the primary archetype the largest weight, and the mixture's trait means;
2. ``offset_traits`` (after the offsets' normals): ``sigmoid(logit(mean) + δ)``;
3. ``user_flags`` (after the uniforms): the device from the mixture's device preferences,
   the group, the bot, consent and metadata flags, and the (age band, city) cell.

One pass per stage instead of some forty NumPy calls over ``(n, A)`` and ``(n, 10)``
temporaries: a million users were ≈ 0.75 s of arithmetic in NumPy beside ≈ 0.4 s of
drawing.
"""

from __future__ import annotations

import numpy as np

from personarl.backend import kernel
from synth.population import _EPS           # the clip of the trait means

__all__ = ["mixture_means", "offset_traits", "user_flags"]


@kernel
def _row_categorical(probs: np.ndarray, u: float) -> int:
    """``synth.population.categorical`` for one row: inverse CDF of ``probs`` at ``u``."""
    k = probs.shape[0]
    total = 0.0
    for j in range(k):
        total += probs[j]
    target = u * total
    idx = 0
    cdf = 0.0
    for j in range(k):
        cdf += probs[j]
        if target >= cdf:
            idx += 1
    return min(idx, k - 1)


@kernel
def mixture_means(w: np.ndarray, primary: np.ndarray, table_id: np.ndarray,
                  traits_table: np.ndarray, means: np.ndarray) -> None:
    """Gamma variates to mixture weights, and the mixture's trait means, in place.

    Args:
        w: ``(n, A)`` gamma variates in, mixture weights out (``synth.population``'s
            module doc: normalised, then the largest swapped onto the primary).
        primary, table_id: ``(n,)`` the primary archetype and the epoch of each user.
        traits_table: ``(epochs, A, 10)`` archetype trait means.
        means: ``(n, 10)`` out: ``w @ traits_table[epoch]``, clipped to ``[ε, 1 - ε]``.
    """
    n, A = w.shape
    T = means.shape[1]
    for i in range(n):
        total = 0.0
        for a in range(A):
            total += w[i, a]
        total = max(total, 1e-300)
        top = 0
        for a in range(A):
            w[i, a] /= total
            if w[i, a] > w[i, top]:
                top = a
        p = primary[i]
        if top != p:
            w[i, top], w[i, p] = w[i, p], w[i, top]
        e = table_id[i]
        for t in range(T):
            means[i, t] = 0.0
        for a in range(A):            # archetype by archetype: the inner loop vectorises
            for t in range(T):
                means[i, t] += w[i, a] * traits_table[e, a, t]
        for t in range(T):
            means[i, t] = min(max(means[i, t], _EPS), 1.0 - _EPS)


@kernel
def offset_traits(means: np.ndarray, offset_exp: np.ndarray) -> None:
    """``means (n, 10)`` in, traits ``sigmoid(logit(mean) + δ)`` out, in place, from
    ``offset_exp = exp(δ)`` ``(n, 10)``: ``m·e / (m·e + 1 - m)``, without logs."""
    n, T = means.shape
    for i in range(n):
        for t in range(T):
            mean = means[i, t]
            scaled = mean * offset_exp[i, t]
            means[i, t] = scaled / (scaled + 1.0 - mean)


@kernel
def user_flags(w: np.ndarray, table_id: np.ndarray, u: np.ndarray, device_table: np.ndarray,
               group_probs: np.ndarray, rates: np.ndarray, profile_cdf: np.ndarray,
               profile_guide: np.ndarray, cell_age: np.ndarray, cell_city: np.ndarray,
               group: np.ndarray, consent: np.ndarray, is_bot: np.ndarray,
               slow_bot: np.ndarray, device: np.ndarray, missing: np.ndarray,
               age_band: np.ndarray, city: np.ndarray) -> None:
    """Each user's categories and flags from the uniforms, in place.

    Args:
        w: ``(n, A)`` mixture weights (``mixture_means``'s).
        table_id: ``(n,)`` the epoch of each user.
        u: ``(n, 7)`` uniforms: group, consent, bot, slow bot, device, metadata missing,
            the (age band, city) pair.
        device_table: ``(epochs, A, D)`` archetype device preferences.
        group_probs: ``(G,)`` group proportions.
        rates: consent rate, bot fraction, slow-bot fraction, a human's and a bot's chance
            of missing metadata.
        profile_cdf, profile_guide: ``synth.demographics.PROFILE_CDF`` and
            ``PROFILE_GUIDE``; cell_age, cell_city: each cell's age band and city.
        group, consent, is_bot, slow_bot, device, missing, age_band, city: outputs, ``n``
            rows.
    """
    n, A = w.shape
    D = device_table.shape[2]
    mix = np.empty(D)
    for i in range(n):
        e = table_id[i]
        mix[:] = 0.0
        for a in range(A):
            for d in range(D):
                mix[d] += w[i, a] * device_table[e, a, d]
        device[i] = _row_categorical(mix, u[i, 4])
        group[i] = _row_categorical(group_probs, u[i, 0])
        consent[i] = u[i, 1] < rates[0]
        is_bot[i] = u[i, 2] < rates[1]
        slow_bot[i] = is_bot[i] and u[i, 3] < rates[2]
        missing[i] = u[i, 5] < (rates[4] if is_bot[i] else rates[3])
        # synth.population.categorical_from_cdf of one fixed distribution: the first
        # cell whose cumulative share exceeds the draw, searched from its guide entry
        x = u[i, 6] * profile_cdf[-1]
        cell = profile_guide[int(u[i, 6] * len(profile_guide))]
        while cell < len(profile_cdf) - 1 and profile_cdf[cell] <= x:
            cell += 1
        age_band[i], city[i] = cell_age[cell], cell_city[cell]
