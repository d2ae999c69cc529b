"""RLlib's sampling, advantage estimation and PPO update with less bookkeeping per step.

RLlib's ``SingleAgentEnvRunner`` steps a vector env batched, but after every step it walks
the lanes in Python: it splits the batch into per-lane items, appends each to its own
``SingleAgentEpisode`` and runs the env-to-module and module-to-env connector pipelines.
PPO's default learner pipeline then walks the episodes again, step by step for GAE. On our
64-lane envs that bookkeeping cost more than the env and the network together
(``BENCHMARKS.md``, the training speed profile). The pieces here keep RLlib's
interfaces — samples out of the env runner, a train batch out of the learner connector,
RLlib's loss and optimiser in the learner — and do the work on whole arrays:

* ``BatchedEnvRunner``: one forward pass and one env step per time step, the results
  written into arrays and handed out as one ``LaneRollout`` per ``sample()`` call, which
  ``BatchedGAE`` reads as it is — RLlib's ``SingleAgentEpisode`` chunks (one object per
  lane-episode) are built only where something else reads the samples. It serves the
  usual case — a stateless module with the default connectors, sampling a number of
  timesteps — and hands anything else (random actions, whole episodes, custom
  connectors, action normalising or clipping) to RLlib's own loop, resetting the envs
  when it switches.
* ``LeanPPOTorchLearner``: RLlib's PPO torch learner with a leaner minibatch loop — the
  minibatches are RLlib's (the same rows in the same order, the same shuffles from the
  same random stream) but indexed straight from the train batch's tensors instead of
  sliced and concatenated as ``SampleBatch`` objects; the module is put in train mode
  once per update, not once per minibatch; the loss metrics, which RLlib reports for the
  last minibatch only, are computed and logged for the last minibatch only; the
  gradients are clipped by their global norm with torch's multi-tensor ops; and the
  optimiser step checks the gradients' finiteness once (their total norm) instead of twice
  per parameter tensor, handing a non-finite gradient to RLlib's own handling. Every update
  is RLlib's, to the bit (``tests/test_rllib_batched.py``).
* ``BatchedGAE``: the learner connector that turns lane rollouts (or episodes) into PPO's
  train batch with one value forward pass and a GAE recursion vectorised over the episode
  chunks (Schulman et al. 2016, "High-dimensional continuous control using generalized
  advantage estimation"). Like RLlib's ``GeneralAdvantageEstimation``: a truncated
  episode or an unfinished chunk bootstraps from the value of its last observation, a
  terminated one from zero, and the advantages are standardised over the batch.

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
from ray.rllib.callbacks.callbacks import RLlibCallback
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

__all__ = ["BatchedEnvRunner", "BatchedGAE", "LaneRollout", "LeanPPOTorchLearner",
           "cyclic_minibatches", "gae", "lane_runs"]


#: the private members of RLlib 2.60 that ``BatchedEnvRunner`` and ``LeanPPOTorchLearner``
#: rely on: methods of the runner and the learner, attributes they set on themselves, and
#: ``AlgorithmConfig`` fields
RLLIB_MEMBERS = {
    "SingleAgentEnvRunner methods": ("_sample", "_try_env_reset", "_try_env_step",
                                     "_log_episode_metrics", "_log_env_steps",
                                     "_increase_sampled_metrics"),
    "SingleAgentEnvRunner attributes": ("_seed", "_needs_initial_reset", "_ongoing_episodes",
                                        "_ongoing_episodes_for_metrics",
                                        "_metrics_num_env_steps_sampled", "_callbacks"),
    "AlgorithmConfig attributes": ("_env_to_module_connector", "_module_to_env_connector",
                                   "_learner_connector"),
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


def lane_runs(valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The runs of ``True`` in each column of a ``(T, B)`` mask, lane after lane and in time
    order within a lane: ``(lane, start, stop)``, each ``(R,)`` int64, ``stop`` one past
    the run's last step."""
    t, b = valid.shape
    flags = np.zeros((b, t + 2), np.int8)
    flags[:, 1:-1] = valid.T
    edges = np.diff(flags, axis=1)
    lane, start = np.nonzero(edges == 1)        # C order: lane-major, time ascending
    _, stop = np.nonzero(edges == -1)
    return lane, start, stop


