"""PersonalityAdaptation's compiled kernels (the ``numba`` backend, ``personarl.backend``).

The same turn as ``envs.adaptation_model`` and ``envs.adaptation_core.AdaptationCore``
(the NumPy reference), written lane by lane: the assistant's style, the user's
satisfaction, the conversation's move, the next trait reading and observation, and the
ground truth, without a temporary array. Random numbers come in as arguments (drawn by the
core from the env's generators); ``tests/test_env_backends.py`` holds both backends to the
same trajectories.

The lanes come as the core's record array (``AdaptationCore.record``), the settings
packed: ``p`` = ``AdaptationModel``'s fields (``PARAMS`` order), the observation noise, then
the reward weights (engagement, resonance, explicit); ``dims`` = horizon, the phase
boundaries (3) and the observation's block starts (``OBS_BLOCKS``). The lane loops run
without reference counts (``kernel``'s ``refcounts=False``) and take their work array as
one record (``work``).
"""

from __future__ import annotations

import math
from dataclasses import astuple, fields

import numpy as np

from envs.adaptation_model import (IMPORTANCE, PHASE_URGENCY, PHASE_WEIGHT, STYLES,
                                   TONE_SHIFT, AdaptationModel)
from personarl.backend import kernel, work_record
from synth.archetypes import TRAITS

__all__ = ["PARAMS", "OBS_BLOCKS", "settings", "work", "step_lanes", "observe_lanes", "truth_lanes",
           "TRUTH_FLOATS", "TRUTH_FLAGS", "truth_names", "STEP_FLOATS"]

PARAMS = tuple(f.name for f in fields(AdaptationModel))
N_TRAITS, N_STYLES = len(TRAITS), len(STYLES)
OBS_BLOCKS = ("phase", "turn", "sentiment", "urgency", "length", "topic", "perceived",
              "last_style")
TRUTH_FLOATS = ("latent_sentiment", "latent_engagement")
TRUTH_FLAGS = ("consent", "is_bot")


def truth_names(discrete: bool, num_archetypes: int
                ) -> tuple[tuple[str, ...], dict[str, int]]:
    """The ``InfoTable`` layout the kernels write: the integer keys and the vectors (in
    block order) for discrete or continuous actions."""
    ints = ("latent_primary", "phase", "group", "age_band", "city") + (
        ("oracle_action",) if discrete else ())
    vectors = {"expected_reward": N_STYLES} if discrete else {}
    vectors.update(latent_traits=N_TRAITS, latent_weights=num_archetypes,
                   preferred_style=N_TRAITS, style_importance=N_TRAITS)
    if not discrete:
        vectors["oracle_action"] = N_TRAITS
    return ints, vectors
#: what ``step_lanes`` writes per lane (besides the observation)
STEP_FLOATS = ("reward", "satisfaction", "thumb", "engagement", "resonance", "terminated")

_P = {name: i for i, name in enumerate(PARAMS)}
MISMATCH_SCALE, SENTIMENT_RATE = _P["mismatch_scale"], _P["sentiment_rate"]
ENGAGEMENT_RATE, ENGAGEMENT_DRAIN = _P["engagement_rate"], _P["engagement_drain"]
LEAVE_BELOW, LEAVE_PROB = _P["leave_below"], _P["leave_prob"]
FEEDBACK_RATE, PERCEPTION_NOISE = _P["feedback_rate"], _P["perception_noise"]
P_OBS_NOISE = len(PARAMS)
P_WEIGHTS = len(PARAMS) + 1
D_HORIZON, D_BOUNDS = 0, 1
(C_PHASE, C_TURN, C_SENTIMENT, C_URGENCY, C_LENGTH, C_TOPIC, C_PERCEIVED,
 C_LAST_STYLE) = range(4, 12)
_T = {name: i for i, name in enumerate(TRAITS)}
T_NEURO, T_CONSC, T_EXTRA = _T["neuroticism"], _T["conscientiousness"], _T["extraversion"]
T_EMPATHY = _T["empathy"]
assert IMPORTANCE.shape[1] == N_TRAITS


def settings(model: AdaptationModel, obs_noise: float, weights: tuple[float, float, float],
             horizon: int, bounds: np.ndarray, obs_cols: list[int]
             ) -> tuple[np.ndarray, np.ndarray]:
    """``(p, dims)``: the kernels' packed settings (see the module doc)."""
    p = np.array(astuple(model) + (obs_noise,) + tuple(weights), dtype=np.float64)
    return p, np.array([horizon, *bounds, *obs_cols], dtype=np.int64)


