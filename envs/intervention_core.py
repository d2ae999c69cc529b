"""The batched core of InterventionTiming: ``B`` returning users over several days.

The state answers to actions (fatigue, annoyance, pairings in flight), so it is stepped
one decision at a time with ``envs.intervention_model.transition``. What does not depend on
the actions — stress shocks, the uniforms behind compliance, opting out and coming back, the
observation noise — is drawn per user when the user arrives, so every policy facing the
same seed meets the same shocks (common random numbers for paired comparisons).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np

from envs.batched import BaseCore, DiscreteActions, column_slices
from envs.intervention_model import (ACTIONS, InterventionModel, State, UserTraits,
                                     fast_clip, action_rewards, transition)
from rewards.intervention import InterventionRewardFn
from synth.archetypes import TRAITS
from synth.population import PopulationSampler

__all__ = ["InterventionCore", "OBS_FEATURES"]

#: observation layout: name -> width
OBS_FEATURES: tuple[tuple[str, int], ...] = (
    ("valence", 1), ("arousal", 1), ("stress", 1), ("engagement", 1), ("slot", 0),
    ("weekday", 7), ("day", 1), ("fatigue", 1), ("pairing", 1), ("consent", 1),
    ("last_action", len(ACTIONS)), ("last_complied", 1),
)
_STATE = tuple(f.name for f in fields(State))
_USER = ("tone_fit", "sociability", "shock_prob", "baseline_engagement")
_COUNTS = ("interventions", "false_interventions", "needed", "acted_without_consent")


class InterventionCore(BaseCore):
    """State and dynamics of ``num_lanes`` users (see ``envs.intervention`` for the spec).

    Args:
        num_lanes: batch size B.
        sampler: the population.
        model: dynamics parameters.
        reward_fn: the step's reward (see ``envs.intervention_model.transition``).
        days: days per episode.
        slots_per_day: decisions per day.
        obs_noise: std of the noise on the observed emotions and engagement.
        with_truth: compute the ground truth ``info`` reports (expected rewards).
    """

    #: what changes as the core steps (``BaseCore.get_state``); the rest is configuration
    state_fields = ("state", "user", "consent", "is_bot", "opted_out", "primary", "group",
                    "weekday0", "mixture", "offset_exp", "day_noise", "shock", "u_opt", "u",
                    "u_return", "noise", "counts", "t", "last_action", "last_complied", "obs",
                    "started", "population_time", "step_info")

    def __init__(self, num_lanes: int, *, sampler: PopulationSampler, model: InterventionModel,
                 reward_fn: InterventionRewardFn, days: int, slots_per_day: int,
                 obs_noise: float, with_truth: bool) -> None:
        self.B, self.K = num_lanes, len(ACTIONS)
        self.actions = DiscreteActions(self.K, ACTIONS)
        self.sampler, self.model, self.reward_fn = sampler, model, reward_fn
        self.days, self.slots, self.horizon = days, slots_per_day, days * slots_per_day
        self.obs_noise, self.with_truth = obs_noise, with_truth
        self.cols = column_slices((n, slots_per_day if n == "slot" else w)
                                  for n, w in OBS_FEATURES)
        self.obs_size = self.cols["last_complied"].stop
        z = lambda *shape, dtype=np.float64: np.zeros((num_lanes,) + shape, dtype)  # noqa
        self.state = State(**{name: z() for name in _STATE})
        self.user = UserTraits(tone_fit=z(3), sociability=z(), shock_prob=z(),
                               baseline_engagement=z())
        self.consent, self.is_bot = z(dtype=bool), z(dtype=bool)
        self.primary, self.group, self.weekday0 = (z(dtype=np.int64) for _ in range(3))
        # the persona drifts from day to day: mixture, trait offsets, epoch, daily noise
        self.mixture = z(sampler.num_archetypes)
        self.offset_exp, self.table_id = z(len(TRAITS)), z(dtype=np.int64)
        self.day_noise = z(days, sampler.num_archetypes)
        self.shock, self.u_opt, self.u = z(self.horizon), z(self.horizon), z(self.horizon, 2)
        self.u_return, self.noise = z(days), z(self.horizon + 1, 4)
        self.counts = {name: z() for name in _COUNTS}
        self.opted_out = z(dtype=bool)
        self.t = z(dtype=np.int64)
        self.last_action, self.last_complied = z(dtype=np.int64), z()
        self.obs = np.zeros((num_lanes, self.obs_size), dtype=np.float32)
        self.rows = np.arange(num_lanes)
        self.started = False
        self.population_time = 0
        self.step_info: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ users
    def reset_lanes(self, lanes: np.ndarray, rng: np.random.Generator) -> None:
        """New users in ``lanes``: latent persona, initial state, exogenous draws."""
        m, H, mdl = len(lanes), self.horizon, self.model
        pop = self.sampler.sample(m, rng, start_time=self.population_time)
        self.population_time += m
        user = UserTraits.from_traits(pop.traits)
        for name in _USER:
            getattr(self.user, name)[lanes] = getattr(user, name)
        self.consent[lanes], self.is_bot[lanes] = pop.consent, pop.is_bot
        self.primary[lanes], self.group[lanes] = pop.primary, pop.group
        self.mixture[lanes], self.table_id[lanes] = pop.weights, pop.table_id
        self.offset_exp[lanes] = np.exp(pop.trait_offset)
        self.day_noise[lanes] = rng.standard_normal((m, self.days, pop.weights.shape[1]))
        draws = rng.random((m, H, 5))
        stress0 = 0.4 * rng.random(m)
        self.shock[lanes] = mdl.shock(draws[..., 0], draws[..., 1], user.shock_prob[:, None])
        self.u[lanes] = draws[..., 2:4]
        self.u_opt[lanes] = draws[..., 4]
        self.u_return[lanes] = rng.random((m, self.days))
        self.noise[lanes] = rng.normal(0.0, self.obs_noise, size=(m, H + 1, 4))
        self.weekday0[lanes] = rng.integers(0, 7, size=m)
        s = self.state
        s.stress[lanes] = stress0
        s.valence[lanes] = mdl.baseline_valence - mdl.stress_valence * stress0
        s.arousal[lanes] = stress0
        s.engagement[lanes] = user.baseline_engagement
        s.base_engagement[lanes] = user.baseline_engagement
        s.base_valence[lanes] = mdl.baseline_valence
        for name in ("fatigue", "annoyance", "pairing", "pair_value"):
            getattr(s, name)[lanes] = 0.0
        for counts in self.counts.values():
            counts[lanes] = 0.0
        self.opted_out[lanes] = False
        self.t[lanes] = 0
        self.last_action[lanes], self.last_complied[lanes] = 0, 0.0
        self._observe(lanes)

    # ------------------------------------------------------------------ step
    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One decision for every lane; returns ``(reward, terminated)``."""
        rows, t, m = self.rows, self.t, self.model
        out = transition(self.state, action, self.user, self.consent, self.shock[rows, t],
                         self.u[rows, t], m, self.reward_fn)
        acting = action != 0
        self.counts["interventions"] += (action >= 1) & (action <= 3)
        self.counts["false_interventions"] += out.false_intervention
        self.counts["needed"] += out.needed
        self.counts["acted_without_consent"] += out.acted_without_consent
        optout = self.u_opt[rows, t] < out.optout_prob
        t1 = t + 1
        day = np.minimum(t1 // self.slots, self.days - 1)
        day_end = t1 % self.slots == 0
        stays = self.u_return[rows, day] < m.come_back(self.state.engagement,
                                                       self.state.annoyance)
        leaves = day_end & (t1 < self.horizon) & ~stays
        terminated = optout | leaves | (t1 >= self.horizon)
        self._drift(np.flatnonzero(day_end & ~terminated), day)
        self.opted_out |= optout
        self.t = t1
        self.last_action, self.last_complied = action.copy(), out.complied
        self._observe(rows)
        self.step_info = {"needed": out.needed, "false_intervention": out.false_intervention,
                          "complied": out.complied, "opted_out_this_step": optout,
                          "acted": acting}
        return out.reward, terminated

    def _drift(self, lanes: np.ndarray, day: np.ndarray) -> None:
        """A new day for ``lanes``: the persona mixture takes a day's drift (the population's
        per-interaction ``drift_rate`` over ``slots_per_day`` interactions) and everything
        derived from the traits follows."""
        rate = self.sampler.drift_rate * np.sqrt(self.slots)
        if lanes.size == 0 or rate == 0:
            return
        w = self.mixture[lanes]
        w = w * np.exp(rate * self.day_noise[lanes, day[lanes]]) * (w > 0)
        w /= w.sum(axis=1, keepdims=True)
        self.mixture[lanes], self.primary[lanes] = w, w.argmax(axis=1)
        traits = self.sampler.traits_of(w, self.offset_exp[lanes], self.table_id[lanes])
        user = UserTraits.from_traits(traits)
        for name in ("tone_fit", "sociability", "shock_prob"):
            getattr(self.user, name)[lanes] = getattr(user, name)

    def _observe(self, lanes: np.ndarray) -> None:
        c, s, t = self.cols, self.state, np.minimum(self.t[lanes], self.horizon)
        noise = self.noise[lanes, t]
        o = np.zeros((len(lanes), self.obs_size), dtype=np.float32)
        emotions = np.stack([(s.valence[lanes] + 1) / 2, s.arousal[lanes], s.stress[lanes],
                             s.engagement[lanes]], axis=1)
        o[:, 0:4] = fast_clip(emotions + noise, 0.0, 1.0)
        slot = np.minimum(t, self.horizon - 1) % self.slots
        o[np.arange(len(lanes)), c["slot"].start + slot] = 1.0
        day = np.minimum(t, self.horizon - 1) // self.slots
        o[np.arange(len(lanes)), c["weekday"].start + (self.weekday0[lanes] + day) % 7] = 1.0
        o[:, c["day"].start] = day / self.days
        o[:, c["fatigue"].start] = s.fatigue[lanes] / (1.0 + s.fatigue[lanes])
        o[:, c["pairing"].start] = s.pairing[lanes] / self.model.pairing_delay
        o[:, c["consent"].start] = self.consent[lanes]
        o[np.arange(len(lanes)), c["last_action"].start + self.last_action[lanes]] = 1.0
        o[:, c["last_complied"].start] = self.last_complied[lanes]
        self.obs[lanes] = o

    # ------------------------------------------------------------------ info
    def expected_rewards(self) -> np.ndarray:
        """``(B, K)`` expected immediate reward of every action in the current state."""
        shock = self.shock[self.rows, np.minimum(self.t, self.horizon - 1)]
        return action_rewards(self.state, self.user, self.consent, shock, self.model,
                              self.reward_fn)

    def info(self) -> dict[str, np.ndarray]:
        """Ground truth for every lane's current decision, plus episode safety metrics
        (views of the state; the faces copy)."""
        self.require_truth()
        expected = self.expected_rewards()
        t = np.minimum(self.t, self.horizon - 1)
        info: dict[str, Any] = {f"latent_{n}": getattr(self.state, n) for n in _STATE}
        info.update({f"user_{n}": getattr(self.user, n) for n in _USER})
        needed = ((self.state.stress > self.model.need_stress)
                  | (self.state.valence < self.model.need_valence))
        info.update(
            expected_reward=expected, oracle_action=expected.argmax(axis=1),
            needs_support=needed, shock=self.shock[self.rows, t],
            step=self.t, consent=self.consent, is_bot=self.is_bot,
            latent_primary=self.primary, latent_weights=self.mixture, group=self.group,
            opted_out=self.opted_out,
            false_intervention_rate=(self.counts["false_interventions"]
                                     / np.maximum(self.counts["interventions"], 1)),
            interventions=self.counts["interventions"],
            false_interventions=self.counts["false_interventions"],
        )
        return info
