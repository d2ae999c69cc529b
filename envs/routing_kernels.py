"""AgentRouting's compiled kernels (the ``numba`` backend, ``personarl.backend``).

The same interaction as ``envs.routing_core.RoutingCore``'s NumPy reference, written lane
by lane without a temporary array: the chosen agent's satisfaction, the signals, the
reward, conversions in flight and churn; then what the platform learns from the
interaction (the persona-fusion update and readout, the quality score), the user's drift
to the next interaction and that interaction's mode, task, latency and exploring; the next
observation and, on request, the ground truth. Random numbers come in as arguments (drawn
by the core from the env's generators); ``tests/test_env_backends.py`` holds both backends
to the same trajectories.

The lanes come as the core's record array (``RoutingCore.record``), the work arrays as
one record (``work``): the lane loops run without reference counts (``kernel``'s
``refcounts=False``) and allocate nothing. Settings are packed:
``p`` (floats, ``P_*`` indices, built by ``settings``), ``dims`` (ints, ``D_*``: horizon,
the conversion delay and quality history, then the observation's block starts in
``OBS_BLOCKS`` order) and ``tables`` (``Tables.packed()``: the population's and models'
tables as one record).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from personarl.backend import kernel, work_record
from envs.routing_model import (BIG, COLUMNS, CONTINUOUS, CONVERSION, RATING,
                                THUMBS_DOWN, THUMBS_UP)
from rewards.signals import SIGNAL_NAMES
from synth.archetypes import TRAITS

__all__ = ["Tables", "settings", "work", "OBS_BLOCKS", "TRUTH_FLOATS", "TRUTH_INTS", "TRUTH_FLAGS",
           "STEP_FLOATS", "COLUMN_KINDS", "N_UNIFORMS", "begin_lanes", "step_lanes",
           "truth_lanes"]

N_COLUMNS, N_SIGNALS = len(COLUMNS), len(SIGNAL_NAMES)
SIGNAL_CONVERSION = SIGNAL_NAMES.index("conversion")
#: per-step uniforms: the 11 columns' draws, a thumb given, a rating given, the conversion
#: delay, churn, then the next interaction's mode, task and exploring
U_GIVEN_THUMB, U_GIVEN_RATING, U_DELAY, U_CHURN, U_NEXT = range(N_COLUMNS, N_COLUMNS + 5)
N_UNIFORMS = U_NEXT + 3
#: column kinds: a binary event, a continuous amount, the thumb's two outcomes, a star
K_BINARY, K_CONTINUOUS, K_THUMB, K_RATING = range(4)
COLUMN_KINDS = np.full(N_COLUMNS, K_BINARY, dtype=np.int64)
COLUMN_KINDS[CONTINUOUS] = K_CONTINUOUS
COLUMN_KINDS[[THUMBS_UP, THUMBS_DOWN]] = K_THUMB
COLUMN_KINDS[RATING] = K_RATING

(P_DRIFT, P_LOG_LATENCY, P_LATENCY_DECAY, P_LATENCY_SD, P_LOG_BOT, P_BOT_SD, P_LOG_SLOW,
 P_SLOW_SD, P_THUMBS_RATE, P_RATING_RATE, P_BOT_FEEDBACK, P_CHURN_BASE, P_CHURN_THRESHOLD,
 P_CHURN_SLOPE, P_MIN_INTERVAL, P_PRIOR_INTERACTIONS, P_PATTERN_SD, P_MISSING_FACTOR,
 P_EMA_RATE, P_LATENCY_NORM) = range(20)
D_HORIZON, D_MAX_DELAY, D_MIN_HISTORY = range(3)
OBS_BLOCKS = ("task", "position", "signals", "latency", "explore", "last_action",
              "persona_scores", "persona_confidence", "persona_stability", "quality",
              "device")
(C_TASK, C_POSITION, C_SIGNALS, C_LATENCY, C_EXPLORE, C_LAST_ACTION, C_SCORES,
 C_CONFIDENCE, C_STABILITY, C_QUALITY, C_DEVICE) = range(3, 3 + len(OBS_BLOCKS))

TRUTH_FLOATS = ("quality",)
TRUTH_INTS = ("latent_primary", "oracle_action", "group", "age_band", "city")
TRUTH_FLAGS = ("is_bot", "consent")
#: what ``step_lanes`` writes per lane besides the observation: the reward, whether the
#: session ended, the satisfaction, then the 8 signals
STEP_FLOATS = ("reward", "terminated", "satisfaction") + SIGNAL_NAMES
_EPS = 1e-6          # synth.population's clip of the trait means


class Tables(NamedTuple):
    """The kernels' lookup tables (``E`` epochs, ``A`` latent archetypes, ``Ab`` base
    archetypes the platform knows, ``T`` task types, ``K`` agents, ``C`` columns)."""

    trait_means: np.ndarray      # (E, A, 10)
    task_cdf: np.ndarray         # (E, A, T) cumulative task preferences
    behaviour: np.ndarray        # (E, A, 5)
    signal_base: np.ndarray      # (E, A, C)
    signal_slope: np.ndarray     # (E, A, C)
    bot_base: np.ndarray         # (C,)
    trait_weights: np.ndarray    # (10, K) persona_sensitivity · style
    task_offset: np.ndarray      # (T, K)
    log_task: np.ndarray         # (Ab, T) log task preferences (fusion's likelihood)
    log_median: np.ndarray       # (Ab,) log median latency per archetype
    log_explore: np.ndarray      # (2, Ab) log(1 - e), log(e)
    prior: np.ndarray            # (Ab,) fusion prior
    signal_of: np.ndarray        # (C,) the signal each column counts towards (COLLAPSE)
    share: np.ndarray            # (C,) its share of that signal (¼ per rating star)
    column_weights: np.ndarray   # (C,) effective reward weight of each column
    signal_weights_now: np.ndarray  # (8,) the same per signal, conversion paid on arrival
    column_rates: np.ndarray     # (2, C) chance a column is given at all: human, bot
    kind: np.ndarray             # (C,) K_* kind of each column

    def packed(self) -> np.ndarray:
        """The tables as one record (a 1-element structured array, the kernels' ``tables``
        argument): a compiled call unboxes it as one array, where the tuple's 18 arrays
        cost ≈ 3 µs a call — a tenth of a batch-of-one step."""
        fields = [(name, np.asarray(value)) for name, value in zip(self._fields, self)]
        packed = np.zeros(1, np.dtype([(name, value.dtype, value.shape)
                                       for name, value in fields], align=True))
        for name, value in fields:
            packed[name][0] = value
        return packed


def settings(drift_rate: float, behaviour, response, quality, ema_rate: float,
             horizon: int, obs_cols: dict[str, slice]) -> tuple[np.ndarray, np.ndarray]:
    """``(p, dims)``: the kernels' packed settings (see the module doc) from the
    population's drift rate, the ``BehaviourModel``, ``ResponseModel`` and
    ``QualityModel``, the fusion's EMA rate, the horizon and the observation's blocks."""
    b = behaviour
    p = np.array([
        drift_rate, math.log(b.latency_scale_s), b.latency_decay, b.latency_sd,
        math.log(b.bot_latency_s), b.bot_latency_sd, math.log(b.slow_bot_latency_s),
        b.slow_bot_latency_sd, response.thumbs_rate, response.rating_rate,
        response.bot_feedback_rate, response.churn_base, response.churn_threshold,
        response.churn_slope, quality.min_interval_s, quality.prior_interactions,
        quality.pattern_sd, quality.missing_metadata_factor, ema_rate, math.log1p(120.0)])
    dims = np.array([horizon, response.max_delay, quality.min_history]
                    + [obs_cols[name].start for name in OBS_BLOCKS], dtype=np.int64)
    return p, dims


def work(num_archetypes: int, num_base: int) -> np.ndarray:
    """The lane loops' work arrays (``personarl.backend.work_record``): a lane's traits,
    its signal columns, the cumulative mixture over ``num_archetypes`` latent archetypes
    and the fusion's likelihood over ``num_base`` base archetypes."""
    return work_record(traits=len(TRAITS), values=N_COLUMNS, cdf=num_archetypes,
                       loglik=num_base)


