"""``personarl/PersonalityAdaptation-v0``: choose the assistant's style for each turn."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping

from envs.adaptation_core import OBS_COLUMNS, AdaptationCore
from envs.adaptation_model import AdaptationModel
from envs.batched import (MAX_LANES, CoreEnv, CoreVectorEnv, check_info_level,
                           coerce_config, coerce_population, resolve_reward_fn)
from envs import registration
from envs.registration import EnvRecord, register
from rewards.adaptation import AdaptationRewardFn, AdaptationRewardWeights
from personarl.errors import check_int, check_range
from synth.population import PopulationConfig, PopulationSampler

__all__ = ["PersonalityAdaptationEnv", "PersonalityAdaptationVectorEnv", "ENV_ID",
           "build_core", "AdaptationConfig", "RECORD"]

ENV_ID = "personarl/PersonalityAdaptation-v0"


@dataclass
class AdaptationConfig:
    """The env's own arguments and their defaults (``configs/env/adaptation.yaml``)."""

    id: str = ENV_ID
    action_mode: str = "discrete"
    horizon: int = 16
    obs_noise: float = 0.1
    model: Dict[str, Any] = field(default_factory=dict)     # envs.adaptation_model fields
    backend: str = "auto"                                   # personarl.backend: auto|numpy|numba
    num_threads: int = 1                                    # numba step threads (LaneBlocks)


def build_core(num_lanes: int, *, action_mode: str = AdaptationConfig.action_mode,
               horizon: int = AdaptationConfig.horizon,
               population: PopulationConfig | PopulationSampler | Mapping | None = None,
               model: AdaptationModel | Mapping | None = None,
               reward_weights: AdaptationRewardWeights | Mapping | None = None,
               reward_fn: AdaptationRewardFn | None = None,
               obs_noise: float = AdaptationConfig.obs_noise,
               info_level: str = "full",
               backend: str = AdaptationConfig.backend,
               num_threads: int = AdaptationConfig.num_threads) -> AdaptationCore:
    """Validate the arguments shared by the single and the vector env (the defaults of
    the configurable ones are ``AdaptationConfig``'s)."""
    reward_fn = resolve_reward_fn(reward_fn, reward_weights, AdaptationRewardWeights)
    sampler = coerce_population(population)
    return AdaptationCore(
        check_int("num_envs", num_lanes, 1, MAX_LANES), sampler=sampler,
        model=coerce_config(model, AdaptationModel, "model"), reward_fn=reward_fn,
        horizon=check_int("horizon", horizon, 4, 1000), action_mode=action_mode,
        obs_noise=check_range("obs_noise", obs_noise, 0, 1),
        with_truth=check_info_level(info_level) == "full", backend=backend,
        num_threads=num_threads)


