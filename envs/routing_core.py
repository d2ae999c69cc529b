"""The batched core of AgentRouting: ``B`` user sessions, one interaction at a time.

Randomness comes from two streams, both seeded by the env's generator (as in
``envs.intervention_core``):

* **users** — persona, traits, consent, bot flags, device and the draws behind their first
  interaction — come from the env's generator, ``pool_chunk`` at a time
  (``BaseCore.take_users``): users arrive in one order whatever the policy;
* **per-interaction noise** — the uniforms behind each signal, feedback given, the
  conversion delay and churn, then the drift to the next interaction and that
  interaction's mode, task, exploring and latency — is drawn after every decision for all
  lanes at once from the core's own stream (``envs.batched.exo_stream``): nothing is drawn
  for interactions a user who left will never have, and policies facing the same seed
  meet the same noise at the same (lane, step).

Each step computes the chosen agent's satisfaction, the signals, the reward, conversions
in flight and churn, then what the platform learns (the persona-fusion update, the
quality score) and the next interaction — in NumPy (the reference, below) or in compiled
kernels (``envs.routing_kernels``; ``backend``, ``personarl.backend``), which agree step for
step. The ground truth ``info`` reports is computed only when asked for (NumPy) or inside
the step kernel when the env reports it.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np

from envs import routing_kernels as kernels
from personarl.backend import resolve_backend, standard_normal
from envs.batched import (PROFILE_FIELDS, MAX_LANES, DiscreteActions, InfoTable, LaneBlocks,
                           RecordCore, column_slices, copy_records, lane_field)
from envs.routing_kernels import N_UNIFORMS, U_CHURN, U_DELAY, U_NEXT
from envs.routing_model import (COLLAPSE, COLUMNS, CONTINUOUS, CONVERSION, AgentWorld,
                                ResponseModel, column_weights, expected_clipped)
from personarl.errors import check_int
from rewards.composite import composite_reward
from rewards.quality import QualityModel
from rewards.signals import SIGNAL_NAMES
from synth.archetypes import DEVICES, TASK_TYPES, TRAITS
from synth.behaviour import BehaviourModel, interaction_loglik, sample_interaction
from synth.fusion import FusionState, PersonaFusion
from synth.population import PopulationSampler, drift_step

__all__ = ["RoutingCore", "ObsLayout"]

#: the observation's latency column is ``min(1, log1p(seconds) / LATENCY_NORM)``
LATENCY_NORM = np.log1p(120.0)
SIGNAL_CONVERSION = SIGNAL_NAMES.index("conversion")


@dataclass(frozen=True)
class ObsLayout:
    """Column ranges of the flat observation (``start, stop`` pairs)."""

    num_agents: int
    num_archetypes: int

    def slices(self) -> dict[str, slice]:
        """Name -> slice, in order."""
        return column_slices([
            ("task", len(TASK_TYPES)), ("position", 1), ("signals", len(SIGNAL_NAMES)),
            ("latency", 1), ("explore", 1), ("last_action", self.num_agents),
            ("persona_scores", self.num_archetypes), ("persona_confidence", 1),
            ("persona_stability", 1), ("quality", 1), ("device", len(DEVICES))])

    @property
    def size(self) -> int:
        """Observation length."""
        return list(self.slices().values())[-1].stop


class RoutingCore(RecordCore):
    """State and dynamics of ``num_lanes`` concurrent sessions (spec: ``envs.routing``).

    Args:
        num_lanes: batch size B.
        sampler: the population.
        world: latent agent qualities.
        response: signal and churn model.
        reward_weights: ``(8,)`` effective weight of each signal (weight · confidence).
        quality: bot-quality score model.
        fusion: persona fusion over the sampler's base archetypes.
        behaviour: per-interaction behaviour noise.
        horizon: tasks (decisions) per session, ``H``.
        with_truth: compute the ground truth ``info`` reports.
        pool_chunk: users drawn ahead at a time (at least ``num_lanes``).
        backend: ``"auto"``, ``"numpy"`` or ``"numba"`` (``personarl.backend``).
        num_threads: threads the ``numba`` step shares the lanes out to (``LaneBlocks``),
            and that sample arriving users (``PopulationSampler.sample``).
    """

    #: what changes as the core steps (``BaseCore.get_state``); the rest is configuration
    state_fields = ("lanes", "obs", "pool", "pool_pos", "exo_rng", "started",
                    "population_time", "step_info")
    scratch_fields = ("truth", "_out", "_uniforms", "_normals", "_work", "_truth_stale",
                      "_step_views", "_bound", "_blocks")

    def __init__(self, num_lanes: int, *, sampler: PopulationSampler, world: AgentWorld,
                 response: ResponseModel, reward_weights: np.ndarray, quality: QualityModel,
                 fusion: PersonaFusion, behaviour: BehaviourModel, horizon: int,
                 with_truth: bool = True, pool_chunk: int = 512, backend: str = "auto",
                 num_threads: int = 1) -> None:
        self.B, self.horizon, self.K = num_lanes, horizon, world.num_agents
        self.backend = resolve_backend(backend)
        self._blocks = LaneBlocks(num_lanes, num_threads, self.backend)
        self.actions = DiscreteActions(self.K, [f"agent_{k}" for k in range(self.K)])
        self.sampler, self.world, self.response = sampler, world, response
        self.quality_model, self.fusion, self.behaviour = quality, fusion, behaviour
        self.signal_weights = np.asarray(reward_weights, dtype=np.float64)
        self.weights = column_weights(self.signal_weights)      # per internal column
        self.signal_weights_now = self.signal_weights.copy()    # conversions are paid
        self.signal_weights_now[SIGNAL_CONVERSION] = 0.0        # when they arrive
        self.layout = ObsLayout(self.K, sampler.base.size)
        self.cols = self.layout.slices()
        self.obs_size = self.layout.size
        self.with_truth = with_truth
        self.pool_chunk = max(check_int("pool_chunk", pool_chunk, 1, MAX_LANES), num_lanes)
        # a human's signal coefficients depend only on the active archetype: tabulate them
        self.signal_base, self.signal_slope = response.signal_params(sampler.behaviour_by_epoch)
        self.tables = self._tables().packed()
        self.params, self.dims = kernels.settings(
            sampler.drift_rate, behaviour, response, quality, fusion.ema_rate, horizon,
            self.cols)
        A, base, B = sampler.num_archetypes, sampler.base.size, num_lanes
        self.ring = response.max_delay + 1      # conversions in flight, by arrival step
        # every lane's user in one record (a restart copies one row per lane); the pool
        # holds records of the same type, with the draws behind the first interaction
        self._allocate(np.dtype([
            ("weights", np.float64, (A,)), ("offset_exp", np.float64, (len(TRAITS),)),
            ("alpha", np.float64, (base,)), ("ema", np.float64, (base,)),
            ("queue", np.float64, (self.ring,)), ("first_draws", np.float64, (4,)),
            ("latency", np.float64), ("quality", np.float64), ("fast", np.float64),
            ("s1", np.float64), ("s2", np.float64), ("t", np.int64), ("table_id", np.int64),
            ("mode", np.int64), ("task", np.int64), ("device", np.int64),
            ("group", np.int64), ("explore", np.bool_), ("is_bot", np.bool_),
            ("slow_bot", np.bool_), ("consent", np.bool_), ("metadata_missing", np.bool_),
            *PROFILE_FIELDS], align=True), self.obs_size)
        # the kernels' work arrays, allocated once
        self._out = np.zeros((B, len(kernels.STEP_FLOATS)))
        self._uniforms, self._normals = np.zeros((B, N_UNIFORMS)), np.zeros((B, A + 1))
        self._work = [kernels.work(A, base) for _ in self._blocks.slices]   # one a block
        self.truth = InfoTable(B, kernels.TRUTH_FLOATS, kernels.TRUTH_INTS,
                               kernels.TRUTH_FLAGS, {"latent_weights": A,
                                                     "expected_reward": self.K})
        self._views()

    def _views(self) -> None:
        """``step_info``'s arrays: satisfaction and the signals, views of ``_out``."""
        self._step_views = {name: self._out[:, j]
                            for j, name in enumerate(kernels.STEP_FLOATS)
                            if name not in ("reward", "terminated")}

    def _tables(self) -> kernels.Tables:
        """The kernels' lookup tables (``envs.routing_kernels.Tables``; the kernels take
        them ``packed()``)."""
        sampler, world, behaviour = self.sampler, self.world, self.behaviour
        base = sampler.base
        explore = np.clip(base.behaviour[:, 4], 1e-6, 1 - 1e-6)
        return kernels.Tables(
            trait_means=sampler.trait_table, task_cdf=np.cumsum(sampler.task_table, axis=2),
            behaviour=sampler.behaviour_by_epoch, signal_base=self.signal_base,
            signal_slope=self.signal_slope, bot_base=ResponseModel.BOT_BASE,
            trait_weights=world.trait_weights, task_offset=world.task_offset,
            log_task=np.log(np.maximum(base.task_preferences, 1e-12)),
            log_median=(np.log(behaviour.latency_scale_s)
                        - behaviour.latency_decay * base.behaviour[:, 1]),
            log_explore=np.stack([np.log1p(-explore), np.log(explore)]),
            prior=self.fusion.prior, signal_of=COLLAPSE.argmax(axis=1),
            share=COLLAPSE.max(axis=1), column_weights=self.weights,
            signal_weights_now=self.signal_weights_now,
            column_rates=self.response.column_rates(np.array([False, True])),
            kind=kernels.COLUMN_KINDS)

    lane_fields = ("t", "is_bot", "consent", "group")
    mixture = lane_field("weights")          # the latent mixture, as the other envs name it

    def lane_ranges(self) -> dict[str, tuple[int, int]]:
        """``RecordCore.lane_ranges``, and the task, the mode and the device."""
        return {**super().lane_ranges(), "task": (0, len(TASK_TYPES) - 1),
                "mode": (0, self.sampler.num_archetypes - 1), "device": (0, len(DEVICES) - 1)}

    # ------------------------------------------------------------------ users
    def generate_users(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``n`` new users as records of the lanes' type (``{"users": (n,)}``): persona,
        flags, the fusion's prior and the draws behind the first interaction."""
        pop = self.sampler.sample(n, rng, self.population_time, backend=self.backend,
                                  num_threads=self._blocks.num_threads)
        self.population_time += n
        users = np.zeros(n, self.record)
        users["weights"], users["offset_exp"] = pop.weights, np.exp(pop.trait_offset)
        users["alpha"] = self.fusion.prior_strength * self.fusion.prior
        users["ema"] = self.fusion.prior
        users["table_id"], users["device"], users["group"] = pop.table_id, pop.device, \
            pop.group
        users["is_bot"], users["slow_bot"] = pop.is_bot, pop.slow_bot
        users["consent"], users["metadata_missing"] = pop.consent, pop.metadata_missing
        self.copy_profile(users, pop)
        users["first_draws"][:, :3] = rng.random((n, 3))
        users["first_draws"][:, 3] = standard_normal(rng, n, backend=self.backend)
        return {"users": users}

    def reset_lanes(self, lanes: np.ndarray, rng: np.random.Generator) -> None:
        """New sessions in ``lanes`` with the next users of the pool: their first
        interaction and observation."""
        copy_records(self.lanes, lanes, self.take_users(len(lanes), rng)["users"])
        if self.backend == "numba":
            kernels.begin_lanes(lanes, *self._kernel_arguments()[2])
        else:
            self._begin(lanes)
        self._truth_stale = True

    # ------------------------------------------------------------------ step
    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One interaction for every lane; returns ``(reward, terminated)``, each ``(B,)``.

        Per step, for every lane at once (a fixed count: common random numbers), from the
        per-step stream: ``(B, 18)`` uniforms (the 11 signal columns, a thumb given, a
        rating given, the conversion delay, churn, then the next interaction's mode, task
        and exploring), then ``(B, A + 1)`` standard normals (the drift of each latent
        archetype's weight, the next latency). ``step_info`` holds the interaction's
        satisfaction and its 8 signals (as observed)."""
        u, z = self._blocks.uniforms_then_normals(self.exo_rng, self._uniforms, self._normals,
                                                  self.backend)
        if self.backend == "numba":
            self._blocks.run(kernels.step_lanes, (action, u, z), self._kernel_arguments()[0])
            self._truth_stale = not self.with_truth
        else:
            self._step_numpy(action, u, z)
        self.step_info = self._step_views
        out = self._out
        return out[:, 0], out[:, 1] > 0

    def _step_numpy(self, action: np.ndarray, u: np.ndarray, z: np.ndarray) -> None:
        """The NumPy reference of ``step`` (``envs.routing_kernels.step_lanes``): writes
        ``_out`` and the observation."""
        L, rows, H, C = self.lanes, self.rows, self.horizon, len(COLUMNS)
        t, bot, q = L["t"].copy(), L["is_bot"], L["quality"]
        s = self._satisfaction()[rows, action]
        base, slope = self._signal_params()
        threshold, multiplier = self.response.draw_columns(u[:, None, :C + 2], bot)
        threshold, multiplier = threshold[:, 0], multiplier[:, 0]
        values = (slope * multiplier) * s[:, None]
        values += (base - threshold) * multiplier
        np.clip(values, 0.0, 1.0, out=values)
        # conversions arrive 1..max_delay steps later
        D = self.response.max_delay
        delay = np.minimum((u[:, U_DELAY] * D).astype(np.int64), D - 1)
        queue = L["queue"]
        queue[rows, (t + 1 + delay) % self.ring] += values[:, CONVERSION] * (
            self.weights[CONVERSION] * q)
        arrived = queue[rows, t % self.ring].copy()
        queue[rows, t % self.ring] = 0.0
        signals = values @ COLLAPSE
        reward = composite_reward(signals, self.signal_weights_now, q) + arrived
        signals[:, SIGNAL_CONVERSION] = arrived > 0
        leave_below = self.response.leave_threshold(u[:, U_CHURN], bot)
        leave_below[t == H - 1] = 2.0                       # the session ends after H tasks
        terminated = s < leave_below
        reward += np.where(terminated, queue.sum(axis=1), 0.0)   # conversions in flight
        out = self._out
        out[:, 0], out[:, 1], out[:, 2], out[:, 3:] = reward, terminated, s, signals
        # what the platform saw of this interaction, and what it learns from it
        c = self.cols
        o = np.zeros_like(self.obs)
        o[:, c["signals"]] = signals
        o[:, c["latency"].start] = np.minimum(1.0, np.log1p(L["latency"]) / LATENCY_NORM)
        o[:, c["explore"].start] = L["explore"]
        o[rows, c["last_action"].start + action] = 1.0
        o[:, c["quality"].start] = q
        loglik = interaction_loglik(self.sampler.base, L["task"], L["latency"], L["explore"],
                                    self.behaviour)
        state = FusionState(L["alpha"], L["ema"])              # views: updated in place
        self.fusion.update(state, loglik, q)
        self._readout(rows, state, o)
        L["t"] = t + 1
        going = np.flatnonzero(t + 1 < H)                      # the next interaction
        L["weights"][going] = drift_step(L["weights"][going], z[going, :-1],
                                         self.sampler.drift_rate)
        self._interaction(going, u[going, U_NEXT:U_NEXT + 3], z[going, -1])
        self._observe_static(rows, o)
        self.obs[:] = o

    def _begin(self, lanes: np.ndarray) -> None:
        """The NumPy reference of ``begin_lanes``: the first interaction of ``lanes`` from
        their records' ``first_draws``, the fusion's readout before any interaction and
        the first observation."""
        L = self.lanes
        draws = L["first_draws"][lanes]
        self._interaction(lanes, draws[:, :3], draws[:, 3])
        o = np.zeros((len(lanes), self.obs_size), dtype=np.float32)
        state = FusionState(L["alpha"][lanes], L["ema"][lanes])
        self._readout(lanes, state, o)
        L["ema"][lanes] = state.ema
        o[:, self.cols["quality"].start] = 1.0
        self._observe_static(lanes, o)
        self.obs[lanes] = o

    def _interaction(self, lanes: np.ndarray, u: np.ndarray, z: np.ndarray) -> None:
        """The next interaction of ``lanes`` at their mixture now (``sample_interaction``
        with uniforms ``u`` ``(n, 3)`` and normals ``z`` ``(n,)``) and the quality score
        with it (``QualityModel.from_sums``)."""
        L = self.lanes
        mode, task, latency, explore = sample_interaction(
            self.sampler, L["weights"][lanes], L["table_id"][lanes], L["is_bot"][lanes],
            L["slow_bot"][lanes], u, z, self.behaviour)
        L["mode"][lanes], L["task"][lanes] = mode, task
        L["latency"][lanes], L["explore"][lanes] = latency, explore
        log_latency = np.log(latency)
        L["fast"][lanes] += latency < self.quality_model.min_interval_s
        L["s1"][lanes] += log_latency
        L["s2"][lanes] += log_latency * log_latency
        L["quality"][lanes] = self.quality_model.from_sums(
            L["t"][lanes] + 1.0, L["fast"][lanes], L["s1"][lanes], L["s2"][lanes],
            L["metadata_missing"][lanes])

    def _readout(self, lanes: np.ndarray, state: FusionState, o: np.ndarray) -> None:
        """The fusion's readout (advancing its EMA) into observation rows ``o`` of
        ``lanes``: a consenting user's scores, confidence and stability; the prior and
        zeros for one who did not."""
        scores, confidence, stability = self.fusion.readout(state)
        consent = self.lanes["consent"][lanes]
        c = self.cols
        o[:, c["persona_scores"]] = np.where(consent[:, None], scores, self.fusion.prior)
        o[:, c["persona_confidence"].start] = np.where(consent, confidence, 0.0)
        o[:, c["persona_stability"].start] = np.where(consent, stability, 0.0)

    def _observe_static(self, lanes: np.ndarray, o: np.ndarray) -> None:
        """The task (while the session lasts), the position and the device into
        observation rows ``o`` of ``lanes``."""
        user, c = self.lanes[lanes], self.cols
        live = np.flatnonzero(user["t"] < self.horizon)
        o[live, c["task"].start + user["task"][live]] = 1.0
        o[:, c["position"].start] = user["t"] / self.horizon
        seen = np.flatnonzero(~user["metadata_missing"])
        o[seen, c["device"].start + user["device"][seen]] = 1.0

    def _satisfaction(self) -> np.ndarray:
        """``(B, K)`` every lane's satisfaction with each agent for its current task."""
        L = self.lanes
        traits = self.sampler.traits_of(L["weights"], L["offset_exp"], L["table_id"])
        return self.world.satisfaction(traits, L["task"])

    def _signal_params(self) -> tuple[np.ndarray, np.ndarray]:
        """``(base, slope)`` ``(B, C)`` of every lane's signal columns in its current mode
        (bots: their fixed pattern)."""
        L = self.lanes
        mode = (L["table_id"], L["mode"])
        base, slope = self.signal_base[mode], self.signal_slope[mode]
        bots = np.flatnonzero(L["is_bot"])
        base[bots], slope[bots] = ResponseModel.BOT_BASE, 0.0
        return base, slope

    def _kernel_arguments(self) -> tuple[list[tuple], tuple, tuple]:
        """The arrays and settings ``step_lanes`` (one tuple per block of lanes,
        ``LaneBlocks``), ``truth_lanes`` and ``begin_lanes`` take after their per-call
        arguments, bound once (``set_state`` rebinds: it replaces the arrays)."""
        if self._bound is None:
            table = self.truth
            truth = (table.floats, table.ints, table.flags, table.block)
            self._bound = (
                [(self.lanes[rows], self.obs[rows], self.params, self.dims, self.tables,
                  self.with_truth, self._out[rows], *(a[rows] for a in truth), work)
                 for rows, work in zip(self._blocks.slices, self._work)],
                (self.lanes, self.obs, self.dims, self.tables, *truth, self._work[0]),
                (self.lanes, self.obs, self.params, self.dims, self.tables, self._work[0]))
        return self._bound

    # ------------------------------------------------------------------ info
    def expected_rewards(self) -> np.ndarray:
        """``(B, K)`` expected reward of routing each lane's current task to each agent:
        the signals' expectations at each agent's satisfaction (explicit feedback times
        its rate, ``expected_clipped`` for scroll depth and dwell), weighted and times the
        interaction's quality; conversions count in full (they all arrive)."""
        L = self.lanes
        sat = self._satisfaction()
        base, slope = self._signal_params()
        bot = L["is_bot"]
        rate_w = self.response.column_rates(bot) * self.weights              # (B, C)
        linear = np.where(CONTINUOUS, 0.0, rate_w)
        expected = ((base * linear).sum(-1)[:, None]
                    + (slope * linear).sum(-1)[:, None] * sat)                # (B, K)
        cont = np.flatnonzero(CONTINUOUS)
        p = base[:, None, cont] + slope[:, None, cont] * sat[..., None]      # (B, K, 2)
        e_cont = np.where(bot[:, None, None], np.minimum(p, 1.0), expected_clipped(p))
        expected += e_cont @ self.weights[cont]
        expected *= L["quality"][:, None]
        return expected

    def _fill_truth(self) -> None:
        """Every lane's ground truth in ``truth`` (the ``numba`` backend): the step kernel
        leaves it current; after a restart or a restore it is computed again here."""
        if self._truth_stale:
            kernels.truth_lanes(*self._kernel_arguments()[1])
            self._truth_stale = False

    def info(self) -> dict[str, np.ndarray]:
        """Ground truth for the current decision of every lane (views of the state or
        fresh arrays, lanes first; the faces copy)."""
        self.require_truth()
        if self.backend == "numba":
            self._fill_truth()
            return self.truth.columns()
        expected = self.expected_rewards()
        weights = self.mixture
        return {
            "latent_weights": weights,
            "latent_primary": weights.argmax(axis=1),
            "expected_reward": expected,
            "oracle_action": expected.argmax(axis=1),
            "is_bot": self.is_bot,
            "consent": self.consent,
            "group": self.group,
            "quality": self.obs[:, self.cols["quality"].start].astype(np.float64),
            **self.profile(),
        }
