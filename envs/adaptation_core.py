"""The batched core of PersonalityAdaptation: ``B`` conversations, one turn at a time.

Per user, drawn on arrival: the persona (traits, mixture), the compatibility preferences,
the noise behind every message and trait reading, and the uniforms behind feedback, topics
and leaving — so policies facing the same seed meet the same users and the same noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.adaptation_model import (STYLES, AdaptationModel, ChatState, Preferences,
                                   chat_transition, phase_of, satisfaction, style_rewards,
                                   style_vectors)
from envs.batched import BaseCore, BoxActions, DiscreteActions, column_slices
from rewards.adaptation import AdaptationRewardFn
from synth.archetypes import ARCHETYPE_NAMES, TASK_TYPES, TRAITS
from personarl.errors import ConfigError
from synth.population import PopulationSampler, categorical

__all__ = ["AdaptationCore", "ACTION_MODES", "PHASE_URGENCY", "OBS_COLUMNS"]

ACTION_MODES = ("discrete", "continuous")
#: baseline urgency of a message in each phase
PHASE_URGENCY = np.array([0.3, 0.35, 0.7, 0.25])
_N = len(TRAITS)


#: the observation layout (name -> columns), shared with policies that read observations
OBS_COLUMNS: dict[str, slice] = column_slices((
    ("phase", 4), ("turn", 1), ("sentiment", 1), ("urgency", 1), ("length", 1),
    ("topic", len(TASK_TYPES)), ("perceived", _N), ("last_style", _N)))


class AdaptationCore(BaseCore):
    """State and dynamics of ``num_lanes`` conversations (spec: ``envs.adaptation``)."""

    #: what changes as the core steps (``BaseCore.get_state``); the rest is configuration
    state_fields = ("traits", "target", "importance", "weights", "primary", "group", "consent",
                    "is_bot", "state", "perceived", "last_style", "reading", "msg_noise",
                    "topic", "thumb_u", "leave_u", "t", "obs", "started", "population_time",
                    "step_info")

    def __init__(self, num_lanes: int, *, sampler: PopulationSampler, model: AdaptationModel,
                 reward_fn: AdaptationRewardFn, horizon: int, action_mode: str,
                 obs_noise: float, with_truth: bool) -> None:
        if action_mode not in ACTION_MODES:
            raise ConfigError(f"action_mode={action_mode!r}; valid: {list(ACTION_MODES)}")
        if sampler.base.names != ARCHETYPE_NAMES:
            raise ConfigError("PersonalityAdaptation's compatibility model is defined for "
                              f"the six default archetypes {list(ARCHETYPE_NAMES)}; got "
                              f"{list(sampler.base.names)}")
        self.B, self.horizon = num_lanes, horizon
        self.sampler, self.model, self.reward_fn = sampler, model, reward_fn
        self.discrete = action_mode == "discrete"
        self.actions = (DiscreteActions(len(STYLES), STYLES) if self.discrete
                        else BoxActions(_N, TRAITS))
        self.obs_noise, self.with_truth = obs_noise, with_truth
        self.cols = OBS_COLUMNS
        self.obs_size = OBS_COLUMNS["last_style"].stop
        B, H = num_lanes, horizon
        self.traits, self.target, self.importance = (np.zeros((B, _N)) for _ in range(3))
        self.weights = np.zeros((B, sampler.num_archetypes))
        self.primary, self.group = np.zeros(B, np.int64), np.zeros(B, np.int64)
        self.consent, self.is_bot = np.zeros(B, bool), np.zeros(B, bool)
        self.state = ChatState(sentiment=np.zeros(B), engagement=np.zeros(B))
        self.perceived, self.last_style = np.zeros((B, _N)), np.zeros((B, _N))
        self.reading = np.zeros((B, H + 1, _N))
        self.msg_noise, self.topic = np.zeros((B, H + 1, 3)), np.zeros((B, H + 1), np.int64)
        self.thumb_u, self.leave_u = np.zeros((B, H, 2)), np.zeros((B, H))
        self.t = np.zeros(B, np.int64)
        self.obs = np.zeros((B, self.obs_size), dtype=np.float32)
        self.rows = np.arange(B)
        self.started, self.population_time = False, 0
        self.step_info: dict[str, np.ndarray] = {}

    def phase(self, t: np.ndarray) -> np.ndarray:
        """Phase index of turn ``t``."""
        return phase_of(t, self.horizon)

    def preferences(self, lanes: np.ndarray | slice = slice(None)) -> Preferences:
        return Preferences(self.target[lanes], self.importance[lanes])

    # ------------------------------------------------------------------ users
    def reset_lanes(self, lanes: np.ndarray, rng: np.random.Generator) -> None:
        """New users in ``lanes``: persona, preferences, opening state, all their noise."""
        m, H, mdl = len(lanes), self.horizon, self.model
        pop = self.sampler.sample(m, rng, start_time=self.population_time)
        self.population_time += m
        w6 = pop.weights[:, : len(ARCHETYPE_NAMES)]
        prefs = Preferences.of(pop.traits, w6 / w6.sum(axis=1, keepdims=True))
        self.traits[lanes], self.weights[lanes] = pop.traits, pop.weights
        self.target[lanes], self.importance[lanes] = prefs.target, prefs.importance
        self.primary[lanes], self.group[lanes] = pop.primary, pop.group
        self.consent[lanes], self.is_bot[lanes] = pop.consent, pop.is_bot
        enthusiasm = pop.traits[:, TRAITS.index("enthusiasm")]
        self.state.sentiment[lanes] = np.clip(rng.normal(0.1, 0.2, m), -1, 1)
        self.state.engagement[lanes] = np.clip(0.6 + 0.3 * (enthusiasm - 0.5), 0, 1)
        self.reading[lanes] = np.clip(pop.traits[:, None, :] + rng.normal(
            0.0, mdl.perception_noise, (m, H + 1, _N)), 0.0, 1.0)
        self.msg_noise[lanes] = rng.normal(0.0, self.obs_noise, (m, H + 1, 3))
        task_probs = self.sampler.mixture_tasks(pop.weights, pop.table_id)
        self.topic[lanes] = categorical(task_probs[:, None, :], rng.random((m, H + 1)))
        self.thumb_u[lanes] = rng.random((m, H, 2))
        self.leave_u[lanes] = rng.random((m, H))
        self.perceived[lanes] = self.reading[lanes, 0]
        self.last_style[lanes] = 0.5
        self.t[lanes] = 0
        self._observe(lanes)

    # ------------------------------------------------------------------ step
    def assistant_style(self, action: np.ndarray) -> np.ndarray:
        """``(B, 10)`` assistant traits an action sets (discrete styles use perception)."""
        return style_vectors(action, self.perceived) if self.discrete else action

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One turn for every lane; returns ``(reward, terminated)``."""
        rows, t, m = self.rows, self.t, self.model
        style = self.assistant_style(action)
        sat = satisfaction(style, self.preferences(), self.phase(t), self.state.sentiment, m)
        reward, thumb = chat_transition(self.state, sat, self.thumb_u[rows, t], m,
                                        self.reward_fn)
        leave = (self.state.engagement < m.leave_below) & (self.leave_u[rows, t] < m.leave_prob)
        t1 = t + 1
        terminated = leave | (t1 >= self.horizon)
        # the platform reads the user's next message: one more noisy trait reading
        self.perceived += (self.reading[rows, t1] - self.perceived) / (t1 + 1)[:, None]
        self.t, self.last_style = t1, style
        self._observe(rows)
        self.step_info = {"satisfaction": sat, "thumb": thumb}
        return reward, terminated

    def _observe(self, lanes: np.ndarray) -> None:
        c, s, t = self.cols, self.state, self.t[lanes]
        n = len(lanes)
        phase = self.phase(t)
        noise = self.msg_noise[lanes, t]
        x = self.traits[lanes]
        o = np.zeros((n, self.obs_size), dtype=np.float32)
        o[np.arange(n), c["phase"].start + phase] = 1.0
        o[:, c["turn"].start] = t / self.horizon
        o[:, c["sentiment"].start] = np.clip((s.sentiment[lanes] + 1) / 2 + noise[:, 0], 0, 1)
        o[:, c["urgency"].start] = np.clip(
            PHASE_URGENCY[phase] + 0.3 * (x[:, TRAITS.index("neuroticism")] - 0.5)
            + 0.2 * (x[:, TRAITS.index("conscientiousness")] - 0.5) + noise[:, 1], 0, 1)
        o[:, c["length"].start] = np.clip(0.2 + 0.6 * s.engagement[lanes]
                                          * x[:, TRAITS.index("extraversion")] + noise[:, 2],
                                          0, 1)
        o[np.arange(n), c["topic"].start + self.topic[lanes, t]] = 1.0
        o[:, c["perceived"]] = self.perceived[lanes]
        o[:, c["last_style"]] = self.last_style[lanes]
        self.obs[lanes] = o

    # ------------------------------------------------------------------ info
    def expected_rewards(self) -> np.ndarray:
        """``(B, 9)`` expected reward of each discrete style this turn."""
        return style_rewards(self.perceived, self.preferences(), self.phase(self.t),
                             self.state, self.model, self.reward_fn)

    def info(self) -> dict[str, Any]:
        """Ground truth for every lane's current turn (views of the state; the faces copy)."""
        self.require_truth()
        info: dict[str, Any] = {
            "latent_traits": self.traits, "latent_weights": self.weights,
            "latent_primary": self.primary, "preferred_style": self.target,
            "style_importance": self.importance,
            "latent_sentiment": self.state.sentiment,
            "latent_engagement": self.state.engagement,
            "phase": self.phase(self.t), "consent": self.consent,
            "is_bot": self.is_bot, "group": self.group,
        }
        if self.discrete:
            expected = self.expected_rewards()
            info["expected_reward"] = expected
            info["oracle_action"] = expected.argmax(axis=1)
        else:
            # satisfaction is largest (1) at the preferred style, whatever the phase
            info["oracle_action"] = self.target
        return info
