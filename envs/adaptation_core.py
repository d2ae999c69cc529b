"""The batched core of PersonalityAdaptation: ``B`` conversations, one turn at a time.

Randomness comes from two streams, both seeded by the env's generator (as in
``envs.intervention_core``):

* **users** — persona, compatibility preferences, opening sentiment, the first trait
  reading, message and topic — come from the env's generator, ``pool_chunk`` at a time
  (``BaseCore.take_users``): users arrive in one order whatever the policy;
* **per-turn noise** — the next trait reading and message noise, the uniforms behind
  feedback, leaving and the next topic — is drawn after every turn for all lanes at once
  from the core's own stream (``envs.batched.exo_stream``): nothing is drawn for turns a
  user who left will never take, and policies facing the same seed meet the same noise at
  the same (lane, turn).

The turn runs in NumPy (``envs.adaptation_model``, the reference) or in compiled kernels
(``envs.adaptation_kernels``; ``backend``, ``personarl.backend``), which agree step for step.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs import adaptation_kernels as kernels
from envs.adaptation_model import (PHASE_URGENCY, STYLES, AdaptationModel, ChatState,
                                   Preferences, chat_transition, phase_bounds, phase_of,
                                   satisfaction, style_rewards, style_vectors)
from personarl.backend import resolve_backend, standard_normal
from envs.batched import (PROFILE_FIELDS, BoxActions, DiscreteActions, InfoTable,
                           LaneBlocks, RecordCore, column_slices, copy_records,
                           linear_weights)
from rewards.adaptation import AdaptationRewardFn, AdaptationRewardWeights
from synth.archetypes import ARCHETYPE_NAMES, TASK_TYPES, TRAITS
from personarl.errors import ConfigError
from synth.population import PopulationSampler, categorical_from_cdf

__all__ = ["AdaptationCore", "ACTION_MODES", "PHASE_URGENCY", "OBS_COLUMNS"]

ACTION_MODES = ("discrete", "continuous")
_N = len(TRAITS)
#: normals per lane per turn: the next trait reading, then the next message's noise
_Z = _N + 3
#: uniforms per lane per turn: feedback given, thumb up, leaving, the next topic
_U = 4
#: the kernel's argument for the kind of action a mode does not use
_NO_STYLES, _NO_VECTORS = np.zeros(0, np.int64), np.zeros((0, _N))


#: the observation layout (name -> columns), shared with policies that read observations
OBS_COLUMNS: dict[str, slice] = column_slices((
    ("phase", 4), ("turn", 1), ("sentiment", 1), ("urgency", 1), ("length", 1),
    ("topic", len(TASK_TYPES)), ("perceived", _N), ("last_style", _N)))


class AdaptationCore(RecordCore):
    """State and dynamics of ``num_lanes`` conversations (spec: ``envs.adaptation``).

    Args:
        num_lanes: batch size B.
        sampler: the population (its base archetypes must be the six defaults).
        model: the conversation's parameters.
        reward_fn: the turn's reward from engagement, resonance and explicit feedback; the
            default weights' function is computed inside the kernels, any other is called on
            their per-lane components.
        horizon: turns per conversation.
        action_mode: ``"discrete"`` (nine styles) or ``"continuous"`` (ten traits).
        obs_noise: std of the noise on the observed message features.
        with_truth: compute the ground truth ``info`` reports.
        backend: ``"auto"``, ``"numpy"`` or ``"numba"`` (``personarl.backend``).
        pool_chunk: users drawn ahead at a time (at least ``num_lanes``).
        num_threads: threads the ``numba`` step shares the lanes out to
            (``envs.batched.LaneBlocks``), and that sample arriving users
            (``PopulationSampler.sample``).
    """

    #: what changes as the core steps (``BaseCore.get_state``); the rest is configuration
    state_fields = ("lanes", "obs", "pool", "pool_pos", "exo_rng", "started",
                    "population_time", "step_info")
    scratch_fields = ("truth", "_out", "_z", "_uniforms", "_work", "_truth_stale",
                      "_step_views", "_bound", "_blocks")

    def __init__(self, num_lanes: int, *, sampler: PopulationSampler, model: AdaptationModel,
                 reward_fn: AdaptationRewardFn, horizon: int, action_mode: str,
                 obs_noise: float, with_truth: bool, backend: str = "auto",
                 pool_chunk: int = 512, num_threads: int = 1) -> None:
        if action_mode not in ACTION_MODES:
            raise ConfigError(f"action_mode={action_mode!r}; valid: {list(ACTION_MODES)}")
        if sampler.base.names != ARCHETYPE_NAMES:
            raise ConfigError("PersonalityAdaptation's compatibility model is defined for "
                              f"the six default archetypes {list(ARCHETYPE_NAMES)}; got "
                              f"{list(sampler.base.names)}")
        self.B, self.horizon = num_lanes, horizon
        self.backend = resolve_backend(backend)
        self._blocks = LaneBlocks(num_lanes, num_threads, self.backend)
        self.sampler, self.model, self.reward_fn = sampler, model, reward_fn
        weights = linear_weights(reward_fn, AdaptationRewardWeights)
        self.linear_reward = weights is not None
        self.discrete = action_mode == "discrete"
        self.actions = (DiscreteActions(len(STYLES), STYLES) if self.discrete
                        else BoxActions(_N, TRAITS))
        self.obs_noise, self.with_truth = obs_noise, with_truth
        self.pool_chunk = max(pool_chunk, num_lanes)
        self.cols = OBS_COLUMNS
        self.obs_size = OBS_COLUMNS["last_style"].stop
        self.params, self.dims = kernels.settings(
            model, obs_noise, np.zeros(3) if weights is None else weights, horizon,
            phase_bounds(horizon), [OBS_COLUMNS[name].start for name in kernels.OBS_BLOCKS])
        A, B = sampler.num_archetypes, num_lanes
        # every lane's user in one record (a restart copies one row per lane); the pool
        # holds records of the same type, with the first turn's draws
        self._allocate(np.dtype([
            ("traits", np.float64, (_N,)), ("weights", np.float64, (A,)),
            ("target", np.float64, (_N,)), ("importance", np.float64, (_N,)),
            ("task_cdf", np.float64, (len(TASK_TYPES),)), ("perceived", np.float64, (_N,)),
            ("last_style", np.float64, (_N,)), ("sentiment", np.float64),
            ("engagement", np.float64), ("noise0", np.float64, (3,)),
            ("u_topic0", np.float64), ("t", np.int64), ("primary", np.int64),
            ("group", np.int64), ("consent", np.bool_), ("is_bot", np.bool_),
            *PROFILE_FIELDS], align=True), self.obs_size)
        # the kernels' work arrays, allocated once
        self._out = np.zeros((B, len(kernels.STEP_FLOATS)))
        self._z, self._uniforms = np.zeros((B, _Z)), np.zeros((B, _U))
        self._work = [kernels.work() for _ in self._blocks.slices]      # one a block
        ints, vectors = kernels.truth_names(self.discrete, A)
        self.truth = InfoTable(B, kernels.TRUTH_FLOATS, ints, kernels.TRUTH_FLAGS, vectors)
        self._views()

    def _views(self) -> None:
        """``step_info``'s arrays: satisfaction and the thumb, views of ``_out``."""
        out = {name: self._out[:, j] for j, name in enumerate(kernels.STEP_FLOATS)}
        self._step_views = {"satisfaction": out["satisfaction"], "thumb": out["thumb"]}

    lane_fields = ("traits", "weights", "target", "importance", "perceived", "last_style",
                   "t", "primary", "group", "consent", "is_bot")

    @property
    def state(self) -> ChatState:
        """Sentiment and engagement (views of the lanes' record)."""
        return ChatState(self.lanes["sentiment"], self.lanes["engagement"])

    def phase(self, t: np.ndarray) -> np.ndarray:
        """Phase index of turn ``t``."""
        return phase_of(t, self.horizon)

    def preferences(self, lanes: np.ndarray | slice = slice(None)) -> Preferences:
        return Preferences(self.target[lanes], self.importance[lanes])

    # ------------------------------------------------------------------ users
    def generate_users(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``n`` new users as records of the lanes' type (``{"users": (n,)}``): persona,
        preferences, opening state, the first trait reading, message noise and topic
        uniform."""
        pop = self.sampler.sample(n, rng, self.population_time, backend=self.backend,
                                  num_threads=self._blocks.num_threads)
        self.population_time += n
        users = np.zeros(n, self.record)
        w6 = pop.weights[:, : len(ARCHETYPE_NAMES)]
        prefs = Preferences.of(pop.traits, w6 / w6.sum(axis=1, keepdims=True))
        users["traits"], users["weights"] = pop.traits, pop.weights
        users["target"], users["importance"] = prefs.target, prefs.importance
        users["primary"], users["group"] = pop.primary, pop.group
        users["consent"], users["is_bot"] = pop.consent, pop.is_bot
        self.copy_profile(users, pop)
        users["task_cdf"] = np.cumsum(self.sampler.mixture_tasks(pop.weights, pop.table_id),
                                      axis=1)
        enthusiasm = pop.traits[:, TRAITS.index("enthusiasm")]
        users["sentiment"] = np.clip(0.1 + 0.2 * standard_normal(rng, n, backend=self.backend),
                                     -1, 1)      # rng.normal(0.1, 0.2, n), bit for bit
        users["engagement"] = np.clip(0.6 + 0.3 * (enthusiasm - 0.5), 0, 1)
        z = standard_normal(rng, (n, _Z), backend=self.backend)
        users["perceived"] = self._reading(pop.traits, z[:, :_N])
        users["noise0"], users["u_topic0"] = z[:, _N:], rng.random(n)
        users["last_style"] = 0.5
        return {"users": users}

    def _reading(self, traits: np.ndarray, z: np.ndarray) -> np.ndarray:
        """A noisy reading of the traits from one message (standard normals ``z``)."""
        return np.clip(traits + self.model.perception_noise * z, 0.0, 1.0)

    def reset_lanes(self, lanes: np.ndarray, rng: np.random.Generator) -> None:
        """New users in ``lanes``, the next of the pool, and their first observation."""
        users = self.take_users(len(lanes), rng)["users"]
        copy_records(self.lanes, lanes, users)
        self._observe(lanes, users["noise0"], users["u_topic0"])
        self._truth_stale = True

    # ------------------------------------------------------------------ step
    def assistant_style(self, action: np.ndarray) -> np.ndarray:
        """``(B, 10)`` assistant traits an action sets (discrete styles use perception)."""
        return style_vectors(action, self.perceived) if self.discrete else action

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One turn for every lane; returns ``(reward, terminated)``.

        Per turn, for every lane at once (a fixed count: common random numbers), from the
        per-turn stream: ``(B, 13)`` standard normals (the next trait reading, the next
        message's noise), then ``(B, 4)`` uniforms (feedback given, thumb up, leaving, the
        next topic)."""
        z = standard_normal(self.exo_rng, out=self._z, backend=self.backend)
        u = self.exo_rng.random(out=self._uniforms)
        if self.backend == "numba":
            self._blocks.run(kernels.step_lanes, (action if self.discrete else _NO_STYLES,
                                                  _NO_VECTORS if self.discrete else action,
                                                  z, u), self._kernel_arguments()[0])
            self._truth_stale = not self.with_truth
            out = self._out
            reward = out[:, 0]
            if not self.linear_reward:
                reward = self.reward_fn(out[:, 3], out[:, 4], out[:, 2])
            self.step_info = self._step_views
            return reward, out[:, 5] > 0
        return self._step_numpy(action, z, u)

    def _step_numpy(self, action: np.ndarray, z: np.ndarray, u: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
        """The NumPy reference of ``step`` (``envs.adaptation_kernels.step_lanes``)."""
        t, m = self.t, self.model
        state = self.state
        style = self.assistant_style(action)
        sat = satisfaction(style, self.preferences(), self.phase(t), state.sentiment, m)
        reward, thumb = chat_transition(state, sat, u[:, 0:2], m, self.reward_fn)
        self.lanes["sentiment"], self.lanes["engagement"] = state.sentiment, state.engagement
        leave = (state.engagement < m.leave_below) & (u[:, 2] < m.leave_prob)
        t1 = t + 1
        terminated = leave | (t1 >= self.horizon)
        # the platform reads the user's next message: one more noisy trait reading
        perceived = self.perceived
        perceived += (self._reading(self.traits, z[:, :_N]) - perceived) / (t1 + 1)[:, None]
        self.t[:] = t1
        self.last_style[:] = style
        self._observe(self.rows, z[:, _N:], u[:, 3])
        self.step_info = {"satisfaction": sat, "thumb": thumb}
        return reward, terminated

    def _kernel_arguments(self) -> tuple[list[tuple], tuple]:
        """The arrays and settings ``step_lanes`` (one tuple per block of lanes,
        ``LaneBlocks``) and ``truth_lanes`` take after their per-call arguments, bound once
        (``set_state`` rebinds: it replaces the arrays)."""
        if self._bound is None:
            table = self.truth
            truth = (table.floats, table.ints, table.flags, table.block)
            self._bound = ([(self.lanes[rows], self.obs[rows], self.params, self.dims,
                             self.discrete, self.with_truth, self._out[rows],
                             *(a[rows] for a in truth), work)
                            for rows, work in zip(self._blocks.slices, self._work)],
                           (self.lanes, self.params, self.dims, self.discrete, *truth,
                            self._work[0]))
        return self._bound

    def _observe(self, lanes: np.ndarray, noise: np.ndarray, u_topic: np.ndarray) -> None:
        """The observation of ``lanes``: message ``noise`` ``(len(lanes), 3)`` standard
        normals, ``u_topic`` the uniforms behind the topics."""
        if self.backend == "numba":
            kernels.observe_lanes(lanes, noise, u_topic, self.lanes, self.obs, self.params,
                                  self.dims)
            return
        c, n = self.cols, len(lanes)
        user = self.lanes[lanes]
        t, x = user["t"], user["traits"]
        phase = self.phase(t)
        noise = self.obs_noise * noise
        o = np.zeros((n, self.obs_size), dtype=np.float32)
        o[np.arange(n), c["phase"].start + phase] = 1.0
        o[:, c["turn"].start] = t / self.horizon
        o[:, c["sentiment"].start] = np.clip((user["sentiment"] + 1) / 2 + noise[:, 0], 0, 1)
        o[:, c["urgency"].start] = np.clip(
            PHASE_URGENCY[phase] + 0.3 * (x[:, TRAITS.index("neuroticism")] - 0.5)
            + 0.2 * (x[:, TRAITS.index("conscientiousness")] - 0.5) + noise[:, 1], 0, 1)
        o[:, c["length"].start] = np.clip(0.2 + 0.6 * user["engagement"]
                                          * x[:, TRAITS.index("extraversion")] + noise[:, 2],
                                          0, 1)
        topic = categorical_from_cdf(user["task_cdf"], u_topic)
        o[np.arange(n), c["topic"].start + topic] = 1.0
        o[:, c["perceived"]] = user["perceived"]
        o[:, c["last_style"]] = user["last_style"]
        self.obs[lanes] = o

    # ------------------------------------------------------------------ info
    def expected_rewards(self) -> np.ndarray:
        """``(B, 9)`` expected reward of each discrete style this turn."""
        return style_rewards(self.perceived, self.preferences(), self.phase(self.t),
                             self.state, self.model, self.reward_fn)

    def _fill_truth(self) -> None:
        """Every lane's ground truth in ``truth`` (the ``numba`` backend): the step kernel
        leaves it current; after a restart or a restore it is computed again here."""
        if self._truth_stale:
            kernels.truth_lanes(*self._kernel_arguments()[1])
            self._truth_stale = False
        if self.discrete and not self.linear_reward:      # another reward function
            expected = self.expected_rewards()
            self.truth.vectors["expected_reward"][:] = expected
            self.truth.ints[:, self.truth.int_names.index("oracle_action")] = \
                expected.argmax(axis=1)

    def info(self) -> dict[str, Any]:
        """Ground truth for every lane's current turn (views of the state; the faces copy)."""
        self.require_truth()
        if self.backend == "numba":
            self._fill_truth()
            return self.truth.columns()
        state = self.state
        info: dict[str, Any] = {
            "latent_traits": self.traits, "latent_weights": self.weights,
            "latent_primary": self.primary, "preferred_style": self.target,
            "style_importance": self.importance,
            "latent_sentiment": state.sentiment,
            "latent_engagement": state.engagement,
            "phase": self.phase(self.t), "consent": self.consent,
            "is_bot": self.is_bot, "group": self.group, **self.profile(),
        }
        if self.discrete:
            expected = self.expected_rewards()
            info["expected_reward"] = expected
            info["oracle_action"] = expected.argmax(axis=1)
        else:
            # satisfaction is largest (1) at the preferred style, whatever the phase
            info["oracle_action"] = self.target
        return info
