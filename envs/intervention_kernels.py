"""InterventionTiming's compiled kernels (the ``numba`` backend, ``personarl.backend``).

The same dynamics as ``envs.intervention_model.transition`` and
``envs.intervention_core.InterventionCore`` (the NumPy reference), written lane by lane:
one loop over the users does the transition, the safety counts, the end of the episode,
the persona's drift at the end of a day and the next observation, without a temporary
array. Every random number comes in as an argument (drawn by the core from the env's
generators); ``tests/test_env_backends.py`` checks that both backends give the same
trajectories.

Few arguments, because a kernel's call costs ~0.1 µs per argument (a batch-of-one env
calls one per step): the lanes come as the core's record array (``InterventionCore.record``;
one user per row) and the settings packed (column orders are this module's constants):

* ``lanes[i].latent`` ``(10,)``: ``State``'s fields in ``STATE_FIELDS`` order;
  ``lanes[i].exo`` ``(6,)``: the pending step's uniforms (``EXO``); ``lanes[i].counts``
  ``(4,)``: ``COUNTS``;
* ``p``: ``InterventionModel``'s fields in ``PARAMS`` order, then the day's drift rate and
  the observation noise (``settings``);
* ``dims``: horizon, slots per day, days, then the observation's block starts
  (``OBS_COLS``);
* ``work``: the work arrays as one record (``work``): the lane loops run without
  reference counts (``kernel``'s ``refcounts=False``) and allocate nothing.
"""

from __future__ import annotations

import math
from dataclasses import astuple, fields

import numpy as np

from personarl.backend import kernel, work_record
from envs.intervention_model import InterventionModel, State
from synth.archetypes import TRAITS

__all__ = ["STATE_FIELDS", "EXO", "PARAMS", "COUNTS", "OBS_COLS", "settings", "work",
           "step_lanes",
           "observe_lanes", "truth_lanes", "TRUTH_FLOATS", "TRUTH_INTS", "TRUTH_FLAGS",
           "TRUTH_VECTORS", "STEP_FLOATS", "STEP_FLAGS"]

STATE_FIELDS = tuple(f.name for f in fields(State))
EXO = ("u_hit", "u_size", "u_comply", "u_event", "u_opt", "u_return")
PARAMS = tuple(f.name for f in fields(InterventionModel))
COUNTS = ("interventions", "false_interventions", "needed", "acted_without_consent")
OBS_COLS = ("slot", "weekday", "day", "fatigue", "pairing", "consent", "last_action",
            "last_complied")
#: the ground truth ``truth_lanes`` writes, by type (``envs.batched.InfoTable``)
TRUTH_FLOATS = tuple(f"latent_{n}" for n in STATE_FIELDS) + (
    "user_sociability", "user_shock_prob", "user_baseline_engagement", "shock",
    "false_intervention_rate", "interventions", "false_interventions")
TRUTH_INTS = ("oracle_action", "step", "latent_primary", "group", "age_band", "city")
TRUTH_FLAGS = ("needs_support", "consent", "is_bot", "opted_out")
#: vectors, in order, in one block of columns: name -> width (K and A filled in by the core)
TRUTH_VECTORS = ("expected_reward", "user_tone_fit", "latent_weights")
#: what ``step_lanes`` writes per lane besides the observation
STEP_FLOATS = ("reward", "d_valence", "d_engagement", "complied", "false_intervention")
STEP_FLAGS = ("terminated", "ok", "needed", "false_intervention", "opted_out_this_step",
              "acted")

# column indices (compile-time constants in the kernels)
(VALENCE, AROUSAL, STRESS, ENGAGEMENT, FATIGUE, ANNOYANCE, PAIRING, PAIR_VALUE, BASE_VALENCE,
 BASE_ENGAGEMENT) = (STATE_FIELDS.index(n) for n in (
    "valence", "arousal", "stress", "engagement", "fatigue", "annoyance", "pairing",
    "pair_value", "base_valence", "base_engagement"))