class PersonalityAdaptationEnv(CoreEnv):
    """Adapt the assistant's personality to the user, turn by turn.

    ## Description

    One episode is one conversation of up to ``horizon`` turns through four phases —
    opening (15% of the turns), building (30%), problem solving (40%), closing (15%). Each
    turn the user sends a message; the policy sets the style the assistant answers in. How
    well that style suits the user moves their sentiment and engagement, which carry into
    later turns; a disengaged user may leave early.

    ## Persona model

    The user is drawn from the persona population; their archetype mixture and their own
    traits set which assistant style they prefer and which traits they care about
    (``envs.adaptation_model``: e.g. optimizers want directness and no humor, socializers
    warmth and fun, high-neuroticism users empathy; frustration raises the weight of
    empathy; problem solving raises directness, opening and closing warmth). The platform
    sees the messages and a running estimate of the user's traits from noisy readings of
    each message, never the traits themselves.

    ## Action Space

    ``action_mode="discrete"``: ``Discrete(9)``, a strategy (mirror / complement / balance
    the perceived user traits) × a tone (warm / neutral / direct), ``envs.adaptation_model
    .STYLES``. ``action_mode="continuous"``: ``Box(0, 1, (10,), float32)``, the assistant's
    ten traits directly; values outside [0, 1] are clipped (Gaussian policies sample outside
    the box); NaN or a wrong shape is an ``InvalidActionError``.

    ## Observation Space

    ``Box(0, 1, (33,), float32)``:

    | columns | content |
    |---|---|
    | phase (4) | one-hot conversation phase |
    | turn (1) | turn / horizon |
    | sentiment, urgency, length (3) | features of the user's message (noise ``obs_noise``) |
    | topic (5) | one-hot topic (``synth.TASK_TYPES``) |
    | perceived (10) | the platform's running estimate of the user's traits |
    | last_style (10) | the assistant traits used last turn (0.5 at the start) |

    ## Rewards

    ``0.3 · engagement + 0.4 · resonance + 0.3 · explicit`` after each turn
    (``rewards.adaptation_reward``): engagement and resonance (sentiment mapped to [0, 1])
    are levels, explicit is a thumb (+1 / −1, given on 15% of turns). Weights configurable;
    or inject ``reward_fn(engagement, resonance, explicit)``.

    ## Episode End

    ``terminated`` after ``horizon`` turns or when a user whose engagement fell below
    ``leave_below`` leaves (probability ``leave_prob`` per turn). ``truncated`` is always
    ``False``.

    ## Information

    With ``info_level="full"``: ``latent_traits``, ``latent_weights``, ``latent_primary``,
    ``preferred_style`` (the user's target style) and ``style_importance`` (how much each
    of its traits matters to the user), ``latent_sentiment``,
    ``latent_engagement``, ``phase``, ``consent``, ``is_bot``, and the quasi-identifiers
    ``group``, ``age_band``, ``city`` (``synth.demographics``); in discrete mode
    ``expected_reward`` of each style and
    ``oracle_action`` (the myopic oracle); in continuous mode ``oracle_action`` is the
    preferred style (satisfaction 1). After a step also ``satisfaction`` and ``thumb``.

    ## Arguments

    ``action_mode`` (``"discrete"`` or ``"continuous"``), ``horizon`` (turns per conversation, 4..1000),
    ``population`` (must keep the six default archetypes), ``model``
    (``AdaptationModel`` or a mapping), ``reward_weights`` or ``reward_fn``, ``obs_noise``,
    ``info_level``, ``backend`` (``"auto"``, ``"numpy"``, ``"numba"``: ``personarl.backend``;
    the same trajectories either way), ``num_threads`` (1..64: threads the ``numba`` step
    shares the lanes out to, ``envs.batched.LaneBlocks``, and that sample arriving users;
    the same trajectories either way).

    ## Version History

    * v0: initial version (issue 17 renamed the argument ``max_turns`` to ``horizon``,
      the name every env gives the most decisions an episode can have).
      Issue 18 reordered the draws (a pool of users; per-turn noise from a second
      stream): other trajectories for a seed, the same distribution (tested to a 1% shift
      of the mean return, ``tests/test_env_equivalence.py``), so the id stays v0; states
      saved before do not restore (a ``ConfigError``).
    """

    def __init__(self, *, info_level: str = "full", **kwargs: Any) -> None:
        super().__init__(registration.build_core(ENV_ID, 1, info_level=info_level, **kwargs),
                         info_level)


class PersonalityAdaptationVectorEnv(CoreVectorEnv):
    """``num_envs`` conversations stepped together (autoreset as in ``CoreVectorEnv``)."""

    def __init__(self, num_envs: int = 1, *, info_level: str = "full",
                 autoreset_mode: str = "next_step", **kwargs: Any) -> None:
        super().__init__(registration.build_core(ENV_ID, num_envs, info_level=info_level,
                                                  **kwargs), info_level,
                         autoreset_mode)


RECORD = register(EnvRecord(
    id=ENV_ID, entry_point="envs.adaptation:PersonalityAdaptationEnv",
    vector_entry_point="envs.adaptation:PersonalityAdaptationVectorEnv",
    build_core="envs.adaptation:build_core", config_name="adaptation",
    env_config=AdaptationConfig, reward_arg="reward_weights",
    reward_config=AdaptationRewardWeights,
    observation_layout=lambda kwargs: dict(OBS_COLUMNS),
    action_modes={"discrete": {}, "continuous": {"action_mode": "continuous"}},
    baselines="agents.baselines.adaptation:adaptation_baselines",
    renamed={"max_turns": "horizon"}))
