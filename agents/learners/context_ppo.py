"""PPO (Stable-Baselines3) in the one-step setting, with snapshots along optimisation.

A *context bandit* is a vector env whose every step is a whole episode: each lane is shown
a context drawn uniformly from a fixed set, acts, is paid ``reward_fn(rows, actions)`` and
restarts on another context (``same_step`` autoreset, what ``SB3VecEnv`` adapts). Actions
are offsets from the box's centre — the policy acts in ``[−½, ½]^k`` and the reward sees
``style = action + ½`` — so SB3's initial policy (mean ≈ 0, ``log_std_init``) is the base
policy ``π₀ = N(½, σ₀²)`` clipped to ``[0, 1]^k`` that best-of-n samples from.

``ppo_snapshots`` trains PPO against a reward (a learned one, in the over-optimisation lab)
and records the policy's Gaussian (mean per evaluation context, state-independent
log-std) before training and after every ``timesteps / snapshots`` steps, so the lab can
compute ``KL(π ‖ π₀)`` and the rewards along optimisation (``rewards.overoptimisation``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv

from personarl.errors import ConfigError, DataError, check_int, check_range, check_widths

__all__ = ["ContextBanditVectorEnv", "ContextPPOConfig", "PolicySnapshot", "ppo_snapshots",
           "snapshot_steps"]

#: ``reward_fn(rows (n,), styles (n, k)) -> (n,)``
ContextReward = Callable[[np.ndarray, np.ndarray], np.ndarray]


class ContextBanditVectorEnv(VectorEnv):
    """``num_envs`` one-step episodes at a time over ``contexts`` ``(C, d_x)`` (module
    docstring). ``info["rows"]`` says which context each lane was shown."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, contexts: np.ndarray, reward_fn: ContextReward, action_dim: int,
                 num_envs: int) -> None:
        self.contexts = np.asarray(contexts, dtype=np.float32)
        if self.contexts.ndim != 2 or len(self.contexts) == 0:
            raise DataError(f"contexts must be (C >= 1, d_x); got {self.contexts.shape}")
        self.reward_fn = reward_fn
        self.num_envs = check_int("num_envs", num_envs, 1, 1 << 20)
        self.single_observation_space = spaces.Box(-np.inf, np.inf,
                                                   (self.contexts.shape[1],), np.float32)
        self.single_action_space = spaces.Box(-0.5, 0.5, (action_dim,), np.float32)
        self.observation_space = spaces.Box(-np.inf, np.inf,
                                            (num_envs, self.contexts.shape[1]), np.float32)
        self.action_space = spaces.Box(-0.5, 0.5, (num_envs, action_dim), np.float32)
        self._rows = np.zeros(num_envs, dtype=np.int64)

    def reset(self, *, seed: int | None = None, options: dict | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._rows = self.np_random.integers(0, len(self.contexts), self.num_envs)
        return self.contexts[self._rows].copy(), {"rows": self._rows.copy()}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                 np.ndarray, dict[str, Any]]:
        styles = np.clip(np.asarray(actions, dtype=np.float64) + 0.5, 0.0, 1.0)
        reward = np.asarray(self.reward_fn(self._rows, styles), dtype=np.float64)
        final_obs = self.contexts[self._rows].copy()
        done = np.ones(self.num_envs, dtype=bool)
        info = {"rows": self._rows.copy(), "final_obs": final_obs, "_final_obs": done.copy()}
        self._rows = self.np_random.integers(0, len(self.contexts), self.num_envs)
        return (self.contexts[self._rows].copy(), reward, done,
                np.zeros(self.num_envs, dtype=bool), info)