class LaneRollout:
    """One ``BatchedEnvRunner.sample()`` call's timesteps as arrays over ``T`` time steps and
    ``B`` lanes — what RLlib's runner hands out as a list of ``SingleAgentEpisode`` chunks,
    without building one object per chunk. ``BatchedGAE`` reads it directly;
    ``to_episodes()`` gives RLlib's chunks to anything else.

    Attributes:
        obs: ``(T + 1, B, *obs_shape)`` float32, the observation before each step and, in
            row ``T``, the one after the last.
        actions: ``(T, B, *action_shape)``; ``action_logp`` ``(T, B)``;
            ``action_dist_inputs`` ``(T, B, D)``: the sampling policy's.
        rewards: ``(T, B)`` float32; ``terminated``, ``truncated``: ``(T, B)`` bool.
        valid: ``(T, B)`` bool, ``False`` where a lane only reset (the step after its
            episode ended: RLlib's next-step autoreset ignores the action; not a timestep).
        t_started: ``(B,)`` int64, each lane's steps into its episode before row 0.
        episode_ids: ``(B,)`` str, the id of each lane's episode at row 0; the episodes a
            lane starts later get ``f"{id_prefix}{serial}"``, serials counting up from
            ``first_serial`` in the order of the runs that end.

    ``len(rollout)`` is its number of timesteps (valid steps), RLlib's ``len(episode)``
    summed over the chunks.
    """

    def __init__(self, *, obs: np.ndarray, actions: np.ndarray, action_logp: np.ndarray,
                 action_dist_inputs: np.ndarray, rewards: np.ndarray, terminated: np.ndarray,
                 truncated: np.ndarray, valid: np.ndarray, t_started: np.ndarray,
                 episode_ids: list[str], id_prefix: str, first_serial: int) -> None:
        self.obs, self.actions = obs, actions
        self.action_logp, self.action_dist_inputs = action_logp, action_dist_inputs
        self.rewards, self.terminated, self.truncated = rewards, terminated, truncated
        self.valid, self.t_started, self.episode_ids = valid, t_started, list(episode_ids)
        self.id_prefix, self.first_serial = id_prefix, int(first_serial)
        self._runs: tuple[np.ndarray, ...] | None = None

    def __len__(self) -> int:
        return int(self.valid.sum())

    def env_steps(self) -> int:
        return len(self)

    def agent_steps(self) -> int:
        return len(self)

    def runs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The episode chunks, lane after lane: ``(lane, start, stop, terminated,
        truncated)``, each ``(R,)`` — a chunk is a run of valid steps, ended by its
        episode's end (the next step is the lane's reset) or by the end of the sample."""
        if self._runs is None:
            lane, start, stop = lane_runs(self.valid)
            self._runs = (lane, start, stop, self.terminated[stop - 1, lane],
                          self.truncated[stop - 1, lane] & ~self.terminated[stop - 1, lane])
        return self._runs

    def lane_ends(self) -> tuple[np.ndarray, np.ndarray]:
        """Per chunk (``runs()`` order), ``(first, last)`` ``(R,)`` bool: whether it is its
        lane's first chunk in the rollout (it continues the lane's episode from before) and
        whether it is the lane's last (it decides the lane's state after the rollout)."""
        lane = self.runs()[0]
        first, last = np.ones(lane.size, bool), np.ones(lane.size, bool)
        first[1:] = last[:-1] = lane[1:] != lane[:-1]
        return first, last

    def columns(self) -> dict[str, np.ndarray]:
        """The chunks' data flattened chunk after chunk: ``obs`` ``(N + R, ...)`` (each
        chunk's observations and the one after its last step), ``actions``,
        ``action_logp``, ``action_dist_inputs`` and ``rewards`` ``(N, ...)``, ``lengths``
        and ``terminated`` ``(R,)`` — the layout ``BatchedGAE`` builds from episodes."""
        lane, start, stop, terminated, _ = self.runs()
        lengths = stop - start
        step_t, step_lane = _run_rows(lane, start, lengths)
        obs_t, obs_lane = _run_rows(lane, start, lengths + 1)
        return dict(obs=self.obs[obs_t, obs_lane], actions=self.actions[step_t, step_lane],
                    action_logp=self.action_logp[step_t, step_lane],
                    action_dist_inputs=self.action_dist_inputs[step_t, step_lane],
                    rewards=self.rewards[step_t, step_lane], lengths=lengths,
                    terminated=terminated)

    def _serial_after(self) -> np.ndarray:
        """Per chunk (``runs()`` order), the serial of the episode its lane starts after it
        where the chunk ended its episode: serials count up from ``first_serial``."""
        _, _, _, terminated, truncated = self.runs()
        return self.first_serial + np.cumsum(terminated | truncated) - 1

    def chunk_ids(self) -> list[str]:
        """Each chunk's episode id (``runs()`` order)."""
        lane, after, (first, _) = self.runs()[0], self._serial_after(), self.lane_ends()
        return [self.episode_ids[ln] if first[i] else f"{self.id_prefix}{after[i - 1]}"
                for i, ln in enumerate(lane)]

    def final_ids(self) -> list[str]:
        """Each lane's episode id after the rollout's last step (the next rollout's
        ``episode_ids``): a new episode's where the lane's last chunk ended one, the last
        chunk's own otherwise."""
        lane, _, _, terminated, truncated = self.runs()
        ids = list(self.episode_ids)
        if lane.size == 0:
            return ids
        after, (first, last) = self._serial_after(), self.lane_ends()
        for i in np.flatnonzero(last):
            if terminated[i] or truncated[i]:
                ids[lane[i]] = f"{self.id_prefix}{after[i]}"
            elif not first[i]:                           # an episode begun in this rollout
                ids[lane[i]] = f"{self.id_prefix}{after[i - 1]}"
        return ids

    def to_episodes(self) -> list[SingleAgentEpisode]:
        """RLlib's form: one ``SingleAgentEpisode`` per chunk (``runs()`` order), in NumPy
        form, without the spaces only RLlib's own connectors read."""
        lane, start, stop, terminated, truncated = self.runs()
        first = self.lane_ends()[0]
        chunks = []
        for i, (ln, s, e, ids) in enumerate(zip(lane, start, stop, self.chunk_ids())):
            chunks.append(SingleAgentEpisode(
                id_=ids, observations=InfiniteLookbackBuffer(self.obs[s:e + 1, ln]),
                infos=[{}] * (e - s + 1),
                actions=InfiniteLookbackBuffer(self.actions[s:e, ln]),
                rewards=InfiniteLookbackBuffer(self.rewards[s:e, ln]),
                extra_model_outputs={
                    Columns.ACTION_LOGP: InfiniteLookbackBuffer(self.action_logp[s:e, ln]),
                    Columns.ACTION_DIST_INPUTS: InfiniteLookbackBuffer(
                        self.action_dist_inputs[s:e, ln])},
                terminated=bool(terminated[i]), truncated=bool(truncated[i]),
                t_started=int(self.t_started[ln]) if first[i] else 0,
                len_lookback_buffer=0))
        return chunks


