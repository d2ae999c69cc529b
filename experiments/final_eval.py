"""End-of-training evaluation: the trained policy and the baselines on the same users.

Every policy runs the same ``eval.episodes`` held-out users per population (the
``evaluation_users`` stream of the run's seed, so the same latent users and the same
exogenous draws: paired comparisons), with the ground truth on (``info_level="full"``).
Learning baselines first learn online on the *training* population for
``eval.baseline_warmup_steps`` batched steps (the ``warmup`` stream's users), then are
frozen.

The summary, per population:

* ``policies.<name>``: ``mean``, ``ci_low``, ``ci_high`` (95% t-interval), ``episodes``,
  ``mean_length``, ``oracle_normalised`` ((π − random) / (reference − random), the
  reference being the best privileged policy), ``privileged``, and the env's safety
  metrics (``EnvRecord.safety_metrics``; InterventionTiming: ``false_intervention_rate``,
  ``interventions_per_episode``, ``opt_out_rate``);
* ``paired``: the trained policy minus each other policy, with a 95% CI;
* ``best_baseline``: the best non-privileged baseline; ``reference``: the privileged one;
* ``value_of_knowing_persona``: reference − trained (paired), what the latent truth is
  worth beyond what the platform observes;
* ``per_archetype.<archetype>``: users and mean return per policy (bots apart).
* ``fairness.<policy>``: the policy's return per demographic group and its parity
  (``group_fairness``).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from agents.baselines.evaluation import (EpisodeBatch, paired_row, per_archetype,
                                         run_episodes, warm_up)
from agents.baselines.policies import Policy
from agents.baselines.factory import make_policy
from envs.creator import info_keys, vector_maker
from envs.registration import describe
from experiments.wiring import Run
from personarl.parity import group_parity
from personarl.seeds import generator
from personarl.stats import mean_ci

__all__ = ["evaluate_policies", "headline", "group_fairness"]

log = logging.getLogger(__name__)


def _baselines(run: Run) -> list[Policy]:
    cfg, env_id, kwargs = run.cfg, run.env_id, run.env_kwargs
    make_env = vector_maker(env_id, kwargs)
    return [warm_up(make_policy(env_id, name, kwargs, seed=cfg.seed), make_env,
                    cfg.eval.baseline_warmup_steps, seed=cfg.seed,
                    num_envs=cfg.eval.baseline_warmup_envs)
            for name in run.eval_baselines]


def evaluate_policies(run: Run, trained: Policy) -> dict[str, Any]:
    """Evaluate ``trained`` (named ``run.cfg.agent.name``) and the baselines on every
    population of the run; the summary described in the module doc."""
    from tqdm import tqdm

    cfg, env_id = run.cfg, run.env_id
    baselines = _baselines(run)
    out: dict[str, Any] = {}
    bar = tqdm(total=len(run.populations) * (1 + len(baselines)), unit="policy",
               desc="final evaluation", leave=False,
               disable=None if cfg.get("progress", True) else True)
    for pop_name, (overrides, kwargs) in run.populations.items():
        make_env = vector_maker(env_id, kwargs)
        grouped = "group" in info_keys(env_id, kwargs)     # an env may have no groups
        results: dict[str, EpisodeBatch] = {}
        for policy in [trained, *baselines]:
            bar.set_postfix_str(f"{pop_name}: {policy.name}")
            results[policy.name] = run_episodes(
                policy, make_env, cfg.eval.episodes, seed=cfg.seed,
                first_keys=("latent_primary", "is_bot", *(("group",) if grouped else ())),
                final_keys=run.record.safety_keys)
            bar.update()
            log.info("[%s] %s: mean return %.4f", pop_name, policy.name,
                     results[policy.name].returns.mean())
        privileged = {p.name for p in [trained, *baselines] if p.privileged}
        sampler = describe(env_id, kwargs).sampler
        archetypes = list(sampler.tables[-1].names)
        out[pop_name] = summarise(results, trained.name, privileged, archetypes,
                                  run.record.safety_metrics, overrides)
        if grouped:
            out[pop_name]["fairness"] = group_fairness(results, sampler.group_names,
                                                       cfg.seed)
    bar.close()
    return out


def summarise(results: dict[str, EpisodeBatch], trained: str, privileged: set[str],
              archetypes: list[str],
              safety_metrics: Callable[[Mapping[str, np.ndarray]], dict[str, Any]] | None,
              overrides: dict[str, Any]) -> dict[str, Any]:
    """One population's summary (see the module doc); ``safety_metrics`` is the env
    record's (``None``: the env has none)."""
    means = {n: float(r.returns.mean()) for n, r in results.items()}
    reference = max((n for n in results if n in privileged), key=means.get, default=None)
    others = [n for n in results if n != trained and n not in privileged]
    best = max(others, key=means.get, default=None)
    random_mean = means.get("random")
    s: dict[str, Any] = {"population_overrides": overrides, "trained": trained,
                         "reference": reference, "best_baseline": best,
                         "policies": {}, "paired": [], "per_archetype": {}}
    for n, r in results.items():
        m, lo, hi = mean_ci(r.returns)
        norm = None
        if reference is not None and random_mean is not None \
                and means[reference] != random_mean:
            norm = (m - random_mean) / (means[reference] - random_mean)
        s["policies"][n] = dict(mean=m, ci_low=lo, ci_high=hi, episodes=len(r.returns),
                                mean_length=float(r.lengths.mean()), oracle_normalised=norm,
                                privileged=n in privileged,
                                **(safety_metrics(r.final) if safety_metrics else {}))
    s["paired"] = [paired_row(trained, n, results) for n in results if n != trained]
    if reference is not None:
        row = paired_row(reference, trained, results)
        s["value_of_knowing_persona"] = dict(reference=reference, diff=row["diff"],
                                             ci_low=row["ci_low"], ci_high=row["ci_high"])
    s["per_archetype"] = per_archetype(results, archetypes)
    return s


def group_fairness(results: dict[str, EpisodeBatch], group_names: Sequence[str], seed: int,
                   min_size: int = 100) -> dict[str, Any]:
    """Each policy's return per demographic group and its parity across the groups
    (``personarl.parity``: the ratio of the lowest group's mean to the highest's with a
    bootstrap interval, alerting below 0.9; groups under ``min_size`` users marked)."""
    names = np.asarray(group_names)
    out = {}
    for i, (n, r) in enumerate(results.items()):
        out[n] = group_parity(r.returns, names[r.first["group"]],
                              generator(seed, "bootstrap", i), min_size=min_size,
                              reps=500).as_dict()
    return out


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """The numbers a sweep compares: the first population's trained-policy figures."""
    pop = next(iter(summary.values()))
    me = pop["policies"][pop["trained"]]
    return {"eval/return": me["mean"], "eval/return_ci_low": me["ci_low"],
            "eval/return_ci_high": me["ci_high"],
            "eval/oracle_normalised": me["oracle_normalised"]
            if me["oracle_normalised"] is not None else np.nan}
