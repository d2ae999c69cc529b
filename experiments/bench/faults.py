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
* **Training.** For RLlib PPO (``agent.sampler=batched``, the default; and
  ``agent.sampler=rllib``) and SB3 PPO: one uninterrupted run, timed phase by phase, then
  the same run killed (``kill -9`` of the driver) ``--train-kills`` times, each at a
  uniformly random moment of a phase taken in turn — a random iteration after the restored
  checkpoint (checkpoint writes included), start-up (imports, Ray, the restore), a random
  iteration again, then evaluation, report and export — and resumed after each (started
  afresh when the kill came before ``run.json``). Reported: the iterations lost (trained,
  then redone after the restore), whether the result is the uninterrupted run's (every
  ``metrics.jsonl`` field but ``perf/*``, the final weights' SHA-256, ``summary.json`` but
  ``meta.perf``), the trained policy's evaluation against the reference's CI where it is
  not, the rows the final wandb offline file holds, and the Ray processes the kills left
  (counted right after each kill, and again once the run is done).
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

__all__ = ["run", "PARTS", "wandb_history"]

PARTS = ("server", "registry", "training")
#: training configurations: name -> overrides (a small routing run, seconds per iteration)
TRAINING = {"ppo_batched": ["agent=ppo"], "ppo_rllib": ["agent=ppo", "agent.sampler=rllib"],
            "sb3_ppo": ["agent=sb3_ppo"]}
_TRAIN_ARGS = ["experiment=smoke", "budget=40960", "agent.train_batch_size=2048",
               "agent.minibatch_size=512", "agent.num_envs_per_env_runner=32",
               "checkpoint.every=3", "eval.episodes=512", "eval.baselines=[random]",
               "logger=wandb_offline"]

_REGISTRY_WRITER = """
import json, shutil, sys, uuid
from pathlib import Path
from agents.serving.bundle import write_manifest
from agents.serving.registry import Registry
reg, base, copies = Registry(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])


def fresh_bundle():
    # a copy with files of its own (the same files would be their existing version)
    bundle = copies / uuid.uuid4().hex
    shutil.copytree(base, bundle)
    spec = json.loads((bundle / "policy.json").read_text())
    spec["config_hash"] = bundle.name[:16]
    (bundle / "policy.json").write_text(json.dumps(spec))
    write_manifest(bundle)
    return bundle


while True:
    bundle = fresh_bundle()
    v = reg.register(bundle, "routing")["version"]
    shutil.rmtree(bundle)                 # the registry keeps its own copy
    print("register", v, flush=True)
    reg.promote("routing", v)
    print("promote", v, flush=True)
    if v % 3 == 0:
        print("rollback", reg.rollback("routing")["version"], flush=True)
"""


def _tiny_bundle(where: Path) -> Path:
    """An untrained AgentRouting policy's bundle (what is served does not matter here)."""
    import torch

    from agents.learners.export import write_bundle
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

    from agents.serving.decision_log import read_log
    from agents.serving.loader import load_policy

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
    from agents.serving.registry import Registry, RegistryError

    root = work / "registry"
    acked: list[tuple[str, int]] = []
    problems: list[str] = []
    checked: set[int] = set()
    copies = work / "registry-copies"           # the writer's bundles before registering
    copies.mkdir(exist_ok=True)
    for _ in range(kills):
        writer = subprocess.Popen([sys.executable, "-c", _REGISTRY_WRITER, str(root),
                                   str(bundle), str(copies)], cwd=ROOT, stdout=subprocess.PIPE,
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


def wandb_history(path: Path) -> list[dict[str, Any]]:
    """The history rows in a wandb offline file (``run-<id>.wandb``): a 7-byte header, then
    LevelDB-log records (CRC, length, type; split over 32 KiB blocks) holding ``Record``
    protobufs. For checking what a file holds; wandb itself reads it on ``wandb sync``."""
    import json
    import struct

    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a wandb offline file (header {data[:7]!r})")
    block, pos, parts, out = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:                                      # the rest of the block is padding
            pos += left
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        parts = chunk if kind in (1, 2) else parts + chunk   # full/first, then middle/last
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            if record.WhichOneof("record_type") == "history":
                out.append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                            for i in record.history.item})
    return out


def _train_rows(run_dir: Path) -> list[dict[str, Any]]:
    from experiments.run_files import MetricsLog

    path = run_dir / "metrics.jsonl"
    return MetricsLog(path).rows() if path.exists() else []


def _learning(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows]


def _summary(run_dir: Path) -> dict[str, Any]:
    import json

    summary = json.loads((run_dir / "summary.json").read_text())
    summary["meta"].pop("perf", None)
    return summary


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _reference_run(cmd: list[str], run_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run to the end, noting when each metrics row appeared: the phases' lengths."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd + [f"hydra.run.dir={run_dir}"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: list[float] = []
    while proc.poll() is None:
        n = _lines(run_dir / "metrics.jsonl")
        seen += [time.perf_counter() - start] * (n - len(seen))
        time.sleep(0.01)
    if proc.returncode != 0:
        raise RuntimeError(f"the reference run in {run_dir} failed ({proc.returncode})")
    end = time.perf_counter() - start
    steps = [b - a for a, b in zip(seen, seen[1:])]
    return dict(seconds=end, startup_s=seen[0], iteration_s=sorted(steps)[len(steps) // 2],
                tail_s=end - seen[-1], iterations=len(seen))


def _killed_attempt(cmd: list[str], run_dir: Path, env: dict[str, str], phase: str,
                    ref: dict[str, Any], rng: random.Random
                    ) -> tuple[subprocess.Popen | None, str, int, int]:
    """Start an attempt (resuming when there is a run to resume) and kill -9 its driver at a
    random moment of ``phase``: ``startup`` (before the first metrics row), ``training``
    (a random moment of a random iteration after the restored checkpoint), ``after``
    (evaluation, report and export; also what ``training`` becomes when nothing is left to
    train). Returns the process (``None`` if it ended first), the phase, the iteration it
    resumed from and the iterations trained when it was killed (rows a resumed attempt has
    not rewritten yet are the earlier attempt's, not its own)."""
    import json

    resume = (run_dir / "run.json").exists()
    kept = 0
    done = sorted((run_dir / "checkpoints").glob("iter_*/meta.json"))
    if resume and done:
        kept = json.loads(done[-1].read_text())["iteration"]
    proc = subprocess.Popen(cmd + [f"hydra.run.dir={run_dir}"] + ["resume=true"] * resume,
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    metrics, total = run_dir / "metrics.jsonl", ref["iterations"]
    if phase == "training" and kept + 1 >= total:
        phase = "after"                                    # nothing left to train
    if phase == "training":
        target = rng.randint(kept + 1, total - 1)          # rows to wait for, then a delay
        delay = rng.uniform(0.0, ref["iteration_s"])
    elif phase == "startup":
        target, delay = 0, rng.uniform(0.0, ref["startup_s"])
    else:
        target, delay = total, rng.uniform(0.0, ref["tail_s"])
    started = time.time()

    def reached() -> bool:            # rows of this attempt (a resumed one rewrites the file)
        if target == 0:
            return True
        try:
            fresh = metrics.stat().st_mtime >= started
        except FileNotFoundError:
            return False
        return fresh and _lines(metrics) >= target

    while proc.poll() is None and not reached():
        time.sleep(0.005)
    since = time.perf_counter()
    while proc.poll() is None and time.perf_counter() - since < delay:
        time.sleep(0.005)
    if proc.poll() is not None:
        return None, phase, kept, 0
    os.kill(proc.pid, signal.SIGKILL)                  # the driver only, as kill -9 <pid>
    proc.wait()
    fresh = metrics.exists() and metrics.stat().st_mtime >= started
    return proc, phase, kept, _lines(metrics) if fresh else kept


def _training_faults(work: Path, name: str, overrides: list[str], kills: int,
                     rng: random.Random) -> dict[str, Any]:
    import json

    from experiments.run_files import RAY_SESSION_FILE, ray_session_processes

    cmd = [sys.executable, "-m", "experiments.train", *_TRAIN_ARGS, *overrides,
           f"ray.temp_dir=/tmp/ray-bf{os.getpid()}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
           "WANDB_SILENT": "true"}
    ref_dir, run_dir = work / f"{name}-reference", work / f"{name}-killed"
    ref = _reference_run(cmd, ref_dir, env)
    phases = ("training", "startup", "training", "after")
    events, sessions, procs, left_by_kills = [], [], [], 0
    try:
        for j in range(kills):
            proc, phase, resumed_from, trained = _killed_attempt(
                cmd, run_dir, env, phases[j % len(phases)], ref, rng)
            if proc is None:
                events.append(dict(phase=phase, killed=False))
                continue
            procs.append(proc)
            done = sorted((run_dir / "checkpoints").glob("iter_*/meta.json"))
            kept = json.loads(done[-1].read_text())["iteration"] if done else 0
            left = []
            if (run_dir / RAY_SESSION_FILE).exists():
                session = Path(json.loads((run_dir / RAY_SESSION_FILE).read_text())
                               ["session_dir"])
                sessions.append(session)
                left = ray_session_processes(session)
            left_by_kills += len(left)
            events.append(dict(phase=phase, killed=True, resumed_from=resumed_from,
                               rows_at_kill=trained, restores_from=kept,
                               ray_processes_left=len(left)))
        resume = (run_dir / "run.json").exists()
        subprocess.run(cmd + [f"hydra.run.dir={run_dir}"] + ["resume=true"] * resume, cwd=ROOT,
                       env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    left_at_end = sum(len(ray_session_processes(s)) for s in sessions)
    a, b = _summary(run_dir), _summary(ref_dir)
    identical = dict(metrics=_learning(_train_rows(run_dir)) == _learning(_train_rows(ref_dir)),
                     weights=a["meta"].get("weights_sha256") == b["meta"].get("weights_sha256"),
                     summary=a == b)
    pop = next(iter(b["populations"]))
    trained = b["populations"][pop]["trained"]
    mine, theirs = (s["populations"][pop]["policies"][trained] for s in (a, b))
    wandb_id = (run_dir / "wandb_id.txt").read_text().strip()
    folders = sorted((run_dir / "wandb").glob(f"offline-run-*-{wandb_id}"))
    history = wandb_history(folders[-1] / f"run-{wandb_id}.wandb") if folders else []
    iterations = len(_train_rows(run_dir))
    killed = [e for e in events if e["killed"]]
    return dict(
        reference=ref, kills=events, iterations=iterations,
        # iterations trained by an attempt and redone after its kill: those after the
        # checkpoint the next attempt restores, plus the one in flight mid-training
        iterations_lost=sum(max(0, e["rows_at_kill"] - e["restores_from"])
                            + (e["phase"] == "training") for e in killed),
        restores_from_a_checkpoint=sum(e["restores_from"] > 0 for e in killed),
        identical=identical,
        evaluation=dict(resumed=mine["mean"], reference=theirs["mean"],
                        reference_ci=[theirs["ci_low"], theirs["ci_high"]],
                        resumed_ci=[mine["ci_low"], mine["ci_high"]],
                        within_reference_ci=theirs["ci_low"] <= mine["mean"] <= theirs["ci_high"]),
        wandb=dict(offline_folders=len(folders), history_rows=len(history),
                   whole_once=[h.get("iteration") for h in history]
                   == list(range(1, iterations + 1))),
        ray_processes_left_by_kills=left_by_kills, ray_processes_left_at_end=left_at_end)


def run(bundle: str | None, kills: int, registry_kills: int, seed: int,
        train_kills: int = 4, parts: tuple[str, ...] = PARTS) -> dict[str, Any]:
    """The fault studies in ``parts``; prints a summary and returns the figures."""
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    out: dict[str, Any] = dict(seed=seed)
    if "training" in parts:
        out["training"] = {name: _training_faults(work, name, overrides, train_kills, rng)
                           for name, overrides in TRAINING.items()}
        for name, t in out["training"].items():
            same = all(t["identical"].values())
            e = t["evaluation"]
            phases = ", ".join(f"{k['phase']}" + (f" ({k['resumed_from']} -> row "
                                                  f"{k['rows_at_kill']} -> "
                                                  f"{k['restores_from']})" if k["killed"]
                                                  else " (ended first)")
                               for k in t["kills"])
            print(f"training {name}: kills [{phases}]; {t['iterations_lost']} iterations lost "
                  f"of {t['iterations']}; identical to the uninterrupted run: "
                  f"{'yes' if same else t['identical']}; evaluation {e['resumed']:.4f} vs "
                  f"{e['reference']:.4f} [{e['reference_ci'][0]:.4f}, "
                  f"{e['reference_ci'][1]:.4f}]; wandb: {t['wandb']['offline_folders']} "
                  f"offline folder, {t['wandb']['history_rows']} rows, whole and once "
                  f"{t['wandb']['whole_once']}; Ray processes left by the kills "
                  f"{t['ray_processes_left_by_kills']}, at the end "
                  f"{t['ray_processes_left_at_end']}")
    if not {"server", "registry"} & set(parts):
        return out
    served = Path(bundle).resolve() if bundle else _tiny_bundle(work)
    out["bundle"] = str(served)
    if "server" in parts:
        out["server"] = s = _server_faults(served, work, kills, rng)
        print(f"\nserver: {s['kills']} kill -9s under load (restart median "
          f"{s['restart_seconds_median']:.1f} s); {s['acknowledged_decisions']:,} decisions "
          f"acknowledged, {s['lost_decisions']} lost; {s['acknowledged_feedback']:,} "
          f"feedback acknowledged, {s['lost_feedback']} lost, {s['wrong_reward']} with "
          f"another reward, {s['decisions_with_two_feedback_rows']} decisions with two "
          f"feedback rows ({s['feedback_retries_answered_duplicate']} retries answered as "
          "duplicates)")
    if "registry" in parts:
        out["registry"] = r = _registry_faults(served, work, registry_kills, rng)
        print(f"registry: {r['kills']} writer kills; {r['acknowledged_changes']} changes "
              f"acknowledged ({r['acknowledged_registrations']} registrations); "
              f"{r['problem_count']} problems {r['problems'][:3]}")
    return out

