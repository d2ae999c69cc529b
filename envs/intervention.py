"""``personarl/InterventionTiming-v0``: decide when to step in for a returning user."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping

import numpy as np

from envs.batched import (MAX_LANES, CoreEnv, CoreVectorEnv, check_info_level,
                           coerce_config, coerce_population, column_slices,
                           resolve_reward_fn)
from envs.intervention_core import OBS_FEATURES, InterventionCore
from envs.intervention_model import InterventionModel
from envs import registration
from envs.registration import EnvRecord, register
from rewards.intervention import InterventionRewardFn, InterventionRewardWeights
from personarl.errors import check_int, check_range
from synth.population import PopulationConfig, PopulationSampler

__all__ = ["InterventionTimingEnv", "InterventionTimingVectorEnv", "ENV_ID", "build_core",
           "InterventionConfig", "safety_metrics", "RECORD"]

ENV_ID = "personarl/InterventionTiming-v0"


@dataclass
class InterventionConfig:
    """The env's own arguments and their defaults (``configs/env/intervention.yaml``)."""

    id: str = ENV_ID
    days: int = 7
    slots_per_day: int = 4
    obs_noise: float = 0.1
    model: Dict[str, Any] = field(default_factory=dict)     # envs.intervention_model fields
    backend: str = "auto"                                   # personarl.backend: auto|numpy|numba
    num_threads: int = 1                                    # numba step threads (LaneBlocks)


def build_core(num_lanes: int, *, days: int = InterventionConfig.days,
               slots_per_day: int = InterventionConfig.slots_per_day,
               population: PopulationConfig | PopulationSampler | Mapping | None = None,
               model: InterventionModel | Mapping | None = None,
               reward_weights: InterventionRewardWeights | Mapping | None = None,
               reward_fn: InterventionRewardFn | None = None,
               obs_noise: float = InterventionConfig.obs_noise,
               info_level: str = "full",
               backend: str = InterventionConfig.backend,
               num_threads: int = InterventionConfig.num_threads) -> InterventionCore:
    """Validate the arguments shared by the single and the vector env (the defaults of
    the configurable ones are ``InterventionConfig``'s)."""
    reward_fn = resolve_reward_fn(reward_fn, reward_weights, InterventionRewardWeights)
    sampler = coerce_population(population)
    return InterventionCore(
        check_int("num_envs", num_lanes, 1, MAX_LANES), sampler=sampler,
        model=coerce_config(model, InterventionModel, "model"),
        reward_fn=reward_fn,
        days=check_int("days", days, 1, 365), slots_per_day=check_int("slots_per_day",
                                                                      slots_per_day, 1, 24),
        obs_noise=check_range("obs_noise", obs_noise, 0, 1),
        with_truth=check_info_level(info_level) == "full", backend=backend,
        num_threads=num_threads)


