"""RLlib's sampling, advantage estimation and PPO update with less bookkeeping per step.

RLlib's ``SingleAgentEnvRunner`` steps a vector env batched, but after every step it walks
the lanes in Python: it splits the batch into per-lane items, appends each to its own
``SingleAgentEpisode`` and runs the env-to-module and module-to-env connector pipelines.
PPO's default learner pipeline then walks the episodes again, step by step for GAE. On our
64-lane envs that bookkeeping cost more than the env and the network together
(``BENCHMARKS.md``, the training speed profile). The pieces here keep RLlib's
interfaces — episodes out of the env runner, a train batch out of the learner connector,
RLlib's loss and optimiser in the learner — and do the work on whole arrays:

* ``BatchedEnvRunner``: one forward pass and one env step per time step, the results
  written into arrays; episode chunks are cut from the arrays once per ``sample()`` call
  (one ``SingleAgentEpisode`` per lane-episode, already in NumPy form, without the
  spaces that only RLlib's own connectors read). It serves the usual
  case — a stateless module with the default connectors, sampling a number of timesteps —
  and hands anything else (random actions, whole episodes, custom connectors, action
  normalising or clipping) to RLlib's own loop, resetting the envs when it switches.
* ``LeanPPOTorchLearner``: RLlib's PPO torch learner with a leaner minibatch loop — the
  minibatches are RLlib's (the same rows in the same order, the same shuffles from the
  same random stream) but indexed straight from the train batch's tensors instead of
  sliced and concatenated as ``SampleBatch`` objects; the loss metrics, which RLlib
  reports for the last minibatch only, are logged for the last minibatch only; and the
  optimiser step checks the gradients' finiteness once (their total norm) instead of twice
  per parameter tensor, handing a non-finite gradient to RLlib's own handling. Every update
  is RLlib's, to the bit (``tests/test_rllib_batched.py``).
* ``BatchedGAE``: the learner connector that turns episodes into PPO's train batch with
  one value forward pass and a GAE recursion vectorised over episodes (Schulman et al.
  2016, "High-dimensional continuous control using generalized advantage estimation").
  Like RLlib's ``GeneralAdvantageEstimation``: a truncated episode or an unfinished chunk
  bootstraps from the value of its last observation, a terminated one from zero, and the
  advantages are standardised over the batch.

All three are tested against RLlib's own classes (``tests/test_rllib_batched.py``).

``BatchedEnvRunner`` and ``LeanPPOTorchLearner`` subclass RLlib's runner and learner and use
members RLlib does not promise to keep (``RLLIB_MEMBERS``); ``missing_rllib_members()``
checks them against the installed Ray, and ``agents.learners.rllib_ppo.build_ppo_config``
falls back to RLlib's own sampler and learner, with one warning, when any is gone.
"""

from __future__ import annotations

import functools
import inspect
import math
import time
import uuid
from typing import Any, Iterator

import numpy as np
import torch
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.learner.training_data import TrainingData
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.env.utils.infinite_lookback_buffer import InfiniteLookbackBuffer
from ray.rllib.utils.metrics import (ALL_MODULES, MODULE_TRAIN_BATCH_SIZE_MEAN,
                                     NUM_ENV_STEPS_TRAINED, NUM_ENV_STEPS_TRAINED_LIFETIME,
                                     NUM_MODULE_STEPS_TRAINED,
                                     NUM_MODULE_STEPS_TRAINED_LIFETIME, WEIGHTS_SEQ_NO)

__all__ = ["BatchedEnvRunner", "BatchedGAE", "LeanPPOTorchLearner", "cyclic_minibatches",
           "gae"]


