"""Stable-Baselines3 PPO on our native vector env, as a PersonaRL learner.

``SB3VecEnv`` is the thin adapter: SB3's ``VecEnv`` API over a ``CoreVectorEnv`` built with
``autoreset_mode="same_step"`` (SB3 expects a finished lane to come back already reset, with
the final observation in ``infos[i]["terminal_observation"]``). Stepping stays batched in
NumPy; only SB3's per-env ``infos`` list is built in Python.

``SB3PPO`` maps our PPO config onto SB3's with the same meaning: ``n_steps =
train_batch_size / num_envs``, ``batch_size = minibatch_size``, the same epochs, learning
rate, discount, GAE λ, clip range, entropy and value coefficients, gradient clipping, and
the same network (separate policy and value MLPs of ``hidden`` units).
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from stable_baselines3 import PPO
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import VecEnv, VecMonitor

from agents.learners.base import (RESUME_STATE_FILE, WEIGHTS_FILE, process_rng_state,
                             save_weights, set_process_rng_state)
from envs.batched import CoreVectorEnv
from envs.creator import create_env
from personarl import jsonio
from personarl.seeds import stream_seed32
from personarl.statefile import read_state, write_state
from personarl.errors import ConfigError

__all__ = ["SB3VecEnv", "SB3PPO", "SB3Policy", "build_policy"]

log = logging.getLogger(__name__)

_ACTIVATIONS = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "elu": torch.nn.ELU,
                "swish": torch.nn.SiLU, "linear": torch.nn.Identity}
_METRICS = {"train/policy_gradient_loss": "losses/policy_loss",
            "train/value_loss": "losses/value_loss", "train/entropy_loss": "losses/entropy",
            "train/approx_kl": "losses/approx_kl",
            "train/explained_variance": "losses/explained_variance",
            "train/learning_rate": "charts/learning_rate"}


class SB3VecEnv(VecEnv):
    """SB3's ``VecEnv`` over a same-step ``CoreVectorEnv``."""

    def __init__(self, env: CoreVectorEnv) -> None:
        mode = env.metadata["autoreset_mode"]
        if mode != AutoresetMode.SAME_STEP:
            raise ConfigError(f"SB3VecEnv needs a vector env built with "
                              f"autoreset_mode='same_step'; this one autoresets {mode.value}")
        self.env = env
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        seed = self._seeds[0] if self._seeds else None
        obs, _ = self.env.reset(seed=seed)
        self._reset_seeds()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        obs, reward, terminated, truncated, info = self.env.step(self._actions)
        done = terminated | truncated
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for i in np.flatnonzero(done):
            infos[i] = {"terminal_observation": info["final_obs"][i],
                        "TimeLimit.truncated": bool(truncated[i] and not terminated[i])}
        return obs, reward.astype(np.float32), done, infos

    def close(self) -> None:
        self.env.close()

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self.env, attr_name)] * len(self._indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self.env, attr_name, value)

    def env_method(self, method_name: str, *args: Any, indices: Any = None,
                   **kwargs: Any) -> list[Any]:
        return [getattr(self.env, method_name)(*args, **kwargs)]

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False] * len(self._indices(indices))

    def _indices(self, indices: Any) -> Sequence[int]:
        if indices is None:
            return range(self.num_envs)
        return [indices] if isinstance(indices, int) else list(indices)


def _policy_kwargs(agent: Mapping[str, Any]) -> dict[str, Any]:
    hidden = list(agent["hidden"])
    return dict(net_arch=dict(pi=hidden, vf=hidden),
                activation_fn=_ACTIVATIONS[agent["activation"]])


def build_policy(env_id: str, env_config: Mapping[str, Any], agent: Mapping[str, Any]
                 ) -> ActorCriticPolicy:
    """The ``ActorCriticPolicy`` ``SB3PPO`` trains, built from the config alone (untrained):
    what ``policy_weights.pt`` is loaded into (``agents.learners.export``)."""
    env = create_env(env_id, {**env_config, "info_level": "none"})
    try:
        return ActorCriticPolicy(env.observation_space, env.action_space,
                                 lr_schedule=lambda _: 0.0, **_policy_kwargs(agent))
    finally:
        env.close()


