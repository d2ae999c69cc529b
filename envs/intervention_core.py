"""The batched core of InterventionTiming: ``B`` returning users over several days.

The state answers to actions (fatigue, annoyance, pairings in flight), so it is stepped
one decision at a time (``envs.intervention_model.transition``; compiled in
``envs.intervention_kernels`` for the ``numba`` backend, ``personarl.backend``).

Randomness comes from two streams, both seeded by the env's generator:

* **users** — persona, consent, opening stress, first weekday, the day-to-day drift of the
  persona and the first step's draws — come from the env's generator, ``pool_chunk`` users
  at a time (``BaseCore.take_users``): users arrive in one order whatever the policy;
* **per-step noise** — stress shocks, the uniforms behind compliance, events, pairings,
  opting out and coming back the next day, and the observation noise — is drawn after
  every step for all lanes at once from the core's own stream (``envs.batched.exo_stream``):
  nothing is drawn for steps a user who left will never take, and every policy facing the
  same seed meets the same noise at the same (lane, step) — common random numbers for
  paired comparisons.

The draws of a step are known before the decision (the shock is part of the ground truth
``info`` reports); ``exo`` holds them, in ``envs.intervention_kernels.EXO`` order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs import intervention_kernels as kernels
from personarl.backend import resolve_backend, standard_normal
from envs.batched import (PROFILE_FIELDS, DiscreteActions, InfoTable, LaneBlocks,
                           RecordCore, column_slices, copy_records, linear_weights)
from envs.intervention_kernels import EXO, STATE_FIELDS, U_HIT, U_OPT, U_RETURN, U_SIZE
from envs.intervention_model import (ACTIONS, InterventionModel, State, UserTraits,
                                     action_rewards, transition)
from rewards.intervention import InterventionRewardFn, InterventionRewardWeights
from synth.archetypes import TRAITS
from synth.population import PopulationSampler

__all__ = ["InterventionCore", "OBS_FEATURES"]

#: observation layout: name -> width
OBS_FEATURES: tuple[tuple[str, int], ...] = (
    ("valence", 1), ("arousal", 1), ("stress", 1), ("engagement", 1), ("slot", 0),
    ("weekday", 7), ("day", 1), ("fatigue", 1), ("pairing", 1), ("consent", 1),
    ("last_action", len(ACTIONS)), ("last_complied", 1),
)
_USER = ("tone_fit", "sociability", "shock_prob", "baseline_engagement")
_U_ACT = slice(EXO.index("u_comply"), EXO.index("u_event") + 1)


class InterventionCore(RecordCore):
    """State and dynamics of ``num_lanes`` users (see ``envs.intervention`` for the spec).

    Args:
        num_lanes: batch size B.
        sampler: the population.
        model: dynamics parameters.
        reward_fn: the step's reward (see ``envs.intervention_model.transition``); the
            default weights' function is computed inside the kernels, any other is called
            on the kernels' per-lane reward components.
        days: days per episode.
        slots_per_day: decisions per day.
        obs_noise: std of the noise on the observed emotions and engagement.
        with_truth: compute the ground truth ``info`` reports (expected rewards).
        backend: ``"auto"``, ``"numpy"`` or ``"numba"`` (``personarl.backend``).
        pool_chunk: users drawn ahead at a time (at least ``num_lanes``: a wide batch
            restarts hundreds of lanes per step, and a bigger draw costs less per user).
        num_threads: threads the ``numba`` step shares the lanes out to
            (``envs.batched.LaneBlocks``), and that sample arriving users
            (``PopulationSampler.sample``).
    """

    #: what changes as the core steps (``BaseCore.get_state``); the rest is configuration
    state_fields = ("lanes", "obs", "pool", "pool_pos", "exo_rng", "started",
                    "population_time", "step_info")
    scratch_fields = ("truth", "_out", "_out_flags", "_noise", "_uniforms", "_truth_parts",
                      "_work", "_truth_stale", "_step_views", "_bound", "_blocks")

    def __init__(self, num_lanes: int, *, sampler: PopulationSampler, model: InterventionModel,
                 reward_fn: InterventionRewardFn, days: int, slots_per_day: int,
                 obs_noise: float, with_truth: bool, backend: str = "auto",
                 pool_chunk: int = 512, num_threads: int = 1) -> None:
        self.B, self.K = num_lanes, len(ACTIONS)
        self.backend = resolve_backend(backend)
        self._blocks = LaneBlocks(num_lanes, num_threads, self.backend)
        self.actions = DiscreteActions(self.K, ACTIONS)
        self.sampler, self.model, self.reward_fn = sampler, model, reward_fn
        weights = linear_weights(reward_fn, InterventionRewardWeights)
        self.linear_reward = weights is not None
        self.reward_weights = np.zeros(4) if weights is None else weights
        self.days, self.slots, self.horizon = days, slots_per_day, days * slots_per_day
        self.obs_noise, self.with_truth = obs_noise, with_truth
        self.pool_chunk = max(pool_chunk, num_lanes)
        self.drift_rate = sampler.drift_rate * np.sqrt(slots_per_day)  # per day
        self.cols = column_slices((n, slots_per_day if n == "slot" else w)
                                  for n, w in OBS_FEATURES)
        self.obs_size = self.cols["last_complied"].stop
        self.params, self.dims = kernels.settings(
            model, self.drift_rate, obs_noise, self.horizon, slots_per_day, days,
            [self.cols[n].start for n in kernels.OBS_COLS])
        A = sampler.num_archetypes
        z = lambda *shape, dtype=np.float64: np.zeros((num_lanes,) + shape, dtype)  # noqa
        # every lane's user in one record, so a restart copies one row per lane; the
        # pool holds records of the same type (the counters and flags start at zero)
        self._allocate(np.dtype([
            ("latent", np.float64, (len(STATE_FIELDS),)), ("tone_fit", np.float64, (3,)),
            ("sociability", np.float64), ("shock_prob", np.float64),
            # v0's shocks keep the chance the user arrived with (drift moves shock_prob,
            # which info reports, but not the shocks): kept so v0 stays v0
            ("arrival_shock_prob", np.float64),
            ("baseline_engagement", np.float64), ("mixture", np.float64, (A,)),
            ("offset_exp", np.float64, (len(TRAITS),)),
            # the persona drifts from day to day: each new day's noise on its log-weights
            ("day_noise", np.float64, (max(days - 1, 1), A)),
            ("exo", np.float64, (len(EXO),)), ("noise", np.float64, (4,)),
            ("counts", np.float64, (len(kernels.COUNTS),)), ("last_complied", np.float64),
            ("t", np.int64), ("last_action", np.int64), ("primary", np.int64),
            ("group", np.int64), ("table_id", np.int64), ("weekday0", np.int64),
            ("consent", np.bool_), ("is_bot", np.bool_), ("opted_out", np.bool_),
            *PROFILE_FIELDS], align=True), self.obs_size)
        # the kernels' outputs, allocated once
        self._out = z(len(kernels.STEP_FLOATS))
        self._out_flags = z(len(kernels.STEP_FLAGS), dtype=bool)
        self.truth = InfoTable(num_lanes, kernels.TRUTH_FLOATS, kernels.TRUTH_INTS,
                               kernels.TRUTH_FLAGS, dict(zip(kernels.TRUTH_VECTORS,
                                                             (self.K, 3, A))))
        self._truth_parts = z(self.K, 5)
        self._work = [kernels.work() for _ in self._blocks.slices]      # one a block
        self._noise, self._uniforms = z(4), z(len(EXO))
        self._views()

    def _views(self) -> None:
        """``step_info``'s arrays, views of the kernels' outputs."""
        flag = {name: self._out_flags[:, j] for j, name in enumerate(kernels.STEP_FLAGS)}
        self._step_views = {"needed": flag["needed"],
                            "false_intervention": flag["false_intervention"],
                            "complied": self._out[:, kernels.STEP_FLOATS.index("complied")],
                            "opted_out_this_step": flag["opted_out_this_step"],
                            "acted": flag["acted"]}

    lane_fields = ("latent", "tone_fit", "sociability", "shock_prob", "baseline_engagement",
                   "mixture", "offset_exp", "day_noise", "exo", "counts", "t", "last_action",
                   "last_complied", "primary", "group", "table_id", "weekday0", "consent",
                   "is_bot", "opted_out")

    def lane_ranges(self) -> dict[str, tuple[int, int]]:
        """``RecordCore.lane_ranges``, and the last action."""
        return {**super().lane_ranges(), "last_action": (0, self.K - 1)}

    @property
    def state(self) -> State:
        """The latent state as a ``State`` of column views of ``latent``."""
        return State(*(self.latent[:, j] for j in range(len(STATE_FIELDS))))

    @property
    def user(self) -> UserTraits:
        """The trait-derived parameters as a ``UserTraits`` (the arrays themselves)."""
        return UserTraits(*(getattr(self, name) for name in _USER))

    # ------------------------------------------------------------------ users
    def generate_users(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``n`` new users as records of the lanes' type (``{"users": (n,)}``): persona,
        opening state, first weekday, the day-to-day drift noise and the first step's draws
        (``exo`` and the first observation's standard normal ``noise``)."""
        mdl = self.model
        pop = self.sampler.sample(n, rng, self.population_time, backend=self.backend,
                                  num_threads=self._blocks.num_threads)
        self.population_time += n
        user = UserTraits.from_traits(pop.traits)
        users = np.zeros(n, self.record)
        stress0 = 0.4 * rng.random(n)
        users["weekday0"] = rng.integers(0, 7, size=n)
        users["exo"] = rng.random((n, len(EXO)))
        users["noise"] = standard_normal(rng, (n, 4), backend=self.backend)
        users["day_noise"] = standard_normal(rng, (n,) + self.record["day_noise"].shape,
                                             backend=self.backend)
        s = State(*(users["latent"][:, j] for j in range(len(STATE_FIELDS))))
        s.stress[:], s.arousal[:] = stress0, stress0
        s.valence[:] = mdl.baseline_valence - mdl.stress_valence * stress0
        s.engagement[:] = s.base_engagement[:] = user.baseline_engagement
        s.base_valence[:] = mdl.baseline_valence
        for name in _USER:
            users[name] = getattr(user, name)
        users["arrival_shock_prob"] = user.shock_prob
        for name in ("consent", "is_bot", "primary", "group", "table_id"):
            users[name] = getattr(pop, name)
        users["mixture"], users["offset_exp"] = pop.weights, np.exp(pop.trait_offset)
        self.copy_profile(users, pop)
        return {"users": users}

    def reset_lanes(self, lanes: np.ndarray, rng: np.random.Generator) -> None:
        """New users in ``lanes``, the next of the pool, and their first observation."""
        users = self.take_users(len(lanes), rng)["users"]
        copy_records(self.lanes, lanes, users)
        self._observe(lanes, users["noise"])
        self._truth_stale = True

    # ------------------------------------------------------------------ step
    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One decision for every lane; returns ``(reward, terminated)``.

        Per step, for every lane at once (a fixed count: common random numbers), from the
        per-step stream: the observation noise after this step ``(B, 4)``, then the next
        step's uniforms ``(B, 6)``."""
        noise = standard_normal(self.exo_rng, out=self._noise, backend=self.backend)
        uniforms = self.exo_rng.random(out=self._uniforms)
        if self.backend == "numba":
            self._blocks.run(kernels.step_lanes, (action, noise, uniforms),
                             self._kernel_arguments()[0])
            self._truth_stale = not self.with_truth
            out, flags = self._out, self._out_flags
            reward = out[:, 0]
            if not self.linear_reward:
                reward = np.where(flags[:, 1], self.reward_fn(out[:, 1], out[:, 2], out[:, 3],
                                                              flags[:, 3]), 0.0)
                if self.with_truth:
                    self._custom_expected()
            self.step_info = self._step_views
            return reward, flags[:, 0]
        reward, terminated = self._step_numpy(action)
        self._observe(self.rows, noise)
        self.exo[:] = uniforms
        return reward, terminated

    def _kernel_arguments(self) -> tuple[list[tuple], tuple]:
        """The arrays and settings ``step_lanes`` (one tuple per block of lanes,
        ``LaneBlocks``) and ``truth_lanes`` take after their per-call arguments, bound once
        (``set_state`` rebinds: it replaces the arrays)."""
        if self._bound is None:
            table = self.truth
            reward = (self.reward_weights, self.linear_reward)
            truth_out = (table.floats, table.ints, table.flags, table.block, self._truth_parts)
            self._bound = (
                [(self.lanes[rows], self.obs[rows], self.sampler.trait_table, self.params,
                  self.dims, *reward, self.with_truth, self._out[rows], self._out_flags[rows],
                  *(a[rows] for a in truth_out), work)
                 for rows, work in zip(self._blocks.slices, self._work)],
                (self.lanes, self.params, *reward, *truth_out, self._work[0]))
        return self._bound

    def _step_numpy(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The NumPy reference of ``step`` (``envs.intervention_kernels.step_lanes``)."""
        t, m, exo = self.t, self.model, self.exo
        state = self.state
        out = transition(state, action, self.user, self.consent, self.shock(), exo[:, _U_ACT],
                         m, self.reward_fn)
        self.latent[:] = np.stack([getattr(state, n) for n in STATE_FIELDS], axis=1)
        acting = action != 0
        counts = self.counts
        counts += np.stack([(action >= 1) & (action <= 3), out.false_intervention, out.needed,
                            out.acted_without_consent], axis=1)
        optout = exo[:, U_OPT] < out.optout_prob
        t1 = t + 1
        day = np.minimum(t1 // self.slots, self.days - 1)
        day_end = t1 % self.slots == 0
        stays = exo[:, U_RETURN] < m.come_back(state.engagement, state.annoyance)
        leaves = day_end & (t1 < self.horizon) & ~stays
        terminated = optout | leaves | (t1 >= self.horizon)
        self._drift(np.flatnonzero(day_end & ~terminated), day)
        self.opted_out[:] |= optout
        self.t[:] = t1
        self.last_action[:], self.last_complied[:] = action, out.complied
        self.step_info = {"needed": out.needed, "false_intervention": out.false_intervention,
                          "complied": out.complied, "opted_out_this_step": optout,
                          "acted": acting}
        return out.reward, terminated

    def _drift(self, lanes: np.ndarray, day: np.ndarray) -> None:
        """A new day for ``lanes``: the persona mixture takes a day's drift (the population's
        per-interaction ``drift_rate`` over ``slots_per_day`` interactions) and everything
        derived from the traits follows."""
        if lanes.size == 0 or self.drift_rate == 0:
            return
        w = self.mixture[lanes]
        w = w * np.exp(self.drift_rate * self.day_noise[lanes, day[lanes] - 1]) * (w > 0)
        w /= w.sum(axis=1, keepdims=True)
        self.mixture[lanes], self.primary[lanes] = w, w.argmax(axis=1)
        traits = self.sampler.traits_of(w, self.offset_exp[lanes], self.table_id[lanes])
        user = UserTraits.from_traits(traits)
        for name in ("tone_fit", "sociability", "shock_prob"):
            getattr(self, name)[lanes] = getattr(user, name)

    def _observe(self, lanes: np.ndarray, noise: np.ndarray) -> None:
        """The observation of ``lanes`` with observation ``noise`` ``(len(lanes), 4)``."""
        if self.backend == "numba":
            kernels.observe_lanes(lanes, noise, self.lanes, self.obs, self.params, self.dims)
            return
        c, s, t = self.cols, self.state, np.minimum(self.t[lanes], self.horizon)
        o = np.zeros((len(lanes), self.obs_size), dtype=np.float32)
        emotions = np.stack([(s.valence[lanes] + 1) / 2, s.arousal[lanes], s.stress[lanes],
                             s.engagement[lanes]], axis=1)
        o[:, 0:4] = np.clip(emotions + self.obs_noise * noise, 0.0, 1.0)
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
    def shock(self) -> np.ndarray:
        """``(B,)`` the stress shock each lane's pending step brings."""
        return self.model.shock(self.exo[:, U_HIT], self.exo[:, U_SIZE],
                                self.lanes["arrival_shock_prob"])

    def expected_rewards(self) -> np.ndarray:
        """``(B, K)`` expected immediate reward of every action in the current state."""
        if self.backend == "numba":
            return self._fill_truth()["expected_reward"]
        return action_rewards(self.state, self.user, self.consent, self.shock(), self.model,
                              self.reward_fn)

    def _fill_truth(self) -> dict[str, np.ndarray]:
        """Every lane's ground truth in ``truth`` (the ``numba`` backend): the step kernel
        leaves it current; after a restart or a restore it is computed again here."""
        if self._truth_stale:
            kernels.truth_lanes(*self._kernel_arguments()[1])
            if not self.linear_reward:
                self._custom_expected()
            self._truth_stale = False
        return self.truth.vectors

    def _custom_expected(self) -> None:
        """Expected rewards and the oracle from the kernels' reward components, with a
        reward function other than the default weights'."""
        p, table = self._truth_parts, self.truth
        expected = np.where(p[..., 4] > 0, self.reward_fn(p[..., 0], p[..., 1], p[..., 2],
                                                          p[..., 3] > 0), 0.0)
        table.vectors["expected_reward"][:] = expected
        table.ints[:, kernels.TRUTH_INTS.index("oracle_action")] = expected.argmax(axis=1)

    def info(self) -> dict[str, np.ndarray]:
        """Ground truth for every lane's current decision, plus episode safety metrics
        (views of the state; the faces copy)."""
        self.require_truth()
        if self.backend == "numba":
            self._fill_truth()
            return self.truth.columns()
        expected = self.expected_rewards()
        state = self.state
        info: dict[str, Any] = {f"latent_{n}": getattr(state, n) for n in STATE_FIELDS}
        info.update({f"user_{n}": getattr(self, n) for n in _USER})
        needed = ((state.stress > self.model.need_stress)
                  | (state.valence < self.model.need_valence))
        interventions, false_interventions = self.counts[:, 0], self.counts[:, 1]
        info.update(
            expected_reward=expected, oracle_action=expected.argmax(axis=1),
            needs_support=needed, shock=self.shock(),
            step=self.t, consent=self.consent, is_bot=self.is_bot,
            latent_primary=self.primary, latent_weights=self.mixture, group=self.group,
            opted_out=self.opted_out, **self.profile(),
            false_intervention_rate=false_interventions / np.maximum(interventions, 1),
            interventions=interventions, false_interventions=false_interventions,
        )
        return info
