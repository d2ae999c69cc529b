"""Offline policy evaluation: estimator speed on a million logged decisions, and the
one-step estimator study against the simulated truth.

* ``speed`` — 1,000,000 one-step AgentRouting decisions (``horizon=1``) logged from the
  persona router with ε = 0.2; evaluation policy: the greedy baseline. Times: fitting the
  cross-fitted reward model (reported apart), the point estimates of all six one-step
  estimators (given the model's predictions and the evaluation policy's probabilities), and
  1,000 bootstrap resamples of all six.
* ``one_step_study`` — over ``seeds`` independent logs of ``logged`` decisions from the same
  behaviour: every estimator's normalised error ``|V̂ − V| / (V_oracle − V_random)`` and
  whether its 95% bootstrap CI covers the true value ``V`` (on-policy Monte Carlo, computed
  once per policy with many episodes), for a PPO bundle trained on ``horizon=1``, the greedy
  baseline and the random policy.
* ``sequential_study`` — InterventionTiming logs of 1,000 episodes from the ε-greedy myopic
  policy (with the simulator's truth recorded, so the privileged planner can be evaluated):
  the same figures for a PPO bundle and the planner.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
ROUTING = "personarl/AgentRouting-v0"
KW = {"horizon": 1}


def _behaviour(make_env: Any) -> Any:
    from agents.evaluation import train_online
    from agents.factory import make_policy

    router = make_policy(ROUTING, "persona_router", KW, seed=0)
    train_online(router, make_env, 2000, seed=1)
    router.learning = False
    return router


def _greedy(make_env: Any) -> Any:
    from agents.evaluation import train_online
    from agents.factory import make_policy

    greedy = make_policy(ROUTING, "greedy", KW, seed=0)
    train_online(greedy, make_env, 2000, seed=2)
    greedy.learning = False
    return greedy


class _Scores:
    """Per policy and estimator: normalised errors and CI coverage over the seeds."""

    def __init__(self, truth: dict[str, dict[str, float]], v_top: float, v_random: float
                 ) -> None:
        self.truth, self.v_top, self.v_random = truth, v_top, v_random
        self.errors: dict[str, dict[str, list[float]]] = {n: {} for n in truth}
        self.covered: dict[str, dict[str, list[bool]]] = {n: {} for n in truth}

    def add(self, policy: str, estimates: dict[str, dict[str, float]]) -> None:
        from ope.evaluate import normalised_error

        v = self.truth[policy]["value"]
        for e, r in estimates.items():
            self.errors[policy].setdefault(e, []).append(
                normalised_error(r["estimate"], v, self.v_top, self.v_random))
            self.covered[policy].setdefault(e, []).append(r["ci_low"] <= v <= r["ci_high"])

    def table(self) -> dict[str, dict[str, dict[str, float]]]:
        """Prints the Markdown table; returns its figures."""
        table = {n: {e: dict(mean_normalised_error=float(np.mean(self.errors[n][e])),
                             coverage=float(np.mean(self.covered[n][e])))
                     for e in self.errors[n]} for n in self.errors}
        names = list(next(iter(table.values())))
        print("| policy (true value) | " + " | ".join(names) + " |")
        print("|---|" + "---:|" * len(names))
        for n, row in table.items():
            print(f"| {n} ({self.truth[n]['value']:.4f}) | " + " | ".join(
                f"{row[e]['mean_normalised_error']:.4f} / {row[e]['coverage']:.0%}"
                for e in names) + " |")
        print("(cells: mean normalised error / coverage of the 95% bootstrap CI)")
        return table


def speed(rows: int = 1_000_000, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The timings above; prints them."""
    from envs.creator import vector_maker
    from ope import estimators as E
    from ope.collect import collect, evaluation_probs
    from ope.models import reward_model
    from ope.uncertainty import bootstrap

    make_env = vector_maker(ROUTING, KW)
    t = time.perf_counter()
    data = collect(_behaviour(make_env), make_env, rows, seed=seed, epsilon=0.2, batch=65536)
    collect_s = time.perf_counter() - t
    pi_e = evaluation_probs(_greedy(make_env), data.obs)
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