def work() -> np.ndarray:
    """The lane loops' work array (``personarl.backend.work_record``): the style of a
    lane's assistant."""
    return work_record(style=N_TRAITS)


@kernel
def _clip(x, low, high):
    return min(max(x, low), high)


@kernel
def _phase(t, dims):
    """``adaptation_model.phase_of``: how many phase boundaries turn ``t`` has passed."""
    last = min(t, dims[D_HORIZON] - 1)
    phase = 0
    for b in range(3):
        if dims[D_BOUNDS + b] <= last:
            phase += 1
    return phase


@kernel
def _style(action, perceived, out):
    """``adaptation_model.style_vectors`` for one discrete style into ``out`` ``(10,)``."""
    strategy, tone = action // 3, action % 3
    for j in range(perceived.shape[0]):
        if strategy == 0:
            base = perceived[j]
        elif strategy == 1:
            base = 1.0 - perceived[j]
        else:
            base = (perceived[j] + 0.5) / 2
        out[j] = _clip(base + TONE_SHIFT[tone, j], 0.0, 1.0)


@kernel
def _satisfaction(style, r, phase, p):
    """``adaptation_model.satisfaction`` for one user (record ``r``)."""
    weighted, total = 0.0, 0.0
    frustration = 1.5 * max(0.0, -r.sentiment)
    for j in range(style.shape[0]):
        imp = r.importance[j] * PHASE_WEIGHT[phase, j]
        if j == T_EMPATHY:
            imp += frustration
        d = style[j] - r.target[j]
        weighted += imp * (d * d)
        total += imp
    return math.exp(-(weighted / total) / p[MISMATCH_SCALE])


@kernel
def _moved(sentiment, engagement, sat, p):
    """``adaptation_model.chat_transition``'s new sentiment and engagement."""
    s = _clip(sentiment + p[SENTIMENT_RATE] * ((2.0 * sat - 1.0) - sentiment), -1.0, 1.0)
    g = _clip(engagement + p[ENGAGEMENT_RATE] * (sat - engagement) - p[ENGAGEMENT_DRAIN],
              0.0, 1.0)
    return s, g


@kernel
def _reward(engagement, resonance, explicit, p):
    """``rewards.adaptation_reward`` with the packed weights."""
    w = P_WEIGHTS
    return p[w] * engagement + p[w + 1] * resonance + p[w + 2] * explicit


@kernel
def _observe_lane(r, z, u_topic, o, p, dims):
    """Lane record ``r``'s observation into ``o``: ``z`` ``(3,)`` standard normals (the
    message's noise), ``u_topic`` the uniform behind its topic."""
    o[:] = 0.0
    horizon = dims[D_HORIZON]
    phase = _phase(r.t, dims)
    noise = p[P_OBS_NOISE]
    x = r.traits
    o[dims[C_PHASE] + phase] = 1.0
    o[dims[C_TURN]] = r.t / horizon
    o[dims[C_SENTIMENT]] = _clip((r.sentiment + 1) / 2 + noise * z[0], 0.0, 1.0)
    o[dims[C_URGENCY]] = _clip(PHASE_URGENCY[phase] + 0.3 * (x[T_NEURO] - 0.5)
                               + 0.2 * (x[T_CONSC] - 0.5) + noise * z[1], 0.0, 1.0)
    o[dims[C_LENGTH]] = _clip(0.2 + 0.6 * r.engagement * x[T_EXTRA] + noise * z[2], 0.0, 1.0)
    cdf = r.task_cdf
    k = cdf.shape[0]
    topic = 0
    for j in range(k):
        if u_topic * cdf[k - 1] >= cdf[j]:
            topic += 1
    o[dims[C_TOPIC] + min(topic, k - 1)] = 1.0
    for j in range(N_TRAITS):
        o[dims[C_PERCEIVED] + j] = r.perceived[j]
        o[dims[C_LAST_STYLE] + j] = r.last_style[j]


@kernel(refcounts=False)
def observe_lanes(rows, z, u_topic, lanes, obs, p, dims):
    """The observation of each lane in ``rows`` (``AdaptationCore._observe``) with message
    noise ``z`` ``(len(rows), 3)`` and topic uniforms ``u_topic`` ``(len(rows),)``."""
    for n in range(rows.shape[0]):
        i = rows[n]
        _observe_lane(lanes[i], z[n], u_topic[n], obs[i], p, dims)


@kernel
def _copy_into(row, start, values):
    for j in range(values.shape[0]):
        row[start + j] = values[j]


