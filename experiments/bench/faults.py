"""Fault injection: ``kill -9`` the server and registry writers at random points under load,
and count what acknowledged work was lost.

* **Server.** ``python -m experiments.serve`` (decision-log segments of 500 rows, so kills
  land before, during and after Parquet rolls) under four client threads that ask for
  decisions, post feedback for most of them, post feedback again for a random earlier
  decision (a client's retry, also across restarts) and retry whatever failed when the
  server was down. The server is killed ``--kills`` times at uniform random moments and
  restarted on the same log directory. Afterwards every decision the server acknowledged
  (200) must be in the decision log, every acknowledged feedback in the feedback log with
  the acknowledged reward, and no decision may have two feedback rows.
* **Registry.** Writer processes register, promote and roll back versions in a loop,
  printing each change once it returned; each is killed at a random moment (``--registry-
  kills`` times). After every kill the index must read, every acknowledged registration
  must be present and load with the digests recorded for it, and the production version
  must be the one the last acknowledged promote or rollback left.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from experiments.bench.serve import ROOT, _free_port, start_server

__all__ = ["run"]

_REGISTRY_WRITER = """
import sys
from agents.registry import Registry
reg, bundle = Registry(sys.argv[1]), sys.argv[2]
while True:
    v = reg.register(bundle, "routing")["version"]
    print("register", v, flush=True)
    reg.promote("routing", v)
    print("promote", v, flush=True)
    if v % 3 == 0:
        print("rollback", reg.rollback("routing")["version"], flush=True)
"""


def _tiny_bundle(where: Path) -> Path:
    """An untrained AgentRouting policy's bundle (what is served does not matter here)."""
    import torch

    from agents.export import write_bundle
    from envs import ROUTING_ID

    torch.manual_seed(0)
    actor = torch.nn.Sequential(torch.nn.Linear(34, 64), torch.nn.Tanh(),
                                torch.nn.Linear(64, 6)).eval()
    actor.discrete = True
    return write_bundle(actor, where / "bundle", env_id=ROUTING_ID, env_config={},
                        source={"learner": "bench", "checkpoint": None})