#: the private members of RLlib 2.60 that ``BatchedEnvRunner`` and ``LeanPPOTorchLearner``
#: rely on: methods of the runner and the learner, attributes they set on themselves, and
#: ``AlgorithmConfig`` fields
RLLIB_MEMBERS = {
    "SingleAgentEnvRunner methods": ("_sample", "_try_env_reset", "_try_env_step",
                                     "_log_episode_metrics", "_log_env_steps",
                                     "_increase_sampled_metrics"),
    "SingleAgentEnvRunner attributes": ("_seed", "_needs_initial_reset", "_ongoing_episodes",
                                        "_ongoing_episodes_for_metrics",
                                        "_metrics_num_env_steps_sampled"),
    "AlgorithmConfig attributes": ("_env_to_module_connector", "_module_to_env_connector"),
    "TorchLearner attributes": ("_params", "_module_optimizers", "_lr_scheduler_classes",
                                "_grad_scalers", "_weights_seq_no",
                                "_metrics_all_modules_num_env_steps_trained",
                                "_metrics_all_modules_num_module_steps_trained"),
    "Learner methods": ("_make_batch_if_necessary", "_update"),
}


def _source(cls: type) -> str:
    """The source of ``cls`` and of its RLlib base classes (where attributes are set)."""
    source = ""
    for base in cls.__mro__:
        if base.__module__.startswith("ray."):
            try:
                source += inspect.getsource(base)
            except (OSError, TypeError):
                pass
    return source


@functools.lru_cache(maxsize=1)
def missing_rllib_members() -> tuple[str, ...]:
    """The ``RLLIB_MEMBERS`` the installed RLlib lacks (``()`` when the batched sampler and
    the lean learner can run): methods by ``hasattr``, attributes by their assignment in
    the source of the classes (they exist only on a built runner or learner), config
    fields on a default ``AlgorithmConfig``."""
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

    config = AlgorithmConfig()
    runner, learner = _source(SingleAgentEnvRunner), _source(PPOTorchLearner)
    checks = [
        ("SingleAgentEnvRunner methods", "SingleAgentEnvRunner",
         lambda m: callable(getattr(SingleAgentEnvRunner, m, None))),
        ("SingleAgentEnvRunner attributes", "SingleAgentEnvRunner",
         lambda a: f"self.{a}" in runner),
        ("AlgorithmConfig attributes", "AlgorithmConfig", lambda a: hasattr(config, a)),
        ("TorchLearner attributes", "TorchLearner", lambda a: f"self.{a}" in learner),
        ("Learner methods", "Learner", lambda m: callable(getattr(PPOTorchLearner, m, None))),
    ]
    return tuple(f"{owner}.{name}" for group, owner, present in checks
                 for name in RLLIB_MEMBERS[group] if not present(name))


