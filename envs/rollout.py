"""The one stepping loop: a batch policy acting on a vector env's lanes.

Evaluation (``agents.baselines.evaluation.run_episodes``), data collection
(``ope.collect``) and online learning (``agents.learners.base.OnlineBaseline``) all step
through ``Lanes.run``; they differ only in what they keep of each ``Transition``.

Gymnasium's vector envs reset a lane whose episode ended on its *next* step, ignoring
that step's action (``AutoresetMode.NEXT_STEP``). ``Transition.live`` marks the rows that
count — a step a policy really took — so nobody recounts the bookkeeping:

* ``first_episode_only=True`` (``first_episodes``): a lane counts until its first episode
  ends (``terminated`` or ``truncated``), and ``Lanes.run`` stops when every lane's has:
  exactly ``B`` whole episodes from ``B`` lanes, whatever their lengths;
* ``first_episode_only=False``: lanes run on for as many steps as asked; only the step
  that restarts a lane does not count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
from gymnasium.vector import VectorEnv

from personarl.seeds import chunk_seeds

__all__ = ["Transition", "Lanes", "first_episodes"]

#: ``act(obs, info) -> actions``: ``(B, ...)`` actions for the lanes' ``(B, D)`` observations
Act = Callable[[np.ndarray, dict[str, Any]], np.ndarray]


@dataclass
class Transition:
    """One batched step. Arrays are over the ``B`` lanes.

    Attributes:
        obs, info: what the action was chosen on (``info`` is the env's, before the step).
        action: ``(B,)`` or ``(B, action_dim)``.
        reward, terminated, truncated: ``(B,)``, as the env returned them.
        next_obs, next_info: after the step.
        live: ``(B,)`` bool — the rows that count (see the module doc).
    """

    obs: np.ndarray
    info: dict[str, Any]
    action: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    next_obs: np.ndarray
    next_info: dict[str, Any]
    live: np.ndarray

    @property
    def ended(self) -> np.ndarray:
        """``(B,)`` bool: a counted episode ended at this step."""
        return self.live & (self.terminated | self.truncated)


class Lanes:
    """A reset vector env's lanes between steps.

    Args:
        env: the vector env (reset already).
        obs, info: what ``reset`` (or the last step) returned.
        first_episode_only: see the module doc.
        live: ``(B,)`` bool, the rows the next step counts (default: all; a checkpoint
            of lanes in flight passes its own).
    """

    def __init__(self, env: VectorEnv, obs: np.ndarray, info: dict[str, Any], *,
                 first_episode_only: bool, live: np.ndarray | None = None) -> None:
        self.env, self.obs, self.info = env, obs, info
        self.first_episode_only = first_episode_only
        self.live = np.ones(len(obs), dtype=bool) if live is None else np.asarray(live, bool)

    @property
    def size(self) -> int:
        """``B``, the number of lanes."""
        return len(self.live)

    @property
    def running(self) -> bool:
        """Whether a further step would count for any lane."""
        return bool(self.live.any())

    def step(self, action: np.ndarray) -> Transition:
        """Step every lane with ``action``; the ``Transition``."""
        nxt, reward, terminated, truncated, info = self.env.step(action)
        t = Transition(self.obs, self.info, action, reward, terminated, truncated, nxt, info,
                       self.live)
        ended = terminated | truncated
        self.live = self.live & ~ended if self.first_episode_only else ~ended
        self.obs, self.info = nxt, info
        return t

    def run(self, act: Act, steps: int | None = None) -> Iterator[Transition]:
        """Step with ``act(obs, info)`` for ``steps`` steps, or (``steps=None``) while
        ``running``; yield each ``Transition``."""
        done = 0
        while (self.running if steps is None else done < steps):
            yield self.step(act(self.obs, self.info))
            done += 1


def first_episodes(make_env: Callable[[int], VectorEnv], num_episodes: int, seed: int,
                   purpose: str, batch: int = 4096) -> Iterator[Lanes]:
    """``num_episodes`` first episodes in chunks of at most ``batch`` lanes: for each chunk,
    ``make_env(b)`` reset on the chunk's users (``personarl.seeds.chunk_seeds`` of the
    run's ``seed`` and ``purpose``: lane ``i`` of chunk ``c`` is the same user for every
    caller with the same seed and purpose), yielded as ``Lanes`` with
    ``first_episode_only``. The env is closed when the caller moves to the next chunk."""
    for chunk_seed, b in chunk_seeds(seed, purpose, num_episodes, batch):
        env = make_env(b)
        try:
            obs, info = env.reset(seed=chunk_seed)
            yield Lanes(env, obs, info, first_episode_only=True)
        finally:
            env.close()
