"""RLlib PPO (new API stack) as a PersonaRL learner.

``build_ppo_config`` is the one adapter from our agent config to RLlib's ``PPOConfig``: it
fills the config (clipped-surrogate PPO, Schulman et al. 2017, plus RLlib's adaptive KL
penalty when ``kl_coeff > 0``; ``kl_coeff=0`` is plain clipping, as in SB3), points RLlib
at our native VectorEnv (``vector_entry_point``: the
registered creator receives ``num_envs`` and returns the batched env) and calls RLlib's
own ``validate()``, whose errors say how to fix them. With ``sampler="batched"`` (the
default) RLlib samples and estimates advantages through ``agents.learners.rllib_batched`` (the same
episodes and train batch, computed on whole arrays); ``sampler="rllib"`` keeps RLlib's own
env runner and learner connectors. ``RLlibPPO`` wraps the Algorithm
behind the ``agents.learners.base.Learner`` interface; ``ModulePolicy`` evaluates its RLModule
behind the ``Policy`` interface (greedy: the most probable action, or the Gaussian mean).

A run whose every RLlib part lives in this process (``num_env_runners=0``, one local
learner: the default) needs no Ray instance: ``build_algorithm`` builds it without one
(``experiments.job`` then starts none — ≈ 2 s of start-up and six helper processes saved
on 2 cores). Remote env runners or learners need Ray initialised by the caller
(``experiments.job.ray_session``).
"""

from __future__ import annotations

import functools
import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

from agents.learners.base import (RESUME_STATE_FILE, WEIGHTS_FILE, process_rng_state,
                             save_weights, set_process_rng_state)
from agents.learners.rllib_batched import (BatchedEnvRunner, BatchedGAE, LeanPPOTorchLearner,
                                           missing_rllib_members)
from agents.learners.rllib_env import register_envs
from personarl.seeds import stream_seed32
from personarl.statefile import read_state, write_state
from personarl.errors import ConfigError
from personarl.stats import softmax

__all__ = ["build_ppo_config", "build_module", "build_algorithm", "runs_in_process",
           "RLlibPPO", "ModulePolicy"]

log = logging.getLogger(__name__)

# RLlib result path -> our metric name
_METRICS = {
    ("env_runners", "episode_return_mean"): "charts/episodic_return",
    ("env_runners", "episode_len_mean"): "charts/episode_length",
    ("env_runners", "num_episodes"): "charts/episodes",
    ("learners", "default_policy", "policy_loss"): "losses/policy_loss",
    ("learners", "default_policy", "vf_loss"): "losses/value_loss",
    ("learners", "default_policy", "entropy"): "losses/entropy",
    ("learners", "default_policy", "mean_kl_loss"): "losses/approx_kl",
    ("learners", "default_policy", "vf_explained_var"): "losses/explained_variance",
    ("learners", "default_policy", "default_optimizer_learning_rate"): "charts/learning_rate",
}


