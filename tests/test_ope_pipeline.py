"""Collecting logged data in the simulator and the OPE report end to end: propensities,
episode layout, unbiasedness against the simulated truth, the report, and refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agents.baselines.factory import make_policy
from envs.creator import vector_maker
from ope import estimators as E
from agents.serving.exploration import Exploration
from ope.collect import collect, evaluation_probs, true_value
from ope.files import read_logged
from tests.readme import command
from tests.reports import readability_problems

ROOT = Path(__file__).resolve().parents[1]
ROUTING, INTERVENTION = "personarl/AgentRouting-v0", "personarl/InterventionTiming-v0"
ADAPTATION = "personarl/PersonalityAdaptation-v0"


def test_collect_logs_whole_episodes_with_the_probabilities_used():
    kw = {}
    policy = make_policy(INTERVENTION, "greedy", kw, seed=0)
    policy.learning = False
    data = collect(policy, vector_maker(INTERVENTION, kw), 300, seed=3,
                   exploration=Exploration("epsilon", epsilon=0.3), batch=128)
    assert data.n_episodes == 300 and data.max_episode_length > 1
    assert data.done[np.r_[data.starts[1:] - 1, data.n - 1]].all()     # each ends done
    greedy = data.action_probs.argmax(axis=1) == data.action
    k = data.n_actions
    assert np.allclose(data.propensity[greedy], 0.7 + 0.3 / k)
    assert np.allclose(data.propensity[~greedy], 0.3 / k)
    assert abs(greedy.mean() - (0.7 + 0.3 / k)) < 0.03                 # drawn as logged
    again = collect(policy, vector_maker(INTERVENTION, kw), 300, seed=3,
                    exploration=Exploration("epsilon", epsilon=0.3), batch=128)
    assert np.array_equal(again.action, data.action)                    # seeded


def test_ips_is_unbiased_against_the_simulated_truth():
    kw = {"horizon": 1}
    make_env = vector_maker(ROUTING, kw)
    behaviour = make_policy(ROUTING, "random", kw, seed=0)
    data = collect(behaviour, make_env, 20000, seed=11, exploration="sample")
    target = make_policy(ROUTING, "greedy", kw, seed=0)
    target.learning = False
    pi_e = evaluation_probs(target, data.obs, "greedy")
    truth = true_value(target, make_env, 40000, seed=12)
    ips = E.ips(data, pi_e)
    half = 1.96 * ips.plain.std() / np.sqrt(data.n)
    assert abs(ips.value() - truth["value"]) < 3 * half + (truth["ci_high"] - truth["value"])


def assert_strict_json(path: Path) -> None:
    """``path`` parses with a reader that refuses NaN and Infinity."""
    def refuse(token: str) -> None:
        raise AssertionError(f"{path} holds a bare {token}")

    json.loads(path.read_text(), parse_constant=refuse)


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_collect_and_evaluate_commands(tmp_path, tiny_bundles):
    # the README's routing journey as written (both commands on their default seed, 0)
    logged = tmp_path / "logged.parquet"
    out = subprocess.run(command("collect env.horizon=1 episodes=10000", extra=[
        f"out={logged}", f"hydra.run.dir={tmp_path / 'c'}"]), cwd=ROOT, capture_output=True,
        text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-1500:]
    data = read_logged(logged)
    assert data.meta["env_id"] == ROUTING and data.meta["behaviour"] == "persona_router"
    assert data.meta["env_config"]["horizon"] == 1 and data.meta["epsilon"] == 0.2
    report = tmp_path / "e"
    bundle = tiny_bundles["discrete"]
    out = subprocess.run(command("evaluate data=outputs/<date>/<time>/logged.parquet", {
        "outputs/<date>/<time>/logged.parquet": logged, "outputs/<run>/policy": bundle},
        [f"hydra.run.dir={report}"]), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-1500:]
    # quiet by default: the result line only (the log file has the rest)
    assert out.stderr == "" and out.stdout.count("\n") == 1, (out.stdout, out.stderr)
    assert "greedy: truth" in (report / "evaluate.log").read_text()
    summary = json.loads((report / "summary.json").read_text())
    assert set(summary["policies"]) == {"greedy", "random", str(bundle)}
    est = summary["policies"]["greedy"]["estimates"]
    assert set(est) == set(E.ONE_STEP)
    for r in est.values():
        assert r["ci_low"] <= r["estimate"] <= r["ci_high"] and r["normalised_error"] >= 0
    # the recommended estimator is within 3 bootstrap standard errors of the truth, which
    # is simulated on users independent of the logged ones
    for name, v in summary["policies"].items():
        if name == str(bundle):         # trained for horizon 20: off its env, warned about
            assert "evaluated off the env it was trained on" in str(v)
            continue
        pick = v["recommendation"]["estimator"]
        assert pick in ("sndr", "dr"), (name, v["recommendation"])
        r = v["estimates"][pick]
        se = (r["ci_high"] - r["ci_low"]) / (2 * 1.96)
        assert abs(r["estimate"] - v["truth"]["value"]) <= 3 * se, (name, r, v["truth"])
    assert summary["recommendation"]["estimator"] in ("sndr", "dr", "switch_dr", "snips", "ips")
    assert est["dm"]["model_error"] == "not included"
    # fairness (issue 24): each policy's true value per group, and the log's own returns
    by_group = summary["policies"]["greedy"]["truth"]["fairness"]
    assert set(by_group["groups"]) | set(by_group["insufficient"]) == {
        "group_a", "group_b", "group_c"}
    in_log = summary["logged_fairness"]
    assert sum(g["users"] for g in in_log["groups"].values()) + sum(
        in_log["insufficient"].values()) == summary["data"]["episodes"]
    for name in ("report.md", "report.html", "estimates.png"):
        assert (report / name).stat().st_size > 0
    assert readability_problems(report) == []
    md = (report / "report.md").read_text()
    assert "Recommended estimator for ranking the policies" in md
    assert "(model error not included)" in md
    assert_strict_json(report / "summary.json")

    # a bundle trained on another env is refused, naming both
    bad = run("experiments.evaluate", f"data={logged}",
              f"policies=[{tiny_bundles['continuous']}]", f"hydra.run.dir={tmp_path / 'x'}",
              cwd=ROOT)
    assert bad.returncode == 2
    assert "PersonalityAdaptation-v0, but this run's env is personarl/AgentRouting-v0" in \
        bad.stdout + bad.stderr


@pytest.mark.slow
def test_unsupported_actions_get_a_loud_warning(tmp_path):
    logged = tmp_path / "greedy.parquet"
    out = run("experiments.collect", "env.horizon=1", "episodes=1000", "behaviour=greedy",
              "exploration.mode=greedy", f"out={logged}", f"hydra.run.dir={tmp_path / 'c'}",
              cwd=ROOT)
    assert out.returncode == 0, out.stderr[-1500:]
    out = run("experiments.evaluate", f"data={logged}", "policies=[random]",
              "truth_episodes=1000", "ci.resamples=50", f"hydra.run.dir={tmp_path / 'e'}",
              cwd=ROOT)
    assert out.returncode == 0, out.stderr[-1500:]
    report = (tmp_path / "e" / "report.md").read_text()
    assert "**Warning:** the evaluation policy puts 83.3% of its probability on actions the " \
           "behaviour policy never takes" in report
    summary = json.loads((tmp_path / "e" / "summary.json").read_text())
    # only a model could reach those actions, and it can only extrapolate: no estimator
    assert summary["recommendation"]["estimator"] is None
    assert "83.3% of the evaluation policy's mass is on actions" in \
        summary["recommendation"]["reason"]
    for r in summary["policies"]["random"]["estimates"].values():
        assert r["estimate"] is not None and np.isfinite(r["estimate"])
    # with the model refitted in every resample, DM's interval includes model error — but
    # not the error of extrapolating to actions never logged: still nothing is recommended
    out = run("experiments.evaluate", f"data={logged}", "policies=[random]",
              "truth_episodes=1000", "ci.resamples=50", "ci.refit=true",
              "ci.refit_resamples=20", f"hydra.run.dir={tmp_path / 'r'}", cwd=ROOT)
    assert out.returncode == 0, out.stderr[-1500:]
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    dm = summary["policies"]["random"]["estimates"]["dm"]
    assert dm["interval"] == "bootstrap, model refitted" and dm["model_error"] == "included"
    assert summary["recommendation"]["estimator"] is None
    assert "never takes" in summary["recommendation"]["reason"]


class FirstUsers:
    """A privileged policy taking one fixed action that records the latent mixtures of the
    first users it meets (to tell which users a function simulated)."""

    name, privileged, learning = "first_users", True, False

    def __init__(self, action: int, k: int = 6) -> None:
        self.action, self.k, self.first, self.first_obs = action, k, None, None

    def action_probs(self, obs, info):
        if self.first is None:
            self.first, self.first_obs = np.array(info["latent_weights"]), obs.copy()
        return np.eye(self.k)[np.full(len(obs), self.action)]

    def act(self, obs, info):
        return self.action_probs(obs, info).argmax(axis=1)


def test_every_purpose_has_its_own_users_and_every_policy_the_same_ones():
    from agents.baselines.evaluation import run_episodes

    make_env = vector_maker(ROUTING, {"horizon": 1})
    a, b = FirstUsers(0), FirstUsers(3)
    true_value(a, make_env, 300, seed=0)
    true_value(b, make_env, 300, seed=0)
    assert np.array_equal(a.first, b.first)              # paired: the same truth users
    assert np.array_equal(a.first_obs, b.first_obs)      # starting from identical observations
    logger, evaluated = FirstUsers(0), FirstUsers(0)
    collect(logger, make_env, 300, seed=0, exploration="greedy")
    run_episodes(evaluated, make_env, 300, seed=0)       # evaluation users
    for other in (logger.first, evaluated.first):        # same seed, other purposes
        assert other.shape == a.first.shape
        assert not (other == a.first).all(axis=1).any()
    assert not (logger.first == evaluated.first).all(axis=1).any()
    c = FirstUsers(0)
    true_value(c, make_env, 300, seed=1)                 # another run's truth
    assert not (c.first == a.first).all(axis=1).any()


def test_logged_truth_lets_privileged_policies_be_evaluated(tmp_path):
    from ope.data import DataError
    from ope.files import write_logged

    policy = make_policy(INTERVENTION, "greedy", {}, seed=0)
    policy.learning = False
    data = collect(policy, vector_maker(INTERVENTION, {}), 200, seed=1,
                   exploration=Exploration("epsilon", epsilon=0.2),
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


def test_the_truth_acts_under_the_evaluated_exploration_privileged_policies_too():
    """A privileged policy's truth follows the exploration setting its estimates use: the
    oracle at ε = 1 is uniform, so on the same users and the same draws it is random."""
    make_env = vector_maker(ROUTING, {"horizon": 3})
    oracle, random = (make_policy(ROUTING, n, {"horizon": 3}, seed=0)
                      for n in ("oracle", "random"))
    uniform = true_value(oracle, make_env, 300, seed=2, exploration=Exploration(
        "epsilon", epsilon=1.0))
    assert uniform == true_value(random, make_env, 300, seed=2, exploration="sample")
    assert true_value(oracle, make_env, 300, seed=2)["value"] > uniform["value"] + 0.2


def test_offline_evaluation_refuses_continuous_actions(tiny_bundles):
    from experiments.wiring import load_policy_spec
    from personarl.errors import ConfigError

    with pytest.raises(ConfigError, match="configured with continuous actions; .* action "
                       r"modes: discrete \(default\), continuous \(action_mode=continuous"):
        load_policy_spec("random", ADAPTATION, {"action_mode": "continuous"}, 0, 0,
                         "behaviour")
    with pytest.raises(ConfigError, match="is a continuous-action policy \\(diag_gaussian\\)"):
        load_policy_spec(str(tiny_bundles["continuous"]), ADAPTATION, {}, 0, 0, "policies")


@pytest.fixture(scope="module")
def small_log(tmp_path_factory):
    """A 200-decision one-step routing log, as experiments.collect writes it."""
    from ope.files import write_logged

    kw = {"horizon": 1}
    policy = make_policy(ROUTING, "random", kw, seed=0)
    data = collect(policy, vector_maker(ROUTING, kw), 200, seed=0, exploration="greedy",
                   meta={"env_id": ROUTING, "env_version": 0, "env_config": kw})
    return data, write_logged(data, tmp_path_factory.mktemp("log") / "logged.parquet")


@pytest.mark.parametrize("meta,overrides,error,message", [
    ({"env_id": INTERVENTION, "env_config": {}}, [], "DataError",
     "observations have 34 columns but personarl/InterventionTiming-v0 with env_config {} "
     "observes 26; the log is not from that env"),
    ({"env_config": [1, 2]}, [], "DataError", r"metadata env_config=\[1, 2\] must be a mapping"),
    ({"env_config": {"horizon": 1, "frob": 2}}, [], "DataError", "does not build"),
    ({}, ["estimators=[]"], "ConfigError", "must be a non-empty list"),
    ({}, ["estimators=nope"], "ConfigError", "must be a non-empty list such as"),
    ({}, ["seed=-1"], "ConfigError", r"seed=-1 is outside the valid range"),
    ({}, ["policies=greedy"], "ConfigError", r"policies='greedy' must be a list"),
])
def test_evaluate_refuses_a_log_or_setting_it_cannot_use(small_log, tmp_path, meta, overrides,
                                                         error, message):
    from dataclasses import replace

    from hydra import compose, initialize_config_dir

    from experiments.evaluate import evaluate_offline
    from ope.files import write_logged
    from personarl import errors

    data, _ = small_log
    path = write_logged(replace(data, meta={**data.meta, **meta}), tmp_path / "l.parquet")
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"data={path}", *overrides])
    with pytest.raises(getattr(errors, error), match=message):
        evaluate_offline(cfg, tmp_path)
    assert not (tmp_path / "summary.json").exists()


def test_evaluate_refuses_episodes_longer_than_the_env_allows(tmp_path):
    from hydra import compose, initialize_config_dir

    from experiments.evaluate import evaluate_offline
    from ope.data import DataError
    from ope.files import write_logged

    kw = {"horizon": 5}
    policy = make_policy(ROUTING, "random", kw, seed=0)
    data = collect(policy, vector_maker(ROUTING, kw), 40, seed=0, exploration="greedy",
                   meta={"env_id": ROUTING, "env_config": {"horizon": 2}})   # mislabelled
    assert data.max_episode_length > 2
    path = write_logged(data, tmp_path / "l.parquet")
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"data={path}"])
    with pytest.raises(DataError, match=r"episodes of up to \d decisions, but "
                                        r"personarl/AgentRouting-v0 .* ends every episode "
                                        r"within 2"):
        evaluate_offline(cfg, tmp_path)


@pytest.mark.parametrize("overrides,message", [
    (["behaviour=random"], "a uniformly random policy has no greedy action"),
])
def test_collect_refuses_a_behaviour_it_would_log_wrongly(tmp_path, overrides, message):
    from hydra import compose, initialize_config_dir

    from experiments.collect import collect_data
    from personarl.errors import ConfigError

    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("collect", overrides=["env.horizon=1", "episodes=10", *overrides])
    with pytest.raises(ConfigError, match=message):
        collect_data(cfg, tmp_path / "l.parquet")
    assert not (tmp_path / "l.parquet").exists()


@pytest.mark.parametrize("app,override", [("evaluate", "ci.refit=maybe"),
                                          ("evaluate", "switch_lambda=abc"),
                                          ("collect", "exploration.epsilon=true"),
                                          ("collect", "record_truth=maybe")])
def test_a_value_of_the_wrong_type_fails_when_the_config_is_composed(app, override):
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    import experiments.evaluate  # noqa: F401  (registers the schemas)

    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        with pytest.raises(ConfigCompositionException, match=f"override {override}"):
            compose(app, overrides=["data=x.parquet"] * (app == "evaluate") + [override])
