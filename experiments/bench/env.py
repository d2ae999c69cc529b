"""Env stepping speed: single env (through gym.make's wrappers), batched, CartPole-v1."""

from __future__ import annotations

import statistics
import time
from typing import Any

import gymnasium as gym
import numpy as np

import envs
from envs.creator import create_env

BATCHES = (1, 64, 4096)


def single_steps_per_second(env_id: str, seconds: float, **kwargs: Any) -> float:
    """Steps/s of ``gym.make(env_id)`` with uniformly random actions, resets included."""
    env = gym.make(env_id, **kwargs)
    n = env.action_space.n
    actions = np.random.default_rng(0).integers(0, n, size=1_000_000).tolist()
    env.reset(seed=0)
    steps, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for a in actions[steps % 900_000: steps % 900_000 + 2000]:
            _, _, term, trunc, _ = env.step(a)
            if term or trunc:
                env.reset()
        steps += 2000
        if time.perf_counter() > deadline:
            break
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def batched_user_steps_per_second(env_id: str, batch: int, seconds: float) -> float:
    """User-steps/s of a native VectorEnv (``info_level="none"``), random actions."""
    env = create_env(env_id, {"num_envs": batch, "info_level": "none"})
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    k = env.single_action_space.n
    actions = [rng.integers(0, k, size=batch) for _ in range(64)]
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for a in actions:
            env.step(a)
        steps += len(actions)
    return steps * batch / (time.perf_counter() - start)


def run(seconds: float, repeats: int) -> dict[str, Any]:
    """Interleaved measurements: each repeat measures every configuration once, so the
    machine's drift hits all of them alike; medians and per-repeat ratios are reported."""
    singles = {f"{env_id.split('/')[1]} (info_level={level})":
               (env_id, {} if level == "full" else {"info_level": "none"})
               for env_id in envs.env_ids() for level in ("full", "none")}
    singles["CartPole-v1"] = ("CartPole-v1", {})
    vector = {env_id.split("/")[1]: env_id for env_id in envs.env_ids()}
    runs: dict[str, list[float]] = {k: [] for k in singles}
    runs.update({f"{n} B={b}": [] for n in vector for b in BATCHES})
    for _ in range(repeats):
        for name, (env_id, kwargs) in singles.items():
            runs[name].append(single_steps_per_second(env_id, seconds, **kwargs))
        for n, env_id in vector.items():
            for b in BATCHES:
                runs[f"{n} B={b}"].append(batched_user_steps_per_second(env_id, b, seconds))
    ratios = [ours / cart for ours, cart in zip(runs["AgentRouting-v0 (info_level=full)"],
                                                 runs["CartPole-v1"])]
    result: dict[str, Any] = {
        "seconds_per_measurement": seconds, "repeats": repeats, "raw": runs,
        "single_env_steps_per_s": {k: statistics.median(runs[k]) for k in singles},
        "batched_user_steps_per_s": {f"{n} B={b}": statistics.median(runs[f"{n} B={b}"])
                                     for n in vector for b in BATCHES},
        "ratio_single_to_cartpole": statistics.median(ratios),
        "targets": {"single_env_steps_per_s": 30_000,
                    "batched_user_steps_per_s_at_4096": 2_000_000},
    }
    print("single env (gym.make, random actions, resets included), median of "
          f"{repeats} interleaved runs:")
    for k, v in result["single_env_steps_per_s"].items():
        print(f"  {k:36s} {v:12,.0f} steps/s   (runs: "
              + ", ".join(f"{x:,.0f}" for x in runs[k]) + ")")
    print(f"  AgentRouting / CartPole, median per-run ratio: "
          f"{result['ratio_single_to_cartpole']:.3f}")
    print("batched native VectorEnvs (info_level=none):")
    for k, v in result["batched_user_steps_per_s"].items():
        print(f"  {k:30s} {v:14,.0f} user-steps/s")
    return result
