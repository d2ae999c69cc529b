"""experiments.sweep: search spaces are checked before any trial; a tiny Optuna/ASHA sweep
runs the training code per trial and is reproducible with one concurrent trial."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from experiments.schema import register_configs
from experiments.sweep import check_space, rerun_seeds
from personarl.errors import ConfigError
from tests.readme import command
from tests.reports import readability_problems

ROOT = Path(__file__).resolve().parents[1]
register_configs()


def load(*overrides: str):
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return compose("train", overrides=["sweep=routing_small", *overrides])


@pytest.mark.parametrize("override, message", [
    ("+sweep.space.agent.colour={type: choice, values: [1, 2]}",
     "'agent.colour': unknown parameter"),
    ("sweep.space.agent.entropy_coeff={type: choice, values: []}",
     "'agent.entropy_coeff': a choice needs a non-empty list"),
    ("sweep.space.agent.clip_param={type: uniform, low: 0.3, high: 0.1}",
     "'agent.clip_param': needs numbers low < high; got low=0.3, high=0.1"),
    ("sweep.space.agent.lr={type: loguniform, low: 0, high: 0.1}",
     "'agent.lr': loguniform needs low > 0"),
    ("sweep.space.agent.lr={type: uniform, low: -1, high: 0.1}",
     "'agent.lr': value -1 is invalid"),
    ("sweep.space.agent.lr={type: normal, low: 1, high: 2}",
     "'agent.lr': needs type: one of"),
])
def test_invalid_search_spaces_fail_naming_the_parameter(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_space(load(override))


def test_the_shipped_space_is_valid():
    space = check_space(load())
    assert set(space) == {"agent.lr", "agent.entropy_coeff", "agent.clip_param"}


def sweep(tmp_path: Path, name: str) -> dict:
    out = subprocess.run(       # the README's search, shrunk to seconds
        command("experiments.sweep sweep=routing_small budget=", extra=[
            "experiment=smoke", "logger=none", "budget=3072", "agent.train_batch_size=1024",
            "agent.minibatch_size=256", "agent.num_envs_per_env_runner=16",
            "eval.episodes=32", "sweep.num_samples=2", "sweep.top_k=1", "sweep.reruns=1",
            f"hydra.run.dir={tmp_path / name}", f"ray.temp_dir=/tmp/ray-s{os.getpid()}"]),
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    # quiet: no Ray, Tune, Optuna or RLlib chatter, the two result lines only
    assert out.stderr == "" and len(out.stdout.splitlines()) == 2, (out.stdout, out.stderr)
    return json.loads((tmp_path / name / "sweep.json").read_text())


@pytest.mark.slow
def test_tiny_sweep_runs_trials_and_repeats_itself(tmp_path):
    first, second = sweep(tmp_path, "a"), sweep(tmp_path, "b")
    assert len(first["trials"]) == 2 and first["best"] is not None
    for trial in first["trials"]:
        assert trial["error"] is None
        run = Path(trial["path"])
        assert (run / "metrics.jsonl").exists() and run.parent == tmp_path / "a" / "trials"
        assert set(trial["config"]) == {"agent.lr", "agent.entropy_coeff", "agent.clip_param"}
    assert first["best"]["finished"] and first["best"]["eval_return"] is not None
    # the re-run's fresh seed comes from the run's seed (0) by purpose, never the seed itself
    assert [(r["rank"], r["seed"]) for r in first["reruns"]] == [(0, rerun_seeds(0, 1)[0])]
    assert first["reruns"][0]["seed"] != 0 and first["seed"] == 0
    assert (Path(first["reruns"][0]["path"]) / "summary.json").exists()
    assert first["winner"]["config"] == first["reruns"][0]["config"]   # the only one re-run
    assert first["winner"]["eval_returns"] == [first["reruns"][0]["eval_return"]]
    assert [t["config"] for t in first["trials"]] == [t["config"] for t in second["trials"]]
    assert first["best"]["config"] == second["best"]["config"]
    report = subprocess.run(command(                               # the sweep's report
        "experiments.report", {"outputs/<date>/<time>": tmp_path / "a"}, ["bootstrap=200"]),
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    assert (tmp_path / "a" / "parameters.png").exists()
    assert readability_problems(tmp_path / "a") == []
    bad = subprocess.run([sys.executable, "-m", "experiments.sweep", "sweep=routing_small",
                          "sweep.space.agent.lr={type: uniform, low: 1, high: 0}",
                          f"hydra.run.dir={tmp_path / 'c'}"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "'agent.lr': needs numbers low < high" in \
        bad.stdout + bad.stderr
    assert not (tmp_path / "c" / "tune").exists()                  # no trial started


@pytest.mark.slow
def test_sweep_runs_on_an_existing_ray_cluster(tmp_path):
    import secrets
    import signal
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = f"/tmp/rh{os.getpid()}"                # Ray's socket paths must stay short
    token = secrets.token_hex(16)                 # Ray >= 2.59 authenticates every client
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    head = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
         "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
         "--include-dashboard=false", f"--temp-dir={temp}", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        time.sleep(8)
        assert head.poll() is None, "ray start --head exited"
        out = subprocess.run(
            [sys.executable, "-m", "experiments.sweep", "sweep=routing_small",
             "experiment=smoke", "logger=none", "budget=2048", "agent.train_batch_size=1024",
             "agent.minibatch_size=256", "agent.num_envs_per_env_runner=16",
             "eval.episodes=32", "eval.baselines=[random]", "sweep.num_samples=2",
             "sweep.top_k=0", f"ray.address=127.0.0.1:{port}",
             f"hydra.run.dir={tmp_path / 'sweep'}"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
    finally:                                      # stop this head only (not `ray stop`)
        os.killpg(head.pid, signal.SIGKILL)
        subprocess.run(["pkill", "-KILL", "-f", temp], check=False)
        head.wait()
    result = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert result["cluster"].endswith(f":{port}")             # the trials ran there
    assert len(result["trials"]) == 2 and all(t["error"] is None for t in result["trials"])


def test_aggregates_by_hand():
    import numpy as np

    from experiments.report import iqm_ci, probability_of_improvement

    point, low, high = iqm_ci(np.array([1.0, 2.0, 3.0, 4.0]), reps=500)
    assert point == pytest.approx(2.5) and low <= point <= high       # middle half: 2, 3
    # pairs (2,1) win, (2,3) lose, (3,1) win, (3,3) tie -> (1 + 0 + 1 + 0.5) / 4
    p, low, high = probability_of_improvement(np.array([2.0, 3.0]), np.array([1.0, 3.0]))
    assert p == pytest.approx(0.625) and 0.0 <= low <= p <= high <= 1.0


def test_rerun_seeds_are_fresh_distinct_and_reproducible():
    seeds = rerun_seeds(0, 3)
    assert seeds == rerun_seeds(0, 3) and len(set(seeds)) == 3 and 0 not in seeds
    assert rerun_seeds(1, 3) != seeds and all(0 <= s < 2**32 for s in seeds)
