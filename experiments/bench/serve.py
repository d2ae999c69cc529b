"""Serving speed: our bundle loader against RLlib's own inference path (``--parts loader``),
and the HTTP server under load (``--parts http``).

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
* HTTP on loopback: ``python -m experiments.serve`` in a subprocess (``--bundle``, or the
  run's), driven by ``hey`` (Debian's ``hey`` package; Go, so the client is cheap next to
  the server): ``--requests`` ``POST /v1/act`` at ``--rate`` requests/s from workers of
  ``WORKER_RATE`` req/s each, with ``segment_rows`` small enough that the run crosses Parquet rolls; p50,
  p99, p99.9 and max latency, errors, the server's own event-loop lag (sampled every 10 ms
  inside the server, maximum overall and during rolls, from ``/metrics``), the CPU share of
  server and client; the client's capacity (hey unthrottled on ``/healthz``, and its CPU per
  request); then ``--ladder`` rates for ``--ladder-seconds`` each, for the highest rate
  served with 0 errors (and ≥ 95% of the target achieved).

Client and server share the 2 cores.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
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
    from agents.serving.loader import load_policy
    from envs.creator import create_env
    from envs.rollout import Lanes

    policy = load_policy(bundle, seed=0)
    env = create_env(policy.env_id, {**policy.spec["env"]["config"], "num_envs": 64,
                                     "info_level": "none"})
    lanes = Lanes(env, *env.reset(seed=7), first_episode_only=False)
    act = lambda obs, info: policy.act_batch(obs, exploration="sample")  # noqa: E731
    seen = [t.obs for t in lanes.run(act, steps=-(-n // 64))]
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
from agents.serving.loader import load_policy
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


def server_env() -> dict[str, str]:
    """The environment a benchmark's server runs in: one thread, a fresh identifier key."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PERSONARL_PII_KEY": os.urandom(32).hex()}


