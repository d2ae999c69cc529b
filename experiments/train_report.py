"""The training run's report: ``report.md``, ``report.html`` and PNG plots.

The report is built once as a list of blocks (headings, paragraphs, tables, images) and
rendered twice (``experiments.rendering``), so the Markdown and the HTML always say the
same thing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.rendering import (Block, fairness_blocks, human, number, save_figure,
                                  write_reports)

__all__ = ["write_report", "learning_curve", "archetype_bars"]


def learning_curve(rows: Sequence[dict[str, Any]], path: Path, title: str,
                   references: Mapping[str, float] | None = None) -> Path | None:
    """Episodic return against env steps from ``metrics.jsonl`` rows, with a dashed line
    at each of ``references`` (policy -> mean return per episode: the baselines the
    report compares against, evaluated on held-out users)."""
    pts = [(r["env_steps"], r["charts/episodic_return"]) for r in rows
           if r.get("charts/episodic_return") is not None]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.2))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.4, color="C0",
            label="training (mean of the last 100 episodes)")
    for i, (name, value) in enumerate((references or {}).items()):
        ax.axhline(value, ls="--", lw=1, color=f"C{i + 1}", label=f"{name} (evaluation)")
    ax.set(xlabel="env steps", ylabel="episodic return (reward per episode)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return save_figure(fig, path)


def archetype_bars(pop: dict[str, Any], path: Path, title: str) -> Path:
    """Mean return per latent primary archetype, one bar per policy (the legend beside the
    axes, never over a bar)."""
    groups = list(pop["per_archetype"])
    names = list(pop["policies"])
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(7.5, 1.2 * len(groups) + 2.5), 4.0))
    for i, n in enumerate(names):
        ax.bar([g + i * width for g in range(len(groups))],
               [pop["per_archetype"][a][n] for a in groups], width, label=n)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], groups, rotation=20)
    ax.set(xlabel="latent primary archetype", ylabel="mean return per episode", title=title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def _blocks(summary: dict[str, Any], meta: dict[str, Any], images: dict[str, str]
            ) -> list[Block]:
    perf = meta["perf"]
    attempt = ("" if perf["restored_from"] is None else
               f" (the last attempt, resumed from iteration {perf['restored_from']})")
    b: list[Block] = [("h1", f"Training report — {meta['agent']} on {meta['env_id']}"),
                      ("p", f"{meta['env_steps']:,} env steps in {meta['iterations']} "
                            f"iterations, {perf['train_seconds']:.0f} s of training{attempt}"
                            f"; config "
                            f"hash `{meta['config_hash']}`. Every policy was evaluated on the "
                            f"same {meta['episodes']:,} held-out users per population "
                            f"(paired), with the latent truth on.")]
    if meta.get("population_generator"):
        b.append(("p", "The users — training and evaluation alike — were drawn from the "
                       f"persona generator `{meta['population_generator']}` "
                       "(`persona.generator`), not from the simulator's own population."))
    if meta.get("learned_reward"):
        learned = meta["learned_reward"]
        b.append(("p", f"Trained against the learned reward model `{learned['model']}` "
                       f"(objective `{learned['objective']}`; `reward=learned`): the "
                       "learning curve is in its units. Every evaluation below pays the "
                       "env's true reward."))
    if "learning_curve" in images:
        b.append(("img", images["learning_curve"]))
    for pop_name, pop in summary.items():
        trained, ref = pop["trained"], pop["reference"]
        b += [("h2", f"Population `{pop_name}`"),
              ("p", "Overrides of the training population: "
                    f"{human(pop['population_overrides'])}."
                    if pop["population_overrides"] else "The training population."),
              ("h3", "Mean return per policy (95% CI)")]
        safety = sorted({k for p in pop["policies"].values() for k in p
                         if k in ("false_intervention_rate", "interventions_per_episode",
                                  "opt_out_rate")})
        rows = [[n + (" (privileged)" if p["privileged"] else ""), number(p["mean"]),
                 f"[{number(p['ci_low'])}, {number(p['ci_high'])}]",
                 number(p["oracle_normalised"], ".3f"), number(p["mean_length"], ".2f"),
                 *[number(p.get(k), ".3f") for k in safety]]
                for n, p in pop["policies"].items()]
        b.append(("table", (["policy", "mean return", "95% CI", "oracle-normalised",
                             "mean length", *safety], rows)))
        b.append(("p", f"Oracle-normalised = (π − random) / ({ref} − random); `{ref}` is "
                       "the best privileged policy (it reads the latent state)."))
        b.append(("h3", f"Paired differences: {trained} − other (same users, 95% CI)"))
        b.append(("table", (["comparison", "difference", "95% CI", "excludes 0"], [
            [f"{p['better']} − {p['worse']}" + (" (best baseline)" if p["worse"] ==
                                                 pop["best_baseline"] else ""),
             f"{p['diff']:+.4f}", f"[{p['ci_low']:+.4f}, {p['ci_high']:+.4f}]",
             "yes" if p["excludes_zero"] else "NO"] for p in pop["paired"]])))
        if "value_of_knowing_persona" in pop:
            v = pop["value_of_knowing_persona"]
            b.append(("p", f"**Value of knowing the latent persona** ({v['reference']} − "
                           f"{trained}): {v['diff']:+.4f} [{v['ci_low']:+.4f}, "
                           f"{v['ci_high']:+.4f}] per episode."))
        names = list(pop["policies"])
        b.append(("h3", "Mean return by latent primary archetype"))
        b.append(("table", (["archetype", "users", *names], [
            [a, str(row["users"]), *[number(row[n], ".3f") for n in names]]
            for a, row in pop["per_archetype"].items()])))
        if f"archetypes_{pop_name}" in images:
            b.append(("img", images[f"archetypes_{pop_name}"]))
        if pop.get("fairness"):
            b += fairness_blocks(pop["fairness"], "return")
    return b


def write_report(run_dir: Path, summary: dict[str, Any], meta: dict[str, Any],
                 metric_rows: Sequence[dict[str, Any]]) -> Path:
    """Write the plots, ``report.md`` and ``report.html``; returns the Markdown path."""
    images: dict[str, str] = {}
    train = summary.get("train") or next(iter(summary.values()))
    references = {n: p["mean"] for n, p in train["policies"].items()
                  if n != train["trained"] and p["mean"] is not None}
    if learning_curve(metric_rows, run_dir / "learning_curve.png",
                      f"{meta['agent']} on {meta['env_id']}", references):
        images["learning_curve"] = "learning_curve.png"
    for pop_name, pop in summary.items():
        name = f"archetypes_{pop_name}.png"
        archetype_bars(pop, run_dir / name, f"return by archetype — {pop_name}")
        images[f"archetypes_{pop_name}"] = name
    return write_reports(run_dir, _blocks(summary, meta, images))
