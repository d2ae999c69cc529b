"""``PopulationSampler.sample``'s arithmetic compiled (the ``numba`` backend,
``personarl.backend``).

The sampler draws every random number in NumPy, in the same order on both backends; this
kernel then does, for one user at a time, what the NumPy reference does array by array:
the Dirichlet's normalisation and the swap that makes the primary archetype the largest
weight, the traits ``sigmoid(logit(w @ trait_means) + δ)``, the device from the mixture's
device preferences, the group, and the bot, consent and metadata flags. One pass over the
users instead of some forty NumPy calls over ``(n, A)`` and ``(n, 10)`` temporaries: a
million users were ≈ 0.75 s of arithmetic in NumPy beside ≈ 0.4 s of drawing.
"""

from __future__ import annotations

import numpy as np

from personarl.backend import kernel
from synth.population import _EPS           # the clip of the trait means

__all__ = ["finish_users"]


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
def finish_users(w: np.ndarray, primary: np.ndarray, table_id: np.ndarray,
                 offset_exp: np.ndarray, u: np.ndarray, traits_table: np.ndarray,
                 device_table: np.ndarray, group_probs: np.ndarray, rates: np.ndarray,
                 profile_cdf: np.ndarray, profile_guide: np.ndarray, cell_age: np.ndarray,
                 cell_city: np.ndarray, traits: np.ndarray,
                 group: np.ndarray, consent: np.ndarray, is_bot: np.ndarray,
                 slow_bot: np.ndarray, device: np.ndarray, missing: np.ndarray,
                 age_band: np.ndarray, city: np.ndarray) -> None:
    """Turn drawn variates into users, in place.

    Args:
        w: ``(n, A)`` gamma variates in, mixture weights out.
        primary, table_id: ``(n,)`` the primary archetype and the epoch of each user.
        offset_exp: ``(n, 10)`` ``exp(δ)`` of the logit-space trait offsets δ.
        u: ``(n, 7)`` uniforms: group, consent, bot, slow bot, device, metadata missing,
            the (age band, city) pair.
        traits_table, device_table: ``(epochs, A, 10)`` and ``(epochs, A, D)``.
        group_probs: ``(G,)`` group proportions.
        rates: consent rate, bot fraction, slow-bot fraction, a human's and a bot's chance
            of missing metadata.
        profile_cdf, profile_guide: ``synth.demographics.PROFILE_CDF`` and
            ``PROFILE_GUIDE``; cell_age, cell_city: each cell's age band and city.
        traits, group, consent, is_bot, slow_bot, device, missing, age_band, city: outputs,
            ``n`` rows.
    """
    n, A = w.shape
    T, D = traits.shape[1], device_table.shape[2]
    means, mix = np.empty(T), np.empty(D)
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
        means[:] = 0.0                # archetype by archetype: the inner loops vectorise
        mix[:] = 0.0
        for a in range(A):
            for t in range(T):
                means[t] += w[i, a] * traits_table[e, a, t]
            for d in range(D):
                mix[d] += w[i, a] * device_table[e, a, d]
        for t in range(T):
            mean = min(max(means[t], _EPS), 1.0 - _EPS)
            scaled = mean * offset_exp[i, t]
            traits[i, t] = scaled / (scaled + 1.0 - mean)
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
