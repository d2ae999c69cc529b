"""The simulation report: roll a population through AgentRouting with the baselines.

    python -m experiments.simulate                      # defaults (configs/simulate.yaml)
    python -m experiments.simulate env.horizon=1 episodes=20000

Writes ``report.md`` and ``summary.json`` into the Hydra run directory and prints the
report. Learning baselines warm up online on users disjoint from the evaluation users,
then every policy is evaluated, frozen, on the same seeds (paired).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from agents.baselines import make_baseline
from agents.evaluation import (EpisodeBatch, mean_ci, paired_row, per_archetype,
                               run_episodes, train_online)
from envs.routing import AgentRoutingVectorEnv, build_core
from experiments.cli import check_command_line, run_app
from experiments.schema import register_configs
from experiments.wiring import env_kwargs
from personarl import jsonio
from synth.archetypes import TASK_TYPES
from personarl.errors import check_int

log = logging.getLogger(__name__)
register_configs()

# (better, worse) pairs whose paired difference the report must show
COMPARISONS = (("oracle", "persona_router"), ("persona_router", "greedy"),
               ("persona_router", "random"), ("greedy", "random"))


def simulate(cfg: DictConfig) -> dict[str, Any]:
    """Warm up, evaluate and summarise every configured policy."""
    _, kwargs = env_kwargs(cfg)
    core = build_core(1, **kwargs)           # validates every env and persona value
    layout = core.layout
    episodes = check_int("episodes", cfg.episodes, 2)
    results: dict[str, EpisodeBatch] = {}

    def make_env(n: int) -> AgentRoutingVectorEnv:
        return AgentRoutingVectorEnv(n, info_level="full", **kwargs)

    for name in cfg.policies:
        policy = make_baseline(name, layout)
        train_online(policy, make_env, check_int("warmup_steps", cfg.warmup_steps, 0),
                     seed=cfg.seed, num_envs=check_int("warmup_envs", cfg.warmup_envs, 1))
        policy.learning = False
        results[name] = run_episodes(policy, make_env, episodes, seed=cfg.seed,
                                     first_keys=("latent_primary", "is_bot"))
        log.info("%s: mean return %.3f", name, results[name].returns.mean())
    summary = summarise(results, list(core.sampler.tables[-1].names))
    quality = core.world.quality_table(core.sampler.base.traits)         # (A, T, K)
    summary["agent_quality"] = {
        arch: {task: dict(best_agent=int(quality[a, t].argmax()),
                          satisfaction=float(quality[a, t].max()))
               for t, task in enumerate(TASK_TYPES)}
        for a, arch in enumerate(core.sampler.base.names)}
    return summary


def summarise(results: dict[str, EpisodeBatch], archetypes: list[str]) -> dict[str, Any]:
    """Per-policy means with CIs, paired differences and the per-archetype table."""
    summary: dict[str, Any] = {"policies": {}, "paired": [], "per_archetype": {}}
    for name, r in results.items():
        m, lo, hi = mean_ci(r.returns)
        summary["policies"][name] = dict(mean=m, ci_low=lo, ci_high=hi,
                                         episodes=len(r.returns),
                                         mean_length=float(r.lengths.mean()),
                                         oracle_agreement=float(r.oracle_agreement.mean()))
    summary["paired"] = [paired_row(better, worse, results) for better, worse in COMPARISONS
                         if better in results and worse in results]
    summary["per_archetype"] = per_archetype(results, archetypes)
    return summary


def to_markdown(summary: dict[str, Any], cfg: DictConfig) -> str:
    """The report as Markdown."""
    names = list(summary["policies"])
    lines = ["# AgentRouting simulation report", "",
             f"Env `{cfg.env.id}` (K={cfg.env.num_agents}, horizon={cfg.env.horizon}); "
             f"{cfg.episodes} evaluation episodes per policy on the same users (seed "
             f"{cfg.seed}); learning baselines warmed up for {cfg.warmup_steps} steps × "
             f"{cfg.warmup_envs} users, then frozen.", "",
             "## Mean return per policy (95% CI)", "",
             "| policy | mean return | 95% CI | mean length | agrees with oracle |",
             "|---|---:|---|---:|---:|"]
    for n, s in summary["policies"].items():
        lines.append(f"| {n} | {s['mean']:.3f} | [{s['ci_low']:.3f}, {s['ci_high']:.3f}] | "
                     f"{s['mean_length']:.2f} | {s['oracle_agreement']:.1%} |")
    lines += ["", "## Paired differences (same users, 95% CI)", "",
              "| comparison | difference | 95% CI | excludes 0 |", "|---|---:|---|---|"]
    for p in summary["paired"]:
        lines.append(f"| {p['better']} − {p['worse']} | {p['diff']:+.3f} | "
                     f"[{p['ci_low']:+.3f}, {p['ci_high']:+.3f}] | "
                     f"{'yes' if p['excludes_zero'] else 'NO'} |")
    lines += ["", "## Mean return by latent primary archetype", "",
              "| archetype | users | " + " | ".join(names) + " |",
              "|---|---:|" + "---:|" * len(names)]
    for arch, row in summary["per_archetype"].items():
        lines.append(f"| {arch} | {row['users']} | "
                     + " | ".join(f"{row[n]:.3f}" for n in names) + " |")
    if "agent_quality" in summary:
        lines += ["", "## Latent agent quality at each archetype's trait means",
                  "", "Best agent (its satisfaction) per task type; the oracle sees each "
                  "user's own traits, the routers only observed signals.", "",
                  "| archetype | " + " | ".join(TASK_TYPES) + " |",
                  "|---|" + "---|" * len(TASK_TYPES)]
        for arch, row in summary["agent_quality"].items():
            lines.append(f"| {arch} | " + " | ".join(
                f"{c['best_agent']} ({c['satisfaction']:.2f})" for c in row.values()) + " |")
    return "\n".join(lines) + "\n"


@hydra.main(version_base="1.3", config_path="../configs", config_name="simulate")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    out = Path(HydraConfig.get().runtime.output_dir)
    summary = run_app("simulate", cfg, lambda: simulate(cfg), out)
    report = to_markdown(summary, cfg)
    (out / "report.md").write_text(report)
    (out / "summary.json").write_text(jsonio.dumps(summary, indent=2))
    print(report)
    print(f"report: {out / 'report.md'}")


if __name__ == "__main__":
    check_command_line("simulate", "simulate")
    main()
