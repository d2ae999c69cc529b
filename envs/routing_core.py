"""The batched core of AgentRouting: ``B`` user sessions stepped together.

Everything a user does that does not depend on the routing decision — drift, the active
mode, tasks, latencies, exploration, the fusion estimate, the quality score, the uniforms
behind each signal — is drawn for a whole session when a user arrives. Users are drawn in
chunks into a pool, so a batch-of-one env pays the vectorised cost once per chunk, not
once per episode (``BaseCore.take_users``). ``step`` then only computes what the action
changes: satisfaction, the signals, the reward, conversions in flight and churn — in NumPy
or, with ``backend="numba"``, in ``envs.routing_kernels`` (the same draws either way).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from envs import routing_kernels as kernels
from envs.backend import resolve_backend
from envs.batched import BaseCore, DiscreteActions, column_slices
from envs.routing_model import (COLLAPSE, COLUMNS, CONTINUOUS, CONVERSION, AgentWorld,
                                ResponseModel, column_weights, expected_clipped)
from rewards.composite import composite_reward
from rewards.quality import QualityModel
from rewards.signals import SIGNAL_NAMES
from synth.archetypes import DEVICES, TASK_TYPES
from synth.behaviour import BehaviourModel, interaction_loglik, sample_session
from synth.fusion import PersonaFusion
from personarl.errors import check_int
from synth.population import PopulationSampler

__all__ = ["RoutingCore", "ObsLayout"]

_LATENCY_NORM = np.log1p(120.0)
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


class RoutingCore(BaseCore):
    """State and dynamics of ``num_lanes`` concurrent sessions.

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
        with_truth: also precompute the ground truth that ``info`` reports.
        pool_chunk: users generated at a time.
        backend: ``"auto"``, ``"numpy"`` or ``"numba"`` (``envs.backend``): who computes
            each step (sessions are drawn in NumPy either way).
    """

    #: what changes as the core steps (``BaseCore.get_state``); the rest is configuration
    state_fields = ("lanes", "pool", "pool_pos", "population_time", "started", "step_info",
                    "t", "queue", "obs")
    scratch_fields = ("_values", "_reward", "_terminated", "_satisfaction")

    def __init__(self, num_lanes: int, *, sampler: PopulationSampler, world: AgentWorld,
                 response: ResponseModel, reward_weights: np.ndarray, quality: QualityModel,
                 fusion: PersonaFusion, behaviour: BehaviourModel, horizon: int,
                 with_truth: bool = True, pool_chunk: int = 512, backend: str = "auto"
                 ) -> None:
        self.B, self.horizon, self.K = num_lanes, horizon, world.num_agents
        self.backend = resolve_backend(backend)
        self.actions = DiscreteActions(self.K, [f"agent_{k}" for k in range(self.K)])
        self.sampler, self.world, self.response = sampler, world, response
        self.quality_model, self.fusion, self.behaviour = quality, fusion, behaviour
        self.signal_weights = np.asarray(reward_weights, dtype=np.float64)
        self.weights = column_weights(self.signal_weights)      # per internal column
        self.signal_weights_now = self.signal_weights.copy()    # conversions are paid
        self.signal_weights_now[SIGNAL_CONVERSION] = 0.0        # when they arrive
        self.layout = ObsLayout(self.K, sampler.base.size)
        self.cols = self.layout.slices()
        self.with_truth = with_truth
        # a human's signal coefficients depend only on the active archetype: tabulate them
        self.signal_base, self.signal_slope = response.signal_params(sampler.behaviour_by_epoch)
        C = len(COLUMNS)
        # per lane and step: satisfaction with each agent, then each column's value as an
        # affine function of satisfaction before clipping, value = clip(a + b·s, 0, 1)
        self.step_cols = column_slices([("sat", self.K), ("a", C), ("b", C),
                                  ("leave_below", 1), ("quality", 1)])
        self.step_width = self.step_cols["quality"].stop
        self.truth_cols = column_slices([("expected", self.K), ("oracle", 1), ("primary", 1),
                                   ("weights", sampler.num_archetypes)])
        self.truth_width = self.truth_cols["weights"].stop
        self.pool_chunk = check_int("pool_chunk", pool_chunk, 1)
        self.rows = np.arange(num_lanes)
        self.lanes: dict[str, np.ndarray] = {}
        self.pool: dict[str, np.ndarray] = {}
        self.pool_pos = 0
        self.population_time = 0
        self.started = False
        self.step_info: dict[str, np.ndarray] = {}
        self.t = np.zeros(num_lanes, dtype=np.int64)
        self.queue = np.zeros((num_lanes, horizon + response.max_delay + 1))
        self.obs_size = self.layout.size
        self.obs = np.zeros((num_lanes, self.obs_size), dtype=np.float32)
        # the compiled step's settings and outputs
        self.kernel_cols = kernels.kernel_columns(self.step_cols, self.cols, CONVERSION,
                                                  SIGNAL_CONVERSION)
        self._values = np.zeros(C)
        self._reward, self._satisfaction = np.zeros(num_lanes), np.zeros(num_lanes)
        self._terminated = np.zeros(num_lanes, dtype=bool)

    # ------------------------------------------------------------------ users
    def generate_users(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Whole exogenous sessions for ``n`` new users, packed per step."""
        H, C = self.horizon, len(COLUMNS)
        sampler, response = self.sampler, self.response
        pop = sampler.sample(n, rng, start_time=self.population_time)
        self.population_time += n
        ses = sample_session(pop, sampler, H, rng, self.behaviour)
        traits = sampler.traits_of(ses.weights, np.exp(pop.trait_offset)[:, None, :],
                                   pop.table_id[:, None])
        bot = pop.is_bot[:, None]
        bots = np.flatnonzero(pop.is_bot)
        f = np.empty((n, H, self.step_width))
        c = self.step_cols
        f[..., c["sat"]] = self.world.satisfaction(traits, ses.task)
        mode = (pop.table_id[:, None], ses.mode)
        base, slope = self.signal_base[mode], self.signal_slope[mode]          # (n, H, C)
        base[bots], slope[bots] = response.BOT_BASE, 0.0
        u = rng.random((n, H, C + 4))
        threshold, multiplier = response.draw_columns(u, pop.is_bot)
        f[..., c["a"]] = (base - threshold) * multiplier
        f[..., c["b"]] = slope * multiplier
        # the step at which a conversion caused at step t arrives (1..max_delay later)
        arrival = np.arange(H) + 1 + np.minimum(
            (u[..., C + 2] * response.max_delay).astype(np.int64), response.max_delay - 1)
        f[..., c["leave_below"].start] = response.leave_threshold(u[..., C + 3], bot)
        f[:, H - 1, c["leave_below"].start] = 2.0          # the session ends after H tasks
        quality = self.quality_model.score(ses.latency, pop.metadata_missing)  # (n, H)
        f[..., c["quality"].start] = quality
        loglik = interaction_loglik(sampler.base, ses.task, ses.latency, ses.explore,
                                    self.behaviour)
        fused = self.fusion.run(loglik, quality)
        users = dict(step=f, arrival=arrival,
                     exo=self._exogenous_obs(pop, ses, fused, quality))
        if self.with_truth:
            users["truth"] = self._truth(f[..., c["sat"]], base, slope, bot, quality,
                                         ses.weights)
            users["static"] = np.stack([pop.is_bot, pop.consent, pop.group], axis=1)
        return users

    def _truth(self, sat: np.ndarray, base: np.ndarray, slope: np.ndarray, bot: np.ndarray,
               quality: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Packed ground truth per step: expected reward of each action, oracle action,
        latent primary, latent weights."""
        rate_w = self.response.column_rates(bot) * self.weights             # (n, 1, C)
        linear = np.where(CONTINUOUS, 0.0, rate_w)
        expected = ((base * linear).sum(-1)[..., None]
                    + (slope * linear).sum(-1)[..., None] * sat)            # (n, H, K)
        cont = np.flatnonzero(CONTINUOUS)
        p = base[..., None, cont] + slope[..., None, cont] * sat[..., None]  # (n, H, K, 2)
        e_cont = np.where(bot[..., None, None], np.minimum(p, 1.0), expected_clipped(p))
        expected += e_cont @ self.weights[cont]
        expected *= quality[..., None]
        truth = np.empty(expected.shape[:2] + (self.truth_width,))
        t = self.truth_cols
        truth[..., t["expected"]] = expected
        truth[..., t["oracle"].start] = expected.argmax(axis=-1)
        truth[..., t["primary"].start] = weights.argmax(axis=-1)
        truth[..., t["weights"]] = weights
        return truth

    def _exogenous_obs(self, pop, ses, fused, quality) -> np.ndarray:
        n, H = ses.task.shape
        c = self.cols
        exo = np.zeros((n, H + 1, self.layout.size), dtype=np.float32)
        exo[np.arange(n)[:, None], np.arange(H)[None, :], c["task"].start + ses.task] = 1.0
        exo[:, :, c["position"].start] = np.arange(H + 1) / H
        exo[:, 1:, c["latency"].start] = np.minimum(1.0, np.log1p(ses.latency) / _LATENCY_NORM)
        exo[:, 1:, c["explore"].start] = ses.explore
        consent = pop.consent[:, None, None]
        exo[:, :, c["persona_scores"]] = np.where(consent, fused.scores,
                                                  self.fusion.prior[None, None, :])
        exo[:, :, c["persona_confidence"].start] = np.where(consent[..., 0], fused.confidence, 0)
        exo[:, :, c["persona_stability"].start] = np.where(consent[..., 0], fused.stability, 0)
        exo[:, 0, c["quality"].start] = 1.0
        exo[:, 1:, c["quality"].start] = quality
        seen = ~pop.metadata_missing
        exo[np.flatnonzero(seen), :, c["device"].start + pop.device[seen]] = 1.0
        return exo

    def reset_lanes(self, lanes: np.ndarray, rng: np.random.Generator) -> None:
        """Start new sessions in ``lanes`` (indices) with the next users of the pool."""
        users = self.take_users(len(lanes), rng)
        if not self.lanes:
            self.lanes = {k: np.zeros((self.B,) + v.shape[1:], v.dtype)
                          for k, v in users.items()}
        for k, v in users.items():
            self.lanes[k][lanes] = v
        self.t[lanes] = 0
        self.queue[lanes] = 0.0
        self.obs[lanes] = users["exo"][:, 0]

    # ------------------------------------------------------------------ step
    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance every lane by one interaction.

        Returns:
            ``(reward, terminated)``, each ``(B,)``; ``step_info["satisfaction"]`` holds the
            satisfaction of the interaction just taken.
        """
        if self.backend == "numba":
            lanes = self.lanes
            kernels.step_lanes(action, self.t, lanes["step"], lanes["arrival"], lanes["exo"],
                               self.queue, self.weights, COLLAPSE, self.signal_weights_now,
                               self.kernel_cols, self._values, self._reward,
                               self._terminated, self._satisfaction, self.obs)
            self.step_info = {"satisfaction": self._satisfaction}
            return self._reward, self._terminated
        rows, t, c = self.rows, self.t, self.step_cols
        row = self.lanes["step"][rows, t]                 # one gather of everything at t
        s = row[rows, action]                             # satisfaction columns come first
        values = row[:, c["b"]] * s[:, None]
        values += row[:, c["a"]]
        np.minimum(np.maximum(values, 0.0, out=values), 1.0, out=values)
        q = row[:, c["quality"].start]
        conv = values[:, CONVERSION] * (self.weights[CONVERSION] * q)
        self.queue[rows, self.lanes["arrival"][rows, t]] += conv
        arrived = self.queue[rows, t]
        self.queue[rows, t] = 0.0
        signals = values @ COLLAPSE
        reward = composite_reward(signals, self.signal_weights_now, q) + arrived
        signals[:, SIGNAL_CONVERSION] = arrived > 0
        terminated = s < row[:, c["leave_below"].start]    # churn, or the last task
        ended = np.flatnonzero(terminated)
        if ended.size:                                      # pay conversions still in flight
            reward[ended] += self.queue[ended].sum(axis=1)
        t1 = t + 1
        self.t = t1
        obs = self.lanes["exo"][rows, t1]
        obs[:, self.cols["signals"]] = signals
        obs[rows, self.cols["last_action"].start + action] = 1.0
        self.obs = obs
        self.step_info = {"satisfaction": s}
        return reward, terminated

    # ------------------------------------------------------------------ info
    def lane_info(self, lane: int) -> dict[str, Any]:
        """``info()`` for one lane with Python scalars and copied arrays (the single env's
        view; the caller's own)."""
        t = min(int(self.t[lane]), self.horizon - 1)
        truth, static, c = self.lanes["truth"][lane, t], self.lanes["static"][lane], \
            self.truth_cols
        return {
            "latent_weights": truth[c["weights"]].copy(),
            "latent_primary": int(truth[c["primary"].start]),
            "expected_reward": truth[c["expected"]].copy(),
            "oracle_action": int(truth[c["oracle"].start]),
            "is_bot": bool(static[0]),
            "consent": bool(static[1]),
            "group": int(static[2]),
            "quality": float(self.obs[lane, self.cols["quality"].start]),
        }

    def info(self) -> dict[str, np.ndarray]:
        """Ground truth for the current decision of every lane (arrays, lanes first)."""
        self.require_truth()
        rows = self.rows
        t = np.minimum(self.t, self.horizon - 1)
        truth = self.lanes["truth"][rows, t]
        static = self.lanes["static"]
        c = self.truth_cols
        return {
            "latent_weights": truth[:, c["weights"]],
            "latent_primary": truth[:, c["primary"].start].astype(np.int64),
            "expected_reward": truth[:, c["expected"]],
            "oracle_action": truth[:, c["oracle"].start].astype(np.int64),
            "is_bot": static[:, 0].astype(bool),
            "consent": static[:, 1].astype(bool),
            "group": static[:, 2],
            "quality": self.obs[:, self.cols["quality"].start].astype(np.float64),
        }