# ---------------------------------------------------------------- the user
@kernel
def _traits(r, trait_means, out):
    """``PopulationSampler.traits_of`` for lane record ``r`` into ``out`` ``(10,)``."""
    w, offset_exp, e = r.weights, r.offset_exp, r.table_id
    for j in range(out.shape[0]):
        m = 0.0
        for k in range(w.shape[0]):
            m += w[k] * trait_means[e, k, j]
        m = min(max(m, _EPS), 1.0 - _EPS)
        scaled = m * offset_exp[j]
        out[j] = scaled / ((scaled + 1.0) - m)


@kernel
def _satisfaction(traits, task, agent, trait_weights, task_offset):
    """``AgentWorld.satisfaction`` with one agent."""
    logit = 0.0
    for j in range(traits.shape[0]):
        logit += traits[j] * trait_weights[j, agent]
    logit += task_offset[task, agent]
    return 1.0 / (math.exp(-logit) + 1.0)


@kernel
def _categorical(cdf, u):
    """``synth.population.categorical_from_cdf`` for one draw."""
    k = cdf.shape[0]
    target = u * cdf[k - 1]
    idx = 0
    for j in range(k):
        if target >= cdf[j]:
            idx += 1
    return min(idx, k - 1)


@kernel
def _interaction(r, u_mode, u_task, u_explore, z, p, dims, task_cdf, behaviour, cdf):
    """``synth.behaviour.sample_interaction`` for lane record ``r`` (its mixture now), and
    the quality score with it (``QualityModel.from_sums``); ``cdf`` is a work array."""
    total = 0.0
    for k in range(r.weights.shape[0]):
        total += r.weights[k]
        cdf[k] = total
    mode = _categorical(cdf[:r.weights.shape[0]], u_mode)
    n_tasks = task_cdf.shape[2]
    if r.is_bot:
        task = min(int(u_task * n_tasks), n_tasks - 1)
        if r.slow_bot:
            log_lat = p[P_LOG_SLOW] + p[P_SLOW_SD] * z
        else:
            log_lat = p[P_LOG_BOT] + p[P_BOT_SD] * z
        explore = False
    else:
        task = _categorical(task_cdf[r.table_id, mode], u_task)
        log_lat = (p[P_LOG_LATENCY] - p[P_LATENCY_DECAY] * behaviour[r.table_id, mode, 1]
                   + p[P_LATENCY_SD] * z)
        explore = u_explore < behaviour[r.table_id, mode, 4]
    latency = math.exp(log_lat)
    r.mode, r.task, r.latency, r.explore = mode, task, latency, explore
    # the quality score after this interaction, from running sums
    count = r.t + 1.0
    log_latency = math.log(latency)
    if latency < p[P_MIN_INTERVAL]:
        r.fast += 1.0
    r.s1 += log_latency
    r.s2 += log_latency * log_latency
    fast = r.fast / (count + p[P_PRIOR_INTERACTIONS])
    var = max(r.s2 - r.s1 * r.s1 / count, 0.0) / max(count - 1.0, 1.0)
    pattern = 1.0
    if count >= dims[D_MIN_HISTORY]:
        pattern = min(1.0, math.sqrt(var) / p[P_PATTERN_SD])
    meta = p[P_MISSING_FACTOR] if r.metadata_missing else 1.0
    r.quality = (1.0 - fast) * pattern * meta


