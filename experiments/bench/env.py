"""Env stepping speed against CartPole-v1, per backend; the scaling curve; population sampling.

* *Single env*: ``gym.make(id)`` (Gymnasium's wrappers included), uniformly random actions,
  resets included, ``info_level`` full and none, each backend (``personarl.backend``).
* *Batched*: each env's native VectorEnv with ``B = 4096`` lanes, ``info_level="none"``,
  each backend on one thread, and the compiled step on ``THREADS`` threads
  (``num_threads``, ``envs.batched.LaneBlocks``) beside them.
* *Scaling*: user-steps/s over ``B = 1 … 65,536`` (the fastest backend) and the memory per
  lane: the bytes the env allocates for its lanes and pool, traced by ``tracemalloc``
  (NumPy reports its buffers to it) while the env is built, reset and stepped, over ``B``.
* *Population*: ``PopulationSampler.sample(10**6)`` against ``rng.standard_normal(10**7)``,
  each backend on one thread, and the compiled one on ``THREADS`` threads beside them.

Every figure that is compared with another is measured in the same run, interleaved: each
repeat measures every configuration once, so the machine's drift hits all alike; medians
of the per-repeat ratios are reported.
"""

from __future__ import annotations

import gc
import statistics
import time
import tracemalloc
from typing import Any, Callable

import gymnasium as gym
import numpy as np

import envs
from personarl.backend import numba_available
from envs.creator import create_env
from synth.population import PopulationSampler

BATCH = 4096
#: the threads of the compiled rows measured beside the one-thread rows (the 2 cores
#: BENCHMARKS.md runs on)
THREADS = 2
SCALING = (1, 16, 256, 4096, 65_536)
#: the issue-18 targets, as multiples of CartPole-v1's single-env steps/s
SINGLE_TARGET, BATCHED_TARGET, POPULATION_TARGET = 0.25, 16.8, 5.0


def single_steps_per_second(env_id: str, seconds: float, **kwargs: Any) -> float:
    """Steps/s of ``gym.make(env_id)`` with uniformly random actions, resets included."""
    env = gym.make(env_id, **kwargs)
    n = env.action_space.n
    actions = np.random.default_rng(0).integers(0, n, size=1_000_000).tolist()
    env.reset(seed=0)
    for a in actions[:200]:                # warm up (a compiled kernel loads its cache)
        if env.step(a)[2]:
            env.reset()
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


def batched_user_steps_per_second(env_id: str, batch: int, seconds: float,
                                  **kwargs: Any) -> float:
    """User-steps/s of a native VectorEnv (``info_level="none"``), random actions."""
    env = create_env(env_id, {"num_envs": batch, "info_level": "none", **kwargs})
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    k = env.single_action_space.n
    actions = [rng.integers(0, k, size=batch) for _ in range(16)]
    for a in actions:                      # warm up: the first steps draw the pool
        env.step(a)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for a in actions:
            env.step(a)
        steps += len(actions)
    return steps * batch / (time.perf_counter() - start)


def bytes_per_lane(env_id: str, batch: int, **kwargs: Any) -> float:
    """Peak bytes traced while a ``batch``-lane vector env is built, reset and stepped 32
    times, over ``batch``."""
    gc.collect()
    tracemalloc.start()
    env = create_env(env_id, {"num_envs": batch, "info_level": "none", **kwargs})
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(32):
        env.step(rng.integers(0, env.single_action_space.n, size=batch))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del env
    return peak / batch


def population_seconds(users: int, samplers: list[dict[str, Any]]
                       ) -> tuple[float, list[float]]:
    """Seconds to draw ``10 · users`` standard normals, and to sample ``users`` users with
    each of ``samplers`` (``PopulationSampler.sample``'s ``backend`` and ``num_threads``).
    Each is timed on its second call: the first compiles a kernel
    and maps fresh memory, whose page faults cost the reference up to 3x here, more than
    the sampler (measured 0.11 s warm, 0.26-0.38 s fresh) — warm is the stricter ratio.

    Both are timed with NumPy's transparent-huge-page advice off (its default advises
    arrays of 4 MiB and more): whether the kernel finds huge pages depends on how
    fragmented the machine's memory is, and a run where the reference got them and the
    sampler's ≈ 0.4 GB did not measured 7.1x against 3.9-4.1x either way (2026-12-01)."""
    sampler, rng = PopulationSampler(), np.random.default_rng(0)

    def second_call(draw: Callable[[], Any]) -> float:
        draw()
        start = time.perf_counter()
        draw()
        return time.perf_counter() - start

    try:
        from numpy._core.multiarray import _set_madvise_hugepage as advise
    except ImportError:                    # a NumPy without it: the advice stays as it is
        advise = None
    advised = advise(False) if advise else None
    try:
        reference = second_call(lambda: rng.standard_normal(10 * users))
        return reference, [second_call(lambda: sampler.sample(users, rng, **kwargs))
                           for kwargs in samplers]
    finally:
        if advise:
            advise(advised)