def _run_rows(lane: np.ndarray, start: np.ndarray, lengths: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """``(time, lane)`` indices of ``lengths[i]`` consecutive rows from ``start[i]`` in lane
    ``lane[i]``, run after run."""
    run = np.repeat(np.arange(lengths.size), lengths)
    offset = np.arange(run.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return start[run] + offset, lane[run]


def clip_gradients(gradients_dict: dict[Any, Any], *, grad_clip: float | None = None,
                   grad_clip_by: str = "value") -> Any:
    """RLlib's ``clip_gradients`` (``ray.rllib.utils.torch_utils``; clipping by the global
    norm: Pascanu, Mikolov & Bengio 2013, "On the difficulty of training recurrent neural
    networks"), with the global-norm mode done by torch's multi-tensor ops: one
    ``_foreach_norm`` over the gradients and one ``_foreach_mul_`` by the clip coefficient
    instead of a norm and a multiplication per tensor. The same arithmetic — each tensor's
    L2 norm with an infinity mapped to ±1e9 and a NaN to 0, their L2 norm (mapped alike),
    the coefficient ``min(1, grad_clip / max(norm + 1e-6, grad_clip))`` — so the same
    bits (``tests/test_rllib_batched.py``). The other modes, and gradients with a ``None``,
    are RLlib's own. Changes the gradients in place; returns the global norm in the
    global-norm mode."""
    from ray.rllib.utils.torch_utils import clip_gradients as rllib_clip_gradients

    grads = list(gradients_dict.values())
    if grad_clip is None or grad_clip_by != "global_norm" or not grads or any(
            g is None for g in grads):
        return rllib_clip_gradients(gradients_dict, grad_clip=grad_clip,
                                    grad_clip_by=grad_clip_by)
    norms = torch.stack(torch._foreach_norm([g.detach() for g in grads], 2.0))
    total = torch.norm(norms.nan_to_num(neginf=-10e8, posinf=10e8), 2.0).nan_to_num(
        neginf=-10e8, posinf=10e8)
    coeff = torch.clamp(grad_clip / torch.clamp(total + 1e-6, min=grad_clip), max=1.0)
    torch._foreach_mul_([g.detach() for g in grads], coeff)
    return total


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
                and not self.module[module_ids[0]].inference_only
                and not self.config.torch_compile_learner
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
        self.module[mid].train()               # RLlib's forward_train does it every call
        try:
            while index is not None:
                following = next(minibatches, None)
                self.metrics = metrics if following is None else _Unlogged(metrics)
                rows = torch.from_numpy(index)
                loss_per_module = self._minibatch_update(
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

    def _minibatch_update(self, batch: dict[Any, Any]) -> dict[Any, Any]:
        """``TorchLearner._uncompiled_update`` (RLlib's step on one minibatch: forward,
        loss, gradients, their postprocessing and the optimiser step) for modules already
        in train mode, calling their ``_forward_train`` directly. Returns the loss per
        module."""
        self._compute_off_policyness(batch)
        fwd_out = {mid: self.module[mid]._forward_train(b) for mid, b in batch.items()}
        loss_per_module = self.compute_losses(fwd_out=fwd_out, batch=batch)
        gradients = self.compute_gradients(loss_per_module)
        self.apply_gradients(self.postprocess_gradients(gradients))
        return loss_per_module

    def compute_loss_for_module(self, *, module_id: Any, config: Any, batch: dict[str, Any],
                                fwd_out: dict[str, Any]) -> torch.Tensor:
        """RLlib's PPO loss (``PPOTorchLearner.compute_loss_for_module``; Schulman et al.
        2017, "Proximal policy optimization algorithms", eq. 9: the clipped surrogate, the
        value loss clipped at ``vf_clip_param`` and the entropy bonus, plus the adaptive KL
        penalty when ``use_kl_loss``). On a minibatch whose metrics are not logged (all
        but an update's last, see ``update``) the same total loss is computed without the
        terms only the metrics read — the loss metrics, the explained variance and, with
        no KL penalty, the sampling policy's distribution — the same operations in the same
        order, so the same bits. Otherwise (the logged minibatch, a loss mask, no critic)
        RLlib's own."""
        if (not isinstance(self.metrics, _Unlogged) or Columns.LOSS_MASK in batch
                or not config.use_critic):
            return super().compute_loss_for_module(module_id=module_id, config=config,
                                                   batch=batch, fwd_out=fwd_out)
        module = self.module[module_id].unwrapped()
        current = module.get_train_action_dist_cls().from_logits(
            fwd_out[Columns.ACTION_DIST_INPUTS])
        logp_ratio = torch.exp(current.logp(batch[Columns.ACTIONS])
                               - batch[Columns.ACTION_LOGP])
        if config.use_kl_loss:
            previous = module.get_exploration_action_dist_cls().from_logits(
                batch[Columns.ACTION_DIST_INPUTS])
            mean_kl = torch.mean(previous.kl(current))
        entropy = current.entropy()
        advantages = batch[Columns.ADVANTAGES]
        surrogate = torch.min(advantages * logp_ratio, advantages * torch.clamp(
            logp_ratio, 1 - config.clip_param, 1 + config.clip_param))
        values = module.compute_values(batch, embeddings=fwd_out.get(Columns.EMBEDDINGS))
        vf_loss = torch.clamp(torch.pow(values - batch[Columns.VALUE_TARGETS], 2.0), 0,
                              config.vf_clip_param)
        total = torch.mean(
            -surrogate + config.vf_loss_coeff * vf_loss
            - self.entropy_coeff_schedulers_per_module[module_id].get_current_value()
            * entropy)
        if config.use_kl_loss:
            total += self.curr_kl_coeffs_per_module[module_id] * mean_kl
        return total

    @staticmethod
    def _get_clip_function() -> Any:
        return clip_gradients

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
    """PPO's learner connector: ``LaneRollout``s and RLlib episodes ->
    ``{module_id: {column: tensor}}`` with observations, actions, the sampling policy's
    log-probabilities and distribution inputs, advantages (standardised over the batch)
    and value targets, one row per timestep, episode chunk after chunk.

    Raises:
        ValueError: the samples hold no timestep, or the module is recurrent.
    """

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
        # LaneRollouts and RLlib's episodes alike as chunks flattened one after another,
        # in the order they came
        parts, pending = [], []
        for item in episodes:
            if isinstance(item, LaneRollout):
                if pending:
                    parts.append(_episode_columns(pending))
                    pending = []
                parts.append(item.columns())
            elif len(item) > 0:
                pending.append(item)
        if pending:
            parts.append(_episode_columns(pending))
        if not any(p["lengths"].sum() for p in parts):
            raise ValueError(f"BatchedGAE got no timesteps: {len(episodes)} empty samples")
        cols = (parts[0] if len(parts) == 1 else
                {k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
        lengths, obs = cols["lengths"], cols["obs"]  # obs: every chunk's and the one after
        with torch.no_grad():
            all_values = module.compute_values(
                {Columns.OBS: torch.from_numpy(obs)}).numpy().astype(np.float64)
        rows = np.arange(obs.shape[0])
        last_row = np.cumsum(lengths + 1) - 1           # each chunk's final observation
        step_rows = np.delete(rows, last_row)            # observations that were acted on
        values = all_values[step_rows]
        next_values = all_values[step_rows + 1]
        ends = np.cumsum(lengths) - 1
        next_values[ends[cols["terminated"]]] = 0.0
        rewards = cols["rewards"].astype(np.float64)
        advantages = gae(rewards, values, next_values, lengths, self.gamma, self.lambda_)
        targets = (advantages + values).astype(np.float32)
        advantages = (advantages - advantages.mean()) / max(1e-4, float(advantages.std()))
        columns = {
            Columns.OBS: obs[step_rows],
            Columns.ACTIONS: cols["actions"],
            Columns.ACTION_LOGP: cols["action_logp"],
            Columns.ACTION_DIST_INPUTS: cols["action_dist_inputs"],
            Columns.ADVANTAGES: advantages.astype(np.float32),
            Columns.VALUE_TARGETS: targets,
        }
        batch[DEFAULT_MODULE_ID] = {k: torch.from_numpy(np.ascontiguousarray(v))
                                    for k, v in columns.items()}
        return batch


def _episode_columns(episodes: list[Any]) -> dict[str, np.ndarray]:
    """``LaneRollout.columns()`` of RLlib's (non-empty) episodes."""
    return dict(
        obs=np.concatenate([e.get_observations(slice(0, len(e) + 1)) for e in episodes]),
        actions=np.concatenate([e.get_actions() for e in episodes]),
        action_logp=np.concatenate(
            [e.get_extra_model_outputs(Columns.ACTION_LOGP) for e in episodes]),
        action_dist_inputs=np.concatenate(
            [e.get_extra_model_outputs(Columns.ACTION_DIST_INPUTS) for e in episodes]),
        rewards=np.concatenate([e.get_rewards() for e in episodes]),
        lengths=np.array([len(e) for e in episodes], dtype=np.int64),
        terminated=np.array([e.is_terminated for e in episodes], dtype=bool))


class BatchedEnvRunner(SingleAgentEnvRunner):
    """``SingleAgentEnvRunner`` whose timestep sampling works on whole arrays.

    The env keeps RLlib's next-step autoreset: the step after a lane's episode ends only
    resets that lane (its action is ignored), so it is not a timestep and not recorded.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lanes: dict[str, Any] | None = None    # per-lane state while on the fast path
        self._finished: list[tuple[int, float, float]] = []   # (length, return, seconds)
        # episode ids: this runner's prefix and a serial number per episode
        self._id_prefix, self._next_serial = uuid.uuid4().hex + "_", 0

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
                ) -> list[LaneRollout] | list[SingleAgentEpisode]:
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
        self._lanes = dict(obs=np.array(obs, dtype=np.float32), id=self._new_ids(b),
                           t=np.zeros(b, np.int64),
                           ret=np.zeros(b), start=np.full(b, time.time()),
                           resetting=np.zeros(b, bool))

    def _sample_arrays(self, num_timesteps: int, explore: bool
                       ) -> list[LaneRollout] | list[SingleAgentEpisode]:
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
        rollout = LaneRollout(
            obs=np.stack(obs_seq), actions=np.stack(act_seq), action_logp=np.stack(logp_seq),
            action_dist_inputs=np.stack(dist_seq), rewards=np.stack(rew_seq),
            terminated=np.stack(term_seq), truncated=np.stack(trunc_seq),
            valid=np.stack(valid_seq), t_started=lanes["t"].copy(), episode_ids=lanes["id"],
            id_prefix=self._id_prefix, first_serial=self._next_serial)
        ended = self._advance_lanes(rollout, np.asarray(time_seq))
        lanes["obs"], lanes["resetting"] = obs_seq[-1], ~valid
        self._log_env_steps(metric=self._metrics_num_env_steps_sampled, num_steps=ts)
        self._increase_sampled_metrics(ts, ended)
        return [rollout] if self._learner_reads_rollouts() else rollout.to_episodes()

    def _new_ids(self, n: int) -> list[str]:
        """``n`` new episode ids (the rollout's ``f"{id_prefix}{serial}"``)."""
        first, self._next_serial = self._next_serial, self._next_serial + n
        return [f"{self._id_prefix}{k}" for k in range(first, first + n)]

    def _learner_reads_rollouts(self) -> bool:
        """Whether the samples go to ``BatchedGAE`` alone (a ``LaneRollout`` then): it is
        the learner connector (as ``functools.partial(BatchedGAE, ...)``, the way
        ``build_ppo_config`` sets it), one learner takes the whole batch, and no
        ``on_sample_end`` callback reads them. Anything else gets RLlib's episodes."""
        connector, config = self.config._learner_connector, self.config
        return (isinstance(connector, functools.partial) and connector.func is BatchedGAE
                and config.num_learners <= 1 and config.callbacks_on_sample_end is None
                and all(type(c).on_sample_end is RLlibCallback.on_sample_end
                        for c in self._callbacks))

    def _advance_lanes(self, rollout: LaneRollout, times: np.ndarray) -> int:
        """Carry each lane's episode (steps, return, start time, id) past ``rollout`` and
        queue the metrics of the episodes that ended in it, in the order they ended (as
        RLlib logs them: the metrics are windowed means). ``times``: ``(T,)`` wall-clock
        seconds after each step. Returns how many episodes ended."""
        lanes = self._lanes
        lane, start, stop, terminated, truncated = rollout.runs()
        if lane.size == 0:
            return 0
        lengths, ended = stop - start, terminated | truncated
        first, last = rollout.lane_ends()
        step_t, step_lane = _run_rows(lane, start, lengths)
        sums = np.add.reduceat(rollout.rewards[step_t, step_lane].astype(np.float64),
                               np.cumsum(lengths) - lengths)
        steps = np.where(first, lanes["t"][lane], 0) + lengths
        returns = np.where(first, lanes["ret"][lane], 0.0) + sums
        end_time = times[stop - 1]
        began = np.where(first, lanes["start"][lane], np.r_[0.0, end_time[:-1]])
        done = np.flatnonzero(ended)
        done = done[np.lexsort((lane[done], stop[done]))]
        self._finished.extend(zip(steps[done].tolist(), returns[done].tolist(),
                                  (end_time - began)[done].tolist()))
        k = np.flatnonzero(last)                     # each lane's last run decides its state
        carry = ~ended[k]
        lanes["t"][lane[k]] = np.where(carry, steps[k], 0)
        lanes["ret"][lane[k]] = np.where(carry, returns[k], 0.0)
        lanes["start"][lane[k]] = np.where(carry, began[k], end_time[k])
        lanes["id"] = rollout.final_ids()
        self._next_serial += done.size               # the serials the new episodes took
        return done.size

    def get_metrics(self) -> Any:
        # RLlib's episode metrics are means (and min/max) over a window of the last
        # episodes: logging only the window's worth gives the same figures for less work
        window = max(1, math.ceil(self.config.metrics_num_episodes_for_smoothing
                                  / (self.config.num_env_runners or 1)))
        for length, ret, seconds in self._finished[-window:]:
            self._log_episode_metrics(length, ret, seconds)
        self._finished.clear()
        return super().get_metrics()