def build_ppo_config(env_id: str, env_config: Mapping[str, Any], agent: Mapping[str, Any],
                     seed: int) -> PPOConfig:
    """Our agent config (``configs/agent/ppo.yaml``) as a validated ``PPOConfig``; RLlib's
    seed (network, sampling, env users) is the ``training`` stream of the run's ``seed``.

    Raises:
        ConfigError: RLlib rejected the combination (its message, which says the fix).
    """
    config = (
        PPOConfig()
        .environment(env_id, env_config={**env_config, "info_level": "none"},
                     normalize_actions=False, clip_actions=False)
        .env_runners(num_env_runners=agent["num_env_runners"],
                     num_envs_per_env_runner=agent["num_envs_per_env_runner"],
                     gym_env_vectorize_mode="vector_entry_point",
                     rollout_fragment_length="auto")
        .training(lr=agent["lr"], gamma=agent["gamma"], lambda_=agent["gae_lambda"],
                  clip_param=agent["clip_param"], entropy_coeff=agent["entropy_coeff"],
                  vf_loss_coeff=agent["vf_loss_coeff"], grad_clip=agent["grad_clip"],
                  num_epochs=agent["num_epochs"], use_kl_loss=agent["kl_coeff"] > 0,
                  kl_coeff=agent["kl_coeff"],
                  train_batch_size_per_learner=agent["train_batch_size"],
                  minibatch_size=agent["minibatch_size"])
        .rl_module(model_config=DefaultModelConfig(
            fcnet_hiddens=list(agent["hidden"]), fcnet_activation=agent["activation"],
            vf_share_layers=False))
        .debugging(seed=stream_seed32(seed, "training"), log_level="ERROR")
        .reporting(metrics_num_episodes_for_smoothing=100)
    )
    sampler = agent.get("sampler", "batched")
    if sampler == "batched" and missing_rllib_members():
        import ray

        log.warning("agent.sampler=batched needs RLlib members that Ray %s lacks (%s): "
                    "sampling with RLlib's own env runner instead (agent.sampler=rllib)",
                    ray.__version__, ", ".join(missing_rllib_members()))
        sampler = "rllib"
    if sampler == "batched":
        config = (config
                  .env_runners(env_runner_cls=BatchedEnvRunner)
                  .learners(learner_class=LeanPPOTorchLearner,
                            learner_connector=functools.partial(
                                BatchedGAE, gamma=agent["gamma"],
                                lambda_=agent["gae_lambda"]),
                            add_default_connectors_to_learner_pipeline=False))
    try:
        config.validate()
    except Exception as exc:          # RLlib raises ValueError and its own error types
        raise ConfigError(f"RLlib rejected the PPO config: {exc}") from None
    return config


def runs_in_process(config: PPOConfig) -> bool:
    """Whether every part of ``config``'s Algorithm runs in this process: no remote env
    runners (training or evaluation), learners or aggregator actors."""
    return (config.num_env_runners == 0 and config.num_learners == 0
            and not config.evaluation_num_env_runners
            and not config.num_aggregator_actors_per_learner)


@contextmanager
def _values_for_object_refs() -> Iterator[None]:
    """``ray.put`` hands back the value itself (see ``build_algorithm``)."""
    import ray

    put = ray.put
    ray.put = lambda value, **kwargs: value
    try:
        yield
    finally:
        ray.put = put


def build_algorithm(config: PPOConfig) -> Any:
    """``config.build_algo()``, without starting Ray where nothing needs it.

    With Ray initialised, or a config with remote parts, this is ``build_algo()`` itself.
    A config that ``runs_in_process`` needs no Ray instance, but RLlib 2.60 puts objects
    into Ray's object store for remote env runners even when there are none — the config
    when the ``EnvRunnerGroup`` is built, the weights at every ``sync_weights`` — and the
    first ``ray.put`` starts a local Ray (``ray.init``: ≈ 2 s and six helper processes).
    While the Algorithm is built and while its env runner groups sync weights, ``ray.put``
    hands back the value itself: the reference would only be read by remote env runners,
    and there are none. Everything else is RLlib's own code. Training, checkpoints and
    restores then run without Ray (``tests/test_rllib_batched.py``); anything else that
    needs Ray starts it as usual.
    """
    import ray

    if ray.is_initialized() or not runs_in_process(config):
        return config.build_algo()
    with _values_for_object_refs():
        algo = config.build_algo()
    for group in (algo.env_runner_group, getattr(algo, "eval_env_runner_group", None)):
        if group is not None:
            group.sync_weights = _without_object_store(group.sync_weights)
    return algo


