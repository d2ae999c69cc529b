"""Crash-safe run files: metrics truncation (torn lines too) and atomic, rotated checkpoints."""

from __future__ import annotations

import json

import pytest

from experiments.run_files import Checkpoints, MetricsLog


def test_metrics_truncation_drops_later_rows_and_a_torn_line(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for i in range(1, 6):
        log.append({"iteration": i, "env_steps": 100 * i})
    with open(log.path, "a") as f:
        f.write('{"iteration": 6, "env_st')                    # killed mid-write
    assert [r["iteration"] for r in log.rows()] == [1, 2, 3, 4, 5]
    assert log.truncate_after(3) == 3
    assert [r["iteration"] for r in log.rows()] == [1, 2, 3]
    assert log.path.read_text().endswith("\n")


def test_checkpoints_are_complete_or_absent_and_rotate(tmp_path):
    ckpts = Checkpoints(tmp_path / "ck", keep=2)

    def write(d):
        (d / "state.json").write_text("{}")

    for it in (1, 2, 3):
        ckpts.save(write, {"iteration": it, "env_steps": it * 10})
    assert [p.name for p in ckpts.complete()] == ["iter_000002", "iter_000003"]
    assert ckpts.latest().is_absolute()
    assert Checkpoints.meta(ckpts.latest())["env_steps"] == 30

    def crash(d):
        (d / "half").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ckpts.save(crash, {"iteration": 4, "env_steps": 40})
    assert ckpts.latest().name == "iter_000003"               # the torn one does not count
    ckpts.save(write, {"iteration": 4, "env_steps": 40})         # and is replaced cleanly
    assert json.loads((ckpts.latest() / "meta.json").read_text())["iteration"] == 4


def test_a_killed_attempts_temporary_files_are_removed_and_a_live_export_is_not(tmp_path):
    import os
    import subprocess
    import sys

    from experiments.run_files import clean_leftovers

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()                                               # a pid that no longer runs
    left = [tmp_path / "checkpoints" / ".tmp_iter_000004",
            tmp_path / "checkpoints" / ".old_iter_000003", tmp_path / f".policy.tmp-{dead.pid}",
            tmp_path / f".policy.old-{dead.pid}"]
    for d in left:
        d.mkdir(parents=True)
        (d / "model.onnx").write_bytes(b"half")
    (tmp_path / ".summary.json.tmp").write_text("{")
    live = tmp_path / f".policy.tmp-{os.getpid()}"            # an export still running
    live.mkdir()
    kept = [tmp_path / "checkpoints" / "iter_000003", tmp_path / "policy"]
    for d in kept:
        d.mkdir(parents=True)
    removed = clean_leftovers(tmp_path)
    assert sorted(removed) == sorted(left + [tmp_path / ".summary.json.tmp"])
    assert not any(p.exists() for p in removed) and live.exists()
    assert all(d.exists() for d in kept)


def test_checkpoint_digests_are_recorded_before_the_rename_and_verified(tmp_path):
    run_file = tmp_path / "run.json"
    run_file.write_text(json.dumps({"config_hash": "x", "config": {}}))
    ckpts = Checkpoints(tmp_path / "ck", keep=2, run_file=run_file)

    def write(d):
        (d / "module").mkdir()
        (d / "module" / "weights.bin").write_bytes(b"w")
        (d / "state.pkl").write_bytes(b"s")

    for it in (1, 2, 3):
        ckpts.save(write, {"iteration": it, "env_steps": it})
    run = json.loads(run_file.read_text())
    assert sorted(run["checkpoints"]) == ["iter_000002", "iter_000003"]      # pruned too
    assert sorted(run["checkpoints"]["iter_000003"]) == ["meta.json", "module/weights.bin",
                                                         "state.pkl"]
    assert run["config_hash"] == "x"                                          # kept
    latest = ckpts.latest()
    assert ckpts.verify(latest) == []
    (latest / "state.pkl").write_bytes(b"payload")
    (latest / "module" / "weights.bin").unlink()
    (latest / "extra.pkl").write_bytes(b"e")
    assert ckpts.verify(latest) == ["state.pkl was changed", "module/weights.bin is missing",
                                    "extra.pkl was added"]
    (latest / "extra.pkl").unlink()
    (latest / "extra.pkl").symlink_to(latest / "state.pkl")
    assert "is not a regular file" in ckpts.verify(latest)[0]
    # killed at any step of a save, every complete checkpoint keeps its record (keep=1
    # included); a re-save of the same iteration sets the old one aside first
    one = Checkpoints(tmp_path / "one", keep=1, run_file=run_file)
    steps = []

    def killed_at(step):
        def fake(*args, **kwargs):
            steps.append(step)
            if len(steps) == target:
                raise KeyboardInterrupt
            return real[step](*args, **kwargs)
        return fake

    import experiments.run_files as rf
    real = {"replace": rf.os.replace, "rmtree": rf.shutil.rmtree, "record": one._record}
    one.save(write, {"iteration": 1, "env_steps": 1})
    for target in range(1, 6):
        for it in (target + 1, target + 1):            # a new iteration, then the same again
            steps.clear()
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(rf.os, "replace", killed_at("replace"))
                mp.setattr(rf.shutil, "rmtree", killed_at("rmtree"))
                mp.setattr(one, "_record", killed_at("record"))
                try:
                    one.save(write, {"iteration": it, "env_steps": it})
                except KeyboardInterrupt:
                    pass
            assert one.latest() is not None and one.verify(one.latest()) == [], (target, steps)
    foreign = tmp_path / "ck" / "iter_000009"
    foreign.mkdir()
    (foreign / "meta.json").write_text("{}")
    assert "holds no record of iter_000009" in ckpts.verify(foreign)[0]


def test_resume_refuses_a_checkpoint_that_differs_from_its_record(tmp_path):
    from hydra import compose, initialize_config_dir

    from experiments.schema import register_configs
    from experiments.job import train
    from personarl.errors import ConfigError
    from tests.test_train_run import ROOT

    register_configs()
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=smoke", "logger=none", "agent=linucb",
                                          "eval.episodes=32", "budget=8192"])
        resume = compose("train", overrides=["experiment=smoke", "logger=none",
                                             "agent=linucb", "eval.episodes=32",
                                             "budget=8192", "resume=true"])
        trusted = compose("train", overrides=["experiment=smoke", "logger=none",
                                              "agent=linucb", "eval.episodes=32",
                                              "budget=8192", "resume=true",
                                              "trust_checkpoint=true"])
    train(cfg, tmp_path)
    latest = sorted((tmp_path / "checkpoints").glob("iter_*"))[-1]
    (latest / "state.json").write_text((latest / "state.json").read_text() + " ")
    with pytest.raises(ConfigError, match=r"iter_000002 is not what this run saved \(state"
                                          r"\.json was changed\).*trust_checkpoint=true"):
        train(resume, tmp_path)
    result = train(trusted, tmp_path)                                   # the user's call
    assert result["meta"]["iterations"] == 2 and result["meta"]["perf"]["restored_from"] == 2