@kernel
def _drift(r, noise, rate):
    """``synth.population.drift_step`` in place on ``r.weights``."""
    total = 0.0
    w = r.weights
    for k in range(w.shape[0]):
        w[k] = math.exp(rate * noise[k]) * w[k]
        total += w[k]
    for k in range(w.shape[0]):
        w[k] /= total


@kernel
def _column(r, c, signal_base, signal_slope, bot_base):
    """``(base, slope)`` of signal column ``c`` for lane record ``r`` in its current mode
    (``RoutingCore._signal_params``; a bot's fixed pattern)."""
    if r.is_bot:
        return bot_base[c], 0.0
    return signal_base[r.table_id, r.mode, c], signal_slope[r.table_id, r.mode, c]


# ---------------------------------------------------------------- the platform's view
@kernel
def _fusion_update(r, log_task, log_median, log_explore, p, loglik):
    """``PersonaFusion.update`` with the likelihood of the lane's current interaction
    (``synth.behaviour.interaction_loglik``), weighted by its quality; ``loglik`` ``(Ab,)``
    is a work array."""
    alpha = r.alpha
    n = alpha.shape[0]
    log_latency = math.log(r.latency)
    explore = 1 if r.explore else 0
    peak = -math.inf
    total = 0.0
    for k in range(n):
        total += alpha[k]
    for k in range(n):
        resid = (log_latency - log_median[k]) / p[P_LATENCY_SD]
        loglik[k] = (log_task[k, r.task] - 0.5 * resid * resid) + log_explore[explore, k]
        peak = max(peak, loglik[k])
    norm = 0.0
    for k in range(n):
        loglik[k] = alpha[k] / total * math.exp(loglik[k] - peak)
        norm += loglik[k]
    for k in range(n):
        alpha[k] += r.quality * (loglik[k] / norm)