class SB3PPO:
    """SB3 PPO behind the ``agents.learners.base.Learner`` interface.

    Args:
        env_id, env_kwargs: the env (built with ``info_level="none"``).
        agent: our PPO config (``configs/agent/ppo.yaml`` fields).
        seed: the run's seed; its ``training`` stream seeds the env, the network and SB3's
            sampling.
    """

    def __init__(self, env_id: str, env_kwargs: Mapping[str, Any], agent: Mapping[str, Any],
                 seed: int) -> None:
        n = agent["num_envs_per_env_runner"]
        if agent["train_batch_size"] % n:
            raise ConfigError(f"agent.train_batch_size={agent['train_batch_size']} must be a "
                              f"multiple of agent.num_envs_per_env_runner={n} for SB3")
        self.vec = VecMonitor(SB3VecEnv(create_env(env_id, {
            **env_kwargs, "num_envs": n, "info_level": "none",
            "autoreset_mode": "same_step"})))
        self.model = PPO(
            "MlpPolicy", self.vec, learning_rate=agent["lr"],
            n_steps=agent["train_batch_size"] // n, batch_size=agent["minibatch_size"],
            n_epochs=agent["num_epochs"], gamma=agent["gamma"], gae_lambda=agent["gae_lambda"],
            clip_range=agent["clip_param"], ent_coef=agent["entropy_coeff"],
            vf_coef=agent["vf_loss_coeff"], max_grad_norm=agent["grad_clip"],
            policy_kwargs=_policy_kwargs(agent),
            seed=stream_seed32(seed, "training"), device="cpu", verbose=0)
        self._quiet_and_timed()
        self._per_iteration = agent["train_batch_size"]
        self.env_steps = self.iteration = 0

    def _quiet_and_timed(self) -> None:
        """No SB3 log output; time SB3's gradient phase (``PPO.train``) separately."""
        self.model.set_logger(Logger(folder=None, output_formats=[]))
        update = self.model.train

        def timed_update() -> None:
            t = time.perf_counter()
            update()
            self._learn_s += time.perf_counter() - t

        self.model.train = timed_update

    def train(self) -> dict[str, float]:
        self._learn_s = 0.0
        start = time.perf_counter()
        self.model.learn(self._per_iteration, reset_num_timesteps=self.iteration == 0,
                         log_interval=10**9)
        elapsed = time.perf_counter() - start
        steps = int(self.model.num_timesteps)
        values = self.model.logger.name_to_value
        metrics = {ours: float(values[theirs]) for theirs, ours in _METRICS.items()
                   if theirs in values}
        episodes = list(self.model.ep_info_buffer)
        if episodes:
            metrics["charts/episodic_return"] = float(np.mean([e["r"] for e in episodes]))
            metrics["charts/episode_length"] = float(np.mean([e["l"] for e in episodes]))
        metrics["perf/env_steps_per_s"] = (steps - self.env_steps) / max(elapsed, 1e-9)
        metrics["perf/iteration_s"] = elapsed
        metrics["perf/learn_s"] = self._learn_s
        metrics["perf/sample_s"] = elapsed - self._learn_s
        self.env_steps, self.iteration = steps, self.iteration + 1
        return metrics

    def save(self, path: Path) -> None:
        """SB3's ``model.zip``, our counters (``state.json``), ``resume_state.npz`` and
        ``policy_weights.pt`` (``agents.learners.base``)."""
        self.model.save(path / "model.zip", exclude=["train"])   # our timing wrapper
        (path / "state.json").write_text(jsonio.dumps(
            dict(env_steps=self.env_steps, iteration=self.iteration)))
        write_state(path / RESUME_STATE_FILE, self._resume_state())
        save_weights(self.model.policy, path / WEIGHTS_FILE)

    def restore(self, path: Path) -> None:
        """Continue from ``path`` bit for bit (``PPO.load`` unpickles ``model.zip``: only
        for checkpoints the run verified, see ``experiments.train``)."""
        self.model = PPO.load(path / "model.zip", env=self.vec, device="cpu")
        self._quiet_and_timed()
        state = json.loads((path / "state.json").read_text())
        self.env_steps, self.iteration = state["env_steps"], state["iteration"]
        if (path / RESUME_STATE_FILE).is_file():
            self._set_resume_state(read_state(path / RESUME_STATE_FILE))
        else:
            log.warning("%s has no %s: training continues from the checkpoint's weights "
                        "with new episodes and random states, not as the run would have",
                        path, RESUME_STATE_FILE)

    def _resume_state(self) -> dict[str, Any]:
        """What ``model.zip`` leaves out or ``PPO.load`` resets: the random states, the env's
        users, the episodes in flight (observations, ``VecMonitor``'s running returns) and
        the window of finished episodes the metrics are means over."""
        m, monitor = self.model, self.vec
        return dict(rng=process_rng_state(), env=monitor.venv.env.get_state(),
                    last_obs=m._last_obs, last_episode_starts=m._last_episode_starts,
                    monitor=dict(returns=monitor.episode_returns,
                                 lengths=monitor.episode_lengths,
                                 count=monitor.episode_count),
                    episodes=[dict(e) for e in m.ep_info_buffer or []])  # dtypes kept

    def _set_resume_state(self, state: Mapping[str, Any]) -> None:
        m, monitor = self.model, self.vec
        monitor.venv.env.set_state(state["env"])
        monitor.episode_returns = np.array(state["monitor"]["returns"], copy=True)
        monitor.episode_lengths = np.array(state["monitor"]["lengths"], copy=True)
        monitor.episode_count = int(state["monitor"]["count"])
        if state["last_obs"] is not None:            # saved after a rollout
            m._last_obs = np.array(state["last_obs"], copy=True)
            m._last_episode_starts = np.array(state["last_episode_starts"], copy=True)
        m.ep_info_buffer = deque(state["episodes"], maxlen=m._stats_window_size)
        m.ep_success_buffer = deque(maxlen=m._stats_window_size)
        set_process_rng_state(state["rng"])

    def policy(self) -> "SB3Policy":
        return SB3Policy(self.model)

    def close(self) -> None:
        self.vec.close()


class SB3Policy:
    """A trained SB3 policy behind the ``Policy`` interface, acting greedily."""

    name = "sb3_ppo"
    privileged = False
    learning = False

    def __init__(self, model: PPO) -> None:
        self.model = model
        self.discrete = model.action_space.shape == ()

    def action_probs(self, obs: np.ndarray, info: Mapping[str, Any] | None = None
                     ) -> np.ndarray:
        if not self.discrete:
            raise ConfigError("a continuous policy has no action probabilities")
        with torch.no_grad():
            dist = self.model.policy.get_distribution(torch.as_tensor(obs, dtype=torch.float32))
        return dist.distribution.probs.numpy()

    def act(self, obs: np.ndarray, info: Mapping[str, Any] | None = None) -> np.ndarray:
        action, _ = self.model.predict(np.asarray(obs, dtype=np.float32), deterministic=True)
        return action

    def update(self, obs: np.ndarray, action: np.ndarray, reward: np.ndarray) -> None:
        return None
