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