_P = {name: i for i, name in enumerate(PARAMS)}
NEED_STRESS, NEED_VALENCE = _P["need_stress"], _P["need_valence"]
INTERVENE_VALENCE, INTERVENE_STRESS = _P["intervene_valence"], _P["intervene_stress"]
FALSE_ANNOYANCE, NONCONSENT_ANNOYANCE = _P["false_annoyance"], _P["nonconsent_annoyance"]
FALSE_VALENCE, EVENT_ENGAGEMENT = _P["false_valence"], _P["event_engagement"]
PAIRING_COST, PAIRING_VALENCE = _P["pairing_cost"], _P["pairing_valence"]
PAIRING_ENGAGEMENT, PAIRING_DELAY = _P["pairing_engagement"], _P["pairing_delay"]
TRUST_GAIN, TRUST_LOSS = _P["trust_gain"], _P["trust_loss"]
FATIGUE_DECAY, FATIGUE_TOLERANCE = _P["fatigue_decay"], _P["fatigue_tolerance"]
FATIGUE_ANNOYANCE, ANNOYANCE_DECAY = _P["fatigue_annoyance"], _P["annoyance_decay"]
STRESS_DECAY, SHOCK_SIZE, SHOCK_RATE = _P["stress_decay"], _P["shock_size"], _P["shock_rate"]
STRESS_VALENCE, VALENCE_RELAX = _P["stress_valence"], _P["valence_relax"]
ENGAGEMENT_RELAX, OPTOUT_SCALE = _P["engagement_relax"], _P["optout_scale"]
RETURN_BASE, RETURN_ENGAGEMENT = _P["return_base"], _P["return_engagement"]
RETURN_ANNOYANCE = _P["return_annoyance"]
P_DRIFT, P_OBS_NOISE = len(PARAMS), len(PARAMS) + 1
D_HORIZON, D_SLOTS, D_DAYS = 0, 1, 2
U_HIT, U_SIZE, U_COMPLY, U_EVENT, U_OPT, U_RETURN = range(6)
(C_SLOT, C_WEEKDAY, C_DAY, C_FATIGUE, C_PAIRING, C_CONSENT, C_LAST_ACTION,
 C_LAST_COMPLIED) = range(3, 11)
_T = {name: i for i, name in enumerate(TRAITS)}
T_CONSC, T_EXTRA, T_AGREE = (_T[n] for n in ("conscientiousness", "extraversion",
                                              "agreeableness"))
T_NEURO, T_EMPATHY, T_DIRECT = _T["neuroticism"], _T["empathy"], _T["directness"]
_EPS = 1e-6
F_SOCIABILITY, F_SHOCK_PROB, F_BASE_ENGAGEMENT, F_SHOCK, F_FALSE_RATE, F_INTERVENTIONS, \
    F_FALSE = range(len(STATE_FIELDS), len(TRUTH_FLOATS))


