"""The benchmark CLI prints and saves its figures; bad arguments are usage errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import envs
from personarl.backend import numba_available


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.bench", *args],
                          capture_output=True, text=True, timeout=300)


def bench_json(out: Path, *args: str) -> tuple[dict[str, Any], str]:
    run = bench(*args, "--out", str(out))
    assert run.returncode == 0, run.stderr
    return json.loads(out.read_text()), run.stdout


def test_env_benchmark_writes_every_figure(tmp_path):
    result, stdout = bench_json(tmp_path / "env.json", "env", "--seconds", "0.05",
                                "--repeats", "1", "--scaling", "1,16", "--users", "20000")
    ours = [env_id.split("/")[1] for env_id in envs.env_ids()]
    backends = ("numpy", "numba") if numba_available() else ("numpy",)
    assert set(result["single"]) == {f"{e} {b} info={level}" for e in ours
                                     for b in backends for level in ("full", "none")}
    assert all(v["steps_per_s"] > 100 and v["ratio_to_cartpole"] > 0
               for v in result["single"].values())
    threaded = {f"{e} numba B=4096 threads=2" for e in ours if "numba" in backends}
    assert set(result["batched"]) == {f"{e} {b} B=4096" for e in ours
                                      for b in backends} | threaded
    assert set(result["scaling"]) == set(ours)
    assert all(set(curve) == {"1", "16"} and curve["16"]["bytes_per_lane"] > 0
               for curve in result["scaling"].values())
    assert result["population"]["users"] == 20000
    sampled = {*backends, *(["numba threads=2"] if "numba" in backends else [])}
    assert set(result["population"]) == {"users", "seconds_10x_normals", *sampled}
    assert all(result["population"][key]["ratio"] > 0 for key in sampled)
    assert result["machine"]["cores"] >= 1 and "CartPole-v1" in stdout


def test_fusion_benchmark_reports_accuracy_and_bots(tmp_path):
    result, _ = bench_json(tmp_path / "fusion.json", "fusion", "--users", "200",
                           "--particles", "50")
    acc = result["accuracy"]
    assert acc["50"]["all"][0] > acc["1"]["all"][0]          # ours improves with data
    assert set(result["bots"]["10"]) == {"precision", "recall"}


def test_discovery_benchmark_reports_ari_against_the_reference(tmp_path):
    result, stdout = bench_json(tmp_path / "d.json", "discovery", "--users", "600",
                                "--seeds", "1", "--k-seeds", "2", "--speed-users", "3000",
                                "--sessions", "1500")
    cell = result["accuracy"]["separated (concentration 0.5)"]["200"]
    assert cell["seeds"] == 2 and sum(cell["chosen_k"].values()) == 2
    assert 0 < cell["k=6"]["ari_reference"] <= 1 and cell["k=6"]["ari"] > 0.3
    assert result["speed"]["users"] == 3000 and result["speed"]["seconds"] > 0
    assert 0 < result["sessions"]["behaviour + signals (12)"]["ari"] <= 1
    assert "selection + final fit" in stdout


def test_evolution_and_rankings_benchmarks_report_against_the_truth(tmp_path):
    result, stdout = bench_json(tmp_path / "e.json", "evolution", "--users", "600",
                                "--seeds", "1", "--windows", "3")
    split = result["events"]["split, exploration -0.2"]
    assert split["kind"] == "split" and split["shift_sd"] > 1 and split["seeds"] == 1
    assert set(result["stationary"]) == {"stationary (drift_rate 0)",
                                         "no events, default drift_rate 0.03"}
    assert "events per tested transition" in stdout
    result, stdout = bench_json(tmp_path / "r.json", "rankings", "--seeds", "1")
    taus = result["taus"]
    assert taus["100000"]["latent archetype"]["tau"] > taus["1000"]["latent archetype"]["tau"]


def test_privacy_benchmark_compares_the_ledger_with_opacus(tmp_path):
    result, stdout = bench_json(tmp_path / "p.json", "privacy", "--steps", "10", "--rows",
                                "2000", "--users", "500", "--settings", "1")
    first = result["accountants"][0]
    assert (first["q"], first["sigma"], first["steps"]) == (0.01, 1.1, 1000)
    assert all(abs(r["rdp_over_opacus_rdp"] - 1) < 0.01 for r in result["accountants"])
    assert result["erasure"]["found"] == result["erasure"]["removed"] > 0
    assert all(a["smallest"] >= 5 for a in result["anonymity"])
    assert result["dp_sgd"]["steps"] == 10
    assert "vs Opacus" in stdout


def test_policy_study_reports_the_table(tmp_path):
    result, stdout = bench_json(tmp_path / "p.json", "policies", "--episodes", "64")
    for study in ("intervention", "adaptation"):
        assert set(result[study]["policies"]) == {"random", "greedy", "oracle", "planner"}
        assert {"diff", "ci_low", "ci_high"} <= set(result[study]["planner_minus_oracle"])
    assert {"false_intervention_rate", "opt_out_rate", "mean"} <= set(
        result["intervention"]["policies"]["planner"])
    assert set(result["adaptation"]["best_style"]) == {
        "explorer", "optimizer", "socializer", "achiever", "helper", "learner"}
    assert stdout.count("planner − myopic oracle") == 2


def test_bad_benchmark_arguments_are_usage_errors(tmp_path):
    run = bench("env", "--seconds", "-1", "--out", str(tmp_path / "x.json"))
    assert run.returncode == 2 and "--seconds=-1.0 must be positive" in run.stderr
    assert not (tmp_path / "x.json").exists()
    run = bench("nope")
    assert run.returncode == 2 and "invalid choice" in run.stderr
    for scaling in ("16,x", "1,,2", "99999999999"):
        run = bench("env", "--scaling", scaling, "--out", str(tmp_path / "x.json"))
        assert run.returncode == 2 and f"--scaling='{scaling}': give batch sizes in" in run.stderr
    run = bench("env", "--seconds", "nan", "--out", str(tmp_path / "x.json"))
    assert run.returncode == 2 and "--seconds=nan must be positive and finite" in run.stderr
    assert not (tmp_path / "x.json").exists()


@pytest.mark.slow
def test_training_benchmark_times_both_learners_to_the_same_target(tmp_path):
    result, stdout = bench_json(tmp_path / "t.json", "train", "--experiment", "", "--budget",
                                "8192", "--seeds",
                                "1", "--eval-every", "4096", "--eval-episodes", "64")
    assert result["target"] == pytest.approx(0.9 * result["final_ppo_score"])
    for kind in ("rllib", "sb3"):
        assert result[kind]["steps_per_s"] > 0
        assert set(result[kind]["profile"]) == {"startup_s", "sample_s", "learn_s", "other_s"}
        assert len([r for r in result["runs"] if r["kind"] == kind]) == 1
    times = {kind: result[kind]["time_to_target_s"] for kind in ("rllib", "sb3")}
    for kind, t in times.items():     # reached exactly when an evaluation met the target
        curve = [r for r in result["runs"] if r["kind"] == kind][0]["curve"]
        assert (t is not None) == any(ret >= result["target"] for _, _, ret in curve)
    assert times["rllib"] is not None                # its own final evaluation meets 90% of it
    if times["sb3"] is None:          # a budget this small may leave SB3 short of it
        assert result["ratio_rllib_over_sb3"] is None
        assert "sb3 did not reach the target within the budget" in stdout
    else:
        assert result["ratio_rllib_over_sb3"] == pytest.approx(times["rllib"] / times["sb3"])
        assert "ratio ours / SB3 (time-to-target) =" in stdout


def test_bad_training_benchmark_arguments_are_usage_errors():
    run = bench("train", "--seeds", "0")
    assert run.returncode == 2 and "--seeds=0 must be positive" in run.stderr
    from experiments.bench.train import profile
    with pytest.raises(ValueError, match="ray_start='never'; valid: auto, always"):
        profile(ray_start="never")


def test_ope_speed_benchmark_reports_every_estimator(tmp_path):
    result, stdout = bench_json(tmp_path / "o.json", "ope", "--parts", "speed", "--rows",
                                "20000", "--resamples", "50")
    speed = result["speed"]
    assert speed["rows"] == 20000 and speed["resamples"] == 50
    assert set(speed["estimates"]) == {"ips", "snips", "dm", "dr", "sndr", "switch_dr"}
    for r in speed["estimates"].values():
        assert r["ci_low"] <= r["estimate"] <= r["ci_high"]
    assert speed["estimates_s"] > 0 and speed["bootstrap_s"] > 0
    assert "bootstrap resamples" in stdout and "one_step" not in result


def test_bad_ope_benchmark_arguments_are_usage_errors():
    run = bench("ope", "--parts", "speed,frob")
    assert run.returncode == 2 and "choose from speed, one_step, sequential" in run.stderr
    run = bench("serve", "--rate", "0")
    assert run.returncode == 2 and "--rate=0.0 must be positive" in run.stderr


def test_bad_serving_benchmark_arguments_are_usage_errors():
    run = bench("serve", "--parts", "http,frob")
    assert run.returncode == 2 and "choose from loader, http" in run.stderr
    run = bench("serve", "--ladder", "200,fast")
    assert run.returncode == 2 and "--ladder='200,fast': give positive request rates" in run.stderr
    run = bench("faults", "--kills", "0")
    assert run.returncode == 2 and "--kills=0 must be positive" in run.stderr
