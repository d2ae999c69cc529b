"""Baselines vs the ground-truth planners, paired, on InterventionTiming and
PersonalityAdaptation; and PersonalityAdaptation's archetype × fixed-style table.

Every policy meets the same users (same seeds; their noise is drawn on arrival, so the
comparisons use common random numbers). Greedy baselines first learn online on other
users, then are frozen.
"""

from __future__ import annotations

from typing import Any

from agents.baselines.adaptation import FixedStyle
from agents.baselines.evaluation import EpisodeBatch, run_episodes, warm_up
from agents.baselines.factory import make_policy
from envs.adaptation import ENV_ID as ADAPTATION_ID
from envs.adaptation import PersonalityAdaptationVectorEnv
from envs.adaptation_model import STYLES
from envs.intervention import ENV_ID as INTERVENTION_ID
from envs.intervention import InterventionTimingVectorEnv
from envs.registration import record
from personarl.stats import mean_ci, paired_ci
from synth.archetypes import ARCHETYPE_NAMES

POLICIES = ("random", "greedy", "oracle", "planner")


def run(episodes: int, seed: int = 0) -> dict[str, Any]:
    """Both studies, printed and returned."""
    return {"intervention": intervention_study(episodes, seed),
            "adaptation": adaptation_study(episodes, seed)}


def _train_and_run(policy, make_env, episodes: int, seed: int, warmup_steps: int,
                   **kwargs: Any) -> EpisodeBatch:
    warm_up(policy, make_env, warmup_steps, seed=seed + 1)
    return run_episodes(policy, make_env, episodes, seed=seed, **kwargs)


def adaptation_study(episodes: int, seed: int = 0, warmup_steps: int = 2000
                     ) -> dict[str, Any]:
    """PersonalityAdaptation (discrete styles): the archetype × style table and the
    baselines vs the planner."""
    def make_env(n: int) -> PersonalityAdaptationVectorEnv:
        return PersonalityAdaptationVectorEnv(n, info_level="full")

    fixed = {style: run_episodes(FixedStyle(style), make_env, episodes, seed=seed,
                                 first_keys=("latent_primary",))
             for style in STYLES}
    primary = fixed[STYLES[0]].first["latent_primary"]
    table = {arch: {style: float(r.returns[primary == a].mean()) for style, r in fixed.items()}
             for a, arch in enumerate(ARCHETYPE_NAMES)}
    best = {arch: max(row, key=row.get) for arch, row in table.items()}
    print(f"\nPersonalityAdaptation-v0, {episodes} paired conversations per fixed style: mean "
          "return by latent primary archetype")
    print("| archetype | " + " | ".join(STYLES) + " | best |")
    print("|---|" + "---:|" * len(STYLES) + "---|")
    for arch, row in table.items():
        print(f"| {arch} | " + " | ".join(f"{v:.2f}" for v in row.values())
              + f" | {best[arch]} |")
    distinct = len(set(best.values()))
    print(f"distinct best styles across archetypes: {distinct}")
    results = {name: _train_and_run(make_policy(ADAPTATION_ID, name, {}, seed=seed),
                                    make_env, episodes, seed, warmup_steps)
               for name in POLICIES}
    rows = _policy_table("PersonalityAdaptation-v0", results, {})
    d, lo, hi = paired_ci(results["planner"].returns, results["oracle"].returns)
    print(f"planner − myopic oracle: {d:+.3f} [{lo:+.3f}, {hi:+.3f}] (paired 95% CI)")
    return {"env": "personarl/PersonalityAdaptation-v0", "episodes": episodes,
            "by_archetype": table, "best_style": best, "distinct_best_styles": distinct,
            "policies": rows, "planner_minus_oracle": dict(diff=d, ci_low=lo, ci_high=hi)}


def _policy_table(title: str, results: dict[str, EpisodeBatch],
                  safety: dict[str, dict[str, float]]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    print(f"\n{title}: " + ", ".join(results) + " on the same users")
    extra = " | false-intervention rate | opt-out rate |" if safety else " |"
    print("| policy | mean return | 95% CI | mean length" + extra)
    print("|---|---:|---|---:|" + ("---:|---:|" if safety else ""))
    for name, r in results.items():
        m, lo, hi = mean_ci(r.returns)
        rows[name] = dict(mean=m, ci_low=lo, ci_high=hi, mean_length=float(r.lengths.mean()),
                          **safety.get(name, {}))
        rate = safety.get(name, {}).get("false_intervention_rate")
        cells = (f" | {'—' if rate is None else f'{rate:.3f}'} | "
                 f"{safety[name]['opt_out_rate']:.3f} |") if safety else " |"
        print(f"| {name} | {m:.3f} | [{lo:.3f}, {hi:.3f}] | {r.lengths.mean():.1f}" + cells)
    return rows


def intervention_study(episodes: int, seed: int = 0, warmup_steps: int = 2000
                       ) -> dict[str, Any]:
    """InterventionTiming: the table and the paired difference planner − myopic oracle."""
    def make_env(n: int) -> InterventionTimingVectorEnv:
        return InterventionTimingVectorEnv(n, info_level="full")

    rec = record(INTERVENTION_ID)
    results = {name: _train_and_run(make_policy(INTERVENTION_ID, name, {}, seed=seed),
                                    make_env, episodes, seed, warmup_steps,
                                    final_keys=rec.safety_keys)
               for name in POLICIES}
    safety = {name: rec.safety_metrics(r.final) for name, r in results.items()}
    env = make_env(1)
    table = _policy_table(f"InterventionTiming-v0, {episodes} episodes of {env._core.days} "
                          f"days x {env._core.slots} decisions (horizon {env._core.horizon})",
                          results, safety)
    d, lo, hi = paired_ci(results["planner"].returns, results["oracle"].returns)
    print(f"planner − myopic oracle: {d:+.3f} [{lo:+.3f}, {hi:+.3f}] (paired 95% CI)")
    return {"env": "personarl/InterventionTiming-v0", "episodes": episodes,
            "horizon": env._core.horizon, "policies": table,
            "planner_minus_oracle": dict(diff=d, ci_low=lo, ci_high=hi)}