@kernel
def _truth_lane(i, r, style, p, dims, discrete, floats, ints, flags, block):
    """Lane ``i``'s ground truth into an ``InfoTable``'s arrays (``truth_names``): with
    discrete actions the expected reward of each style this turn (``style_rewards``;
    feedback replaced by its expectation) and the oracle's style; with continuous ones the
    oracle is the preferred style."""
    phase = _phase(r.t, dims)
    row = block[i]
    start = 0
    if discrete:
        best = 0
        for a in range(N_STYLES):
            _style(a, r.perceived, style)
            sat = _satisfaction(style, r, phase, p)
            s, g = _moved(r.sentiment, r.engagement, sat, p)
            row[a] = _reward(g, (s + 1.0) / 2.0, p[FEEDBACK_RATE] * (2.0 * sat - 1.0), p)
            if row[a] > row[best]:
                best = a
        ints[i, 5] = best
        start = N_STYLES
    floats[i, 0], floats[i, 1] = r.sentiment, r.engagement
    ints[i, 0], ints[i, 1], ints[i, 2] = r.primary, phase, r.group
    ints[i, 3], ints[i, 4] = r.age_band, r.city
    flags[i, 0], flags[i, 1] = r.consent, r.is_bot
    _copy_into(row, start, r.traits)
    _copy_into(row, start + N_TRAITS, r.weights)
    start += N_TRAITS + r.weights.shape[0]
    _copy_into(row, start, r.target)
    _copy_into(row, start + N_TRAITS, r.importance)
    if not discrete:
        _copy_into(row, start + 2 * N_TRAITS, r.target)


@kernel(refcounts=False)
def truth_lanes(lanes, p, dims, discrete, floats, ints, flags, block, work):
    """Every lane's ground truth into an ``InfoTable``'s arrays."""
    style = work[0].style
    for i in range(lanes.shape[0]):
        _truth_lane(i, lanes[i], style, p, dims, discrete, floats, ints, flags, block)


@kernel(refcounts=False)
def step_lanes(action, action_vectors, z, uniforms, lanes, obs, p, dims, discrete,
               with_truth, out, floats, ints, flags, block, work):
    """One turn for every lane (``AdaptationCore.step``): ``action`` ``(B,)`` styles, or
    with ``discrete`` off the assistant's traits ``action_vectors`` ``(B, 10)``. Per lane,
    ``z`` ``(B, 13)`` standard normals (the next trait reading, then the next message's
    noise) and ``uniforms`` ``(B, 4)`` (feedback given, thumb up, leaving, next topic).

    Writes ``out`` ``(B, 6)`` (``STEP_FLOATS``; the reward from the packed weights — the
    caller recomputes it from ``engagement``, ``resonance`` and ``thumb`` for another
    reward function) and, ``with_truth``, the next turn's ground truth."""
    style = work[0].style
    horizon = dims[D_HORIZON]
    for i in range(lanes.shape[0]):
        r = lanes[i]
        if discrete:
            _style(action[i], r.perceived, style)
        else:
            for j in range(N_TRAITS):       # (an array copy would need refcounts)
                style[j] = action_vectors[i, j]
        sat = _satisfaction(style, r, _phase(r.t, dims), p)
        u = uniforms[i]
        thumb = 0.0
        if u[0] < p[FEEDBACK_RATE]:
            thumb = 1.0 if u[1] < sat else -1.0
        s, g = _moved(r.sentiment, r.engagement, sat, p)
        r.sentiment, r.engagement = s, g
        resonance = (s + 1.0) / 2.0
        leave = g < p[LEAVE_BELOW] and u[2] < p[LEAVE_PROB]
        t1 = r.t + 1
        out[i, 0] = _reward(g, resonance, thumb, p)
        out[i, 1], out[i, 2], out[i, 3], out[i, 4] = sat, thumb, g, resonance
        out[i, 5] = 1.0 if (leave or t1 >= horizon) else 0.0
        # the platform reads the user's next message: one more noisy trait reading
        for j in range(N_TRAITS):
            reading = _clip(r.traits[j] + p[PERCEPTION_NOISE] * z[i, j], 0.0, 1.0)
            r.perceived[j] += (reading - r.perceived[j]) / (t1 + 1)
            r.last_style[j] = style[j]
        r.t = t1
        _observe_lane(r, z[i, N_TRAITS:], u[3], obs[i], p, dims)
        if with_truth:
            _truth_lane(i, r, style, p, dims, discrete, floats, ints, flags, block)
