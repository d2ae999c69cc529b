"""What ``experiments.train`` drives: one interface over RLlib PPO, SB3 PPO and the baselines.

A learner trains in iterations. Each ``train()`` returns CleanRL-style namespaced metrics
(``charts/…``, ``losses/…``, ``perf/…``) for that iteration; ``env_steps`` counts the env
steps sampled so far. ``save(dir)`` writes a complete checkpoint into an existing empty
directory and ``restore(dir)`` continues from one. ``policy()`` is the trained policy
behind the ``agents.baselines.policies.Policy`` interface used by evaluation.

A PPO learner's checkpoint holds, beside its framework's own files, two of ours:

* ``resume_state.npz`` (``personarl.statefile``, no pickle) — what the framework leaves
  out and a run needs to continue bit for bit: the process's Python, NumPy and torch
  random states, the sampler's lanes (episodes in flight) and the env's users;
* ``policy_weights.pt`` — the policy network's ``state_dict``, readable with
  ``torch.load(weights_only=True)``, so a bundle is exported without unpickling anything
  the framework wrote (``agents.learners.export``).

``OnlineBaseline`` makes a learning baseline (greedy, the persona router, LinUCB, Thompson
sampling) a learner: each iteration is ``steps_per_iteration`` batched steps of online
learning (``envs.rollout.Lanes``, lanes running on across episodes). Its checkpoint is an
``.npz`` of the policy's arrays, its generator's state as JSON and the users in flight
(``resume_state.npz``) — no pickle; it resumes bit for bit.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import numpy as np
from gymnasium.vector import VectorEnv

from agents.baselines.evaluation import policy_steps
from agents.baselines.policies import Policy
from envs.rollout import Lanes
from personarl import jsonio
from personarl.errors import DataError
from personarl.seeds import stream_seed
from personarl.statefile import read_state, write_state

__all__ = ["Learner", "OnlineBaseline", "RESUME_STATE_FILE", "WEIGHTS_FILE",
           "process_rng_state", "set_process_rng_state", "save_weights", "load_weights",
           "weights_sha256"]

#: in a PPO checkpoint: what the framework does not save (``personarl.statefile``)
RESUME_STATE_FILE = "resume_state.npz"
#: in a PPO checkpoint: the policy network's ``state_dict`` (``torch.save``, tensors only)
WEIGHTS_FILE = "policy_weights.pt"


def process_rng_state() -> dict[str, Any]:
    """This process's global random states: Python's ``random``, NumPy's legacy
    ``np.random`` and torch's CPU generator (what RLlib and SB3 draw from: minibatch
    shuffles, action sampling)."""
    import random

    import torch

    version, internal, gauss_next = random.getstate()
    return dict(python=dict(version=version, internal=list(internal), gauss_next=gauss_next),
                numpy=np.random.get_state(legacy=False),
                torch=torch.get_rng_state().numpy())


def set_process_rng_state(state: Mapping[str, Any]) -> None:
    """Put back what ``process_rng_state`` returned."""
    import random

    import torch

    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(x) for x in py["internal"]),
                     py["gauss_next"]))
    np.random.set_state(dict(state["numpy"]))
    torch.set_rng_state(torch.from_numpy(np.array(state["torch"], dtype=np.uint8)))


def save_weights(module: Any, path: Path) -> None:
    """Write ``module.state_dict()`` to ``path`` (tensors only, on the CPU)."""
    import torch

    torch.save({k: v.detach().cpu().clone() for k, v in module.state_dict().items()}, path)


def load_weights(path: Path, sha256: str | None = None) -> dict[str, Any]:
    """The ``state_dict`` in ``path``, read with ``torch.load(weights_only=True)`` (PyTorch's
    restricted unpickler: tensors and plain containers only; nothing in the file runs).
    With ``sha256``, the bytes read are checked against it first (read once: what is
    checked is what is loaded).

    Raises:
        DataError: the file is missing, differs from ``sha256``, is unreadable or holds
            anything but named tensors.
    """
    import hashlib
    import io

    import torch

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"{path} is not a readable weights file: {exc}") from None
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise DataError(f"{path} is not the file the run saved (its SHA-256 differs from "
                         "the one run.json recorded)")
    try:
        weights = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:             # torch raises UnpicklingError, RuntimeError, …
        raise DataError(f"{path} is not a readable weights file: {exc}") from None
    if not (isinstance(weights, dict)
            and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                    for k, v in weights.items())):
        raise DataError(f"{path} does not hold a state_dict (names -> tensors)")
    return weights


def weights_sha256(weights: Mapping[str, Any]) -> str:
    """SHA-256 over a ``state_dict``'s names, dtypes, shapes and values, in name order: the
    identity of a trained policy (the same for the same weights, whatever file holds them)."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(weights):
        t = weights[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


class Learner(Protocol):
    """The training side of an agent."""

    env_steps: int
    iteration: int

    def train(self) -> dict[str, float]:
        """Run one iteration; its metrics (namespaced keys)."""

    def save(self, path: Path) -> None:
        """Write a complete checkpoint into the existing directory ``path``."""

    def restore(self, path: Path) -> None:
        """Continue from the checkpoint in ``path``."""

    def policy(self) -> Policy:
        """The policy as trained so far (frozen for evaluation)."""

    def close(self) -> None:
        """Release processes and files."""


class OnlineBaseline:
    """A learning baseline trained online on the vector env, in iterations.

    Args:
        policy: the baseline (``learning`` on).
        make_env: ``n -> VectorEnv`` (``info_level="full"`` if the policy is privileged).
        num_envs: parallel users.
        steps_per_iteration: batched steps per iteration.
        seed: the run's seed; the env's users are its ``training`` stream.
    """

    def __init__(self, policy: Policy, make_env: Callable[[int], VectorEnv], num_envs: int,
                 steps_per_iteration: int, seed: int) -> None:
        self._policy, self.num_envs = policy, num_envs
        self.steps_per_iteration = steps_per_iteration
        self.env = make_env(num_envs)
        self.env_steps = self.iteration = 0
        self._seed = seed
        self._lanes: Lanes | None = None          # users in flight, once the first train()
        self._returns = np.zeros(num_envs)
        self._lengths = np.zeros(num_envs, dtype=np.int64)

    def train(self) -> dict[str, float]:
        start = time.perf_counter()
        if self._lanes is None:
            obs, info = self.env.reset(seed=stream_seed(self._seed, "training",
                                                        self.iteration))
            self._lanes = Lanes(self.env, obs, info, first_episode_only=False)
        done_returns: list[np.ndarray] = []
        done_lengths: list[np.ndarray] = []
        for t in policy_steps(self._policy, self._lanes, self.steps_per_iteration):
            self._returns += t.reward * t.live
            self._lengths += t.live
            ended = t.ended
            done_returns.append(self._returns[ended].copy())
            done_lengths.append(self._lengths[ended].copy())
            self._returns[ended] = 0.0
            self._lengths[ended] = 0
        self.iteration += 1
        steps = self.steps_per_iteration * self.num_envs
        self.env_steps += steps
        returns, lengths = np.concatenate(done_returns), np.concatenate(done_lengths)
        elapsed = time.perf_counter() - start
        return {"charts/episodic_return": float(returns.mean()) if len(returns) else np.nan,
                "charts/episode_length": float(lengths.mean()) if len(lengths) else np.nan,
                "charts/episodes": float(len(returns)),
                "perf/env_steps_per_s": steps / max(elapsed, 1e-9)}

    def save(self, path: Path) -> None:
        arrays = {k: v for k, v in vars(self._policy).items() if isinstance(v, np.ndarray)}
        np.savez(path / "policy.npz", **arrays)
        rng = getattr(self._policy, "rng", None)
        state = dict(env_steps=self.env_steps, iteration=self.iteration,
                     rng=rng.bit_generator.state if rng is not None else None)
        (path / "state.json").write_text(jsonio.dumps(state))
        lanes = self._lanes
        if lanes is not None:                    # the users in flight, to continue them
            write_state(path / RESUME_STATE_FILE, dict(
                env=self.env.get_state(), obs=lanes.obs, info=lanes.info,
                restarting=~lanes.live, returns=self._returns, lengths=self._lengths))

    def restore(self, path: Path) -> None:
        with np.load(path / "policy.npz", allow_pickle=False) as arrays:
            for key in arrays.files:
                setattr(self._policy, key, arrays[key])
        refresh = getattr(self._policy, "_refresh", None)
        if refresh is not None:
            refresh()
        state = json.loads((path / "state.json").read_text())
        self.env_steps, self.iteration = state["env_steps"], state["iteration"]
        if state["rng"] is not None:
            self._policy.rng.bit_generator.state = state["rng"]
        self._lanes = None                   # no users in flight: the next train() resets
        if (path / RESUME_STATE_FILE).is_file():
            flight = read_state(path / RESUME_STATE_FILE)
            self.env.set_state(flight["env"])
            self._lanes = Lanes(self.env, flight["obs"], dict(flight["info"]),
                                first_episode_only=False, live=~flight["restarting"])
            self._returns, self._lengths = flight["returns"], flight["lengths"]

    def policy(self) -> Policy:
        self._policy.learning = False
        return self._policy

    def close(self) -> None:
        self.env.close()
