"""The benchmark CLI prints and saves its figures; bad arguments are usage errors."""

from __future__ import annotations

import json
import subprocess
import sys


def test_env_benchmark_writes_every_figure(tmp_path):
    out = tmp_path / "env.json"
    run = subprocess.run([sys.executable, "-m", "experiments.bench", "env", "--seconds",
                          "0.05", "--repeats", "1", "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    singles = result["single_env_steps_per_s"]
    assert set(singles) == {"AgentRouting-v0 (info_level=full)",
                            "AgentRouting-v0 (info_level=none)", "CartPole-v1"}
    assert all(v > 100 for v in singles.values())
    assert set(result["batched_user_steps_per_s"]) == {"1", "64", "4096"}
    assert result["machine"]["cores"] >= 1 and "CartPole-v1" in run.stdout


def test_fusion_benchmark_reports_accuracy_and_bots(tmp_path):
    out = tmp_path / "fusion.json"
    run = subprocess.run([sys.executable, "-m", "experiments.bench", "fusion", "--users",
                          "200", "--particles", "50", "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    acc = result["accuracy"]
    assert acc["50"]["all"][0] > acc["1"]["all"][0]          # ours improves with data
    assert set(result["bots"]["10"]) == {"precision", "recall"}


def test_bad_benchmark_arguments_are_usage_errors(tmp_path):
    run = subprocess.run([sys.executable, "-m", "experiments.bench", "env", "--seconds",
                          "-1", "--out", str(tmp_path / "x.json")],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "--seconds=-1.0 must be positive" in run.stderr
    assert not (tmp_path / "x.json").exists()
    run = subprocess.run([sys.executable, "-m", "experiments.bench", "nope"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "invalid choice" in run.stderr