@kernel
def _fusion_readout(r, o, dims, p, prior):
    """``PersonaFusion.readout`` (advancing the stability EMA) into observation ``o``:
    the scores, confidence and stability for a consenting user, the prior and zeros for
    one who did not."""
    alpha, ema = r.alpha, r.ema
    n = alpha.shape[0]
    total = 0.0
    for k in range(n):
        total += alpha[k]
    s1, s2, moved = -1.0, -1.0, 0.0
    for k in range(n):
        score = alpha[k] / total
        if score > s1:
            s1, s2 = score, s1
        elif score > s2:
            s2 = score
        moved += abs(score - ema[k])
        ema[k] += p[P_EMA_RATE] * (score - ema[k])
        o[dims[C_SCORES] + k] = score if r.consent else prior[k]
    var = (s1 * (1 - s1) + s2 * (1 - s2) + 2 * s1 * s2) / (total + 1.0)
    if r.consent:
        o[dims[C_CONFIDENCE]] = 1.0 / (1.0 + math.exp(-1.702 * (s1 - s2) / math.sqrt(var)))
        o[dims[C_STABILITY]] = 1.0 - 0.5 * moved


@kernel
def _observe_static(r, o, dims):
    """The parts of lane record ``r``'s observation that do not come from a step: the task,
    the position and the device."""
    horizon = dims[D_HORIZON]
    if r.t < horizon:
        o[dims[C_TASK] + r.task] = 1.0
    o[dims[C_POSITION]] = r.t / horizon
    if not r.metadata_missing:
        o[dims[C_DEVICE] + r.device] = 1.0


@kernel(refcounts=False)
def begin_lanes(rows, lanes, obs, p, dims, tables, work):
    """A new session in each lane of ``rows`` (``RoutingCore.reset_lanes``): the first
    interaction from the record's own draws (``first_draws``: mode, task, exploring
    uniforms and the latency normal), the fusion's readout before any interaction, and the
    first observation."""
    tb, cdf = tables[0], work[0].cdf
    for n in range(rows.shape[0]):
        i = rows[n]
        r = lanes[i]
        d = r.first_draws
        _interaction(r, d[0], d[1], d[2], d[3], p, dims, tb.task_cdf, tb.behaviour, cdf)
        o = obs[i]
        o[:] = 0.0
        _observe_static(r, o, dims)
        _fusion_readout(r, o, dims, p, tb.prior)
        o[dims[C_QUALITY]] = 1.0


# ---------------------------------------------------------------- the truth
@kernel
def _expected_clipped(p):
    """``routing_model.expected_clipped`` for one ``p``."""
    if p <= 2.0 / 3.0:
        return p
    c = min(max(1.0 / max(p, 1e-12) - 0.5, 0.0), 1.0)
    return p * (0.5 * c + 0.5 * c * c) + 1.0 - c


