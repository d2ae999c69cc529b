"""Gymnasium faces of a batched core: the single env (batch of one) and the native VectorEnv.

A *core* steps ``B`` users at once in NumPy and exposes:

* ``B``, ``K`` (number of discrete actions), ``obs`` (``(B, D)`` float32), ``started``;
* ``observation_space()`` — the single-user Box;
* ``reset_all(rng, reseeded)``, ``reset_lanes(lanes, rng)``;
* ``park(lanes)`` — make lanes that are about to be restarted safe to step;
* ``step(actions) -> (reward, terminated)`` and ``step_info`` (per-lane arrays describing
  the step just taken, e.g. satisfaction);
* ``info()`` (ground truth, arrays over lanes) and ``lane_info(lane)`` (one lane, scalars).

Both faces draw every random number from one generator (``np_random``), so a vector env
with ``num_envs=1`` reproduces the single env exactly.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from synth.errors import ConfigError, InvalidActionError, ResetNeededError

__all__ = ["Core", "CoreEnv", "CoreVectorEnv", "INFO_LEVELS", "check_info_level",
           "coerce_config"]

INFO_LEVELS = ("full", "none")


def check_info_level(info_level: str) -> str:
    """Return ``info_level`` or raise ``ConfigError`` listing the valid levels."""
    if info_level not in INFO_LEVELS:
        raise ConfigError(f"info_level={info_level!r}; valid: {list(INFO_LEVELS)}")
    return info_level


def coerce_config(value: Any, cls: type, label: str) -> Any:
    """``None`` -> ``cls()``, a mapping -> ``cls(**mapping)``, an instance -> itself; an
    unknown key raises ``ConfigError`` listing the valid ones."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        try:
            return cls(**dict(value))
        except TypeError as exc:
            raise ConfigError(f"{label}: {exc}; valid keys are "
                              f"{sorted(cls.__dataclass_fields__)}") from None
    raise ConfigError(f"{label} must be a {cls.__name__} or a mapping, got {value!r}")


class Core(Protocol):
    """What the Gymnasium faces need from a batched core (see the module docstring)."""

    B: int
    K: int
    obs: np.ndarray
    started: bool
    step_info: dict[str, np.ndarray]

    def observation_space(self) -> spaces.Box: ...
    def reset_all(self, rng: np.random.Generator, reseeded: bool) -> None: ...
    def reset_lanes(self, lanes: np.ndarray, rng: np.random.Generator) -> None: ...
    def park(self, lanes: np.ndarray) -> None: ...
    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...
    def info(self) -> dict[str, np.ndarray]: ...
    def lane_info(self, lane: int) -> dict[str, Any]: ...


def _check_action(action: Any, k: int) -> int:
    try:
        a = int(action)
    except (TypeError, ValueError):
        raise InvalidActionError(f"action {action!r} is not an integer in [0, {k})") from None
    if a != action or not 0 <= a < k:
        raise InvalidActionError(f"action {action!r} is outside Discrete({k}): valid are "
                                 f"integers 0..{k - 1}")
    return a


class CoreEnv(gym.Env[np.ndarray, np.int64]):
    """The batch-of-one view of a core; returns Python ``float``/``bool`` as Gymnasium
    expects. Subclasses build the core and carry the env's docstring-spec."""

    metadata = {"render_modes": []}

    def __init__(self, core: Core, info_level: str) -> None:
        super().__init__()
        self.info_level = check_info_level(info_level)
        self._core = core
        self.observation_space = core.observation_space()
        self.action_space = spaces.Discrete(core.K)
        self._action = np.zeros(1, dtype=np.int64)
        self._done = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._core.reset_all(self.np_random, reseeded=seed is not None)
        self._done = False
        return self._core.obs[0].copy(), self._info(stepped=False)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._done:
            raise ResetNeededError("call reset() before step() (the episode has ended or "
                                   "never started)")
        self._action[0] = _check_action(action, self._core.K)
        reward, terminated = self._core.step(self._action)
        self._done = bool(terminated[0])
        return (self._core.obs[0].copy(), float(reward[0]), self._done, False,
                self._info(stepped=True))

    def _info(self, stepped: bool) -> dict[str, Any]:
        if self.info_level == "none":
            return {}
        info = self._core.lane_info(0)
        if stepped:
            info.update({key: value[0] for key, value in self._core.step_info.items()})
        return info


class CoreVectorEnv(VectorEnv):
    """``num_envs`` users of a core stepped together, NEXT_STEP autoreset."""

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, core: Core, info_level: str) -> None:
        self.info_level = check_info_level(info_level)
        self._core = core
        self.num_envs = core.B
        self.single_observation_space = core.observation_space()
        self.single_action_space = spaces.Discrete(core.K)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._needs_reset = np.zeros(self.num_envs, dtype=bool)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._core.reset_all(self.np_random, reseeded=seed is not None)
        self._needs_reset[:] = False
        return self._core.obs.copy(), self._infos(None)

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                          dict[str, Any]]:
        if not self._core.started:
            raise ResetNeededError("call reset() before step()")
        actions = np.asarray(actions)
        k = self._core.K
        if (actions.shape != (self.num_envs,) or actions.dtype.kind not in "iu"
                or actions.min() < 0 or actions.max() >= k):
            raise InvalidActionError(
                f"actions must be {self.num_envs} integers in [0, {k}); got shape "
                f"{actions.shape}, dtype {actions.dtype}, values {actions!r:.80}")
        # lanes that ended last step restart instead of stepping (NEXT_STEP); parking makes
        # them safe to step, and reset_lanes overwrites whatever the step did to them
        restart = np.flatnonzero(self._needs_reset)
        self._core.park(restart)
        reward, terminated = self._core.step(actions)
        if restart.size:
            reward[restart] = 0.0
            terminated[restart] = False
            self._core.reset_lanes(restart, self.np_random)
        self._needs_reset = terminated.copy()
        return (self._core.obs.copy(), reward, terminated,
                np.zeros(self.num_envs, dtype=bool), self._infos(restart))

    def _infos(self, restart: np.ndarray | None) -> dict[str, Any]:
        if self.info_level == "none":
            return {}
        info = self._core.info()
        if restart is not None:
            for key, value in self._core.step_info.items():
                value = value.astype(np.float64, copy=True)
                value[restart] = np.nan           # restarted lanes took no step
                info[key] = value
        mask = np.ones(self.num_envs, dtype=bool)
        info.update({f"_{k}": mask for k in list(info)})
        return info