def _without_object_store(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        import ray

        if ray.is_initialized():           # something else started Ray meanwhile
            return method(*args, **kwargs)
        with _values_for_object_refs():
            return method(*args, **kwargs)
    return call


def _dig(result: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(result, Mapping) or key not in result:
            return None
        result = result[key]
    return result


class RLlibPPO:
    """An RLlib PPO Algorithm behind the learner interface.

    Args:
        config: from ``build_ppo_config``.
        log_dir: where RLlib's own Trainable log directory goes (Ray 2.60's Algorithm has
            no ``logger_creator`` and would otherwise create one under ``~/ray_results``).
    """

    def __init__(self, config: PPOConfig, log_dir: Path) -> None:
        register_envs()
        from ray.tune.trainable import trainable as _trainable
        log_dir.mkdir(parents=True, exist_ok=True)
        _trainable.DEFAULT_STORAGE_PATH = str(log_dir.resolve())
        self.algo = build_algorithm(config)
        self.action_space = self._acting_module().action_space
        self.env_steps = self.iteration = 0
        self._time_updates()

    def _time_updates(self) -> None:
        """Time the learner group's updates (RLlib's own timers are moving averages)."""
        group = self.algo.learner_group
        update = group.update

        def timed_update(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return update(*args, **kwargs)
            finally:
                self._learn_s += time.perf_counter() - t

        group.update = timed_update

    def train(self) -> dict[str, float]:
        self._learn_s = 0.0
        start = time.perf_counter()
        result = self.algo.train()
        elapsed = time.perf_counter() - start
        steps = int(_dig(result, ("env_runners", "num_env_steps_sampled_lifetime")) or 0)
        metrics = {name: float(v) for path, name in _METRICS.items()
                   if (v := _dig(result, path)) is not None}
        metrics["perf/env_steps_per_s"] = (steps - self.env_steps) / max(elapsed, 1e-9)
        metrics["perf/iteration_s"] = elapsed
        metrics["perf/learn_s"] = self._learn_s
        metrics["perf/sample_s"] = elapsed - self._learn_s     # sampling and the rest
        self.env_steps, self.iteration = steps, int(result["training_iteration"])
        return metrics

    def save(self, path: Path) -> None:
        """RLlib's checkpoint, plus ``resume_state.npz`` and ``policy_weights.pt``
        (``agents.learners.base``)."""
        self.algo.save_to_path(str(path.resolve()))
        write_state(path / RESUME_STATE_FILE, self._resume_state())
        save_weights(self._learner_module(), path / WEIGHTS_FILE)

    def restore(self, path: Path) -> None:
        """Continue from ``path``: bit for bit when it holds ``resume_state.npz`` and the
        sampler is the batched one in the driver (``num_env_runners=0``); otherwise the
        sampler starts new episodes (a logged warning says so)."""
        self.algo.restore_from_path(str(path.resolve()))
        self.iteration = int(self.algo.iteration)
        lifetime = self.algo.metrics.peek(("env_runners", "num_env_steps_sampled_lifetime"),
                                          default=0)
        self.env_steps = int(lifetime)
        state_file = path / RESUME_STATE_FILE
        if not state_file.is_file():
            log.warning("%s has no %s: training continues from the checkpoint's weights "
                        "with new episodes and random states, not as the run would have",
                        path, RESUME_STATE_FILE)
            return
        state = read_state(state_file)
        set_process_rng_state(state["rng"])
        coeffs = {k: float(v) for k, v in state["kl_coeffs"].items()}
        self.algo.learner_group.foreach_learner(_set_kl_coeffs, coeffs=coeffs)
        runner = self.algo.env_runner
        if state.get("sampler") is not None and isinstance(runner, BatchedEnvRunner):
            runner.set_sampler_state(state["sampler"])
        else:
            log.warning("the sampler starts new episodes after the restore (episodes in "
                        "flight are kept for agent.sampler=batched with num_env_runners=0): "
                        "training continues, not bit for bit as the run would have")

    def _learner_module(self) -> torch.nn.Module:
        """The learner's whole module (policy and value heads; the env runner's is the
        inference-only part)."""
        return next(iter(self.algo.learner_group.foreach_learner(_module))).get()

    def _resume_state(self) -> dict[str, Any]:
        """What RLlib's checkpoint leaves out (``agents.learners.base``): the random states, the
        adaptive KL coefficients (RLlib 2.60's PPO learner does not save them) and the
        batched sampler's episodes in flight."""
        runner = self.algo.env_runner
        sampler = (runner.get_sampler_state() if isinstance(runner, BatchedEnvRunner)
                   else None)
        coeffs = next(iter(self.algo.learner_group.foreach_learner(_kl_coeffs))).get()
        return dict(rng=process_rng_state(), kl_coeffs=coeffs, sampler=sampler)

    def _acting_module(self) -> torch.nn.Module:
        """The module that acts: the local env runner's (inference-only, synced after every
        update) or, where only remote env runners sample and the local one holds no
        module, the learner's."""
        runner = self.algo.env_runner
        if runner is not None and getattr(runner, "module", None) is not None:
            return self.algo.get_module()
        return self._learner_module()

    def policy(self) -> "ModulePolicy":
        return ModulePolicy(self._acting_module(), self.action_space)

    def close(self) -> None:
        self.algo.stop()


def _module(learner: Any) -> torch.nn.Module:
    return learner.module[DEFAULT_MODULE_ID]


def _kl_coeffs(learner: Any) -> dict[str, float]:
    return {str(k): float(v) for k, v in learner.curr_kl_coeffs_per_module.items()}


def _set_kl_coeffs(learner: Any, coeffs: Mapping[str, float]) -> None:
    for module_id, value in coeffs.items():
        learner.curr_kl_coeffs_per_module[module_id].data.fill_(value)


def build_module(env_id: str, env_config: Mapping[str, Any], agent: Mapping[str, Any]
                 ) -> torch.nn.Module:
    """The RLModule ``build_ppo_config`` trains, built from the config alone (untrained):
    what ``policy_weights.pt`` is loaded into (``agents.learners.export``)."""
    from envs.creator import create_env

    register_envs()
    env = create_env(env_id, {**env_config, "info_level": "none"})
    try:
        spec = build_ppo_config(env_id, env_config, agent, seed=0).get_rl_module_spec(
            spaces={DEFAULT_MODULE_ID: (env.observation_space, env.action_space)})
    finally:
        env.close()
    return spec.build()


class ModulePolicy:
    """A trained RLlib RLModule (torch) behind the ``Policy`` interface, acting greedily:
    the most probable action, or the Gaussian's mean clipped to the action bounds."""

    name = "ppo"
    privileged = False
    learning = False

    def __init__(self, module: Any, action_space: gym.Space) -> None:
        self.module, self.action_space = module, action_space
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        self.module.eval()

    def dist_inputs(self, obs: np.ndarray) -> np.ndarray:
        """``(B, K)`` logits, or ``(B, 2·dim)`` Gaussian mean and log-std."""
        with torch.no_grad():
            out = self.module.forward_inference({"obs": torch.as_tensor(
                np.asarray(obs, dtype=np.float32))})
        return out["action_dist_inputs"].numpy()

    def action_probs(self, obs: np.ndarray, info: Mapping[str, Any] | None = None
                     ) -> np.ndarray:
        if not self.discrete:
            raise ConfigError("a continuous policy has no action probabilities; "
                              "use dist_inputs() for its Gaussian's parameters")
        return softmax(self.dist_inputs(obs))

    def act(self, obs: np.ndarray, info: Mapping[str, Any] | None = None) -> np.ndarray:
        z = self.dist_inputs(obs)
        if self.discrete:
            return z.argmax(axis=1)
        return np.clip(z[:, : z.shape[1] // 2], self.action_space.low, self.action_space.high)

    def update(self, obs: np.ndarray, action: np.ndarray, reward: np.ndarray) -> None:
        return None