@kernel
def _truth_lane(i, r, traits, obs_quality, trait_means, trait_weights, task_offset,
                signal_base, signal_slope, bot_base, kind, column_weights, column_rates,
                floats, ints, flags, block):
    """Lane ``i``'s ground truth into an ``InfoTable``'s arrays: the expected reward of
    each agent for the current task (``RoutingCore.expected_rewards``), the oracle agent,
    the latent mixture and its primary, the observed quality and the user's flags (the
    tables are ``Tables``' fields)."""
    _traits(r, trait_means, traits)
    bot = 1 if r.is_bot else 0
    K = trait_weights.shape[1]
    A = r.weights.shape[0]
    best = 0
    row = block[i]
    for a in range(K):
        s = _satisfaction(traits, r.task, a, trait_weights, task_offset)
        linear_base, linear_slope, cont = 0.0, 0.0, 0.0
        for c in range(N_COLUMNS):
            base, slope = _column(r, c, signal_base, signal_slope, bot_base)
            if kind[c] == K_CONTINUOUS:
                pc = base + slope * s
                e = min(pc, 1.0) if r.is_bot else _expected_clipped(pc)
                cont += e * column_weights[c]
            else:
                w = column_rates[bot, c] * column_weights[c]
                linear_base += base * w
                linear_slope += slope * w
        expected = (linear_base + linear_slope * s + cont) * r.quality
        row[A + a] = expected
        if expected > row[A + best]:
            best = a
    primary = 0
    for k in range(A):
        row[k] = r.weights[k]
        if r.weights[k] > r.weights[primary]:
            primary = k
    floats[i, 0] = obs_quality
    ints[i, 0], ints[i, 1], ints[i, 2] = primary, best, r.group
    ints[i, 3], ints[i, 4] = r.age_band, r.city
    flags[i, 0], flags[i, 1] = r.is_bot, r.consent


@kernel(refcounts=False)
def truth_lanes(lanes, obs, dims, tables, floats, ints, flags, block, work):
    """Every lane's ground truth into an ``InfoTable``'s arrays."""
    tb, traits = tables[0], work[0].traits
    for i in range(lanes.shape[0]):
        _truth_lane(i, lanes[i], traits, obs[i, dims[C_QUALITY]], tb.trait_means,
                    tb.trait_weights, tb.task_offset, tb.signal_base, tb.signal_slope,
                    tb.bot_base, tb.kind, tb.column_weights, tb.column_rates, floats, ints,
                    flags, block)


