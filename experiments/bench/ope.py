"""Offline policy evaluation: estimator speed on a million logged decisions, and the README's
two OPE journeys repeated over many seeds and scored against the simulated truth.

* ``speed`` — 1,000,000 one-step AgentRouting decisions (``horizon=1``) logged from the
  persona router with ε = 0.2; evaluation policy: the greedy baseline. Times: fitting the
  cross-fitted reward model (reported apart), the point estimates of all six one-step
  estimators (given the model's predictions and the evaluation policy's probabilities), and
  1,000 bootstrap resamples of all six.
* ``one_step`` — the routing journey (``experiments.collect env.horizon=1 episodes=10000``,
  then ``experiments.evaluate`` with greedy, random and a PPO bundle trained on
  ``horizon=1``) over ``seeds`` seeds: each seed is a new log (collect's ``logged_users`` and
  ``behaviour`` streams) and a new cross-fit and bootstrap (evaluate's streams); the
  policies are warmed up once, as the commands do with seed 0, and held fixed. Per policy:
  what the report recommends, its coverage and normalised error ``|V̂ − V| / (V_oracle −
  V_random)``, and every estimator's. The true values are on-policy Monte Carlo on the
  ``truth`` stream — users independent of every log.
* ``sequential`` — the InterventionTiming journey (``experiments.collect env=intervention
  behaviour=greedy episodes=1000 exploration.epsilon=0.2``, then ``experiments.evaluate``
  with greedy, random and a PPO bundle; FQE as the Q model), the same figures.
* ``refit`` — the routing journey with ``ci.refit=true``: how often DM's interval, with the
  reward model refitted in every resample, covers the truth, and what refitting costs.
* ``journeys`` — the README's two OPE journeys timed end to end as a user types them
  (``python -m experiments.collect …`` then ``python -m experiments.evaluate …``, each a
  fresh process: imports and the report included), ``repeats`` times.
* ``served`` — the served-decisions journey (``tests/test_journeys.py`` runs it once, over
  HTTP) over ``seeds`` seeds: a router bundle (an untrained linear policy, sessions of at
  most 5 decisions, as in the test) served with ε = 0.2 — each seed its own server draws,
  users and log — 300 simulated users with their feedback, then ``experiments.evaluate`` on
  the log directory. The server runs in-process (FastAPI's test client: the same app and
  logs, without a socket). Per seed: the recommended estimator for the served policy,
  whether its interval covers the truth and whether |V̂ − V| ≤ 3 bootstrap SEs.
* ``served_read`` — rebuilding episodes from a server's decision logs (``ope.served``) of
  ``decisions`` decisions, episodes of 4, every decision with its feedback: one served
  decision's row repeated under new ids, written with the server's own ``DecisionLog`` and
  rolled to Parquet; the time of ``from_decision_logs`` on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from agents.serving.exploration import Exploration
from experiments.rendering import number

ROOT = Path(__file__).resolve().parents[2]
ROUTING = "personarl/AgentRouting-v0"
INTERVENTION = "personarl/InterventionTiming-v0"
#: how the journeys' behaviour explores (configs/collect.yaml's default)
LOGGING = Exploration("epsilon", epsilon=0.2)


def journey_env(*overrides: str) -> tuple[str, dict[str, Any]]:
    """The env id and kwargs ``experiments.collect`` builds from ``configs/`` with these
    overrides — the README journey's env exactly (the config's values, not the env's
    constructor defaults)."""
    from hydra import compose, initialize_config_dir

    from experiments.schema import register_configs
    from experiments.wiring import env_kwargs

    register_configs()
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return env_kwargs(compose("collect", overrides=list(overrides)))


def _routing_env() -> dict[str, Any]:
    return journey_env("env.horizon=1")[1]


def _warm(env_id: str, name: str, kwargs: dict[str, Any], make_env: Any) -> Any:
    """Baseline ``name`` built and warmed up as ``experiments.collect``/``evaluate`` do with
    seed 0 (2,000 online steps), then frozen."""
    from agents.baselines.evaluation import warm_up
    from agents.baselines.factory import make_policy

    return warm_up(make_policy(env_id, name, kwargs, seed=0), make_env, 2000, seed=0)


class _Study:
    """Per policy, over the seeds: every estimator's normalised error and CI coverage, and
    the estimator the report recommended (or that it recommended none)."""

    def __init__(self, truth: dict[str, dict[str, float]], v_top: float, v_random: float
                 ) -> None:
        self.truth, self.v_top, self.v_random = truth, v_top, v_random
        self.rows: dict[str, list[dict[str, Any]]] = {n: [] for n in truth}

    def add(self, policy: str, res: dict[str, Any], recommended: str | None) -> None:
        from ope.evaluate import normalised_error

        v = self.truth[policy]["value"]
        scored = {}
        for e, r in res["estimates"].items():
            err = None if r["estimate"] is None else normalised_error(
                r["estimate"], v, self.v_top, self.v_random)
            covered = None if r["ci_low"] is None or r["estimate"] is None else \
                bool(r["ci_low"] <= v <= r["ci_high"])
            scored[e] = (err, covered)
        self.rows[policy].append(dict(scored=scored, recommended=recommended,
                                      ess=res["diagnostics"]["ess_fraction"]))

    def table(self) -> dict[str, Any]:
        """Prints the Markdown tables; returns their figures."""
        out: dict[str, Any] = {}
        for policy, rows in self.rows.items():
            names = list(rows[0]["scored"])
            per = {}
            for e in names:
                errs = [r["scored"][e][0] for r in rows if r["scored"][e][0] is not None]
                cov = [r["scored"][e][1] for r in rows if r["scored"][e][1] is not None]
                per[e] = dict(mean_normalised_error=float(np.mean(errs)) if errs else None,
                              coverage=float(np.mean(cov)) if cov else None,
                              defined=len(errs) / len(rows))
            picks = [r["recommended"] for r in rows]
            chosen = [(r["recommended"], *r["scored"][r["recommended"]]) for r in rows
                      if r["recommended"] is not None]
            out[policy] = dict(
                truth=self.truth[policy]["value"], estimators=per,
                mean_ess_fraction=float(np.mean([r["ess"] for r in rows])),
                recommended=dict(
                    picks={str(k): picks.count(k) for k in dict.fromkeys(picks)},
                    none_rate=picks.count(None) / len(picks),
                    coverage=float(np.mean([c for _, _, c in chosen])) if chosen else None,
                    mean_normalised_error=float(np.mean([e for _, e, _ in chosen]))
                    if chosen else None))
        first = next(iter(out.values()))
        names = list(first["estimators"])
        print("| policy (true value) | recommended: picks / coverage / error | "
              + " | ".join(names) + " |")
        print("|---|---|" + "---:|" * len(names))
        for policy, row in out.items():
            rec = row["recommended"]
            picks = ", ".join(f"{k} {v}" for k, v in rec["picks"].items())
            print(f"| {policy} ({row['truth']:.4f}) | {picks} / {number(rec['coverage'], '.0%')} / "
                  f"{number(rec['mean_normalised_error'])} | " + " | ".join(
                      f"{number(row['estimators'][e]['mean_normalised_error'])} / "
                      f"{number(row['estimators'][e]['coverage'], '.0%')}" for e in names) + " |")
        print("(recommended: how often each estimator was recommended ('None': none could "
              "be), its CI's coverage and mean normalised error over those seeds; other "
              "cells: mean normalised error / coverage of the 95% bootstrap CI)")
        return out




def speed(rows: int = 1_000_000, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The timings above; prints them."""
    from envs.creator import vector_maker
    from ope import estimators as E
    from ope.collect import collect, evaluation_probs
    from ope.models import reward_model
    from ope.uncertainty import bootstrap

    kw = _routing_env()
    make_env = vector_maker(ROUTING, kw)
    t = time.perf_counter()
    data = collect(_warm(ROUTING, "persona_router", kw, make_env), make_env, rows, seed=seed,
                   exploration=LOGGING, batch=65536)
    collect_s = time.perf_counter() - t
    pi_e = evaluation_probs(_warm(ROUTING, "greedy", kw, make_env), data.obs)
    t = time.perf_counter()
    q_hat = reward_model(data, seed=seed)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    terms = {n: f(data, pi_e, q_hat=q_hat) for n, f in E.ONE_STEP.items()}
    values = {n: v.value() for n, v in terms.items()}
    estimate_s = time.perf_counter() - t
    t = time.perf_counter()
    intervals = bootstrap(terms, n_resamples=resamples, seed=seed)
    bootstrap_s = time.perf_counter() - t
    out = dict(rows=data.n, collect_s=collect_s, reward_model_fit_s=fit_s,
               estimates_s=estimate_s, bootstrap_s=bootstrap_s, resamples=resamples,
               estimates={n: dict(estimate=values[n], ci_low=intervals[n]["low"],
                                  ci_high=intervals[n]["high"]) for n in values})
    print(f"\n{data.n:,} one-step decisions: reward-model fit {fit_s:.2f} s (2 folds), all "
          f"{len(terms)} estimators {estimate_s:.2f} s, {resamples} bootstrap resamples of "
          f"all {bootstrap_s:.2f} s (collecting the data took {collect_s:.1f} s)")
    return out