def start_server(bundle: Path, log_dir: Path, port: int, *extra: str,
                 env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python -m experiments.serve`` on ``bundle`` in a subprocess, ready to answer.

    Raises:
        RuntimeError: the server did not become ready within 60 s (with its stderr).
    """
    import httpx

    server = subprocess.Popen(
        [sys.executable, "-m", "experiments.serve", f"bundle={bundle}", f"port={port}",
         f"log_dir={log_dir}", f"hydra.run.dir={log_dir.parent / 'hydra'}", *extra],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env or server_env())
    deadline = time.time() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.time() > deadline or server.poll() is not None:
            server.kill()
            raise RuntimeError("the server did not become ready within 60 s: "
                               f"{server.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)


def _children_cpu() -> float:
    """CPU seconds used by this process's finished children (so: by ``hey`` runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: requests per second of one hey worker. A worker is closed-loop (it waits for its answer)
#: and hey's workers tick in phase, so N workers send bursts of N: fewer workers mean
#: smaller bursts, more workers more slack (1/WORKER_RATE s) before a slow answer delays the
#: next request — which would hide latency (coordinated omission; it shows as an achieved
#: rate below the target)
WORKER_RATE = 25.0


def _hey(url: str, body: Path, rate: float, requests: int) -> dict[str, Any]:
    """``hey`` POSTing ``body`` to ``url``: ``requests`` requests at ``rate``/s from workers
    of ``WORKER_RATE`` req/s each; latencies, errors, the achieved rate and hey's own CPU
    time."""
    workers = max(1, math.ceil(rate / WORKER_RATE))
    cpu, start = _children_cpu(), time.perf_counter()
    out = subprocess.run(["hey", "-n", str(requests), "-c", str(workers),
                          "-q", f"{rate / workers:.4f}", "-m", "POST",
                          "-T", "application/json", "-D", str(body), "-t", "10", "-o", "csv",
                          url], capture_output=True, text=True, check=True)
    elapsed, cpu = time.perf_counter() - start, _children_cpu() - cpu
    rows = [line.split(",") for line in out.stdout.splitlines()[1:] if line]
    latency = np.array([float(r[0]) for r in rows]) * 1e3
    ok = sum(r[6] == "200" for r in rows)

    def pct(q: float) -> float:
        return float(np.percentile(latency, q)) if len(latency) else float("nan")

    return dict(target_rate=rate, requests=requests, ok=ok, errors=requests - ok,
                achieved_rate=len(rows) / elapsed, seconds=elapsed, p50_ms=pct(50),
                p99_ms=pct(99), p999_ms=pct(99.9), max_ms=pct(100), client_cpu_s=cpu,
                client_cpu_share=cpu / elapsed)


def _metric(text: str, sample: str) -> float:
    """The value of one Prometheus sample (``name`` or ``name{labels}``) in ``text``."""
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return float("nan")


def http_load(bundle: Path, rate: float, requests: int, ladder: list[float],
              ladder_seconds: float, segment_rows: int) -> dict[str, Any]:
    """The HTTP server under ``hey``: ``requests`` at ``rate``/s (crossing Parquet rolls every
    ``segment_rows`` decisions), the server's event-loop lag and rolls from ``/metrics``,
    the client's own capacity, then a ladder of rates for the highest one served with 0
    errors."""
    import httpx

    from agents.serving.loader import load_policy

    if shutil.which("hey") is None:
        raise SystemExit("the HTTP benchmark drives the server with hey: apt-get install hey")
    work = Path(tempfile.mkdtemp(prefix="bench-serve-http-"))
    body = work / "body.json"
    obs = np.full(load_policy(bundle).obs_dim, 0.5).tolist()
    body.write_text(json.dumps({"observation": obs, "user_id": "bench-user"}))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(bundle, work / "logs", port, f"segment_rows={segment_rows}")
    try:
        cpu = _proc_cpu(server.pid)
        main = _hey(f"{url}/v1/act", body, rate, requests)
        main["server_cpu_share"] = (_proc_cpu(server.pid) - cpu) / main["seconds"]
        text = httpx.get(f"{url}/metrics").text
        main.update(
            server_counted_200=_metric(
                text, 'personarl_requests_total{endpoint="/v1/act",status="200"}'),
            rolls=_metric(text, 'personarl_log_roll_seconds_count{log="decisions"}'),
            roll_seconds_sum=_metric(text, 'personarl_log_roll_seconds_sum{log="decisions"}'),
            loop_lag_max_ms=_metric(text, "personarl_event_loop_lag_max_seconds") * 1e3,
            loop_lag_during_roll_max_ms=_metric(
                text, "personarl_event_loop_lag_during_roll_max_seconds") * 1e3)
        # the client's capacity: hey unthrottled on the cheapest endpoint, and the CPU it
        # spends per request (its ceiling on one core)
        cpu, start = _children_cpu(), time.perf_counter()
        subprocess.run(["hey", "-n", "20000", "-c", "50", f"{url}/healthz"],
                       capture_output=True, text=True, check=True)
        elapsed, cpu = time.perf_counter() - start, _children_cpu() - cpu
        client = dict(healthz_unthrottled_rate=20000 / elapsed,
                      cpu_us_per_request=cpu / 20000 * 1e6, one_core_ceiling_rate=20000 / cpu)
        steps = [_hey(f"{url}/v1/act", body, r, int(r * ladder_seconds)) for r in ladder]
    finally:
        server.terminate()
        server.wait(timeout=60)
    sustained = [s["target_rate"] for s in steps
                 if s["errors"] == 0 and s["achieved_rate"] >= 0.95 * s["target_rate"]]
    return dict(main=main, client=client, ladder=steps, segment_rows=segment_rows,
                highest_sustained_rate=max(sustained, default=None))


PARTS = ("loader", "http")


def run(run_dir: str | None, bundle: str | None, parts: tuple[str, ...], calls: int,
        cold_runs: int, rate: float, requests: int, ladder: list[float],
        ladder_seconds: float, segment_rows: int) -> dict[str, Any]:
    """The ``parts`` asked for (``loader``: ours against RLlib; ``http``: the server under
    load); prints tables and returns the figures."""
    result: dict[str, Any] = {}
    run = Path(run_dir).resolve() if run_dir else None
    if run is None and ("loader" in parts or bundle is None):
        run = _train_small_run(Path(tempfile.mkdtemp(prefix="bench-serve-run-")))
    served = Path(bundle).resolve() if bundle else run / "policy"
    if "loader" in parts:
        result.update(_loader(run, calls, cold_runs))
        _print_loader(result)
    if "http" in parts:
        result["http"] = http_load(served, rate, requests, ladder, ladder_seconds,
                                   segment_rows)
        _print_http(result["http"])
    return result


def _loader(run: Path, calls: int, cold_runs: int) -> dict[str, Any]:
    """Parity, batch-1 latency, batch-1024 throughput and cold start: ours against RLlib."""
    import torch
    from ray.rllib.core.rl_module.rl_module import RLModule

    from agents.serving.loader import load_policy

    torch.set_num_threads(1)
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
    return result


def _print_loader(r: dict[str, Any]) -> None:
    b1, th, cs = r["batch1"], r["batch1024_obs_per_s"], r["cold_start"]
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


def _print_http(h: dict[str, Any]) -> None:
    m, c = h["main"], h["client"]
    print(f"\nHTTP POST /v1/act with hey, {m['requests']:,} requests at {m['target_rate']:.0f}/s "
          f"(segment_rows={h['segment_rows']}): achieved {m['achieved_rate']:.1f}/s, "
          f"{m['errors']} errors (server counted {m['server_counted_200']:.0f} OK)")
    print(f"  latency p50 {m['p50_ms']:.2f} ms, p99 {m['p99_ms']:.2f} ms, p99.9 "
          f"{m['p999_ms']:.2f} ms, max {m['max_ms']:.1f} ms")
    print(f"  {m['rolls']:.0f} Parquet rolls of the decision log ({m['roll_seconds_sum']:.2f} s "
          f"in all, off the event loop); event-loop lag max {m['loop_lag_max_ms']:.1f} ms, "
          f"during rolls {m['loop_lag_during_roll_max_ms']:.1f} ms (sampled every 10 ms)")
    print(f"  CPU: server {m['server_cpu_share']:.0%} of a core, hey {m['client_cpu_share']:.0%}")
    print(f"  client capacity: hey unthrottled on /healthz {c['healthz_unthrottled_rate']:,.0f} "
          f"req/s (server-bound); hey spends {c['cpu_us_per_request']:.0f} µs CPU a request, "
          f"a ceiling of {c['one_core_ceiling_rate']:,.0f} req/s per core")
    print("  | target req/s | achieved | errors | p50 ms | p99 ms | p99.9 ms |")
    print("  |---:|---:|---:|---:|---:|---:|")
    for s in h["ladder"]:
        print(f"  | {s['target_rate']:.0f} | {s['achieved_rate']:.0f} | {s['errors']} | "
              f"{s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['p999_ms']:.1f} |")
    print(f"  highest rate sustained with 0 errors: {h['highest_sustained_rate']}")