def gae(rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray,
        lengths: np.ndarray, gamma: float, lambda_: float) -> np.ndarray:
    """GAE advantages for a flat batch of consecutive episodes.

    Args:
        rewards, values: ``(N,)``, episode after episode.
        next_values: ``(N,)`` value of the next observation, already zero where the step
            ended its episode by termination.
        lengths: ``(E,)`` episode lengths summing to ``N``.

    The recursion ``A_t = δ_t + γλ·A_{t+1}`` runs backwards over positions within the
    episodes, all episodes at once (a ``(E, max length)`` padded table; padding is zero, so
    it adds nothing to the last real step).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    n, e = int(lengths.sum()), lengths.size
    if n != rewards.shape[0]:
        raise ValueError(f"episode lengths sum to {n}, but {rewards.shape[0]} rewards")
    starts = np.cumsum(lengths) - lengths
    episode = np.repeat(np.arange(e), lengths)
    position = np.arange(n) - starts[episode]
    table = np.zeros((e, int(lengths.max(initial=0)) + 1), dtype=np.float64)
    table[episode, position] = rewards + gamma * next_values - values
    decay = gamma * lambda_
    for k in range(table.shape[1] - 2, -1, -1):
        table[:, k] += decay * table[:, k + 1]
    return table[episode, position].astype(np.float32)


def cyclic_minibatches(n: int, size: int, num_epochs: int, shuffle: bool
                       ) -> Iterator[np.ndarray]:
    """The row indices of RLlib's ``MiniBatchCyclicIterator`` minibatches over an ``n``-row
    train batch: ``size`` rows each, read in order and wrapping around at the end (a
    minibatch may hold the last rows of one epoch and the first of the next) until
    ``num_epochs`` passes are complete; with ``shuffle``, every wrap permutes the batch
    with ``np.random.permutation(n)`` as ``SampleBatch.shuffle`` does — the same draws
    from NumPy's global random state, so the same minibatches.

    Raises:
        ValueError: ``n``, ``size`` or ``num_epochs`` is below 1 (RLlib's iterator would
            loop forever on an empty batch; it raises too).
    """
    if n < 1 or size < 1 or num_epochs < 1:
        raise ValueError(f"minibatches need a train batch of at least one row, a size and "
                         f"a number of epochs of at least one; got {n} rows, size {size}, "
                         f"{num_epochs} epochs")
    order, start, epochs = np.arange(n), 0, 0
    while epochs < num_epochs:
        parts, need = [], size
        while start + need >= n:
            parts.append(order[start:])
            need -= n - start
            start = 0
            epochs += 1
            if shuffle:
                order = order[np.random.permutation(n)]
        if need > 0:
            parts.append(order[start:start + need])
            start += need
        yield np.concatenate(parts)


class _Unlogged:
    """A ``MetricsLogger`` stand-in whose ``log_value``/``log_dict`` do nothing (the
    minibatches before the last: RLlib keeps their loss metrics in windows of one)."""

    def __init__(self, metrics: Any) -> None:
        self._metrics = metrics

    def log_value(self, *args: Any, **kwargs: Any) -> None:
        return None

    def log_dict(self, *args: Any, **kwargs: Any) -> None:
        return None

    def __contains__(self, key: Any) -> bool:
        return key in self._metrics

    def __getattr__(self, name: str) -> Any:
        return getattr(self._metrics, name)


class LeanPPOTorchLearner(PPOTorchLearner):
    """RLlib's PPO learner (torch) with a lean minibatch loop and optimiser step.

    ``update`` (the usual case: one stateless module, a train batch from episodes cut into
    minibatches; anything else goes to RLlib's own ``update``): RLlib's
    ``before_gradient_based_update``, learner connector and ``_update`` per minibatch, and
    ``after_gradient_based_update``, with three differences in bookkeeping only — the
    minibatches are indexed straight from the train batch's tensors
    (``cyclic_minibatches``: RLlib's rows, order and shuffles) instead of built as
    ``SampleBatch`` slices and concatenations; the metrics RLlib logs inside each
    minibatch's update (loss terms, gradient norm, off-policyness — windows of one, so
    only the last minibatch's reach the results) are logged for the last minibatch; and
    the step counters are logged once per update with the totals RLlib's per-minibatch
    calls add up to.

    ``apply_gradients``: RLlib's ``TorchLearner.apply_gradients`` checks every gradient
    tensor for NaN and infinity twice per minibatch (once to zero non-finite gradients,
    once before stepping the optimiser). Here one total norm over all gradients
    (``torch.nn.utils.get_total_norm``; NaN or infinite as soon as one element is)
    decides: finite — set the gradients and step each optimiser, which is what RLlib does
    with finite gradients; not finite, or a learning-rate scheduler, a gradient scaler or
    ``torch_skip_nan_gradients`` in play — RLlib's own ``apply_gradients``.

    Both are tested to leave the same weights, optimiser state and reported metrics as
    RLlib's ``PPOTorchLearner`` (``tests/test_rllib_batched.py``).
    """

    def update(self, *, training_data: TrainingData | None = None,
               timesteps: dict[str, Any] | None = None, num_epochs: int = 1,
               minibatch_size: int | None = None, shuffle_batch_per_epoch: bool = False,
               num_total_minibatches: int = 0, _no_metrics_reduce: bool = False,
               **kwargs: Any) -> Any:
        module_ids = list(self.module.keys())
        lean = (training_data is not None and not kwargs and minibatch_size
                and training_data.episodes is not None and training_data.batch is None
                and not training_data.data_iterators and num_total_minibatches == 0
                and len(module_ids) == 1 and not self.module[module_ids[0]].is_stateful()
                and self.should_module_be_updated(module_ids[0]))
        if not lean:
            return super().update(training_data=training_data, timesteps=timesteps,
                                  num_epochs=num_epochs, minibatch_size=minibatch_size,
                                  shuffle_batch_per_epoch=shuffle_batch_per_epoch,
                                  num_total_minibatches=num_total_minibatches,
                                  _no_metrics_reduce=_no_metrics_reduce, **kwargs)
        self._check_is_built()
        self.before_gradient_based_update(timesteps=timesteps or {})
        training_data.validate()
        training_data.solve_refs()
        self._weights_seq_no += 1
        batch = self._make_batch_if_necessary(training_data=training_data)
        mid = module_ids[0]
        columns = dict(batch.policy_batches[mid])
        n = len(next(iter(columns.values())))
        metrics, count = self.metrics, 0
        minibatches = cyclic_minibatches(n, minibatch_size, num_epochs,
                                         shuffle_batch_per_epoch and num_epochs > 1)
        index = next(minibatches)
        try:
            while index is not None:
                following = next(minibatches, None)
                self.metrics = metrics if following is None else _Unlogged(metrics)
                rows = torch.from_numpy(index)
                _, loss_per_module, _ = self._update(
                    {mid: {k: v[rows] for k, v in columns.items()}})
                count += 1
                index = following
        finally:
            self.metrics = metrics
        self._log_trained(mid, count * minibatch_size, count, batch.env_steps())
        for module_id, loss in loss_per_module.items():
            self.metrics.log_value(key=(module_id, self.TOTAL_LOSS_KEY), value=loss,
                                   window=1)
        self.after_gradient_based_update(timesteps=timesteps or {})
        if not _no_metrics_reduce:
            return self.metrics.reduce()
        return None

    def _log_trained(self, mid: Any, rows: int, minibatches: int, env_steps: int) -> None:
        """What RLlib's ``_log_steps_trained_metrics`` and ``_log_metrics`` log over an
        update's minibatches, in one call each: ``rows`` module steps in ``minibatches``
        minibatches of one size, each counting the batch's ``env_steps`` (RLlib's
        convention)."""
        log = self.metrics.log_value
        log((mid, WEIGHTS_SEQ_NO), self._weights_seq_no, window=1)
        log(key=(mid, MODULE_TRAIN_BATCH_SIZE_MEAN), value=rows // minibatches, reduce="mean")
        log(key=(mid, NUM_MODULE_STEPS_TRAINED), value=rows, reduce="sum")
        log(key=(mid, NUM_MODULE_STEPS_TRAINED_LIFETIME), value=rows, reduce="lifetime_sum",
            with_throughput=True)
        log(key=(ALL_MODULES, NUM_MODULE_STEPS_TRAINED), value=rows, reduce="sum",
            with_throughput=True)
        log(key=(ALL_MODULES, NUM_MODULE_STEPS_TRAINED_LIFETIME), value=rows,
            reduce="lifetime_sum", with_throughput=True)
        log((ALL_MODULES, NUM_ENV_STEPS_TRAINED), env_steps * minibatches, reduce="sum",
            with_throughput=True)
        log((ALL_MODULES, NUM_ENV_STEPS_TRAINED_LIFETIME), env_steps * minibatches,
            reduce="lifetime_sum", with_throughput=True)
        self._metrics_all_modules_num_env_steps_trained.inc(value=env_steps * minibatches)
        self._metrics_all_modules_num_module_steps_trained.inc(value=rows)

    def apply_gradients(self, gradients_dict: dict[Any, Any]) -> None:
        grads = [g for g in gradients_dict.values() if g is not None]
        if (self._lr_scheduler_classes is not None or self._grad_scalers is not None
                or self.config.torch_skip_nan_gradients
                or len(grads) != len(gradients_dict)
                or not bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))):
            return super().apply_gradients(gradients_dict)
        for pid, grad in gradients_dict.items():
            self._params[pid].grad = grad
        for module_id, names in self._module_optimizers.items():
            for name in names:
                self.get_optimizer(module_id, name).step()
        return None


class BatchedGAE(ConnectorV2):
    """PPO's learner connector: episodes -> ``{module_id: {column: tensor}}`` with
    observations, actions, the sampling policy's log-probabilities and distribution inputs,
    advantages (standardised over the batch) and value targets."""

    def __init__(self, input_observation_space: Any = None, input_action_space: Any = None,
                 *, gamma: float, lambda_: float) -> None:
        super().__init__(input_observation_space, input_action_space)
        self.gamma, self.lambda_ = float(gamma), float(lambda_)

    def __call__(self, *, rl_module: Any, batch: dict[str, Any], episodes: list[Any],
                 **kwargs: Any) -> dict[str, Any]:
        module = rl_module[DEFAULT_MODULE_ID]
        if module.is_stateful():
            raise ValueError("BatchedGAE serves stateless (MLP) modules only; a recurrent "
                             "module needs RLlib's default learner connectors")
        episodes = [e for e in episodes if len(e) > 0]
        lengths = np.array([len(e) for e in episodes], dtype=np.int64)
        # every episode's observations including the one after its last step
        obs = np.concatenate([e.get_observations(slice(0, len(e) + 1)) for e in episodes])
        with torch.no_grad():
            all_values = module.compute_values(
                {Columns.OBS: torch.from_numpy(obs)}).numpy().astype(np.float64)
        rows = np.arange(obs.shape[0])
        last_row = np.cumsum(lengths + 1) - 1           # each episode's final observation
        step_rows = np.delete(rows, last_row)            # observations that were acted on
        values = all_values[step_rows]
        next_values = all_values[step_rows + 1]
        ends = np.cumsum(lengths) - 1
        next_values[ends[[e.is_terminated for e in episodes]]] = 0.0
        rewards = np.concatenate([e.get_rewards() for e in episodes]).astype(np.float64)
        advantages = gae(rewards, values, next_values, lengths, self.gamma, self.lambda_)
        targets = (advantages + values).astype(np.float32)
        advantages = (advantages - advantages.mean()) / max(1e-4, float(advantages.std()))
        columns = {
            Columns.OBS: obs[step_rows],
            Columns.ACTIONS: np.concatenate([e.get_actions() for e in episodes]),
            Columns.ACTION_LOGP: np.concatenate(
                [e.get_extra_model_outputs(Columns.ACTION_LOGP) for e in episodes]),
            Columns.ACTION_DIST_INPUTS: np.concatenate(
                [e.get_extra_model_outputs(Columns.ACTION_DIST_INPUTS) for e in episodes]),
            Columns.ADVANTAGES: advantages.astype(np.float32),
            Columns.VALUE_TARGETS: targets,
        }
        batch[DEFAULT_MODULE_ID] = {k: torch.from_numpy(np.ascontiguousarray(v))
                                    for k, v in columns.items()}
        return batch


class BatchedEnvRunner(SingleAgentEnvRunner):
    """``SingleAgentEnvRunner`` whose timestep sampling works on whole arrays.

    The env keeps RLlib's next-step autoreset: the step after a lane's episode ends only
    resets that lane (its action is ignored), so it is not a timestep and not recorded.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lanes: dict[str, Any] | None = None    # per-lane state while on the fast path
        self._finished: list[tuple[int, float, float]] = []   # (length, return, seconds)

    def get_sampler_state(self) -> dict[str, Any] | None:
        """The episodes in flight — every lane's observation, step count, return and id and
        the env's users (``CoreVectorEnv.get_state``) — or ``None`` when the fast path is
        not mid-stream (RLlib's own loop holds its episodes itself)."""
        if self._lanes is None or not hasattr(self.env.unwrapped, "get_state"):
            return None
        lanes = {k: (list(v) if k == "id" else np.array(v, copy=True))
                 for k, v in self._lanes.items()}
        return dict(lanes=lanes, finished=[list(f) for f in self._finished],
                    env=self.env.unwrapped.get_state())

    def set_sampler_state(self, state: dict[str, Any]) -> None:
        """Continue the episodes ``get_sampler_state`` saved: the next ``sample()`` steps
        the same users from the same observations (no reset).

        Raises:
            ValueError: the state's lane count is not this runner's ``num_envs``.
        """
        lanes = dict(state["lanes"])
        if len(lanes["id"]) != self.num_envs:
            raise ValueError(f"the saved sampler has {len(lanes['id'])} lanes, this env "
                             f"runner {self.num_envs}")
        self.env.unwrapped.set_state(state["env"])
        lanes["id"] = [str(i) for i in lanes["id"]]
        self._lanes = lanes
        self._finished = [(int(n), float(r), float(t)) for n, r, t in state["finished"]]
        self._needs_initial_reset = False
        self._ongoing_episodes = [None] * self.num_envs

    def _fast_path(self, num_timesteps: int | None, random_actions: bool) -> bool:
        config = self.config
        return (num_timesteps is not None and not random_actions and self.module is not None
                and not self.module.is_stateful()
                and config._env_to_module_connector is None
                and config._module_to_env_connector is None
                and not config.normalize_actions and not config.clip_actions
                and not config.restart_failed_sub_environments)

    def _sample(self, *, num_timesteps: int | None = None, num_episodes: int | None = None,
                explore: bool, random_actions: bool = False, force_reset: bool = False
                ) -> list[SingleAgentEpisode]:
        if not self._fast_path(num_timesteps, random_actions):
            if self._lanes is not None:                  # the env is mid-episode for us
                self._lanes, force_reset = None, True
            return super()._sample(num_timesteps=num_timesteps, num_episodes=num_episodes,
                                   explore=explore, random_actions=random_actions,
                                   force_reset=force_reset)
        if force_reset or self._needs_initial_reset or self._lanes is None:
            self._reset_lanes()
        return self._sample_arrays(num_timesteps, explore)

    def _reset_lanes(self) -> None:
        obs, _ = self._try_env_reset(seed=self._seed if self._needs_initial_reset else None,
                                     options=None)
        self._needs_initial_reset = False
        self._ongoing_episodes = [None] * self.num_envs   # RLlib's loop must reset first
        self._ongoing_episodes_for_metrics.clear()
        b = self.num_envs
        self._lanes = dict(obs=np.array(obs, dtype=np.float32),
                           id=[uuid.uuid4().hex for _ in range(b)], t=np.zeros(b, np.int64),
                           ret=np.zeros(b), start=np.full(b, time.time()),
                           resetting=np.zeros(b, bool))

    def _sample_arrays(self, num_timesteps: int, explore: bool) -> list[SingleAgentEpisode]:
        lanes = self._lanes
        # RLModule.forward_exploration/inference put the module into eval mode on every
        # call (a walk over its submodules); this module only ever acts, so it is put
        # there once and its _forward_* methods are called directly
        if explore:
            dist_cls = self.module.get_exploration_action_dist_cls()
            forward = self.module._forward_exploration
        else:
            dist_cls = self.module.get_inference_action_dist_cls()
            forward = self.module._forward_inference
        self.module.eval()
        obs_seq, act_seq, logp_seq, dist_seq = [lanes["obs"]], [], [], []
        rew_seq, term_seq, trunc_seq, valid_seq, time_seq = [], [], [], [], []
        valid = ~lanes["resetting"]
        ts = 0
        while ts < num_timesteps:
            with torch.no_grad():
                out = forward({Columns.OBS: torch.from_numpy(obs_seq[-1])},
                              t=self.num_env_steps_sampled_lifetime + ts)
                dist_inputs = out[Columns.ACTION_DIST_INPUTS]
                dist = dist_cls.from_logits(dist_inputs)
                if not explore:
                    dist = dist.to_deterministic()
                actions = dist.sample()
                logp = dist.logp(actions)
            actions = actions.numpy()
            obs, rewards, terminated, truncated, _ = self._try_env_step(actions)
            # copies: an env may hand out the same buffers every step
            obs_seq.append(np.array(obs, dtype=np.float32))
            act_seq.append(actions)
            logp_seq.append(logp.numpy())
            dist_seq.append(dist_inputs.numpy())
            rew_seq.append(np.array(rewards, dtype=np.float32))
            term_seq.append(np.array(terminated, dtype=bool))
            trunc_seq.append(np.array(truncated, dtype=bool))
            valid_seq.append(valid)
            time_seq.append(time.time())
            ts += int(valid.sum())
            valid = ~(term_seq[-1] | trunc_seq[-1])      # ended lanes reset on the next step
        episodes = self._cut_episodes(
            np.stack(obs_seq), np.stack(act_seq), np.stack(logp_seq), np.stack(dist_seq),
            np.stack(rew_seq), np.stack(term_seq), np.stack(trunc_seq), np.stack(valid_seq),
            np.asarray(time_seq))
        lanes["obs"], lanes["resetting"] = obs_seq[-1], ~valid
        done = [e for e in episodes if e.is_done]
        self._log_env_steps(metric=self._metrics_num_env_steps_sampled, num_steps=ts)
        self._increase_sampled_metrics(ts, len(done))
        return episodes

    def _cut_episodes(self, obs, actions, logp, dist_inputs, rewards, terminated, truncated,
                      valid, times) -> list[SingleAgentEpisode]:
        """One episode chunk per run of recorded steps in each lane: a run ends where the
        episode ends (the next step is the lane's reset) or where the sample ends."""
        lanes = self._lanes
        chunks: list[SingleAgentEpisode] = []
        flags = np.concatenate([np.zeros((1, self.num_envs), np.int8),
                                valid.astype(np.int8),
                                np.zeros((1, self.num_envs), np.int8)])
        edges = np.diff(flags, axis=0)
        finished: list[tuple[int, int, int, float, float]] = []
        for lane in range(self.num_envs):
            starts = np.flatnonzero(edges[:, lane] == 1)
            stops = np.flatnonzero(edges[:, lane] == -1)     # one past the run's last step
            for s, e in zip(starts, stops):
                ended_by_term = bool(terminated[e - 1, lane])
                ended = ended_by_term or bool(truncated[e - 1, lane])
                r = rewards[s:e, lane]
                chunks.append(SingleAgentEpisode(
                    id_=lanes["id"][lane],
                    observations=InfiniteLookbackBuffer(obs[s:e + 1, lane]),
                    infos=[{}] * (e - s + 1),
                    actions=InfiniteLookbackBuffer(actions[s:e, lane]),
                    rewards=InfiniteLookbackBuffer(r),
                    extra_model_outputs={
                        Columns.ACTION_LOGP: InfiniteLookbackBuffer(logp[s:e, lane]),
                        Columns.ACTION_DIST_INPUTS: InfiniteLookbackBuffer(
                            dist_inputs[s:e, lane])},
                    terminated=ended_by_term, truncated=ended and not ended_by_term,
                    t_started=int(lanes["t"][lane]), len_lookback_buffer=0))
                lanes["t"][lane] += e - s
                lanes["ret"][lane] += float(r.sum())
                if ended:                           # the lane's next run is a new episode
                    finished.append((e - 1, lane, int(lanes["t"][lane]),
                                     float(lanes["ret"][lane]),
                                     float(times[e - 1] - lanes["start"][lane])))
                    lanes["id"][lane] = uuid.uuid4().hex
                    lanes["t"][lane], lanes["ret"][lane] = 0, 0.0
                    lanes["start"][lane] = times[e - 1]
        # in the order they ended, as RLlib logs them (the metrics are windowed means)
        self._finished.extend(f[2:] for f in sorted(finished))
        return chunks

    def get_metrics(self) -> Any:
        # RLlib's episode metrics are means (and min/max) over a window of the last
        # episodes: logging only the window's worth gives the same figures for less work
        window = max(1, math.ceil(self.config.metrics_num_episodes_for_smoothing
                                  / (self.config.num_env_runners or 1)))
        for length, ret, seconds in self._finished[-window:]:
            self._log_episode_metrics(length, ret, seconds)
        self._finished.clear()
        return super().get_metrics()
