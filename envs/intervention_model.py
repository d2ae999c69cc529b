"""Dynamics of InterventionTiming: one pure, vectorised transition used three ways.

The environment samples it, the myopic oracle reads its expected immediate reward, and the
planner rolls its *expected* version forward (same code, ``expected=True``: Bernoulli
outcomes replaced by their probabilities) — so the planner's model is exactly the
simulator's, as a ground-truth planner should be.

State per user (all in [0, 1] except valences in [-1, 1]): ``valence``, ``arousal``,
``stress``, ``engagement``, ``fatigue`` (recent interventions, decaying), ``annoyance``,
``pairing`` (steps until a suggested pairing pays off, 0 = none pending), ``pair_value``,
and the user's resting levels ``base_valence`` and ``base_engagement``, which actions can
move for good.

Why resting levels: the reward pays per-step *gains* (Δvalence, Δengagement), and a sum of
gains is the net change over the episode. A boost that relaxes back nets zero; only what
lasts counts. So the lasting effects the write-ups describe are modelled as moves of the
resting levels: a pairing that pays off, trust built by well-timed help, trust lost to
interventions nobody needed. That is what makes the task sequential — the pairing's cost
comes now and its gain later, and false interventions cost little now and a lot later.

Per step, in order:

1. *Need.* The user needs support when ``stress > need_stress`` or
   ``valence < need_valence`` (a distress moment).
2. *Action effects* (only with consent; acting without consent has no effect, earns
   nothing and adds ``nonconsent_annoyance``):

   * ``intervene_<tone>``: complied with probability ``tone_fit · 1/(1 + fatigue) ·
     (1 − annoyance)``. When needed and complied: ``valence += intervene_valence ·
     tone_fit``, ``stress −= intervene_stress · tone_fit``. When not needed it is a *false
     intervention*: ``annoyance += false_annoyance``, ``valence −= false_valence``.
   * ``recommend_event``: attended with probability ``sociability / (1 + fatigue)``;
     attending raises engagement by ``event_engagement``.
   * ``suggest_pairing``: accepted with probability ``sociability · (1 − annoyance)``
     (if none is pending); costs ``pairing_cost`` engagement now and, after
     ``pairing_delay`` steps, lifts valence and engagement *and their resting levels* by
     ``pairing_valence``/``pairing_engagement`` × sociability.
   * trust: complied help at a distress moment raises resting engagement by ``trust_gain ·
     tone_fit``; a false intervention lowers it by ``trust_loss``.
   * any action: ``fatigue += 1``; ``annoyance += fatigue_annoyance · max(0, fatigue −
     fatigue_tolerance)`` — too many interventions annoy.
3. *Natural dynamics*: ``stress ← stress · stress_decay + shock`` (exogenous shocks, more
   frequent for neurotic users), valence relaxes toward ``base_valence − stress_valence ·
   stress``, engagement toward ``base_engagement · (1 − annoyance)``, arousal follows stress;
   ``fatigue`` and ``annoyance`` decay.
4. *Reward* ``= reward_fn(Δvalence, Δengagement, complied, false_intervention)``, by default
   ``w_sentiment · Δvalence + w_engagement · Δengagement + w_compliance · complied −
   false_penalty · false_intervention`` (``rewards.intervention_reward``); zero for any
   action taken without consent. With ``expected=True`` the function is applied to expected
   gains and compliance: exact for the (linear) default, certainty-equivalent otherwise.
5. *Leaving*: the user opts out with probability ``optout_scale · annoyance²``; at the end of
   each day the user comes back the next day with probability ``return_base + return_engagement
   · engagement − return_annoyance · annoyance``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from rewards.intervention import InterventionRewardFn
from synth.archetypes import TRAITS
from personarl.errors import check_int, check_range

__all__ = ["ACTIONS", "InterventionModel", "UserTraits", "State", "transition",
           "action_rewards", "fast_clip", "TONES"]

ACTIONS: tuple[str, ...] = ("no_action", "intervene_supportive", "intervene_neutral",
                            "intervene_direct", "recommend_event", "suggest_pairing")
TONES = ("supportive", "neutral", "direct")
_T = {name: i for i, name in enumerate(TRAITS)}


def fast_clip(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """``np.clip`` without its Python-level dispatch (it runs several times per step)."""
    return np.minimum(np.maximum(x, low), high)


@dataclass(frozen=True)
class InterventionModel:
    """Parameters of the dynamics (fixed, documented defaults)."""

    need_stress: float = 0.55
    need_valence: float = -0.25
    intervene_valence: float = 0.35
    intervene_stress: float = 0.30
    false_annoyance: float = 0.12
    nonconsent_annoyance: float = 0.1
    false_valence: float = 0.05
    event_engagement: float = 0.15
    pairing_cost: float = 0.03
    pairing_valence: float = 0.45
    pairing_engagement: float = 0.35
    pairing_delay: int = 6
    trust_gain: float = 0.06
    trust_loss: float = 0.04
    fatigue_decay: float = 0.7
    fatigue_tolerance: float = 1.0
    fatigue_annoyance: float = 0.08
    annoyance_decay: float = 0.97
    stress_decay: float = 0.75
    shock_size: float = 0.45
    shock_rate: float = 0.25
    baseline_valence: float = 0.2
    stress_valence: float = 0.6
    valence_relax: float = 0.3
    engagement_relax: float = 0.15
    optout_scale: float = 0.3
    return_base: float = 0.75
    return_engagement: float = 0.3
    return_annoyance: float = 1.0

    def come_back(self, engagement: np.ndarray, annoyance: np.ndarray) -> np.ndarray:
        """Chance that a user comes back the next day."""
        return fast_clip(self.return_base + self.return_engagement * engagement
                     - self.return_annoyance * annoyance, 0.0, 1.0)

    def shock(self, u_hit: np.ndarray, u_size: np.ndarray, shock_prob: np.ndarray
              ) -> np.ndarray:
        """Stress shocks: with chance ``shock_rate · shock_prob``, ``shock_size · (½ + U)``."""
        return (u_hit < self.shock_rate * shock_prob) * self.shock_size * (0.5 + u_size)

    def mean_shock(self, shock_prob: np.ndarray) -> np.ndarray:
        """The expectation of ``shock`` (``E[½ + U] = 1``)."""
        return self.shock_rate * shock_prob * self.shock_size

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name == "pairing_delay":
                check_int("pairing_delay", self.pairing_delay, 1, 1000)
            elif f.name == "need_valence":
                check_range("need_valence", self.need_valence, -1, 1)
            else:
                check_range(f.name, getattr(self, f.name), 0, 1)


@dataclass
class UserTraits:
    """What the dynamics need to know about each user, derived from the traits ``(B, 10)``."""

    tone_fit: np.ndarray        # (B, 3) how well each tone lands, in [0, 1]
    sociability: np.ndarray     # (B,) drives events and pairing
    shock_prob: np.ndarray      # (B,) chance of a stress shock per step
    baseline_engagement: np.ndarray  # (B,)

    def take(self, idx: np.ndarray) -> "UserTraits":
        return UserTraits(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    @classmethod
    def from_traits(cls, traits: np.ndarray) -> "UserTraits":
        """Documented mapping from the ten traits.

        * supportive tone fits neurotic, agreeable, empathic users;
        * direct tone fits direct, conscientious users and misfires on neurotic ones;
        * neutral fits everyone moderately.
        """
        x = traits
        supportive = (x[:, _T["neuroticism"]] + x[:, _T["agreeableness"]]
                      + x[:, _T["empathy"]]) / 3
        direct = fast_clip((x[:, _T["directness"]] + x[:, _T["conscientiousness"]]) / 2
                         - 0.5 * x[:, _T["neuroticism"]] + 0.25, 0, 1)
        neutral = np.full(len(x), 0.5)
        return cls(
            tone_fit=np.stack([supportive, neutral, direct], axis=1),
            sociability=(x[:, _T["extraversion"]] + x[:, _T["agreeableness"]]) / 2,
            shock_prob=fast_clip(0.5 * x[:, _T["neuroticism"]] + 0.25, 0, 1),
            baseline_engagement=(x[:, _T["enthusiasm"]] + x[:, _T["openness"]]) / 2,
        )


@dataclass
class State:
    """Latent state of ``B`` users (arrays ``(B,)``)."""

    valence: np.ndarray
    arousal: np.ndarray
    stress: np.ndarray
    engagement: np.ndarray
    fatigue: np.ndarray
    annoyance: np.ndarray
    pairing: np.ndarray
    pair_value: np.ndarray
    base_valence: np.ndarray
    base_engagement: np.ndarray

    def copy(self) -> "State":
        return State(**{f.name: getattr(self, f.name).copy() for f in fields(self)})

    def take(self, idx: np.ndarray) -> "State":
        return State(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})


@dataclass
class Outcome:
    """What one transition produced, arrays ``(B,)``."""

    reward: np.ndarray
    needed: np.ndarray
    false_intervention: np.ndarray
    complied: np.ndarray
    acted_without_consent: np.ndarray
    optout_prob: np.ndarray


def transition(state: State, action: np.ndarray, user: UserTraits, consent: np.ndarray,
               shock: np.ndarray, u: np.ndarray | None, model: InterventionModel,
               reward_fn: InterventionRewardFn, expected: bool = False) -> Outcome:
    """Advance ``state`` in place by one step.

    Args:
        state: latent state, modified in place.
        action: ``(B,)`` action indices into ``ACTIONS``.
        user: per-user trait-derived parameters.
        consent: ``(B,)`` consent flags.
        shock: ``(B,)`` exogenous stress shock this step (its expectation when planning).
        u: ``(B, 2)`` uniforms for compliance/acceptance, or ``None`` with ``expected``.
        model: dynamics parameters.
        reward_fn: the reward of the step from its gains, compliance and false intervention
            (``InterventionRewardWeights().function()`` by default in the env).
        expected: replace every Bernoulli outcome by its probability (planning).
    """
    m = model
    v0, e0 = state.valence.copy(), state.engagement.copy()
    needed = (state.stress > m.need_stress) | (state.valence < m.need_valence)
    acting = action != 0
    ok = consent | ~acting
    tone = fast_clip(action - 1, 0, 2)
    intervene = (action >= 1) & (action <= 3) & ok
    fresh = 1.0 / (1.0 + state.fatigue)
    fit = user.tone_fit[np.arange(len(action)), tone]
    p_comply = np.where(intervene, fit * fresh * (1.0 - state.annoyance), 0.0)
    p_event = np.where((action == 4) & ok, user.sociability * fresh, 0.0)
    can_pair = (action == 5) & ok & (state.pairing == 0)
    p_pair = np.where(can_pair, user.sociability * (1.0 - state.annoyance), 0.0)
    if expected:
        complied, attended, paired = p_comply, p_event, p_pair
    else:
        complied = (u[:, 0] < p_comply).astype(np.float64)
        attended = (u[:, 1] < p_event).astype(np.float64)
        paired = (u[:, 1] < p_pair).astype(np.float64)
    false = intervene & ~needed
    help_ = complied * needed * fit
    state.valence += m.intervene_valence * help_ - m.false_valence * false
    state.stress -= m.intervene_stress * help_
    state.annoyance += m.false_annoyance * false + m.nonconsent_annoyance * (acting & ~consent)
    state.engagement += m.event_engagement * attended - m.pairing_cost * paired
    # lasting trust: well-timed help builds it, interventions nobody needed erode it
    trust = m.trust_gain * help_ - m.trust_loss * false
    state.base_engagement = fast_clip(state.base_engagement + trust, 0.0, 1.0)
    state.engagement += trust
    # a pairing: the payoff value is carried, the timer counts down to it; when it pays
    # off it lifts the user's baselines for good (a new connection), not just for a while
    state.pair_value = np.where(can_pair, paired * user.sociability, state.pair_value)
    state.pairing = np.where(can_pair & (paired > 0), m.pairing_delay, state.pairing)
    due = state.pairing == 1
    lift_v = due * m.pairing_valence * state.pair_value
    lift_e = due * m.pairing_engagement * state.pair_value
    state.valence += lift_v
    state.base_valence = fast_clip(state.base_valence + lift_v, -1.0, 1.0)
    state.engagement += lift_e
    state.base_engagement = fast_clip(state.base_engagement + lift_e, 0.0, 1.0)
    state.pair_value = np.where(due, 0.0, state.pair_value)
    state.pairing = np.maximum(state.pairing - 1, 0)
    state.fatigue += acting & ok
    state.annoyance += m.fatigue_annoyance * np.maximum(0.0, state.fatigue
                                                        - m.fatigue_tolerance) * acting
    # natural dynamics
    state.stress = fast_clip(state.stress * m.stress_decay + shock, 0.0, 1.0)
    target_v = state.base_valence - m.stress_valence * state.stress
    state.valence = fast_clip(state.valence + m.valence_relax * (target_v - state.valence), -1, 1)
    target_e = state.base_engagement * (1.0 - state.annoyance)
    state.engagement = fast_clip(state.engagement + m.engagement_relax
                               * (target_e - state.engagement), 0.0, 1.0)
    state.arousal = 0.5 * state.arousal + 0.5 * state.stress
    state.fatigue *= m.fatigue_decay
    state.annoyance = fast_clip(state.annoyance * m.annoyance_decay, 0.0, 1.0)
    reward = reward_fn(state.valence - v0, state.engagement - e0, complied, false)
    reward = np.where(ok, reward, 0.0)
    return Outcome(reward=reward, needed=needed, false_intervention=false,
                   complied=complied, acted_without_consent=acting & ~consent,
                   optout_prob=fast_clip(m.optout_scale * state.annoyance ** 2, 0.0, 1.0))


def action_rewards(state: State, user: UserTraits, consent: np.ndarray, shock: np.ndarray,
                   model: InterventionModel, reward_fn: InterventionRewardFn) -> np.ndarray:
    """``(n, K)`` expected immediate reward of every action (``state`` is not changed)."""
    n, k = len(consent), len(ACTIONS)
    rep = np.repeat(np.arange(n), k)
    out = transition(state.take(rep), np.tile(np.arange(k), n), user.take(rep), consent[rep],
                     shock[rep], None, model, reward_fn, expected=True)
    return out.reward.reshape(n, k)