# ---------------------------------------------------------------- the step
@kernel(refcounts=False)
def step_lanes(action, uniforms, normals, lanes, obs, p, dims, tables, with_truth, out,
               floats, ints, flags, block, work):
    """One interaction for every lane (``RoutingCore.step``): agent ``action`` ``(B,)``;
    per lane ``uniforms`` ``(B, 18)`` (the columns' draws, a thumb given, a rating given,
    the conversion delay, churn, the next interaction's mode, task and exploring) and
    ``normals`` ``(B, A + 1)`` (the drift to the next interaction, its latency).

    Writes ``out`` ``(B, 11)`` (``STEP_FLOATS``), the next observation and, ``with_truth``,
    the next decision's ground truth."""
    tb = tables[0]
    horizon, ring = dims[D_HORIZON], dims[D_MAX_DELAY] + 1
    A = normals.shape[1] - 1
    w = work[0]
    traits, values, cdf, loglik = w.traits, w.values, w.cdf, w.loglik
    # the tables as locals: a sub-kernel given the whole tuple pays for every member
    trait_means, trait_weights, task_offset = tb.trait_means, tb.trait_weights, tb.task_offset
    signal_base, signal_slope, bot_base = tb.signal_base, tb.signal_slope, tb.bot_base
    kind, signal_of, share, column_weights = tb.kind, tb.signal_of, tb.share, \
        tb.column_weights
    for i in range(lanes.shape[0]):
        r = lanes[i]
        u = uniforms[i]
        a = action[i]
        t = r.t
        _traits(r, trait_means, traits)
        s = _satisfaction(traits, r.task, a, trait_weights, task_offset)
        # the signals: clip((p − threshold) · multiplier) per column (ResponseModel)
        thumbs_rate = p[P_BOT_FEEDBACK] if r.is_bot else p[P_THUMBS_RATE]
        rating_rate = p[P_BOT_FEEDBACK] if r.is_bot else p[P_RATING_RATE]
        for c in range(N_COLUMNS):
            base, slope = _column(r, c, signal_base, signal_slope, bot_base)
            if kind[c] == K_CONTINUOUS:
                threshold = 0.0
                multiplier = 1.0 if r.is_bot else 0.5 + u[c]
            else:
                threshold = 1.0 - u[THUMBS_UP] if c == THUMBS_DOWN else u[c]
                multiplier = BIG
                if kind[c] == K_THUMB and not u[U_GIVEN_THUMB] < thumbs_rate:
                    multiplier = 0.0
                if kind[c] == K_RATING and not u[U_GIVEN_RATING] < rating_rate:
                    multiplier = 0.0
            v = slope * multiplier * s + (base - threshold) * multiplier
            values[c] = min(max(v, 0.0), 1.0)
        q = r.quality
        delay = min(int(u[U_DELAY] * dims[D_MAX_DELAY]), dims[D_MAX_DELAY] - 1)
        r.queue[(t + 1 + delay) % ring] += values[CONVERSION] * (
            column_weights[CONVERSION] * q)
        arrived = r.queue[t % ring]
        r.queue[t % ring] = 0.0
        o = obs[i]
        o[:] = 0.0
        signals = out[i, 3:]                    # values @ COLLAPSE: one signal per column
        signals[:] = 0.0
        for c in range(N_COLUMNS):
            signals[signal_of[c]] += values[c] * share[c]
        total = 0.0
        for k in range(N_SIGNALS):
            total += signals[k] * tb.signal_weights_now[k]
        signals[SIGNAL_CONVERSION] = 1.0 if arrived > 0 else 0.0
        for k in range(N_SIGNALS):
            o[dims[C_SIGNALS] + k] = signals[k]
        reward = total * q + arrived
        # churn (ResponseModel.leave_threshold), or the last task
        if t == horizon - 1:
            leave_below = 2.0
        elif r.is_bot:
            leave_below = -1.0
        elif u[U_CHURN] < p[P_CHURN_BASE]:
            leave_below = 2.0
        else:
            leave_below = p[P_CHURN_THRESHOLD] - (u[U_CHURN] - p[P_CHURN_BASE]) / max(
                p[P_CHURN_SLOPE], 1e-300)
            if leave_below < 0:
                leave_below = -1.0
        ended = s < leave_below
        if ended:                               # pay conversions still in flight
            for j in range(ring):
                reward += r.queue[j]
        out[i, 0], out[i, 1], out[i, 2] = reward, 1.0 if ended else 0.0, s
        # what the platform saw of this interaction
        o[dims[C_LATENCY]] = min(1.0, math.log1p(r.latency) / p[P_LATENCY_NORM])
        o[dims[C_EXPLORE]] = 1.0 if r.explore else 0.0
        o[dims[C_LAST_ACTION] + a] = 1.0
        o[dims[C_QUALITY]] = q
        _fusion_update(r, tb.log_task, tb.log_median, tb.log_explore, p, loglik)
        _fusion_readout(r, o, dims, p, tb.prior)
        r.t = t + 1
        if t + 1 < horizon:                     # the next interaction
            _drift(r, normals[i], p[P_DRIFT])
            _interaction(r, u[U_NEXT], u[U_NEXT + 1], u[U_NEXT + 2], normals[i, A], p, dims,
                         tb.task_cdf, tb.behaviour, cdf)
        _observe_static(r, o, dims)
        if with_truth:
            _truth_lane(i, r, traits, o[dims[C_QUALITY]], trait_means, trait_weights,
                        task_offset, signal_base, signal_slope, bot_base, kind,
                        column_weights, tb.column_rates, floats, ints, flags, block)
