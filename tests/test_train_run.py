"""experiments.train end to end with tiny budgets: outputs, determinism, resume after SIGKILL,
refusals, and every agent kind (RLlib PPO, SB3 PPO, an online baseline)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from experiments.schema import register_configs
from experiments.job import train
from personarl.errors import ConfigError
from tests.readme import command, overrides
from tests.reports import readability_problems

ROOT = Path(__file__).resolve().parents[1]
register_configs()
SMOKE = ["experiment=smoke", "logger=none"]
SMALL_PPO = ["agent.train_batch_size=1024", "agent.minibatch_size=256",
             "agent.num_envs_per_env_runner=16"]


def load(*args: str):
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return compose("train", overrides=list(args))


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_every_json_file_is_strict(run: Path) -> None:
    """Every JSON and JSON-lines file of a run parses with a reader that refuses bare NaN and
    Infinity (a non-finite metric is written as null)."""
    def refuse(token: str) -> None:
        raise AssertionError(f"a bare {token} in {path}")

    files = [p for p in run.rglob("*.json*") if "wandb" not in p.parts and "rllib" not in p.parts]
    assert files
    for path in files:
        text = path.read_text()
        for chunk in (text.splitlines() if path.suffix == ".jsonl" else [text]):
            json.loads(chunk, parse_constant=refuse)


def learning_part(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith("perf/")}


def test_ray_starts_only_for_a_run_that_needs_it():
    from experiments.job import needs_ray
    from experiments.wiring import validate

    assert not needs_ray(load())                      # PPO with every part in this process
    assert needs_ray(load("ray.start=always"))
    assert needs_ray(load("ray.address=127.0.0.1:6379"))
    assert needs_ray(load("agent.num_env_runners=1"))
    with pytest.raises(ConfigError, match=r"ray.start='sometimes'; valid: 'auto'"):
        validate(load("ray.start=sometimes"))


def test_online_baseline_run_writes_every_output_and_refuses_to_overwrite(tmp_path, caplog):
    cfg = load(*overrides("agent=linucb logger=none"), "experiment=smoke", "eval.episodes=64")
    result = train(cfg, tmp_path)
    for name in ("run.json", "metrics.jsonl", "summary.json", "report.md", "report.html",
                 "learning_curve.png", "archetypes_train.png", "archetypes_shifted.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert readability_problems(tmp_path) == []
    summary = json.loads((tmp_path / "summary.json").read_text())
    pop = summary["populations"]["train"]
    assert pop["trained"] == "linucb" and pop["reference"] == "oracle"
    assert pop["policies"]["random"]["oracle_normalised"] == pytest.approx(0.0)
    assert pop["policies"]["oracle"]["oracle_normalised"] == pytest.approx(1.0)
    assert {p["worse"] for p in pop["paired"]} == set(pop["policies"]) - {"linucb"}
    assert result["meta"]["env_steps"] >= cfg.budget
    assert_every_json_file_is_strict(tmp_path)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(cfg, tmp_path)
    with pytest.raises(ConfigError, match=r"seed: 0 -> 1"):
        train(load(*SMOKE, "agent=linucb", "seed=1", "resume=true"), tmp_path)
    # a resume may change the budget (outside the hash) but says so, old -> new, against
    # what the run last ran with
    def resume(*settings):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="experiments.job"):
            train(load(*overrides("agent=linucb logger=none"), "experiment=smoke",
                       *settings, "resume=true"), tmp_path)
        return [r.getMessage() for r in caplog.records if "changes settings" in r.getMessage()]

    noted = resume("eval.episodes=32", f"budget={cfg.budget - 1}")
    assert len(noted) == 1
    assert f"budget: {cfg.budget} -> {cfg.budget - 1}" in noted[0]
    assert "eval.episodes: 64 -> 32" in noted[0] and "seed" not in noted[0]
    assert resume("eval.episodes=32", f"budget={cfg.budget - 1}") == []
    noted = resume("eval.episodes=32")
    assert len(noted) == 1 and f"budget: {cfg.budget - 1} -> {cfg.budget}" in noted[0]


def test_intervention_report_has_the_false_intervention_rate(tmp_path):
    train(load(*SMOKE, "env=intervention", "agent=greedy", "eval.episodes=64",
               "eval.baselines=[random,oracle]"), tmp_path)
    pop = json.loads((tmp_path / "summary.json").read_text())["populations"]["train"]
    for p in pop["policies"].values():
        if p["interventions_per_episode"] > 0:
            assert 0.0 <= p["false_intervention_rate"] <= 1.0
        else:                                    # 0/0: undefined, not zero
            assert p["false_intervention_rate"] is None
    assert "false_intervention_rate" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_same_seed_same_metrics(ray_session, tmp_path):
    runs = []
    for name in ("a", "b"):
        train(load(*overrides("eval=drift"), *SMOKE, *SMALL_PPO, "budget=3072",
                   "eval.episodes=32"), tmp_path / name)      # the README's drift run
        runs.append([learning_part(r) for r in rows(tmp_path / name)])
    assert len(runs[0]) == 3 and runs[0] == runs[1]


@pytest.mark.slow
def test_sb3_ppo_trains_through_the_same_config(tmp_path):
    result = train(load(*overrides("agent=sb3_ppo"), *SMOKE, *SMALL_PPO, "eval.episodes=64"),
                   tmp_path)
    assert result["meta"]["env_steps"] >= 4096
    metrics = rows(tmp_path)
    assert "losses/value_loss" in metrics[-1] and metrics[-1]["iteration"] == len(metrics)
    assert "sb3_ppo" in result["populations"]["train"]["policies"]
    assert_every_json_file_is_strict(tmp_path)                  # policy.json included


class _Payload:
    """A pickle that creates a folder when it is loaded: proof that a file was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.slow