def test_export_reads_only_the_weights_file(tmp_path):
    from agents.serving.bundle import BundleError
    from agents.learners.export import actor_from_checkpoint
    from envs import ROUTING_ID

    agent = {"name": "ppo", "hidden": [8], "activation": "tanh"}
    (tmp_path / "class_and_ctor_args.pkl").write_bytes(b"never read")
    with pytest.raises(BundleError, match="has no policy_weights.pt; a bundle is exported "
                                          "from that file only"):
        actor_from_checkpoint(tmp_path, agent, ROUTING_ID, {})
    (tmp_path / "policy_weights.pt").write_bytes(b"not a state dict")
    with pytest.raises(BundleError, match="policy_weights.pt is not a readable weights file"):
        actor_from_checkpoint(tmp_path, agent, ROUTING_ID, {})


def test_ray_leftovers_are_found_through_their_session_directory_only(tmp_path):
    import subprocess
    import sys

    from experiments.run_files import record_ray_session, stop_ray_leftovers

    session, elsewhere = tmp_path / "session_1", tmp_path / "other"
    for d in (session, elsewhere):
        (d / "logs").mkdir(parents=True)
    hold = "import sys, time\nf = open(sys.argv[1], 'a')\nprint('open', flush=True)\ntime.sleep(60)"
    ours = subprocess.Popen([sys.executable, "-c", hold, str(session / "logs" / "agent.out")],
                            stdout=subprocess.PIPE, text=True)
    theirs = subprocess.Popen([sys.executable, "-c", hold, str(elsewhere / "logs" / "a.out")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert ours.stdout.readline() == theirs.stdout.readline() == "open\n"
        record_ray_session(tmp_path, str(session))
        assert stop_ray_leftovers(tmp_path, grace_s=5.0) == [ours.pid]
        assert ours.wait(timeout=5) is not None and theirs.poll() is None
        assert not (tmp_path / "ray_session.json").exists()
        assert stop_ray_leftovers(tmp_path) == []                 # nothing recorded: nothing
        for named in ("", "relative/session_1", str(elsewhere), "/"):   # never a broad match
            record_ray_session(tmp_path, named)
            assert stop_ray_leftovers(tmp_path) == [] and theirs.poll() is None
    finally:
        for p in (ours, theirs):
            p.kill()
            p.wait()