def _train_bundle(name: str, *overrides: str) -> Path:
    """Train PPO with ``experiments.train`` and these overrides (a short final evaluation,
    no wandb) in a temporary folder; the bundle it exports."""
    run = Path(tempfile.mkdtemp(prefix="bench-ope-")) / name
    subprocess.run([sys.executable, "-m", "experiments.train", *overrides, "logger=none",
                    "progress=false", "eval.episodes=2048", "eval.baselines=[random]",
                    f"hydra.run.dir={run}", f"ray.temp_dir=/tmp/ray-ope{os.getpid()}"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return run / "policy"


def _same_env(policy: Any, env_id: str, kwargs: dict[str, Any]) -> None:
    """Refuse a bundle trained on another env or env config than the journey's."""
    spec = policy.spec["env"]
    if spec["id"] != env_id or spec["config"] != json.loads(json.dumps(kwargs)):
        raise ValueError(f"the PPO bundle is for {spec['id']} with {spec['config']}; this "
                         f"study needs {env_id} with {kwargs}")


def _routing_journey(bundle: str, truth_episodes: int) -> dict[str, Any]:
    """The routing journey's parts: ``make_env``, the warmed-up ``behaviour``, the
    evaluation ``policies`` (PPO, greedy, random) and a ``study`` scored against their true
    values (the oracle the normalisation's top)."""
    from agents.baselines.factory import make_policy
    from agents.serving.loader import load_policy
    from envs.creator import vector_maker
    from ope.collect import true_value

    kw = _routing_env()
    make_env = vector_maker(ROUTING, kw)
    ppo = load_policy(bundle)
    _same_env(ppo, ROUTING, kw)
    policies = {"ppo": (ppo, "greedy"), "greedy": (_warm(ROUTING, "greedy", kw, make_env),
                                                   "greedy"),
                "random": (make_policy(ROUTING, "random", kw, seed=0), "sample")}
    truth = {n: true_value(p, make_env, truth_episodes, seed=0, mode=m)
             for n, (p, m) in policies.items()}
    oracle = true_value(make_policy(ROUTING, "oracle", kw, seed=0), make_env, truth_episodes,
                        seed=0)
    return dict(make_env=make_env, behaviour=_warm(ROUTING, "persona_router", kw, make_env),
                policies=policies,
                truth=truth, oracle=oracle, bundle=str(ppo.path),
                study=lambda: _Study(truth, oracle["value"], truth["random"]["value"]))


def one_step_study(bundle: str, seeds: int = 100, logged: int = 10_000,
                   truth_episodes: int = 200_000, resamples: int = 1000) -> dict[str, Any]:
    """The routing journey above; prints a table and returns the figures."""
    from ope.collect import collect, evaluation_probs
    from ope.evaluate import estimate, recommend
    from ope.models import out_of_fold_r2, reward_model

    j = _routing_journey(bundle, truth_episodes)
    make_env, behaviour, policies, study = j["make_env"], j["behaviour"], j["policies"], \
        j["study"]()
    start = time.perf_counter()
    for s in range(seeds):
        data = collect(behaviour, make_env, logged, seed=s, exploration=LOGGING)
        q_hat = reward_model(data, seed=s)
        r2 = out_of_fold_r2(data, q_hat)
        for n, (p, mode) in policies.items():
            res = estimate(data, evaluation_probs(p, data.obs, mode), q_hat,
                           n_resamples=resamples, seed=s)
            study.add(n, res, recommend(data, res["diagnostics"], r2, res["estimates"])[0])
    seconds = time.perf_counter() - start
    print(f"\nAgentRouting horizon=1 (the README's routing journey): {seeds} seeds x "
          f"{logged:,} decisions from the persona router (ε = 0.2); truth from "
          f"{truth_episodes:,} episodes per policy on independent users; V_oracle "
          f"{study.v_top:.4f}, V_random {study.v_random:.4f}; {seconds:.0f} s")
    table = study.table()
    return dict(seeds=seeds, logged=logged, truth=j["truth"], oracle=j["oracle"],
                bundle=j["bundle"], results=table, seconds=seconds)


def sequential_study(seeds: int = 100, episodes: int = 1000, bundle: str | None = None,
                     truth_episodes: int = 50_000, resamples: int = 1000) -> dict[str, Any]:
    """The InterventionTiming journey above; prints a table and returns the figures."""
    from agents.baselines.factory import make_policy
    from agents.serving.loader import load_policy
    from envs.creator import vector_maker
    from ope.collect import collect, evaluation_probs, true_value
    from ope.evaluate import estimate, recommend
    from ope.models import fitted_q

    _, kw = journey_env("env=intervention")
    make_env = vector_maker(INTERVENTION, kw)
    behaviour = _warm(INTERVENTION, "greedy", kw, make_env)
    ppo = load_policy(bundle or _train_bundle("ppo_intervention", "experiment=intervention"))
    _same_env(ppo, INTERVENTION, kw)
    policies = {"ppo": (ppo, "greedy"), "greedy": (behaviour, "greedy"),   # warmed once
                "random": (make_policy(INTERVENTION, "random", kw, seed=0), "sample")}
    truth = {n: true_value(p, make_env, truth_episodes, seed=0, mode=m)
             for n, (p, m) in policies.items()}
    planner = true_value(make_policy(INTERVENTION, "planner", kw, seed=0), make_env,
                         truth_episodes, seed=0)
    study = _Study(truth, planner["value"], truth["random"]["value"])
    lengths = []
    start = time.perf_counter()
    for s in range(seeds):
        data = collect(behaviour, make_env, episodes, seed=s, exploration=LOGGING)
        lengths.append(data.max_episode_length)
        for n, (p, mode) in policies.items():
            pi_e = evaluation_probs(p, data.obs, mode)
            res = estimate(data, pi_e, fitted_q(data, pi_e), n_resamples=resamples, seed=s)
            study.add(n, res, recommend(data, res["diagnostics"], None, res["estimates"])[0])
    seconds = time.perf_counter() - start
    print(f"\nInterventionTiming (the README's journey): {seeds} seeds x {episodes:,} "
          f"episodes from greedy (ε = 0.2), longest logged episodes {min(lengths)}–{max(lengths)} "
          f"decisions (the env's horizon is 28; users leave earlier); V_planner "
          f"{study.v_top:.4f}, V_random {study.v_random:.4f}; {seconds:.0f} s")
    table = study.table()
    return dict(seeds=seeds, episodes=episodes, truth=truth, planner=planner,
                bundle=str(ppo.path), max_episode_lengths=[min(lengths), max(lengths)],
                results=table, seconds=seconds)


def refit_study(bundle: str, seeds: int = 30, logged: int = 10_000,
                truth_episodes: int = 200_000, resamples: int = 200) -> dict[str, Any]:
    """The routing journey with ``ci.refit=true``: coverage of DM's (and DR's) intervals with
    the reward model refitted in every resample, against the fixed-model ones, and the
    cost."""
    from ope import estimators as E
    from ope.collect import collect, evaluation_probs
    from ope.evaluate import estimate, recommend
    from ope.models import out_of_fold_r2, reward_model
    from ope.uncertainty import refit_bootstrap

    j = _routing_journey(bundle, truth_episodes)
    make_env, behaviour, policies = j["make_env"], j["behaviour"], j["policies"]
    fixed, refitted = j["study"](), j["study"]()
    names = ["dm", "dr", "sndr"]
    refit_seconds = []
    for s in range(seeds):
        data = collect(behaviour, make_env, logged, seed=s, exploration=LOGGING)
        q_hat = reward_model(data, seed=s)
        pis = {n: evaluation_probs(p, data.obs, m) for n, (p, m) in policies.items()}
        start = time.perf_counter()
        refit = refit_bootstrap(data, pis, {n: E.ONE_STEP[n] for n in names},
                                lambda w, _: reward_model(data, seed=s, sample_weight=w),
                                n_resamples=resamples, seed=s)
        refit_seconds.append(time.perf_counter() - start)
        r2 = out_of_fold_r2(data, q_hat)
        for n, pi_e in pis.items():
            for study, intervals in ((fixed, None), (refitted, refit[n])):
                res = estimate(data, pi_e, q_hat, names=names, n_resamples=1000, seed=s,
                               refit=intervals)
                study.add(n, res, recommend(data, res["diagnostics"], r2,
                                            res["estimates"])[0])
    print(f"\nAgentRouting horizon=1 with ci.refit: {seeds} seeds; {resamples} refitted "
          f"resamples took {np.mean(refit_seconds):.1f} s per log (the reward model is "
          "shared by the policies)\nmodel held fixed:")
    fixed_table = fixed.table()
    print("model refitted in every resample:")
    refit_table = refitted.table()
    return dict(seeds=seeds, resamples=resamples, seconds_per_log=float(np.mean(refit_seconds)),
                fixed=fixed_table, refitted=refit_table)


PARTS = ("speed", "one_step", "sequential", "refit", "journeys", "served", "served_read")


def journey_times(repeats: int = 3) -> dict[str, Any]:
    """Wall-clock seconds of the README's routing and InterventionTiming OPE journeys, as
    typed (``OMP_NUM_THREADS=1``); the median of ``repeats``."""
    journeys = {
        "routing": [["experiments.collect", "env.horizon=1", "episodes=10000"],
                    ["experiments.evaluate", "data={log}"]],
        "intervention": [["experiments.collect", "env=intervention", "behaviour=greedy",
                          "episodes=1000", "exploration.epsilon=0.2"],
                         ["experiments.evaluate", "data={log}"]]}
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out: dict[str, Any] = {}
    for name, commands in journeys.items():
        times = []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as tmp:
                log = Path(tmp) / "collect" / "logged.parquet"
                start = time.perf_counter()
                for i, (module, *args) in enumerate(commands):
                    args = [a.format(log=log) for a in args]
                    done = subprocess.run(
                        [sys.executable, "-m", module, *args,
                         f"hydra.run.dir={Path(tmp) / ('collect' if i == 0 else 'evaluate')}"],
                        cwd=tmp, env=env, capture_output=True, text=True)
                    if done.returncode:
                        raise RuntimeError(f"{module} failed: {done.stderr[-1000:]}")
                times.append(time.perf_counter() - start)
        out[name] = dict(seconds=float(np.median(times)), runs=times)
        print(f"{name} OPE journey (collect + evaluate, as typed): median "
              f"{out[name]['seconds']:.1f} s of {repeats} ({', '.join(f'{t:.1f}' for t in times)})")
    return out


def served_study(seeds: int = 100, users: int = 300) -> dict[str, Any]:
    """The served-decisions journey over ``seeds`` seeds (see the module doc)."""
    from fastapi.testclient import TestClient
    from hydra import compose, initialize_config_dir

    from agents.serving.client import served_env
    from agents.serving.loader import load_policy
    from agents.serving.server import ServerSettings, create_app
    from agents.serving.traffic import Arm, Decider
    from experiments.evaluate import evaluate_offline
    from experiments.schema import register_configs
    from tests.conftest import onnx_bundle

    register_configs()
    rows, start = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = onnx_bundle(Path(tmp) / "bundle", ROUTING, {"horizon": 5})
        policy = load_policy(bundle)
        for s in range(seeds):
            root = Path(tmp) / f"seed{s}"
            decider = Decider(Arm("primary", "v1", load_policy(bundle, seed=s)),
                              exploration=LOGGING, seed=s)
            env = served_env(policy.spec, info_level="none")
            obs, _ = env.reset(seed=s)
            with TestClient(create_app(decider, ServerSettings(log_dir=root / "logs"))) as c:
                for u in range(users):
                    done, step = False, 0
                    while not done:
                        d = c.post("/v1/act", json={
                            "observation": obs.tolist(), "user_id": f"{s}-{u}",
                            "episode_id": f"{s}-{u}", "step": step}).json()
                        obs, reward, term, trunc, _ = env.step(d["action"])
                        done = bool(term or trunc)
                        c.post("/v1/feedback", json={"decision_id": d["decision_id"],
                                                     "reward": float(reward), "done": done})
                        step += 1
                    obs, _ = env.reset()
            with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
                cfg = compose("evaluate", overrides=[
                    f"data={root / 'logs'}", f"policies=[{bundle}]", f"seed={s}",
                    "progress=false"])
            (root / "report").mkdir()
            v = evaluate_offline(cfg, root / "report")["policies"][str(bundle)]
            pick = v["recommendation"]["estimator"]
            r, truth = (v["estimates"][pick] if pick else None), v["truth"]["value"]
            rows.append(dict(seed=s, estimator=pick, truth=truth,
                             estimate=r and r["estimate"], se=r and r["se"],
                             covers=r and r["covers_truth"],
                             within_3se=r is not None and r["se"] is not None
                             and abs(r["estimate"] - truth) <= 3 * r["se"]))
    picked = [r for r in rows if r["estimator"]]
    out = dict(seeds=seeds, users=users, seconds=time.perf_counter() - start,
               recommended_share=len(picked) / seeds,
               coverage=float(np.mean([r["covers"] for r in picked])) if picked else None,
               within_3se=float(np.mean([r["within_3se"] for r in picked])) if picked else None,
               estimators=sorted({r["estimator"] for r in picked}), rows=rows)
    print(f"served journey over {seeds} seeds x {users} users: an estimator recommended in "
          f"{out['recommended_share']:.0%}; its 95% interval covers the truth in "
          f"{number(out['coverage'], '.0%')}, |V̂ − V| <= 3 SE in "
          f"{number(out['within_3se'], '.0%')} "
          f"({', '.join(out['estimators'])}); {out['seconds']:.0f} s")
    return out


def served_read(decisions: int = 200_000, horizon: int = 4) -> dict[str, Any]:
    """``served_read`` of the module doc; prints the time."""
    from fastapi.testclient import TestClient

    from agents.serving.decision_log import DecisionLog, read_log
    from agents.serving.loader import load_policy
    from agents.serving.server import ServerSettings, create_app
    from agents.serving.traffic import Arm, Decider
    from ope.served import from_decision_logs
    from tests.conftest import onnx_bundle

    with tempfile.TemporaryDirectory() as tmp:
        bundle = onnx_bundle(Path(tmp) / "bundle", ROUTING, {"horizon": horizon})
        root = Path(tmp) / "template"
        decider = Decider(Arm("primary", "v1", load_policy(bundle)), exploration=LOGGING)
        with TestClient(create_app(decider, ServerSettings(log_dir=root))) as c:
            d = c.post("/v1/act", json={"observation": [0.5] * 34, "episode_id": "e",
                                        "step": 0}).json()
            c.post("/v1/feedback", json={"decision_id": d["decision_id"], "reward": 1.0})
        template = {kind: read_log(root, kind).to_pylist()[0]
                    for kind in ("decisions", "feedback")}
        root = Path(tmp) / "logs"
        root.mkdir()
        (root / "servings.jsonl").write_bytes((Path(tmp) / "template" /
                                               "servings.jsonl").read_bytes())
        episodes = decisions // horizon
        for kind, rows in (
                ("decisions", [dict(template["decisions"], decision_id=f"d{e}-{t}",
                                    episode_id=f"e{e}", step=t)
                               for e in range(episodes) for t in range(horizon)]),
                ("feedback", [dict(template["feedback"], decision_id=f"d{e}-{t}",
                                   reward=float(t), done=t == horizon - 1)
                              for e in range(episodes) for t in range(horizon)])):
            log = DecisionLog(root, kind, segment_rows=len(rows))
            log.append(rows)
            log.close()
        start = time.perf_counter()
        data = from_decision_logs(root)
        seconds = time.perf_counter() - start
    print(f"\n{data.n:,} served decisions rebuilt into {data.n_episodes:,} episodes in "
          f"{seconds:.2f} s")
    return dict(decisions=data.n, episodes=data.n_episodes, seconds=seconds)


def run(rows: int, seeds: int, logged: int, bundle: str | None, resamples: int,
        intervention_bundle: str | None = None, refit_seeds: int = 30,
        parts: tuple[str, ...] = ("speed", "one_step", "sequential")) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if bundle is None and {"one_step", "refit"} & set(parts):    # train it once for both
        bundle = str(_train_bundle("ppo_h1", "env.horizon=1", "budget=600000"))
    if "speed" in parts:
        out["speed"] = speed(rows, resamples)
    if "one_step" in parts:
        out["one_step"] = one_step_study(bundle, seeds, logged, resamples=resamples)
    if "sequential" in parts:
        out["sequential"] = sequential_study(seeds, bundle=intervention_bundle,
                                             resamples=resamples)
    if "refit" in parts:
        out["refit"] = refit_study(bundle, refit_seeds, logged)
    if "journeys" in parts:
        out["journeys"] = journey_times()
    if "served" in parts:
        out["served"] = served_study(seeds)
    if "served_read" in parts:
        out["served_read"] = served_read()
    return out
