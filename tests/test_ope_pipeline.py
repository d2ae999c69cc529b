"""Collecting logged data in the simulator and the OPE report end to end: propensities,
episode layout, unbiasedness against the simulated truth, the report, and refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agents.factory import make_policy
from envs.creator import vector_maker
from ope import estimators as E
from ope.collect import behaviour_distribution, collect, evaluation_probs, true_value
from ope.data import read_logged

ROOT = Path(__file__).resolve().parents[1]
ROUTING, INTERVENTION = "personarl/AgentRouting-v0", "personarl/InterventionTiming-v0"


def test_behaviour_distributions():
    p = np.array([[0.1, 0.7, 0.2]])
    assert np.allclose(behaviour_distribution(p, "epsilon", 0.3), [[0.1, 0.8, 0.1]])
    assert np.allclose(behaviour_distribution(p, "softmax", temperature=1.0), p)
    assert np.allclose(behaviour_distribution(p, "softmax", temperature=1e6), 1 / 3, atol=1e-4)
    assert np.allclose(behaviour_distribution(p, "greedy"), [[0, 1, 0]])
    with pytest.raises(ValueError, match="temperature=0"):
        behaviour_distribution(p, "softmax", temperature=0)
    with pytest.raises(ValueError, match="valid: \\['greedy', 'epsilon', 'softmax'\\]"):
        behaviour_distribution(p, "boltzmann")


def test_collect_logs_whole_episodes_with_the_probabilities_used():
    kw = {}
    policy = make_policy(INTERVENTION, "greedy", kw, seed=0)
    policy.learning = False
    data = collect(policy, vector_maker(INTERVENTION, kw), 300, seed=3, exploration="epsilon",
                   epsilon=0.3, batch=128)
    assert data.n_episodes == 300 and data.horizon > 1
    assert data.done[np.r_[data.starts[1:] - 1, data.n - 1]].all()     # each ends done
    greedy = data.action_probs.argmax(axis=1) == data.action
    k = data.n_actions
    assert np.allclose(data.propensity[greedy], 0.7 + 0.3 / k)
    assert np.allclose(data.propensity[~greedy], 0.3 / k)
    assert abs(greedy.mean() - (0.7 + 0.3 / k)) < 0.03                 # drawn as logged
    again = collect(policy, vector_maker(INTERVENTION, kw), 300, seed=3, epsilon=0.3,
                    batch=128)
    assert np.array_equal(again.action, data.action)                    # seeded


def test_ips_is_unbiased_against_the_simulated_truth():
    kw = {"horizon": 1}
    make_env = vector_maker(ROUTING, kw)
    behaviour = make_policy(ROUTING, "random", kw, seed=0)
    data = collect(behaviour, make_env, 20000, seed=11, exploration="softmax")
    target = make_policy(ROUTING, "greedy", kw, seed=0)
    target.learning = False
    pi_e = evaluation_probs(target, data.obs, "greedy")
    truth = true_value(target, make_env, 40000, seed=12)
    ips = E.ips(data, pi_e)
    half = 1.96 * ips.plain.std() / np.sqrt(data.n)
    assert abs(ips.value() - truth["value"]) < 3 * half + (truth["ci_high"] - truth["value"])


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_collect_and_evaluate_commands(tmp_path, tiny_bundles):
    logged = tmp_path / "logged.parquet"
    out = run("experiments.collect", "env.horizon=1", "episodes=3000", f"out={logged}",
              f"hydra.run.dir={tmp_path / 'c'}", cwd=ROOT)
    assert out.returncode == 0, out.stderr[-1500:]
    data = read_logged(logged)
    assert data.meta["env_id"] == ROUTING and data.meta["behaviour"] == "persona_router"
    assert data.meta["env_config"]["horizon"] == 1 and data.meta["epsilon"] == 0.2
    report = tmp_path / "e"
    out = run("experiments.evaluate", f"data={logged}", "truth_episodes=2000",
              "bootstrap=200", f"hydra.run.dir={report}", cwd=ROOT)
    assert out.returncode == 0, out.stderr[-1500:]
    summary = json.loads((report / "summary.json").read_text())
    assert set(summary["policies"]) == {"greedy", "random"}
    est = summary["policies"]["greedy"]["estimates"]
    assert set(est) == set(E.ONE_STEP)
    for r in est.values():
        assert r["ci_low"] <= r["estimate"] <= r["ci_high"] and r["normalised_error"] >= 0
    assert summary["recommendation"]["estimator"] in E.ONE_STEP
    for name in ("report.md", "report.html", "estimates.png"):
        assert (report / name).stat().st_size > 0
    assert "Recommended estimator" in (report / "report.md").read_text()

    # a bundle trained on another env is refused, naming both
    bad = run("experiments.evaluate", f"data={logged}",
              f"policies=[{tiny_bundles['continuous']}]", f"hydra.run.dir={tmp_path / 'x'}",
              cwd=ROOT)
    assert bad.returncode == 2
    assert "PersonalityAdaptation-v0, but the data is from personarl/AgentRouting-v0" in \
        bad.stdout + bad.stderr


@pytest.mark.slow
def test_unsupported_actions_get_a_loud_warning(tmp_path):
    logged = tmp_path / "greedy.parquet"
    out = run("experiments.collect", "env.horizon=1", "episodes=1000", "behaviour=greedy",
              "exploration.mode=greedy", f"out={logged}", f"hydra.run.dir={tmp_path / 'c'}",
              cwd=ROOT)
    assert out.returncode == 0, out.stderr[-1500:]
    out = run("experiments.evaluate", f"data={logged}", "policies=[random]",
              "truth_episodes=1000", "bootstrap=50", f"hydra.run.dir={tmp_path / 'e'}",
              cwd=ROOT)
    assert out.returncode == 0, out.stderr[-1500:]
    report = (tmp_path / "e" / "report.md").read_text()
    assert "**Warning:** the evaluation policy puts 83.3% of its probability on actions the " \
           "behaviour policy never takes" in report
    summary = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert summary["recommendation"]["estimator"] == "dm"
    for r in summary["policies"]["random"]["estimates"].values():
        assert np.isfinite(r["estimate"])                                # never a silent NaN


def test_logged_truth_lets_privileged_policies_be_evaluated(tmp_path):
    from ope.data import DataError, write_logged

    policy = make_policy(INTERVENTION, "greedy", {}, seed=0)
    policy.learning = False
    data = collect(policy, vector_maker(INTERVENTION, {}), 200, seed=1, epsilon=0.2,
                   record_truth=True)
    back = read_logged(write_logged(data, tmp_path / "log.parquet"))
    assert set(back.context) == set(data.context)
    assert back.context["user_tone_fit"].shape == (data.n, 3)
    assert np.array_equal(back.context["step"], back.step)      # the truth at decision time
    planner = make_policy(INTERVENTION, "planner", {}, seed=0)
    pi_e = evaluation_probs(planner, back.obs, context=back.context)
    assert pi_e.shape == (data.n, 6) and np.allclose(pi_e.sum(axis=1), 1.0)
    with pytest.raises(DataError, match="record_truth=true"):
        evaluation_probs(planner, back.obs)