def one_step_study(seeds: int = 100, logged: int = 10_000, bundle: str | None = None,
                   truth_episodes: int = 200_000, resamples: int = 1000) -> dict[str, Any]:
    """The study above; prints a table and returns the figures."""
    from agents.factory import make_policy
    from agents.serving import load_policy
    from envs.creator import vector_maker
    from ope.collect import collect, evaluation_probs, true_value
    from ope.evaluate import estimate
    from ope.models import reward_model

    make_env = vector_maker(ROUTING, KW)
    behaviour = _behaviour(make_env)
    ppo = load_policy(bundle or _train_bundle("ppo_h1", "env.horizon=1", "budget=600000"))
    if ppo.spec["env"]["config"].get("horizon") != 1:
        raise ValueError(f"the PPO bundle was trained with horizon="
                         f"{ppo.spec['env']['config'].get('horizon')}; this study needs 1")
    policies = {"ppo": (ppo, "greedy"), "greedy": (_greedy(make_env), "greedy"),
                "random": (make_policy(ROUTING, "random", KW, seed=0), "stochastic")}
    truth = {n: true_value(p, make_env, truth_episodes, seed=10**6, mode=m)
             for n, (p, m) in policies.items()}
    oracle = true_value(make_policy(ROUTING, "oracle", KW, seed=0), make_env, truth_episodes,
                        seed=10**6)
    scores = _Scores(truth, oracle["value"], truth["random"]["value"])
    start = time.perf_counter()
    for s in range(seeds):
        data = collect(behaviour, make_env, logged, seed=1000 + s, epsilon=0.2)
        q_hat = reward_model(data, seed=s)
        for n, (p, mode) in policies.items():
            scores.add(n, estimate(data, evaluation_probs(p, data.obs, mode), q_hat,
                                   n_resamples=resamples, seed=s)["estimates"])
    seconds = time.perf_counter() - start
    print(f"\nAgentRouting horizon=1: {seeds} seeds x {logged:,} decisions from the persona "
          f"router (ε = 0.2); truth from {truth_episodes:,} episodes per policy; V_oracle "
          f"{scores.v_top:.4f}, V_random {scores.v_random:.4f}; {seconds:.0f} s")
    table = scores.table()
    return dict(seeds=seeds, logged=logged, truth=truth, oracle=oracle,
                bundle=str(ppo.path), results=table, seconds=seconds)


def sequential_study(seeds: int = 100, episodes: int = 1000, bundle: str | None = None,
                     truth_episodes: int = 50_000, resamples: int = 1000) -> dict[str, Any]:
    """InterventionTiming: ``seeds`` logs of ``episodes`` episodes from the ε-greedy (0.2)
    myopic greedy policy, with the simulator's truth recorded; evaluation policies: a PPO
    bundle and the planner (privileged: it acts on the logged truth). Per estimator: mean
    normalised error against the planner-to-random span and CI coverage."""
    from agents.evaluation import train_online
    from agents.factory import make_policy
    from agents.serving import load_policy
    from envs.creator import vector_maker
    from ope.collect import collect, evaluation_probs, true_value
    from ope.evaluate import estimate
    from ope.models import fitted_q

    env_id = "personarl/InterventionTiming-v0"
    make_env = vector_maker(env_id, {})
    behaviour = make_policy(env_id, "greedy", {}, seed=0)
    train_online(behaviour, make_env, 2000, seed=1)
    behaviour.learning = False
    ppo = load_policy(bundle or _train_bundle("ppo_intervention", "experiment=intervention"))
    if ppo.env_id != env_id:
        raise ValueError(f"the PPO bundle is for {ppo.env_id}; this study needs {env_id}")
    policies = {"ppo": ppo, "planner": make_policy(env_id, "planner", {}, seed=0)}
    truth = {n: true_value(p, make_env, truth_episodes, seed=10**6)
             for n, p in policies.items()}
    v_random = true_value(make_policy(env_id, "random", {}, seed=0), make_env,
                          truth_episodes, seed=10**6, mode="stochastic")["value"]
    scores = _Scores(truth, truth["planner"]["value"], v_random)
    ess: dict[str, list[float]] = {n: [] for n in policies}
    horizons = []
    start = time.perf_counter()
    for s in range(seeds):
        data = collect(behaviour, make_env, episodes, seed=2000 + s, epsilon=0.2,
                       record_truth=True)
        horizons.append(data.horizon)
        for n, p in policies.items():
            pi_e = evaluation_probs(p, data.obs, context=data.context)
            res = estimate(data, pi_e, fitted_q(data, pi_e), n_resamples=resamples, seed=s)
            ess[n].append(res["diagnostics"]["ess_fraction"])
            scores.add(n, res["estimates"])
    seconds = time.perf_counter() - start
    print(f"\nInterventionTiming: {seeds} seeds x {episodes:,} episodes from greedy (ε = 0.2), "
          f"logged horizons {min(horizons)}–{max(horizons)} decisions (the env's horizon is "
          f"28; users leave earlier); V_planner {scores.v_top:.4f}, V_random {v_random:.4f}; "
          "mean ESS fraction " + ", ".join(f"{n} {np.mean(v):.2%}" for n, v in ess.items())
          + f"; {seconds:.0f} s")
    table = scores.table()
    return dict(seeds=seeds, episodes=episodes, truth=truth, random=v_random,
                bundle=str(ppo.path), horizons=[min(horizons), max(horizons)],
                ess_fraction={n: float(np.mean(v)) for n, v in ess.items()},
                results=table, seconds=seconds)


def run(rows: int, seeds: int, logged: int, bundle: str | None, resamples: int,
        intervention_bundle: str | None = None, parts: tuple[str, ...] = (
            "speed", "one_step", "sequential")) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "speed" in parts:
        out["speed"] = speed(rows, resamples)
    if "one_step" in parts:
        out["one_step"] = one_step_study(seeds, logged, bundle, resamples=resamples)
    if "sequential" in parts:
        out["sequential"] = sequential_study(seeds, bundle=intervention_bundle,
                                             resamples=resamples)
    return out