@dataclass(frozen=True)
class ContextPPOConfig:
    """SB3 PPO in the one-step setting (``configs/overoptimisation.yaml``'s ``ppo``)."""

    timesteps: int = 400_000
    snapshots: int = 16
    lanes: int = 512
    n_steps: int = 4                    # per lane per rollout: 2,048 decisions per update
    batch_size: int = 256
    epochs: int = 10
    lr: float = 3e-4
    clip: float = 0.2
    hidden: tuple[int, ...] = (64, 64)
    base_sd: float = 0.3                # σ₀ of π₀ (the initial policy's standard deviation)

    def __post_init__(self) -> None:
        check_int("timesteps", self.timesteps, 1)
        check_int("snapshots", self.snapshots, 2, 1000)
        check_int("lanes", self.lanes, 1, 1 << 16)
        check_int("n_steps", self.n_steps, 1, 1 << 16)
        check_int("batch_size", self.batch_size, 2, self.lanes * self.n_steps)
        check_int("epochs", self.epochs, 1, 1000)
        check_range("lr", self.lr, 0, 1, low_open=True)
        check_range("clip", self.clip, 0, 1, low_open=True)
        check_range("base_sd", self.base_sd, 0, 1, low_open=True)
        check_widths("hidden", self.hidden)
        distinct = len(snapshot_steps(self))
        if distinct < self.snapshots:
            rollout = self.lanes * self.n_steps
            raise ConfigError(f"timesteps={self.timesteps} gives only {distinct} distinct "
                              f"snapshots of whole rollouts ({rollout} decisions each) of "
                              f"snapshots={self.snapshots}; raise timesteps or lower "
                              "snapshots")


def snapshot_steps(config: ContextPPOConfig) -> np.ndarray:
    """When the snapshots are taken: ``timesteps · (i / snapshots)²`` for i = 1..snapshots,
    in whole rollouts — dense early, where the policy moves fastest."""
    rollout = config.lanes * config.n_steps
    steps = config.timesteps * (np.arange(1, config.snapshots + 1) / config.snapshots) ** 2
    return np.unique(np.maximum(1, np.round(steps / rollout)).astype(np.int64) * rollout)


@dataclass(frozen=True)
class PolicySnapshot:
    """The Gaussian policy after ``timesteps`` decisions: ``mean`` ``(C_eval, k)`` in style
    units (before clipping into the box), ``log_std`` ``(k,)``."""

    timesteps: int
    mean: np.ndarray
    log_std: np.ndarray


def ppo_snapshots(contexts: np.ndarray, reward_fn: ContextReward, eval_contexts: np.ndarray,
                  action_dim: int, config: ContextPPOConfig = ContextPPOConfig(), *,
                  seed: int = 0) -> list[PolicySnapshot]:
    """Train SB3 PPO on ``reward_fn`` over ``contexts``; ``snapshots + 1`` snapshots of the
    policy on ``eval_contexts`` (the first before any update)."""
    import torch
    from stable_baselines3 import PPO

    from agents.learners.sb3_ppo import SB3VecEnv

    vec = SB3VecEnv(ContextBanditVectorEnv(contexts, reward_fn, action_dim, config.lanes))
    vec.seed(seed)
    hidden = list(config.hidden)
    model = PPO("MlpPolicy", vec, n_steps=config.n_steps, batch_size=config.batch_size,
                n_epochs=config.epochs, learning_rate=config.lr, gamma=0.0, gae_lambda=1.0,
                clip_range=config.clip, ent_coef=0.0, seed=seed, device="cpu", verbose=0,
                policy_kwargs=dict(net_arch=dict(pi=hidden, vf=hidden),
                                   log_std_init=float(np.log(config.base_sd))))
    obs = torch.as_tensor(np.asarray(eval_contexts, dtype=np.float32))

    def snapshot(steps: int) -> PolicySnapshot:
        with torch.no_grad():
            dist = model.policy.get_distribution(obs).distribution
            return PolicySnapshot(steps, dist.mean.numpy().astype(np.float64) + 0.5,
                                  model.policy.log_std.detach().numpy().astype(np.float64))

    out = [snapshot(0)]
    for target in snapshot_steps(config):
        model.learn(total_timesteps=int(target - model.num_timesteps),
                    reset_num_timesteps=False)
        out.append(snapshot(int(model.num_timesteps)))
    vec.close()
    return out
