"""InterventionTiming: random, myopic greedy, myopic oracle and the planner, paired.

Every policy meets the same users (same seeds; their shocks and uniforms are drawn on
arrival, so the comparison uses common random numbers). The greedy baseline first learns
online on other users, then is frozen.
"""

from __future__ import annotations

from typing import Any


from agents.evaluation import mean_ci, paired_ci, run_episodes, train_online
from agents.intervention_baselines import make_intervention_baseline
from envs.intervention import InterventionTimingVectorEnv

POLICIES = ("random", "greedy", "oracle", "planner")
FINAL = ("interventions", "false_interventions", "opted_out")


def run(episodes: int, seed: int = 0, warmup_steps: int = 2000) -> dict[str, Any]:
    """The table and the paired difference planner − myopic oracle, printed and returned."""
    def make_env(n: int) -> InterventionTimingVectorEnv:
        return InterventionTimingVectorEnv(n, info_level="full")

    results = {}
    for name in POLICIES:
        policy = make_intervention_baseline(name)
        train_online(policy, make_env, warmup_steps, seed=seed + 1)
        policy.learning = False
        results[name] = run_episodes(policy, make_env, episodes, seed=seed, final_keys=FINAL)
    table: dict[str, Any] = {}
    env = make_env(1)
    print(f"InterventionTiming-v0, {episodes} paired episodes per policy, "
          f"{env._core.days} days x {env._core.slots} decisions (horizon {env._core.H})")
    print("| policy | mean return | 95% CI | mean length | false-intervention rate | "
          "opt-out rate |")
    print("|---|---:|---|---:|---:|---:|")
    for name, r in results.items():
        m, lo, hi = mean_ci(r.returns)
        interventions = r.final["interventions"].sum()
        false_rate = (r.final["false_interventions"].sum() / interventions
                      if interventions else 0.0)
        optout = float(r.final["opted_out"].mean())
        table[name] = dict(mean=m, ci_low=lo, ci_high=hi, mean_length=float(r.lengths.mean()),
                           interventions_per_episode=float(r.final["interventions"].mean()),
                           false_intervention_rate=float(false_rate), optout_rate=optout)
        print(f"| {name} | {m:.3f} | [{lo:.3f}, {hi:.3f}] | {r.lengths.mean():.1f} | "
              f"{false_rate:.3f} | {optout:.3f} |")
    d, lo, hi = paired_ci(results["planner"].returns, results["oracle"].returns)
    print(f"planner − myopic oracle: {d:+.3f} [{lo:+.3f}, {hi:+.3f}] (paired 95% CI)")
    return {"env": "personarl/InterventionTiming-v0", "episodes": episodes,
            "horizon": env._core.H, "policies": table,
            "planner_minus_oracle": dict(diff=d, ci_low=lo, ci_high=hi)}