def run(seconds: float, repeats: int, scaling: tuple[int, ...] = SCALING,
        users: int = 10**6) -> dict[str, Any]:
    """All measurements, ``repeats`` interleaved rounds (see the module doc); the scaling
    curve over the batch sizes ``scaling``; population sampling of ``users`` users."""
    backends = ("numpy", "numba") if numba_available() else ("numpy",)
    names = {env_id: env_id.split("/")[1] for env_id in envs.env_ids()}
    singles = {f"{names[e]} {b} info={level}": (e, {"backend": b, "info_level": level})
               for e in names for b in backends for level in ("full", "none")}
    singles["CartPole-v1"] = ("CartPole-v1", {})
    batched = {f"{names[e]} {b} B={BATCH}": (e, {"backend": b}) for e in names
               for b in backends}
    samplers = {b: {"backend": b} for b in backends}
    if "numba" in backends:                # the compiled rows on THREADS threads
        threaded = {"backend": "numba", "num_threads": THREADS}
        batched.update({f"{names[e]} numba B={BATCH} threads={THREADS}": (e, threaded)
                        for e in names})
        samplers[f"numba threads={THREADS}"] = threaded
    populations = [f"population {name}" for name in samplers]
    runs: dict[str, list[float]] = {k: [] for k in [*singles, *batched, *populations,
                                                       "standard_normal_s"]}
    for _ in range(repeats):
        for name, (env_id, kwargs) in singles.items():
            runs[name].append(single_steps_per_second(env_id, seconds, **kwargs))
        for name, (env_id, kwargs) in batched.items():
            runs[name].append(batched_user_steps_per_second(env_id, BATCH, seconds, **kwargs))
        reference, sampled = population_seconds(users, list(samplers.values()))
        runs["standard_normal_s"].append(reference)
        for name, value in zip(populations, sampled):
            runs[name].append(value)
    cart = runs["CartPole-v1"]

    def ratio(name: str) -> float:
        return statistics.median(x / c for x, c in zip(runs[name], cart))

    fastest = backends[-1]
    scaling = {names[e]: {b: {"user_steps_per_s": batched_user_steps_per_second(
        e, b, seconds, backend=fastest), "bytes_per_lane": bytes_per_lane(
        e, b, backend=fastest)} for b in scaling} for e in names}
    result: dict[str, Any] = {
        "seconds_per_measurement": seconds, "repeats": repeats, "raw": runs,
        "cartpole_steps_per_s": statistics.median(cart),
        "single": {k: {"steps_per_s": statistics.median(runs[k]),
                       "ratio_to_cartpole": ratio(k)} for k in singles if k != "CartPole-v1"},
        "batched": {k: {"user_steps_per_s": statistics.median(runs[k]),
                        "ratio_to_cartpole": ratio(k)} for k in batched},
        "scaling_backend": fastest, "scaling": scaling,
        "population": {"users": users,
                       "seconds_10x_normals": statistics.median(runs["standard_normal_s"]),
                       **{key: {"seconds_users": statistics.median(runs[name]),
                                "ratio": statistics.median(p / r for p, r in zip(
                                    runs[name], runs["standard_normal_s"]))}
                          for key, name in zip(samplers, populations)}},
        "targets": {"single_ratio": SINGLE_TARGET, "batched_ratio": BATCHED_TARGET,
                    "population_ratio": POPULATION_TARGET},
    }
    print(f"CartPole-v1 single env: {result['cartpole_steps_per_s']:,.0f} steps/s (median of "
          f"{repeats}); ratios are medians of per-repeat ratios")
    print(f"single env (gym.make, random actions, resets included) — target "
          f"{SINGLE_TARGET}x with info=full:")
    for k, v in result["single"].items():
        print(f"  {k:48s} {v['steps_per_s']:10,.0f} steps/s  {v['ratio_to_cartpole']:6.3f}x")
    print(f"batched native VectorEnvs, info_level=none — target {BATCHED_TARGET}x:")
    for k, v in result["batched"].items():
        print(f"  {k:48s} {v['user_steps_per_s']:12,.0f} user-steps/s  "
              f"{v['ratio_to_cartpole']:6.2f}x")
    print(f"scaling ({fastest}):")
    for env_name, curve in scaling.items():
        print(f"  {env_name}: " + ", ".join(
            f"B={b}: {v['user_steps_per_s'] / 1e6:.2f}M ({v['bytes_per_lane'] / 1024:.1f} KiB"
            "/lane)" for b, v in curve.items()))
    p = result["population"]
    print(f"population: {10 * users:,} standard normals {p['seconds_10x_normals']:.3f} s; "
          f"{users:,} users (target <= {POPULATION_TARGET}x):")
    for key in samplers:
        print(f"  {key:17s} {p[key]['seconds_users']:.3f} s  {p[key]['ratio']:.2f}x")
    return result
