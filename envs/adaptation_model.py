"""PersonalityAdaptation's model: what assistant style suits whom, and how a chat evolves.

**Compatibility.** Each archetype prefers an assistant style (a point in the ten-trait
space) and cares about some traits more than others (``PREFERRED``, ``IMPORTANCE``; rows in
``synth.ARCHETYPE_NAMES`` order, columns in ``synth.TRAITS`` order). A user's target and
importance are the mixture of their archetypes', adjusted by their own traits:

* high-neuroticism users want more empathy and care more about it
  (``target_empathy += 0.5 · (neuroticism − ½)``, ``importance_empathy += neuroticism``);
* formality is mirrored (``target_formality += 0.4 · (formality − ½)``);
* a frustrated user (sentiment < 0) cares more about empathy (``+ 1.5 · (−sentiment)``);
* phases re-weight: problem-solving doubles directness and conscientiousness, opening and
  closing double empathy and enthusiasm.

Satisfaction with an assistant style ``a`` is
``exp(−Σ_j imp_j (a_j − target_j)² / Σ_j imp_j / mismatch_scale)``.

**Discrete styles.** A strategy applied to the platform's *perceived* user traits
``p`` — ``mirror: a = p``, ``complement: a = 1 − p``, ``balance: a = (p + ½) / 2`` — then a
tone shift (``TONE_SHIFT``: warm raises empathy, enthusiasm, humor and lowers directness;
direct raises directness and formality and lowers humor and empathy), clipped to [0, 1].

**Conversation.** Sentiment ``s`` and engagement ``g`` move toward what the turn was worth:
``s ← s + sentiment_rate · ((2·sat − 1) − s)``, ``g ← g + engagement_rate · (sat − g) −
engagement_drain``; a user whose engagement falls below ``leave_below`` leaves with
probability ``leave_prob`` per turn. Each turn the user may give explicit feedback (a thumb,
with probability ``feedback_rate``: up with probability ``sat``).

**Reward** (``rewards.adaptation_reward``): ``0.3 · g' + 0.4 · (s' + 1)/2 + 0.3 · thumb`` —
the write-ups' engagement / resonance / explicit weights on the levels after the turn
(levels, not gains, so a conversation that stays good keeps paying).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from rewards.adaptation import AdaptationRewardFn
from synth.archetypes import ARCHETYPE_NAMES, TRAITS
from personarl.errors import check_range

__all__ = ["PHASES", "STRATEGIES", "TONES", "STYLES", "PREFERRED", "IMPORTANCE", "TONE_SHIFT",
           "PHASE_URGENCY", "PHASE_WEIGHT",
           "AdaptationModel", "ChatState", "Preferences", "phase_bounds", "phase_of",
           "style_vectors",
           "satisfaction", "chat_transition", "turn_reward", "style_rewards"]

PHASES = ("opening", "building", "problem_solving", "closing")
STRATEGIES = ("mirror", "complement", "balance")
TONES = ("warm", "neutral", "direct")
STYLES = tuple(f"{s}_{t}" for s in STRATEGIES for t in TONES)
_T = {name: i for i, name in enumerate(TRAITS)}
assert ARCHETYPE_NAMES == ("explorer", "optimizer", "socializer", "achiever", "helper",
                           "learner")

#: preferred assistant traits per archetype (open, consc, extra, agree, neuro, humor,
#: empathy, formal, direct, enthus), from the write-ups' descriptions of each archetype:
PREFERRED = np.array([
    [.90, .70, .65, .60, .25, .70, .50, .25, .50, .90],   # explorer: novelty, with structure
    [.40, .90, .35, .45, .20, .05, .30, .70, .95, .35],   # optimizer: direct, no jokes
    [.65, .40, .95, .90, .25, .95, .90, .10, .20, .95],   # socializer: warmer than itself
    [.50, .80, .60, .40, .20, .25, .25, .65, .95, .85],   # achiever: driven, direct
    [.55, .80, .55, .90, .25, .45, .95, .45, .45, .70],   # helper: guidance: warmth + structure
    [.75, .95, .35, .60, .20, .20, .55, .80, .60, .45],   # learner: thorough, formal
])
#: how much each archetype cares about each trait of the assistant
IMPORTANCE = np.array([
    [1.0, .2, .4, .3, .2, .9, .3, .3, .2, .9],
    [.2, .9, .2, .2, .2, 1.0, .2, .5, 1.0, .3],
    [.3, .2, .8, .7, .2, .9, .6, .4, .3, .8],
    [.2, .7, .4, .2, .2, .3, .2, .3, .9, .7],
    [.2, .3, .3, .8, .3, .3, 1.0, .2, .4, .3],
    [.8, .9, .2, .3, .2, .3, .3, .7, .3, .2],
])
#: tone shifts added to a strategy's style
TONE_SHIFT = np.zeros((3, len(TRAITS)))
TONE_SHIFT[0, [_T["empathy"], _T["enthusiasm"], _T["humor"], _T["directness"]]] = \
    [.3, .2, .15, -.25]
TONE_SHIFT[2, [_T["directness"], _T["formality"], _T["humor"], _T["empathy"]]] = \
    [.3, .15, -.25, -.15]
#: baseline urgency of a user's message in each phase (observed with noise)
PHASE_URGENCY = np.array([0.3, 0.35, 0.7, 0.25])
#: importance multipliers per phase
PHASE_WEIGHT = np.ones((4, len(TRAITS)))
PHASE_WEIGHT[2, [_T["directness"], _T["conscientiousness"]]] = 2.0
PHASE_WEIGHT[[0, 3], _T["empathy"]] = 2.0
PHASE_WEIGHT[[0, 3], _T["enthusiasm"]] = 2.0


@dataclass(frozen=True)
class AdaptationModel:
    """Parameters of the conversation (fixed, documented defaults)."""

    mismatch_scale: float = 0.06
    sentiment_rate: float = 0.4
    engagement_rate: float = 0.3
    engagement_drain: float = 0.02
    leave_below: float = 0.3
    leave_prob: float = 0.5
    feedback_rate: float = 0.15
    perception_noise: float = 0.25

    def __post_init__(self) -> None:
        for f in fields(self):
            check_range(f.name, getattr(self, f.name), 0, 1,
                        low_open=f.name == "mismatch_scale")


@dataclass
class Preferences:
    """Per-user, phase-independent parts of the compatibility model (arrays ``(B, 10)``)."""

    target: np.ndarray
    importance: np.ndarray

    def take(self, idx: np.ndarray) -> "Preferences":
        return Preferences(self.target[idx], self.importance[idx])

    @classmethod
    def of(cls, traits: np.ndarray, weights: np.ndarray) -> "Preferences":
        """From traits ``(B, 10)`` and mixture weights over the six archetypes ``(B, 6)``."""
        target = weights @ PREFERRED
        importance = weights @ IMPORTANCE
        neuro = traits[:, _T["neuroticism"]]
        target[:, _T["empathy"]] += 0.5 * (neuro - 0.5)
        importance[:, _T["empathy"]] += neuro
        target[:, _T["formality"]] += 0.4 * (traits[:, _T["formality"]] - 0.5)
        return cls(target=np.clip(target, 0.0, 1.0), importance=importance)


@dataclass
class ChatState:
    """Emotional state of ``B`` users (arrays ``(B,)``)."""

    sentiment: np.ndarray
    engagement: np.ndarray

    def take(self, idx: np.ndarray) -> "ChatState":
        """A copy of the rows ``idx``."""
        return ChatState(self.sentiment[idx].copy(), self.engagement[idx].copy())


def phase_bounds(horizon: int) -> np.ndarray:
    """``(3,)`` the first turn of building, problem solving and closing: opening 15% of the
    turns, building 30%, problem solving 40%, closing 15%."""
    return np.ceil(np.array([0.15, 0.45, 0.85]) * horizon).astype(np.int64)


def phase_of(turn: np.ndarray, horizon: int) -> np.ndarray:
    """Phase index of each turn (``phase_bounds``)."""
    return np.searchsorted(phase_bounds(horizon), np.minimum(turn, horizon - 1), side="right")


def style_vectors(style: np.ndarray, perceived: np.ndarray) -> np.ndarray:
    """Assistant traits ``(B, 10)`` for discrete ``style`` indices and perceived user traits."""
    strategy, tone = style // 3, style % 3
    base = np.where((strategy == 0)[:, None], perceived,
                    np.where((strategy == 1)[:, None], 1.0 - perceived, (perceived + 0.5) / 2))
    return np.clip(base + TONE_SHIFT[tone], 0.0, 1.0)


def satisfaction(assistant: np.ndarray, prefs: Preferences, phase: np.ndarray,
                 sentiment: np.ndarray, model: AdaptationModel) -> np.ndarray:
    """``(B,)`` satisfaction with assistant styles ``(B, 10)`` (see the module docstring)."""
    importance = prefs.importance * PHASE_WEIGHT[phase]
    importance[:, _T["empathy"]] += 1.5 * np.maximum(0.0, -sentiment)
    mismatch = (importance * (assistant - prefs.target) ** 2).sum(axis=1) / importance.sum(axis=1)
    return np.exp(-mismatch / model.mismatch_scale)


def chat_transition(state: ChatState, sat: np.ndarray, thumb_u: np.ndarray | None,
                    model: AdaptationModel, reward_fn: AdaptationRewardFn,
                    expected: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Advance the emotional state in place after a turn with satisfaction ``sat``.

    Returns:
        ``(reward, thumb)``: the reward and the explicit feedback (+1, −1 or 0; its
        expectation when ``expected``).
    """
    m = model
    if expected:
        thumb = m.feedback_rate * (2.0 * sat - 1.0)
    else:
        given = thumb_u[:, 0] < m.feedback_rate
        thumb = given * np.where(thumb_u[:, 1] < sat, 1.0, -1.0)
    state.sentiment = np.clip(state.sentiment + m.sentiment_rate
                              * ((2.0 * sat - 1.0) - state.sentiment), -1.0, 1.0)
    state.engagement = np.clip(state.engagement + m.engagement_rate * (sat - state.engagement)
                               - m.engagement_drain, 0.0, 1.0)
    return reward_fn(state.engagement, (state.sentiment + 1.0) / 2.0, thumb), thumb


def turn_reward(assistant: np.ndarray, prefs: Preferences, phase: np.ndarray,
                state: ChatState, model: AdaptationModel, reward_fn: AdaptationRewardFn
                ) -> np.ndarray:
    """``(n,)`` expected reward of answering this turn in assistant styles ``(n, 10)``
    (the thumb in expectation; ``state`` unchanged)."""
    sat = satisfaction(assistant, prefs, phase, state.sentiment, model)
    reward, _ = chat_transition(state.take(slice(None)), sat, None, model, reward_fn,
                                expected=True)
    return reward


def style_rewards(perceived: np.ndarray, prefs: Preferences, phase: np.ndarray,
                  state: ChatState, model: AdaptationModel, reward_fn: AdaptationRewardFn
                  ) -> np.ndarray:
    """``(n, 9)`` expected reward of every discrete style this turn (``state`` unchanged)."""
    n, k = len(perceived), len(STYLES)
    rep = np.repeat(np.arange(n), k)
    return turn_reward(style_vectors(np.tile(np.arange(k), n), perceived[rep]),
                       prefs.take(rep), phase[rep], state.take(rep), model,
                       reward_fn).reshape(n, k)
