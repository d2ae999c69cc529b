"""A/B statistics (issue 24, first step): Welch, CUPED, SRM, power, Holm, confidence
sequences and group parity."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from abtest import (confidence_sequence, cuped, holm, sequential_interval, srm_pvalue,
                    users_per_arm, welch)
from personarl.errors import ConfigError, DataError
from personarl.parity import group_parity


def test_welch_absolute_and_relative():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1.0, 400), rng.normal(1.2, 2.0, 300)
    d = welch(a, b, relative=False)
    assert d.p_value == pytest.approx(stats.ttest_ind(b, a, equal_var=False).pvalue)
    se = np.sqrt(a.var(ddof=1) / 400 + b.var(ddof=1) / 300)
    assert d.se == pytest.approx(se) and d.estimate == pytest.approx(b.mean() - a.mean())
    assert d.low < d.estimate < d.high
    r = welch(a, b)                                    # control mean > 0: relative
    assert r.relative and r.estimate == pytest.approx(b.mean() / a.mean() - 1)
    assert r.se == pytest.approx(np.sqrt(b.var(ddof=1) / 300 + (b.mean() / a.mean()) ** 2
                                         * a.var(ddof=1) / 400) / a.mean())
    assert not welch(a - 5, b).relative                # a mean <= 0: absolute, in units
    with pytest.raises(DataError, match="treatment has 0 users; a readout needs at least 2"):
        welch(a, [])
    with pytest.raises(DataError, match="relative change needs a positive control mean"):
        welch(a - 5, b, relative=True)


def test_sample_ratio_mismatch_and_power():
    assert srm_pvalue([5200, 4800], [0.5, 0.5]) < 1e-3          # 52/48 at n = 10k: blocks
    assert srm_pvalue([5050, 4950], [0.5, 0.5]) > 1e-3          # 50.5/49.5: does not
    with pytest.raises(ConfigError, match="must be positive and sum to 1"):
        srm_pvalue([10, 10], [0.6, 0.6])
    from statsmodels.stats.power import tt_ind_solve_power
    n = users_per_arm(0.1, 1.0)
    assert n == int(np.ceil(tt_ind_solve_power(effect_size=0.1, alpha=0.05, power=0.8)))
    assert users_per_arm(0.05, 1.0) > 3.9 * n                  # n ∝ 1 / mde²
    with pytest.raises(ConfigError, match="mde=-0.1 must be a positive"):
        users_per_arm(-0.1, 1.0)


def test_cuped_is_unbiased_and_removes_rho_squared():
    rng = np.random.default_rng(1)
    n, rho = 200_000, 0.6
    x = rng.normal(size=2 * n)
    y = rho * x + np.sqrt(1 - rho ** 2) * rng.normal(size=2 * n)
    y[n:] += 0.05                                                # the treatment's effect
    ya, yb, theta = cuped(y[:n], y[n:], x[:n], x[n:])
    assert theta == pytest.approx(rho, abs=0.01)
    assert (yb.mean() - ya.mean()) == pytest.approx(0.05, abs=0.006)
    assert ya.var() / y[:n].var() == pytest.approx(1 - rho ** 2, abs=0.01)
    with pytest.raises(DataError, match="one covariate value per user"):
        cuped(y[:n], y[n:], x[:10], x[n:])


def test_holm_and_confidence_sequences():
    adjusted, reject = holm([0.01, 0.04, 0.03])
    assert adjusted.tolist() == pytest.approx([0.03, 0.06, 0.06]) and reject.tolist() == [
        True, False, False]
    rng = np.random.default_rng(2)
    d = welch(rng.normal(1, 1, 2000), rng.normal(1, 1, 2000))
    low, high = sequential_interval(d)
    assert low < d.low and high > d.high                  # wider than the fixed-horizon one
    widths = [np.diff(confidence_sequence(0.0, 1 / np.sqrt(n), n)).item()
              for n in (100, 1000, 10_000)]
    assert widths[0] > widths[1] > widths[2]


def test_group_parity_marks_small_groups_and_alerts_on_a_clear_gap():
    rng = np.random.default_rng(3)
    g = np.r_[np.zeros(3000), np.ones(3000), np.full(40, 2)]
    y = rng.exponential(1.0, len(g)) * np.where(g == 1, 0.7, 1.0)
    p = group_parity(y, g, rng, reps=300)
    assert p.measure == "ratio" and p.insufficient == {"2.0": 40}
    assert set(p.groups) == {"0.0", "1.0"} and p.alert and p.high < 0.9
    assert p.low < p.value == pytest.approx(p.groups["1.0"]["mean"] / p.groups["0.0"]["mean"])
    fair = group_parity(rng.exponential(1.0, 6000), g[:6000], rng, reps=300)
    assert not fair.alert
    signed = group_parity(rng.normal(0, 1, 6000), g[:6000], rng, reps=300)
    assert signed.measure == "difference" and not signed.alert
    with pytest.raises(DataError, match="one value and one group per user"):
        group_parity(y, g[:10], rng)


def test_readout_decides_and_refuses_what_it_cannot_read():
    from abtest.readout import readout

    rng = np.random.default_rng(4)
    a = {"return": rng.exponential(1.0, 4000), "churned": rng.random(4000) < 0.5}
    better = {"return": rng.exponential(1.2, 4000), "churned": rng.random(4000) < 0.5}
    r = readout(a, better, primary="return", rng=rng, bootstrap_reps=200)
    assert r.decision == "ship" and r.metrics["return"].verdict == 1
    assert r.metrics["return"].boot_low < r.metrics["return"].diff.estimate \
        < r.metrics["return"].boot_high
    churnier = {**better, "churned": rng.random(4000) < 0.6}
    assert readout(a, churnier, primary="return").decision == "keep"   # a guardrail worse
    same = {k: v[rng.permutation(4000)] for k, v in a.items()}
    assert readout(a, same, primary="return").decision == "inconclusive"
    lopsided = {k: v[:3500] for k, v in a.items()}
    blocked = readout(a, lopsided, primary="return")
    assert blocked.decision == "blocked" and "sample-ratio mismatch" in blocked.reason
    with pytest.raises(DataError, match=r"metric\(s\) \['churned'\] are missing in one arm"):
        readout(a, {"return": better["return"]}, primary="return")
    with pytest.raises(DataError, match="control has 0 users"):
        readout({k: v[:0] for k, v in a.items()}, better, primary="return")
    with pytest.raises(ConfigError, match="primary='revenue' is not a metric"):
        readout(a, better, primary="revenue")


def test_simulated_users_have_potential_outcomes_and_a_pre_period():
    from abtest.simulate import user_outcomes
    from agents.baselines.factory import make_policy
    from envs.creator import vector_maker

    make_env = vector_maker("personarl/AgentRouting-v0", {})
    policy = make_policy("personarl/AgentRouting-v0", "oracle", {}, seed=0)  # deterministic
    now = user_outcomes(policy, make_env, 3000, 0, batch=1000)
    again = user_outcomes(policy, make_env, 3000, 0, batch=1000)
    before = user_outcomes(policy, make_env, 3000, 0, session=1, batch=1000)
    assert np.array_equal(now.metrics["return"], again.metrics["return"])   # same users
    assert np.array_equal(now.group, before.group)                         # same users
    assert not np.array_equal(now.metrics["return"], before.metrics["return"])  # new session
    assert 0 < np.corrcoef(now.metrics["return"], before.metrics["return"])[0, 1] < 0.9
    assert set(now.metrics) == {"return", "reward_per_step", "length", "churned",
                                "conversions"}
    learning = make_policy("personarl/AgentRouting-v0", "greedy", {}, seed=0)
    with pytest.raises(ConfigError, match="is still learning"):
        user_outcomes(learning, make_env, 10, 0)


def _abtest(tmp_path, *overrides: str):
    from hydra import compose, initialize_config_dir

    from experiments.abtest import abtest
    from experiments.schema import register_configs
    from tests.readme import ROOT

    register_configs()
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("abtest", overrides=["warmup_steps=50", *overrides])
    return abtest(cfg, tmp_path)


def test_a_clearly_worse_treatment_is_rolled_back_and_read_as_worse(tmp_path):
    import json

    from tests.readme import overrides

    _abtest(tmp_path, *overrides("treatment=random users=4000 looks=10"))
    out = json.loads((tmp_path / "abtest.json").read_text())
    assert out["decision"] == "keep"
    assert out["rolled_back"] is not None and out["rolled_back"]["high"] < -0.05
    assert out["metrics"]["return"]["truth"] < -0.3                 # the simulator's truth
    m = out["metrics"]["return"]["cuped"]
    assert m["low"] < out["metrics"]["return"]["truth"] < m["high"]
    assert set(out["fairness"]["control"]["groups"]) == {"group_a", "group_b", "group_c"}
    assert "Rolled back" in (tmp_path / "report.md").read_text()


def test_the_default_test_runs_as_the_readme_says(tmp_path):
    from tests.readme import overrides

    _abtest(tmp_path, *overrides("experiments.abtest$"), "users=2000")
    report = (tmp_path / "report.md").read_text()
    assert "A/B test — greedy against persona_router" in report and "Decision:" in report


@pytest.mark.parametrize("overrides, message", [
    (["users=0"], r"users=0 is outside the valid range"),
    (["treatment=persona_router"], r"control and treatment are both 'persona_router'"),
    (["mde=-0.1"], r"mde=-0.1 must be a positive relative change"),
    (["treatment=planner9"], r"treatment='planner9' is neither a bundle directory nor a "
                             r"baseline"),
    (["primary=revenue"], r"primary='revenue'; valid: return"),
    (["share=1.0"], r"share=1.0 is outside"),
])
def test_abtest_refuses_bad_settings(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        _abtest(tmp_path, *overrides)
    assert not (tmp_path / "abtest.json").exists()


def _agent_bundle(root, agent: int, name: str, config: dict | None = None):
    """A bundle that always routes to ``agent`` (its logits: the task's one-hot times a
    large constant on that agent's column)."""
    import envs
    from tests.conftest import onnx_bundle

    config = config or {}
    cols = envs.record(envs.ROUTING_ID).observation_layout(config)
    d = max(c.stop for c in cols.values())
    w = np.zeros((d, 6))
    w[cols["task"], agent] = 50.0
    return onnx_bundle(root / name, envs.ROUTING_ID, config, weights=w)


def test_a_worse_registry_candidate_is_archived_with_its_reason(tmp_path):
    import gymnasium as gym
    import json

    import envs
    from agents.serving.registry import Registry

    env = gym.make_vec(envs.ROUTING_ID, num_envs=2000, vectorization_mode="vector_entry_point")
    quality = env.reset(seed=0)[1]["expected_reward"].mean(axis=0)
    reg = Registry(tmp_path / "registry")
    good = reg.register(_agent_bundle(tmp_path, int(quality.argmax()), "good"), "routing")
    bad = reg.register(_agent_bundle(tmp_path, int(quality.argmin()), "bad"), "routing")
    reg.promote("routing", good["version"])
    reg.set_stage("routing", bad["version"], "staging")
    out = tmp_path / "run"
    out.mkdir()
    _abtest(out, f"registry={tmp_path / 'registry'}", "model=routing",
            f"candidate={bad['version']}", "users=4000", "looks=10")
    summary = json.loads((out / "abtest.json").read_text())
    assert summary["rolled_back"] is not None
    assert {v["version"]: v["stage"] for v in reg.versions("routing")} == {
        good["version"]: "production", bad["version"]: "archived"}
    last = reg.history("routing")[-1]
    assert last["action"] == "stage" and last["version"] == bad["version"]
    assert "experiments.abtest rolled back at look" in last["reason"]
    assert summary["registry"]["production"] == good["version"]
    with pytest.raises(ConfigError, match="candidate=1 is routing's production version"):
        _abtest(tmp_path / "again", f"registry={tmp_path / 'registry'}", "model=routing",
                "candidate=1")


@pytest.mark.slow
def test_a_served_canary_is_read_from_its_logs_and_rolled_back(tmp_path):
    """A clearly worse candidate served as a canary on 127.0.0.1 (half the users, 400
    sessions of 5 decisions: 2,000 requests with their feedback): the logs are read, the
    test decides and the registry archives the candidate, production staying."""
    import json
    import os
    import secrets
    import signal
    import subprocess
    import sys

    import gymnasium as gym

    import envs
    from agents.serving.registry import Registry
    from tests.readme import command
    from tests.test_journeys import free_port, wait_ready

    pytest.importorskip("fastapi")
    env = gym.make_vec(envs.ROUTING_ID, num_envs=2000, vectorization_mode="vector_entry_point",
                       horizon=5)
    quality = env.reset(seed=0)[1]["expected_reward"].mean(axis=0)
    reg = Registry(tmp_path / "registry")
    for agent, name in ((quality.argmax(), "good"), (quality.argmin(), "bad")):
        reg.register(_agent_bundle(tmp_path, int(agent), name, {"horizon": 5}), "routing")
    reg.promote("routing", 1)
    reg.set_stage("routing", 2, "staging")
    port, work = free_port(), tmp_path / "work"
    work.mkdir()
    environ = dict(os.environ, PERSONARL_PII_KEY=secrets.token_hex(32), OMP_NUM_THREADS="1")
    app = [sys.executable, "-m"]
    server = subprocess.Popen(app + ["experiments.serve", f"registry={tmp_path / 'registry'}",
                                     "model=routing", "traffic.mode=canary",
                                     "traffic.candidate=staging", "traffic.share=0.5",
                                     f"port={port}", "log_dir=decision_logs"],
                              cwd=work, env=environ, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        wait_ready(port, server)
        users = subprocess.run(app + ["experiments.simulate_users",
                                      f"url=http://127.0.0.1:{port}", "episodes=400",
                                      "progress=false"],
                               cwd=work, env=environ, capture_output=True, text=True,
                               timeout=300)
        assert users.returncode == 0, users.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)
    run = subprocess.run(command("mode=logs logs=decision_logs",
                                 {"outputs/registry": tmp_path / "registry"},
                                 ["env.horizon=5", "looks=10",
                                  f"hydra.run.dir={tmp_path / 'ab'}"]),
                         cwd=work, env=environ, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    summary = json.loads((tmp_path / "ab" / "abtest.json").read_text())
    assert sum(summary["users"].values()) <= 400 and summary["rolled_back"] is not None
    assert summary["decision"] == "keep"
    assert {v["version"]: v["stage"] for v in reg.versions("routing")} == {
        1: "production", 2: "archived"}
    assert "rolled back" in reg.history("routing")[-1]["reason"]
    # the simulated clients sent each user's group with every decision
    for arm in ("control", "treatment"):
        fair = summary["fairness"][arm]
        assert set(fair["groups"]) | set(fair["insufficient"]) == {"group_a", "group_b",
                                                                   "group_c"}



def test_a_decision_log_part_from_before_groups_reads_them_as_null(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from agents.serving.decision_log import SCHEMAS, read_log

    old = pa.schema([f for f in SCHEMAS["decisions"] if f.name != "group"])
    row = {f.name: None for f in old}
    row.update(decision_id="d1", time=1.0, action=2, arm="primary", version="v1")
    (tmp_path / "decisions").mkdir()
    pq.write_table(pa.Table.from_pylist([row], schema=old),
                   tmp_path / "decisions" / "part-000001.parquet")
    table = read_log(tmp_path, "decisions")
    assert table.column("group").to_pylist() == [None]
    assert table.column("action").to_pylist() == [2]


def test_a_treatment_for_another_env_is_refused(tmp_path, tiny_bundles):
    with pytest.raises(ConfigError, match=r"treatment=.* is a bundle for "
                                          r"personarl/PersonalityAdaptation-v0, but .*"
                                          r"AgentRouting-v0"):
        _abtest(tmp_path, f"treatment={tiny_bundles['continuous']}")


def test_intervention_safety_metrics_are_read_out_as_guardrails(tmp_path):
    import json

    _abtest(tmp_path, "env=intervention", "control=greedy", "treatment=random",
            "users=2000", "primary=return", "looks=2")
    out = json.loads((tmp_path / "abtest.json").read_text())
    assert {"false_interventions", "interventions", "opted_out"} <= set(out["metrics"])
    assert out["metrics"]["interventions"]["cuped"]["verdict"] == 0     # never a guardrail


def test_the_rollback_rule_follows_the_guardrails_direction(tmp_path):
    import json

    # churn rising by 50% is worse: rolled back; the readout keeps the control
    (tmp_path / "a").mkdir()
    _abtest(tmp_path / "a", "treatment=random", "users=4000", "looks=10", "guardrail=churned")
    out = json.loads((tmp_path / "a" / "abtest.json").read_text())
    assert out["guardrail_direction"] == -1 and out["rolled_back"]["low"] > 0.05
    # a neutral metric cannot be a guardrail; a privileged arm is refused
    with pytest.raises(ConfigError, match="guardrail='interventions' is neither better nor"):
        _abtest(tmp_path / "b", "env=intervention", "control=greedy", "treatment=random",
                "guardrail=interventions")
    with pytest.raises(ConfigError, match="treatment='oracle' reads the latent truth"):
        _abtest(tmp_path / "c", "treatment=oracle", "users=200")


def test_power_that_cannot_be_computed_is_reported_not_raised(tmp_path):
    import json

    from abtest.stats import users_per_arm

    with pytest.raises(ConfigError, match="no sample size gives power"):
        users_per_arm(1e-12, 1.0)
    _abtest(tmp_path, "env=intervention", "control=greedy", "treatment=random",
            "users=400", "primary=churned", "looks=2")
    out = json.loads((tmp_path / "abtest.json").read_text())
    assert out["power"]["users_per_arm_needed"] is None and out["power"]["not_computable"]
    assert "Power: not computable" in (tmp_path / "report.md").read_text()