class _Clients:
    """Client threads against ``url`` that remember what the server acknowledged."""

    def __init__(self, url: str, obs_dim: int, seed: int, threads: int = 4) -> None:
        self.url, self.obs = url, [0.5] * obs_dim
        self.decisions: set[str] = set()
        self.feedback: dict[str, float] = {}               # acknowledged: id -> reward
        self.pending: list[str] = []                       # feedback to retry
        self.counts = dict(act_ok=0, act_failed=0, feedback_ok=0, duplicate=0, conflict=0,
                           feedback_failed=0)
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.threads = [threading.Thread(target=self._loop, args=(seed * 100 + i,),
                                         daemon=True) for i in range(threads)]

    @staticmethod
    def reward(decision_id: str) -> float:
        return int(decision_id[:6], 16) / 16**6

    def _feedback(self, client: Any, did: str) -> None:
        import httpx

        try:
            r = client.post("/v1/feedback", json={"decision_id": did,
                                                  "reward": self.reward(did)})
        except httpx.HTTPError:
            with self.lock:
                self.counts["feedback_failed"] += 1
                self.pending.append(did)
            return
        with self.lock:
            if r.status_code == 200:
                self.feedback[did] = self.reward(did)
                self.counts["duplicate" if r.json()["duplicate"] else "feedback_ok"] += 1
            elif r.status_code == 409:
                self.counts["conflict"] += 1
            else:
                self.counts["feedback_failed"] += 1
                self.pending.append(did)

    def _loop(self, seed: int) -> None:
        import httpx

        rng = random.Random(seed)
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while not self.stop.is_set():
                try:
                    r = client.post("/v1/act", json={"observation": self.obs,
                                                     "user_id": f"user{rng.randrange(500)}"})
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if not ok:
                    with self.lock:
                        self.counts["act_failed"] += 1
                    time.sleep(0.02)
                    continue
                did = r.json()["decision_id"]
                with self.lock:
                    self.decisions.add(did)
                    self.counts["act_ok"] += 1
                    retry = self.pending.pop() if self.pending else None
                    earlier = rng.choice(list(self.feedback)) if (
                        self.feedback and rng.random() < 0.1) else None
                if rng.random() < 0.7:
                    self._feedback(client, did)
                for again in (retry, earlier):
                    if again is not None:
                        self._feedback(client, again)

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def _server_faults(bundle: Path, work: Path, kills: int, rng: random.Random
                   ) -> dict[str, Any]:
    import httpx

    from agents.decision_log import read_log
    from agents.serving import load_policy

    port = _free_port()
    url, logs = f"http://127.0.0.1:{port}", work / "logs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PERSONARL_PII_KEY": os.urandom(32).hex()}
    server = start_server(bundle, logs, port, "segment_rows=500", env=env)
    clients = _Clients(url, load_policy(bundle).obs_dim, rng.randrange(1 << 30))
    clients.start()
    downtime = []
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(0.5, 4.0))
            os.kill(server.pid, signal.SIGKILL)
            server.wait()
            start = time.perf_counter()
            server = start_server(bundle, logs, port, "segment_rows=500", env=env)
            downtime.append(time.perf_counter() - start)
        time.sleep(2.0)
        clients.join()
        with clients.lock:                                # retries still owed, once more
            owed, clients.pending = clients.pending, []
        with httpx.Client(base_url=url, timeout=5) as client:
            for did in owed:
                clients._feedback(client, did)
    finally:
        clients.stop.set()
        server.terminate()
        server.wait(timeout=60)
    decisions = set(read_log(logs, "decisions", ["decision_id"]).column(0).to_pylist())
    rows = read_log(logs, "feedback", ["decision_id", "reward"]).to_pylist()
    logged = {}
    for row in rows:
        logged.setdefault(row["decision_id"], []).append(row["reward"])
    return dict(
        kills=kills, restart_seconds_median=sorted(downtime)[len(downtime) // 2],
        acknowledged_decisions=len(clients.decisions), logged_decisions=len(decisions),
        lost_decisions=len(clients.decisions - decisions),
        acknowledged_feedback=len(clients.feedback),
        lost_feedback=sum(did not in logged for did in clients.feedback),
        wrong_reward=sum(did in logged and logged[did][0] != r
                         for did, r in clients.feedback.items()),
        decisions_with_two_feedback_rows=sum(len(v) > 1 for v in logged.values()),
        feedback_retries_answered_duplicate=clients.counts["duplicate"],
        **{f"requests_{k}": v for k, v in clients.counts.items()})


def _registry_faults(bundle: Path, work: Path, kills: int, rng: random.Random
                     ) -> dict[str, Any]:
    from agents.registry import Registry, RegistryError

    root = work / "registry"
    acked: list[tuple[str, int]] = []
    problems: list[str] = []
    checked: set[int] = set()
    for _ in range(kills):
        writer = subprocess.Popen([sys.executable, "-c", _REGISTRY_WRITER, str(root),
                                   str(bundle)], cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
        time.sleep(rng.uniform(1.0, 3.0))             # start-up ≈ 1 s, then changes
        writer.send_signal(signal.SIGKILL)
        out, _ = writer.communicate()
        acked += [(op, int(v)) for op, v in (line.split() for line in out.splitlines())]
        reg = Registry(root)
        try:
            versions = {e["version"]: e for e in reg.versions("routing")} if acked else {}
        except RegistryError as exc:
            problems.append(f"index unreadable: {exc}")
            continue
        for op, v in acked:
            if op == "register" and v not in versions:
                problems.append(f"acknowledged registration v{v} missing")
        for v in sorted(set(versions) - checked):    # each version loaded once
            try:
                reg.load("routing", version=v)
            except Exception as exc:                  # noqa: BLE001 — counted, reported
                problems.append(f"v{v} does not load: {exc}")
            checked.add(v)
        last = [(op, v) for op, v in acked if op in ("promote", "rollback")]
        if last:
            production = [v for v, e in versions.items() if e["stage"] == "production"]
            # a change after the last acknowledged one may have landed before the kill
            if not production or production[0] < last[-1][1] - 1:
                problems.append(f"production {production} after acknowledged {last[-1]}")
    return dict(kills=kills, acknowledged_changes=len(acked), versions_checked=len(checked),
                acknowledged_registrations=sum(op == "register" for op, _ in acked),
                problems=problems[:20], problem_count=len(problems))


def run(bundle: str | None, kills: int, registry_kills: int, seed: int) -> dict[str, Any]:
    """Both fault studies; prints a summary and returns the figures."""
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    served = Path(bundle).resolve() if bundle else _tiny_bundle(work)
    server = _server_faults(served, work, kills, rng)
    registry = _registry_faults(served, work, registry_kills, rng)
    s, r = server, registry
    print(f"\nserver: {s['kills']} kill -9s under load (restart median "
          f"{s['restart_seconds_median']:.1f} s); {s['acknowledged_decisions']:,} decisions "
          f"acknowledged, {s['lost_decisions']} lost; {s['acknowledged_feedback']:,} "
          f"feedback acknowledged, {s['lost_feedback']} lost, {s['wrong_reward']} with "
          f"another reward, {s['decisions_with_two_feedback_rows']} decisions with two "
          f"feedback rows ({s['feedback_retries_answered_duplicate']} retries answered as "
          "duplicates)")
    print(f"registry: {r['kills']} writer kills; {r['acknowledged_changes']} changes "
          f"acknowledged ({r['acknowledged_registrations']} registrations); "
          f"{r['problem_count']} problems {r['problems'][:3]}")
    return dict(server=server, registry=registry, seed=seed, bundle=str(served))

