"""Serving speed: our bundle loader against RLlib's own inference path, and the HTTP server.

For one trained RLlib PPO policy (a run directory of ``experiments.train`` with its
``checkpoints/`` and ``policy/`` bundle; without ``--run`` a small AgentRouting run with the
main job's network is trained first), in the same process and on the same observations
(taken from env rollouts):

* parity: the bundle's logits against the module's on 4,096 rollout observations;
* batch-1 latency of ``load_policy(bundle).act(obs)`` — validation included — against
  ``RLModule.from_checkpoint(...)`` + ``forward_inference`` + argmax, p50/p99 over
  ``--calls`` calls after a warm-up;
* batch-1024 throughput (observations/s), median of repeats, the same two paths;
* cold start: a fresh Python process from launch to its first action, each path (median of
  ``--cold-runs``);
* HTTP on loopback: ``python -m experiments.serve`` in a subprocess, ``POST /v1/act`` at
  ``--rate`` requests/s (open loop: request *i* is sent at ``i / rate`` s whatever the
  earlier ones did) for ``--seconds`` s from an asyncio/httpx client in its own process;
  p50/p99 latency, errors.

Both processes share the 2 cores, so the HTTP latencies include the client's own overhead.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
_RLLIB_MODULE = ("learner_group", "learner", "rl_module", "default_policy")


def _train_small_run(where: Path) -> Path:
    """A small AgentRouting PPO run (the main job's network and batch) in ``where``."""
    run = where / "run"
    subprocess.run([sys.executable, "-m", "experiments.train", "experiment=smoke",
                    "logger=none", "eval.episodes=256", "eval.baselines=[random]",
                    f"hydra.run.dir={run}", f"ray.temp_dir=/tmp/ray-bench{os.getpid()}"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return run


def _observations(bundle: Path, n: int) -> np.ndarray:
    """``n`` observations from rollouts of the bundle's own env with its sampled actions."""
    from agents.serving import load_policy
    from envs.creator import create_env

    policy = load_policy(bundle, seed=0)
    env = create_env(policy.env_id, {**policy.spec["env"]["config"], "num_envs": 64,
                                     "info_level": "none"})
    obs, _ = env.reset(seed=7)
    seen = []
    while sum(len(o) for o in seen) < n:
        seen.append(obs)
        obs, *_ = env.step(policy.act_batch(obs, deterministic=False))
    return np.concatenate(seen)[:n]


def _percentiles(seconds: list[float]) -> dict[str, float]:
    us = np.asarray(seconds) * 1e6
    return dict(p50_us=float(np.percentile(us, 50)), p99_us=float(np.percentile(us, 99)),
                mean_us=float(us.mean()))


def _latency(act: Any, obs: np.ndarray, calls: int) -> dict[str, float]:
    for i in range(200):
        act(obs[i % len(obs)])
    times = []
    for i in range(calls):
        x = obs[i % len(obs)]
        t = time.perf_counter()
        act(x)
        times.append(time.perf_counter() - t)
    return _percentiles(times)


def _throughput(act_batch: Any, obs: np.ndarray, repeats: int = 30) -> float:
    batch = obs[:1024]
    act_batch(batch)
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        act_batch(batch)
        rates.append(len(batch) / (time.perf_counter() - t))
    return float(statistics.median(rates))


_COLD = {
    "ours": """
import time; t0 = time.perf_counter()
import numpy as np
from agents.serving import load_policy
p = load_policy({bundle!r})
a = p.act(np.full(p.obs_dim, 0.5, dtype=np.float32))
print(time.perf_counter() - t0)
""",
    "rllib": """
import time; t0 = time.perf_counter()
import numpy as np, torch
torch.set_num_threads(1)
from ray.rllib.core.rl_module.rl_module import RLModule
m = RLModule.from_checkpoint({module!r})
with torch.no_grad():
    out = m.forward_inference({{"obs": torch.full((1, {dim}), 0.5)}})
a = int(out["action_dist_inputs"].argmax(-1)[0])
print(time.perf_counter() - t0)
""",
}


def _cold_start(kind: str, runs: int, **fmt: Any) -> dict[str, float]:
    """Median wall time from launching ``python`` to its first action, and the part spent
    inside the process (imports, load, first action)."""
    walls, inside = [], []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for _ in range(runs):
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", _COLD[kind].format(**fmt)], cwd=ROOT,
                             env=env, capture_output=True, text=True, check=True)
        walls.append(time.perf_counter() - t)
        inside.append(float(out.stdout.strip().splitlines()[-1]))
    return dict(process_s=float(statistics.median(walls)),
                in_process_s=float(statistics.median(inside)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _load(url: str, bodies: list[dict], rate: float, seconds: float
                ) -> tuple[list[tuple[float, float]], int, float]:
    import httpx

    n = int(rate * seconds)
    latencies: list[tuple[float, float]] = []          # (sent at, latency)
    errors = 0
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10.0) as client:
        start = time.perf_counter()

        async def one(i: int) -> None:
            nonlocal errors
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            t = time.perf_counter()
            try:
                r = await client.post("/v1/act", json=bodies[i % len(bodies)])
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append((t - start, time.perf_counter() - t))
            errors += not ok

        await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.perf_counter() - start
    return latencies, errors, n / elapsed


def _client(url: str, bodies: list[dict], rate: float, seconds: float
            ) -> tuple[list[tuple[float, float]], int, float]:
    return asyncio.run(_load(url, bodies, rate, seconds))


def _http(bundle: Path, obs: np.ndarray, rate: float, seconds: float) -> dict[str, Any]:
    import httpx

    port = _free_port()
    logs = tempfile.mkdtemp(prefix="bench-serve-")
    server = subprocess.Popen(
        [sys.executable, "-m", "experiments.serve", f"bundle={bundle}", f"port={port}",
         f"hydra.run.dir={logs}"], cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or server.poll() is not None:
                raise RuntimeError("the server did not become ready within 60 s")
            time.sleep(0.1)
        bodies = [{"observation": o.tolist(), "user_id": f"u{i}"} for i, o in
                  enumerate(obs[:2000])]
        # the client runs in a fresh process: this one holds torch and RLlib, whose heap
        # makes Python's full garbage collections stall an event loop for seconds
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            latencies, errors, achieved = pool.submit(_client, url, bodies, rate,
                                                      seconds).result()
        served = httpx.get(f"{url}/metrics").text
    finally:
        server.terminate()
        server.wait(timeout=30)
    ok_line = [line for line in served.splitlines() if line.startswith(
        'personarl_requests_total{endpoint="/v1/act",status="200"}')]
    sent, lat = np.array(latencies).T
    slow = lat > 0.1
    return dict(rate=rate, seconds=seconds, requests=len(lat), errors=errors,
                achieved_rate=achieved, server_counted_200=float(ok_line[0].split()[-1])
                if ok_line else 0.0, **_percentiles(list(lat)), max_ms=float(lat.max() * 1e3),
                over_100ms=int(slow.sum()),
                over_100ms_sent_at_s=sorted({round(float(t), 1) for t in sent[slow]})[:20])


def run(run_dir: str | None, calls: int, cold_runs: int, rate: float, seconds: float
        ) -> dict[str, Any]:
    """Every measurement above; prints a table and returns the figures."""
    import torch
    from ray.rllib.core.rl_module.rl_module import RLModule

    from agents.serving import load_policy

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-run-"))
    run = Path(run_dir).resolve() if run_dir else _train_small_run(tmp)
    bundle = run / "policy"
    checkpoint = sorted((run / "checkpoints").glob("iter_*"))[-1]
    module_path = str(checkpoint.joinpath(*_RLLIB_MODULE))
    obs = _observations(bundle, 4096)

    ours = load_policy(bundle, seed=0)
    module = RLModule.from_checkpoint(module_path)
    module.eval()

    def rllib_act(x: np.ndarray) -> int:
        with torch.no_grad():
            out = module.forward_inference({"obs": torch.as_tensor(x[None])})
        return int(out["action_dist_inputs"].argmax(-1)[0])

    def rllib_batch(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = module.forward_inference({"obs": torch.as_tensor(x)})
        return out["action_dist_inputs"].argmax(-1).numpy()

    with torch.no_grad():
        want = module.forward_inference({"obs": torch.as_tensor(obs)})["action_dist_inputs"]
    result: dict[str, Any] = dict(
        run=str(run), env_id=ours.env_id,
        parity=dict(observations=len(obs),
                    max_abs_logit_diff=float(np.abs(ours.logits(obs) - want.numpy()).max()),
                    greedy_actions_equal=bool(np.array_equal(ours.act_batch(obs),
                                                             want.argmax(-1).numpy()))))
    spec = json.loads((run / "run.json").read_text())["config"]["agent"]
    result["network"] = f"{'x'.join(map(str, spec['hidden']))} {spec['activation']} MLP"
    result["batch1"] = dict(ours=_latency(ours.act, obs, calls),
                            rllib=_latency(rllib_act, obs, calls))
    result["batch1"]["speedup_p50"] = (result["batch1"]["rllib"]["p50_us"]
                                       / result["batch1"]["ours"]["p50_us"])
    result["batch1024_obs_per_s"] = dict(ours=_throughput(ours.act_batch, obs),
                                         rllib=_throughput(rllib_batch, obs))
    result["cold_start"] = dict(
        ours=_cold_start("ours", cold_runs, bundle=str(bundle)),
        rllib=_cold_start("rllib", cold_runs, module=module_path, dim=ours.obs_dim))
    result["http"] = _http(bundle, obs, rate, seconds)
    _print(result)
    return result


def _print(r: dict[str, Any]) -> None:
    b1, th, cs, h = r["batch1"], r["batch1024_obs_per_s"], r["cold_start"], r["http"]
    print(f"\n{r['env_id']}, {r['network']} (run {r['run']})")
    print(f"parity on {r['parity']['observations']} rollout observations: max |logit "
          f"difference| {r['parity']['max_abs_logit_diff']:.2e}, greedy actions equal: "
          f"{r['parity']['greedy_actions_equal']}")
    print("| | batch-1 p50 | batch-1 p99 | batch-1024 obs/s | cold start (process) | "
          "cold start (in process) |")
    print("|---|---:|---:|---:|---:|---:|")
    for k, name in (("ours", "ours: load_policy + act"),
                    ("rllib", "RLlib: RLModule.from_checkpoint + forward_inference")):
        print(f"| {name} | {b1[k]['p50_us']:.1f} µs | {b1[k]['p99_us']:.1f} µs | "
              f"{th[k]:,.0f} | {cs[k]['process_s']:.2f} s | {cs[k]['in_process_s']:.2f} s |")
    print(f"batch-1 p50 speed-up: {b1['speedup_p50']:.1f}x; batch-1024: "
          f"{th['ours'] / th['rllib']:.1f}x")
    print(f"HTTP POST /v1/act at {h['rate']:.0f}/s for {h['seconds']:.0f} s: {h['requests']} "
          f"requests, {h['errors']} errors, achieved {h['achieved_rate']:.1f}/s, p50 "
          f"{h['p50_us'] / 1000:.2f} ms, p99 {h['p99_us'] / 1000:.2f} ms "
          f"(server counted {h['server_counted_200']:.0f} OK); max {h['max_ms']:.1f} ms, "
          f"{h['over_100ms']} over 100 ms (sent at {h['over_100ms_sent_at_s']} s)")
