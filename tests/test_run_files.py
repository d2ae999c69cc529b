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
    left = [tmp_path / "checkpoints" / ".tmp_iter_000004", tmp_path / f".policy.tmp-{dead.pid}",
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