class InterventionTimingEnv(CoreEnv):
    """Decide, several times a day over several days, whether and how to intervene.

    ## Description

    One episode follows one returning user for ``days`` days with ``slots_per_day``
    decisions a day (default 7 × 4 = 28). At each slot the platform may do nothing,
    intervene with a supportive, neutral or direct tone, recommend an event, or suggest a
    pairing with another user. Stress shocks come and go; an intervention at a distress
    moment helps, one at the wrong moment annoys; too many interventions tire and annoy;
    a pairing pays off days later; annoyed users opt out or stop coming back.

    ## Persona model

    The user is drawn from the persona population (``synth.population``). Their traits set
    how each tone lands (supportive suits neurotic, agreeable, empathic users; direct suits
    direct, conscientious ones and misfires on neurotic ones), their sociability (events and
    pairings), how often stress strikes (neuroticism) and their baseline engagement — see
    ``envs.intervention_model.UserTraits.from_traits``. Across days the persona drifts: each
    new day the mixture takes a day's worth of the population's drift (``drift_rate ·
    √slots_per_day`` on the log-weights) and the trait-derived parameters follow, so what
    worked on Monday may not on Friday. Without consent, actions have no effect, earn
    nothing and annoy.

    ## Action Space

    ``Discrete(6)``: ``no_action``, ``intervene_supportive``, ``intervene_neutral``,
    ``intervene_direct``, ``recommend_event``, ``suggest_pairing``.

    ## Observation Space

    ``Box(0, 1, (4 + S + 7 + 1 + 1 + 1 + 1 + 6 + 1,), float32)`` with ``S = slots_per_day``
    (26 values by default):

    | columns | content |
    |---|---|
    | valence, arousal, stress, engagement (4) | observed with Gaussian noise ``obs_noise``; valence mapped to [0, 1] |
    | slot (S) | one-hot time of day |
    | weekday (7) | one-hot day of the week (the first day is random) |
    | day (1) | day / days |
    | fatigue (1) | recent interventions, ``f / (1 + f)`` (the platform knows its own actions) |
    | pairing (1) | steps until an accepted pairing pays off / pairing_delay |
    | consent (1) | the user consented |
    | last_action (6) | one-hot of the last action |
    | last_complied (1) | the user followed the last action |

    Annoyance, the exact emotions and the persona stay latent.

    ## Rewards

    ``0.4 · Δvalence + 0.4 · Δengagement + 0.2 · complied − 0.1 · false_intervention``
    (``rewards.intervention_reward``; weights configurable), and nothing for acting without
    consent. Per-step gains add up to the net change over the episode, so what counts is
    what lasts: a pairing that pays off and trust built by well-timed help raise the user's
    resting valence/engagement for good, interventions nobody needed lower it, and a
    boost that merely relaxes back nets out. The dynamics are documented in
    ``envs.intervention_model``.

    ## Episode End

    ``terminated`` when the user opts out (chance ``optout_scale · annoyance²`` per step),
    does not come back at the end of a day (``return_base + return_engagement · engagement
    − return_annoyance · annoyance``), or after ``days · slots_per_day`` steps (the step
    count is observable, so this is terminal). ``truncated`` is always ``False``.

    ## Information

    With ``info_level="full"``: the latent state (``latent_valence``, ``latent_stress``,
    ``latent_annoyance``, …), the persona today (``latent_weights``, ``latent_primary``) and
    its trait-derived parameters (``user_tone_fit``, …),
    this step's ``shock``, ``needs_support``, ``expected_reward`` of every action (exact
    expectation over compliance given the latent state), ``oracle_action`` (the myopic
    oracle), and the safety metrics so far: ``interventions``, ``false_interventions``,
    ``false_intervention_rate`` (share of interventions that were not needed),
    ``opted_out`` (the user has opted out), ``consent``, ``is_bot`` and the quasi-identifiers
    ``group``, ``age_band``, ``city`` (``synth.demographics``). After a step also ``needed``,
    ``false_intervention``, ``complied``, ``opted_out_this_step`` for that step.

    ## Arguments

    ``days`` (1..365), ``slots_per_day`` (1..24), ``population``, ``model``
    (``InterventionModel`` or a mapping of its fields), ``reward_weights`` (or mapping)
    *or* an injected ``reward_fn(Δvalence, Δengagement, complied, false_intervention)``,
    ``obs_noise`` (0..1), ``info_level``, ``backend`` (``"auto"``, ``"numpy"``,
    ``"numba"``: ``personarl.backend``; the same trajectories either way), ``num_threads``
    (1..64: threads the ``numba`` step shares the lanes out to, ``envs.batched.LaneBlocks``,
    and that sample arriving users; the same trajectories either way).

    ## Version History

    * v0: initial version.
      Issue 18 reordered the draws (a pool of users; per-step noise from a second
      stream): other trajectories for a seed, the same distribution (tested to a 1% shift
      of the mean return, ``tests/test_env_equivalence.py``), so the id stays v0; states
      saved before do not restore (a ``ConfigError``).
      (Stress shocks keep the chance the user arrived with, as they always did in v0,
      although ``user_shock_prob`` drifts with the persona.)
    """

    def __init__(self, *, info_level: str = "full", **kwargs: Any) -> None:
        super().__init__(registration.build_core(ENV_ID, 1, info_level=info_level, **kwargs),
                         info_level)


class InterventionTimingVectorEnv(CoreVectorEnv):
    """``num_envs`` InterventionTiming users stepped together (autoreset as in ``CoreVectorEnv``)."""

    def __init__(self, num_envs: int = 1, *, info_level: str = "full",
                 autoreset_mode: str = "next_step", **kwargs: Any) -> None:
        super().__init__(registration.build_core(ENV_ID, num_envs, info_level=info_level,
                                                  **kwargs), info_level,
                         autoreset_mode)


def observation_layout(kwargs: Mapping[str, Any]) -> dict[str, slice]:
    """Column slices of the observation for these constructor arguments."""
    slots = kwargs.get("slots_per_day", InterventionConfig.slots_per_day)
    return column_slices((n, slots if n == "slot" else w) for n, w in OBS_FEATURES)


#: ``info`` keys ``safety_metrics`` reads after each episode's last step
SAFETY_KEYS = ("false_interventions", "interventions", "opted_out")


def safety_metrics(final: Mapping[str, np.ndarray]) -> dict[str, float | None]:
    """``false_intervention_rate`` pooled over all interventions (``None`` for a policy that
    never intervenes: 0/0 is no rate, not a rate of 0), ``interventions_per_episode`` and
    ``opt_out_rate``, from the ``SAFETY_KEYS`` of each episode's last step ``(episodes,)``.
    """
    interventions = final["interventions"].sum()
    rate = final["false_interventions"].sum() / interventions if interventions else None
    return dict(false_intervention_rate=None if rate is None else float(rate),
                interventions_per_episode=float(final["interventions"].mean()),
                opt_out_rate=float(final["opted_out"].mean()))


RECORD = register(EnvRecord(
    id=ENV_ID, entry_point="envs.intervention:InterventionTimingEnv",
    vector_entry_point="envs.intervention:InterventionTimingVectorEnv",
    build_core="envs.intervention:build_core", config_name="intervention",
    env_config=InterventionConfig, reward_arg="reward_weights",
    reward_config=InterventionRewardWeights, observation_layout=observation_layout,
    safety_keys=SAFETY_KEYS, safety_metrics=safety_metrics,
    baselines="agents.baselines.intervention:intervention_baselines"))