def settings(model: InterventionModel, drift_rate: float, obs_noise: float, horizon: int,
             slots: int, days: int, obs_cols: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(p, dims)``: the kernels' packed settings (see the module doc)."""
    p = np.array(astuple(model) + (drift_rate, obs_noise), dtype=np.float64)
    return p, np.array([horizon, slots, days, *obs_cols], dtype=np.int64)


def work() -> np.ndarray:
    """The lane loops' work arrays (``personarl.backend.work_record``): a copy of a lane's
    latent state (``STATE_FIELDS``) and its traits."""
    return work_record(latent=len(STATE_FIELDS), traits=len(TRAITS))


@kernel
def _clip(x, low, high):
    return min(max(x, low), high)


@kernel
def _shock(u_hit, u_size, shock_prob, p):
    """``InterventionModel.shock`` for one user."""
    hit = 1.0 if u_hit < p[SHOCK_RATE] * shock_prob else 0.0
    return hit * p[SHOCK_SIZE] * (0.5 + u_size)


@kernel
def _transition(s, a, fit3, sociability, consent, shock, u_comply, u_event, p, expected):
    """``intervention_model.transition`` for one user: ``s`` (the ``latent`` row) is
    advanced in place; returns ``(Δvalence, Δengagement, complied, false, ok, needed,
    acted_without_consent, optout_prob)``."""
    v0, e0 = s[VALENCE], s[ENGAGEMENT]
    needed = s[STRESS] > p[NEED_STRESS] or s[VALENCE] < p[NEED_VALENCE]
    acting = a != 0
    ok = consent or not acting
    tone = min(max(a - 1, 0), 2)
    intervene = a >= 1 and a <= 3 and ok
    fresh = 1.0 / (1.0 + s[FATIGUE])
    fit = fit3[tone]
    p_comply = fit * fresh * (1.0 - s[ANNOYANCE]) if intervene else 0.0
    p_event = sociability * fresh if (a == 4 and ok) else 0.0
    can_pair = a == 5 and ok and s[PAIRING] == 0
    p_pair = sociability * (1.0 - s[ANNOYANCE]) if can_pair else 0.0
    if expected:
        complied, attended, paired = p_comply, p_event, p_pair
    else:
        complied = 1.0 if u_comply < p_comply else 0.0
        attended = 1.0 if u_event < p_event else 0.0
        paired = 1.0 if u_event < p_pair else 0.0
    false = 1.0 if (intervene and not needed) else 0.0
    help_ = complied * (1.0 if needed else 0.0) * fit
    nonconsent = 1.0 if (acting and not consent) else 0.0
    s[VALENCE] += p[INTERVENE_VALENCE] * help_ - p[FALSE_VALENCE] * false
    s[STRESS] -= p[INTERVENE_STRESS] * help_
    s[ANNOYANCE] += p[FALSE_ANNOYANCE] * false + p[NONCONSENT_ANNOYANCE] * nonconsent
    s[ENGAGEMENT] += p[EVENT_ENGAGEMENT] * attended - p[PAIRING_COST] * paired
    trust = p[TRUST_GAIN] * help_ - p[TRUST_LOSS] * false
    s[BASE_ENGAGEMENT] = _clip(s[BASE_ENGAGEMENT] + trust, 0.0, 1.0)
    s[ENGAGEMENT] += trust
    if can_pair:
        s[PAIR_VALUE] = paired * sociability
        if paired > 0:
            s[PAIRING] = p[PAIRING_DELAY]
    due = 1.0 if s[PAIRING] == 1 else 0.0
    lift_v = due * p[PAIRING_VALENCE] * s[PAIR_VALUE]
    lift_e = due * p[PAIRING_ENGAGEMENT] * s[PAIR_VALUE]
    s[VALENCE] += lift_v
    s[BASE_VALENCE] = _clip(s[BASE_VALENCE] + lift_v, -1.0, 1.0)
    s[ENGAGEMENT] += lift_e
    s[BASE_ENGAGEMENT] = _clip(s[BASE_ENGAGEMENT] + lift_e, 0.0, 1.0)
    if due > 0:
        s[PAIR_VALUE] = 0.0
    s[PAIRING] = max(s[PAIRING] - 1, 0.0)
    s[FATIGUE] += 1.0 if (acting and ok) else 0.0
    s[ANNOYANCE] += (p[FATIGUE_ANNOYANCE] * max(0.0, s[FATIGUE] - p[FATIGUE_TOLERANCE])
                     * (1.0 if acting else 0.0))
    s[STRESS] = _clip(s[STRESS] * p[STRESS_DECAY] + shock, 0.0, 1.0)
    target_v = s[BASE_VALENCE] - p[STRESS_VALENCE] * s[STRESS]
    s[VALENCE] = _clip(s[VALENCE] + p[VALENCE_RELAX] * (target_v - s[VALENCE]), -1.0, 1.0)
    target_e = s[BASE_ENGAGEMENT] * (1.0 - s[ANNOYANCE])
    s[ENGAGEMENT] = _clip(s[ENGAGEMENT] + p[ENGAGEMENT_RELAX] * (target_e - s[ENGAGEMENT]),
                          0.0, 1.0)
    s[AROUSAL] = 0.5 * s[AROUSAL] + 0.5 * s[STRESS]
    s[FATIGUE] *= p[FATIGUE_DECAY]
    s[ANNOYANCE] = _clip(s[ANNOYANCE] * p[ANNOYANCE_DECAY], 0.0, 1.0)
    optout_prob = _clip(p[OPTOUT_SCALE] * (s[ANNOYANCE] * s[ANNOYANCE]), 0.0, 1.0)
    return (s[VALENCE] - v0, s[ENGAGEMENT] - e0, complied, false, ok, needed, nonconsent > 0,
            optout_prob)


@kernel
def _linear_reward(dv, de, complied, false, ok, w):
    """``rewards.intervention_reward`` with weights ``w`` (sentiment, engagement,
    compliance, false_penalty); nothing without consent."""
    if not ok:
        return 0.0
    return w[0] * dv + w[1] * de + w[2] * complied - w[3] * false


@kernel
def _drift(r, day, rate, trait_table, x):
    """A new day for lane record ``r``: the persona mixture drifts and the trait-derived
    parameters follow (``InterventionCore._drift``, ``PopulationSampler.traits_of``,
    ``UserTraits.from_traits``); ``x`` is a work array for the traits."""
    w = r.mixture
    total = 0.0
    for k in range(w.shape[0]):
        if w[k] > 0:
            w[k] = w[k] * math.exp(rate * r.day_noise[day - 1, k])
        total += w[k]
    best = 0
    for k in range(w.shape[0]):
        w[k] /= total
        if w[k] > w[best]:
            best = k
    r.primary = best
    table = trait_table[r.table_id]
    for j in range(table.shape[1]):
        m = 0.0
        for k in range(w.shape[0]):
            m += w[k] * table[k, j]
        m = _clip(m, _EPS, 1.0 - _EPS)
        scaled = m * r.offset_exp[j]
        x[j] = scaled / (scaled + 1.0 - m)
    r.tone_fit[0] = (x[T_NEURO] + x[T_AGREE] + x[T_EMPATHY]) / 3
    r.tone_fit[2] = _clip((x[T_DIRECT] + x[T_CONSC]) / 2 - 0.5 * x[T_NEURO] + 0.25, 0.0, 1.0)
    r.sociability = (x[T_EXTRA] + x[T_AGREE]) / 2
    r.shock_prob = _clip(0.5 * x[T_NEURO] + 0.25, 0.0, 1.0)


@kernel
def _observe_lane(r, z, o, p, dims):
    """Write lane record ``r``'s observation into ``o``; ``z`` ``(4,)`` are standard normals
    (the noise on the observed emotions and engagement, scaled here)."""
    o[:] = 0.0
    s = r.latent
    horizon, slots, days = dims[D_HORIZON], dims[D_SLOTS], dims[D_DAYS]
    noise = p[P_OBS_NOISE]
    last = min(r.t, horizon - 1)
    day = last // slots
    o[0] = _clip((s[VALENCE] + 1) / 2 + noise * z[0], 0.0, 1.0)
    o[1] = _clip(s[AROUSAL] + noise * z[1], 0.0, 1.0)
    o[2] = _clip(s[STRESS] + noise * z[2], 0.0, 1.0)
    o[3] = _clip(s[ENGAGEMENT] + noise * z[3], 0.0, 1.0)
    o[dims[C_SLOT] + last % slots] = 1.0
    o[dims[C_WEEKDAY] + (r.weekday0 + day) % 7] = 1.0
    o[dims[C_DAY]] = day / days
    o[dims[C_FATIGUE]] = s[FATIGUE] / (1.0 + s[FATIGUE])
    o[dims[C_PAIRING]] = s[PAIRING] / p[PAIRING_DELAY]
    o[dims[C_CONSENT]] = 1.0 if r.consent else 0.0
    o[dims[C_LAST_ACTION] + r.last_action] = 1.0
    o[dims[C_LAST_COMPLIED]] = r.last_complied


@kernel(refcounts=False)
def observe_lanes(rows, noise, lanes, obs, p, dims):
    """The observation of each lane in ``rows`` (``InterventionCore._observe``), with
    standard normals ``noise`` ``(len(rows), 4)``."""
    for n in range(rows.shape[0]):
        i = rows[n]
        _observe_lane(lanes[i], noise[n], obs[i], p, dims)


@kernel
def _truth_lane(i, r, scratch, p, reward_weights, linear, floats, ints, flags, vectors,
                parts):
    """Lane ``i``'s ground truth (``truth_lanes``); ``scratch`` is a ``(10,)`` work array."""
    s = r.latent
    k = parts.shape[1]
    shock = _shock(r.exo[U_HIT], r.exo[U_SIZE], r.arrival_shock_prob, p)
    best = 0
    for a in range(k):
        for j in range(s.shape[0]):         # (an array copy would need refcounts)
            scratch[j] = s[j]
        dv, de, complied, false, ok, needed, nonconsent, optout_prob = _transition(
            scratch, a, r.tone_fit, r.sociability, r.consent, shock, 0.0, 0.0, p, True)
        parts[i, a, 0], parts[i, a, 1], parts[i, a, 2] = dv, de, complied
        parts[i, a, 3], parts[i, a, 4] = false, 1.0 if ok else 0.0
        if linear:
            vectors[i, a] = _linear_reward(dv, de, complied, false, ok, reward_weights)
            if vectors[i, a] > vectors[i, best]:
                best = a
    for j in range(s.shape[0]):
        floats[i, j] = s[j]
    floats[i, F_SOCIABILITY] = r.sociability
    floats[i, F_SHOCK_PROB] = r.shock_prob
    floats[i, F_BASE_ENGAGEMENT] = r.baseline_engagement
    floats[i, F_SHOCK] = shock
    floats[i, F_INTERVENTIONS] = r.counts[0]
    floats[i, F_FALSE] = r.counts[1]
    floats[i, F_FALSE_RATE] = r.counts[1] / max(r.counts[0], 1.0)
    ints[i, 0], ints[i, 1], ints[i, 2], ints[i, 3] = best, r.t, r.primary, r.group
    ints[i, 4], ints[i, 5] = r.age_band, r.city
    flags[i, 0] = s[STRESS] > p[NEED_STRESS] or s[VALENCE] < p[NEED_VALENCE]
    flags[i, 1], flags[i, 2], flags[i, 3] = r.consent, r.is_bot, r.opted_out
    for j in range(3):
        vectors[i, k + j] = r.tone_fit[j]
    for j in range(r.mixture.shape[0]):
        vectors[i, k + 3 + j] = r.mixture[j]


@kernel(refcounts=False)
def truth_lanes(lanes, p, reward_weights, linear, floats, ints, flags, vectors, parts, work):
    """Ground truth of every lane's pending decision into an ``InfoTable``'s arrays
    (``floats``/``ints``/``flags`` in ``TRUTH_FLOATS``/``TRUTH_INTS``/``TRUTH_FLAGS``
    order; ``vectors``: ``TRUTH_VECTORS`` side by side): the expected reward of each
    action, exact over compliance given the latent state and this step's shock
    (``action_rewards``), and the oracle's action. Without ``linear`` only ``parts``
    ``(B, K, 5)`` (Δvalence, Δengagement, complied, false, ok) is written for them: the
    caller applies its reward function and takes the argmax."""
    scratch = work[0].latent
    for i in range(lanes.shape[0]):
        _truth_lane(i, lanes[i], scratch, p, reward_weights, linear, floats, ints, flags,
                    vectors, parts)


@kernel(refcounts=False)
def step_lanes(action, noise, uniforms, lanes, obs, trait_table, p, dims, reward_weights,
               linear, with_truth, out, out_flags, floats, ints, flags, vectors, parts,
               work):
    """One decision for every lane (``InterventionCore.step``), then each lane's next
    observation (standard normals ``noise`` ``(B, 4)``), its next step's draws
    (``uniforms`` ``(B, 6)``, copied into its ``exo``) and, ``with_truth``, its ground
    truth (``truth_lanes``).

    Writes ``out`` ``(B, 5)`` (``STEP_FLOATS``; the reward only when ``linear``: otherwise
    the caller applies its reward function to the components and zeroes the lanes whose
    ``ok`` flag is off) and ``out_flags`` ``(B, 6)`` (``STEP_FLAGS``).
    """
    horizon, slots, days = dims[D_HORIZON], dims[D_SLOTS], dims[D_DAYS]
    drift_rate = p[P_DRIFT]
    scratch, traits = work[0].latent, work[0].traits
    for i in range(action.shape[0]):
        a = action[i]
        r = lanes[i]
        s = r.latent
        exo = r.exo
        shock = _shock(exo[U_HIT], exo[U_SIZE], r.arrival_shock_prob, p)
        dv, de, complied, false, ok, needed, nonconsent, optout_prob = _transition(
            s, a, r.tone_fit, r.sociability, r.consent, shock, exo[U_COMPLY], exo[U_EVENT],
            p, False)
        out[i, 1], out[i, 2], out[i, 3], out[i, 4] = dv, de, complied, false
        if linear:
            out[i, 0] = _linear_reward(dv, de, complied, false, ok, reward_weights)
        counts = r.counts
        counts[0] += 1.0 if (a >= 1 and a <= 3) else 0.0
        counts[1] += false
        counts[2] += 1.0 if needed else 0.0
        counts[3] += 1.0 if nonconsent else 0.0
        optout = exo[U_OPT] < optout_prob
        t1 = r.t + 1
        day = min(t1 // slots, days - 1)
        day_end = t1 % slots == 0
        come_back = _clip(p[RETURN_BASE] + p[RETURN_ENGAGEMENT] * s[ENGAGEMENT]
                          - p[RETURN_ANNOYANCE] * s[ANNOYANCE], 0.0, 1.0)
        leaves = day_end and t1 < horizon and not (exo[U_RETURN] < come_back)
        ended = optout or leaves or t1 >= horizon
        if day_end and not ended and drift_rate != 0:
            _drift(r, day, drift_rate, trait_table, traits)
        r.opted_out = r.opted_out or optout
        r.t = t1
        r.last_action = a
        r.last_complied = complied
        out_flags[i, 0], out_flags[i, 1], out_flags[i, 2] = ended, ok, needed
        out_flags[i, 3], out_flags[i, 4], out_flags[i, 5] = false > 0, optout, a != 0
        _observe_lane(r, noise[i], obs[i], p, dims)
        for j in range(exo.shape[0]):           # (an array copy would need refcounts)
            exo[j] = uniforms[i, j]
        if with_truth:
            _truth_lane(i, r, scratch, p, reward_weights, linear, floats, ints, flags,
                        vectors, parts)