def test_killed_at_three_points_the_resumed_run_is_the_uninterrupted_run(tmp_path):
    """kill -9 mid-iteration, during a checkpoint write and during the export, resuming
    after each: the same metrics (but perf/*), final weights and summary as a run never
    killed; nothing left behind; the wandb history whole, once. Then a planted pickle in the
    checkpoint: never run by export, refused by resume."""
    from experiments.bench.faults import wandb_history
    from experiments.job import export_checkpoint
    from experiments.run_files import ray_session_processes

    small = ["experiment=smoke", *SMALL_PPO, "budget=6144", "checkpoint.every=2",
                 "eval.episodes=32", "eval.baselines=[random]", "logger=wandb_offline"]
    # ray.start=always: PPO in this process needs no Ray, but what Ray's processes leave
    # behind after a kill -9 is part of what this test checks
    cmd = command("train experiment=smoke", extra=[*small, "ray.start=always",
                                                    f"ray.temp_dir=/tmp/ray-k{os.getpid()}"])
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    ref, run = tmp_path / "ref", tmp_path / "run"
    with open(tmp_path / "ref.log", "w") as ref_log:         # runs beside the killed ones
        reference = subprocess.Popen(cmd + [f"hydra.run.dir={ref}"], cwd=ROOT, env=env,
                                     stdout=ref_log, stderr=ref_log)
    sessions, procs, left_behind = [], [], []

    def attempt_killed_when(ready, resume: bool) -> None:
        proc = subprocess.Popen(cmd + [f"hydra.run.dir={run}"] + ["resume=true"] * resume,
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        procs.append(proc)
        deadline = time.time() + 240
        while not ready():
            assert proc.poll() is None, "the attempt ended before its kill point"
            assert time.time() < deadline, "no kill point within 240 s"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)                # the driver only, as kill -9 <pid>
        proc.wait()
        if (run / "ray_session.json").exists():         # Ray is shut down before export
            session = json.loads((run / "ray_session.json").read_text())["session_dir"]
            sessions.append(session)
            left_behind.extend(ray_session_processes(Path(session)))

    try:
        attempt_killed_when(lambda: (run / "metrics.jsonl").exists() and len(rows(run)) >= 3,
                            resume=False)                    # mid-iteration 4
        attempt_killed_when(lambda: any((run / "checkpoints").glob(".tmp_iter_*")),
                            resume=True)                     # writing a checkpoint
        assert list((run / "checkpoints").glob(".tmp_iter_*"))
        attempt_killed_when(lambda: any(run.glob(".policy.tmp-*")), resume=True)  # exporting
        assert list(run.glob(".policy.tmp-*"))
        last = subprocess.run(command("resume=true", {"outputs/2026-11-23/10-00-00": run},
                                      cmd[3:]), cwd=ROOT, env=env,     # as the README says
                              capture_output=True, text=True, timeout=300)
        assert last.returncode == 0, last.stderr[-2000:]
        assert reference.wait(timeout=300) == 0, (tmp_path / "ref.log").read_text()[-2000:]
    finally:
        for proc in [reference, *procs]:
            if proc.poll() is None:
                proc.kill()
        for proc in procs:                               # whatever Ray left, if the test failed
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    assert [learning_part(r) for r in rows(run)] == [learning_part(r) for r in rows(ref)]
    assert [r["iteration"] for r in rows(run)] == list(range(1, 7))
    summaries = [json.loads((d / "summary.json").read_text()) for d in (run, ref)]
    for summary in summaries:
        summary["meta"].pop("perf")
    assert summaries[0] == summaries[1] and len(summaries[0]["meta"]["weights_sha256"]) == 64
    # nothing left behind: temporary files, Ray processes of the killed attempts
    assert not list(run.glob(".*.tmp*")) and not list(run.glob("checkpoints/.tmp_*"))
    assert not (run / "ray_session.json").exists()
    assert len(sessions) == 2 and left_behind                 # Ray's agents outlive a driver
    assert all(ray_session_processes(Path(s)) == [] for s in sessions)     # the next stops them
    # one offline wandb run holding the whole history once
    wandb_id = (run / "wandb_id.txt").read_text()
    folders = list((run / "wandb").glob(f"offline-run-*-{wandb_id}"))
    assert len(folders) == 1
    history = wandb_history(folders[0] / f"run-{wandb_id}.wandb")
    assert [h["iteration"] for h in history] == list(range(1, 7))

    # a checkpoint is code: a planted pickle runs neither on export nor on resume
    checkpoint = sorted((run / "checkpoints").glob("iter_*"))[-1]
    marker = tmp_path / "payload-ran"
    import pickle
    (checkpoint / "class_and_ctor_args.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    bundle = export_checkpoint(checkpoint, tmp_path / "bundle")
    assert (bundle / "model.onnx").is_file() and not marker.exists()
    with pytest.raises(ConfigError, match="class_and_ctor_args.pkl was changed.*trust_checkpoint"):
        train(load(*small, "resume=true"), run)
    assert not marker.exists()


@pytest.mark.slow
def test_two_by_two_multirun_writes_four_separate_complete_runs(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = command("train -m agent.lr", extra=[          # the README's grid, two seeds
        "experiment=smoke", *SMALL_PPO, "budget=2048", "eval.episodes=32",
        "eval.baselines=[random]", "logger=wandb_offline", "seed=0,1",
        f"hydra.sweep.dir={sweep}", f"ray.temp_dir=/tmp/ray-m{os.getpid()}"])
    env = {**os.environ, "WANDB_SILENT": "true"}
    env.pop("WANDB_MODE", None)
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    configs, curves, wandb_ids = set(), [], set()
    for job in jobs:
        run = json.loads((job / "run.json").read_text())["config"]
        configs.add((run["agent"]["lr"], run["seed"]))
        metrics = rows(job)
        assert metrics and metrics[-1]["env_steps"] >= 2048          # complete
        assert (job / "summary.json").exists() and (job / "policy" / "model.onnx").exists()
        curves.append(tuple(r["losses/policy_loss"] for r in metrics))
        wandb_ids.add((job / "wandb_id.txt").read_text())
        assert list((job / "wandb").glob("offline-run-*"))         # its own wandb run
    assert configs == {(1e-4, 0), (1e-4, 1), (3e-4, 0), (3e-4, 1)}
    assert len(set(curves)) == 4 and len(wandb_ids) == 4           # nothing shared

    from experiments.report import write_report                    # and the comparison
    report = write_report(sweep, reps=200)
    assert {r["configuration"] for r in report["table"]} == {"agent.lr=0.0001",
                                                            "agent.lr=0.0003"}
    assert all(r["runs"] == 2 and r["seeds"] == "0 1" for r in report["table"])
    for name in ("report.csv", "report.md", "report.html", "learning_curves.png"):
        assert (sweep / name).stat().st_size > 0
    assert readability_problems(sweep) == []


def test_a_run_directory_holds_one_run_at_a_time(tmp_path):
    from personarl.locks import InUseError, exclusive_lock

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom personarl.locks import exclusive_lock\n"
         "lock = exclusive_lock(sys.argv[1], '{holder}')\nprint('held', flush=True)\n"
         "time.sleep(120)", str(tmp_path / "run.lock")],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        cfg = load(*SMOKE, "agent=linucb", "eval.episodes=64")
        with pytest.raises(InUseError, match=f"is in use by a run: pid {holder.pid} on "):
            train(cfg, tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["run.lock"]   # nothing written
    finally:
        holder.send_signal(signal.SIGKILL)                 # the kernel frees the lock
        holder.wait()
    exclusive_lock(tmp_path / "run.lock", "{holder}").close()


def test_an_online_baseline_resumes_bit_for_bit(tmp_path):
    """Saved mid-stream (users in flight, the policy's generator), restored into a fresh
    learner: the next iterations are the ones the original trains."""
    import numpy as np

    from experiments.job import build_learner
    from experiments.wiring import validate

    run = validate(load(*SMOKE, "agent=thompson"))
    first = build_learner(run, tmp_path)
    first.train()
    first.save(tmp_path)
    want = [learning_part(first.train()) for _ in range(2)]
    again = build_learner(run, tmp_path)
    again.restore(tmp_path)
    assert [learning_part(again.train()) for _ in range(2)] == want
    for name, value in vars(first.policy()).items():
        if isinstance(value, np.ndarray):
            assert np.array_equal(value, getattr(again.policy(), name)), name
