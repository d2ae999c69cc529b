"""The training run's report: ``report.md``, ``report.html`` and PNG plots.

The report is built once as a list of blocks (headings, paragraphs, tables, images) and
rendered twice, so the Markdown and the HTML always say the same thing.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["write_report", "learning_curve", "archetype_bars", "render_markdown", "render_html",
           "Block"]

Block = tuple[str, Any]


def _f(x: float | None, fmt: str = ".3f") -> str:
    return "—" if x is None else format(x, fmt)


def learning_curve(rows: Sequence[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Episodic return against env steps from ``metrics.jsonl`` rows."""
    pts = [(r["env_steps"], r["charts/episodic_return"]) for r in rows
           if r.get("charts/episodic_return") is not None]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.2)
    ax.set(xlabel="env steps", ylabel="episodic return (training, smoothed over 100)",
           title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def archetype_bars(pop: dict[str, Any], path: Path, title: str) -> Path:
    """Mean return per latent primary archetype, one bar per policy."""
    groups = list(pop["per_archetype"])
    names = list(pop["policies"])
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(groups)), 3.8))
    for i, n in enumerate(names):
        ax.bar([g + i * width for g in range(len(groups))],
               [pop["per_archetype"][a][n] for a in groups], width, label=n)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], groups, rotation=20)
    ax.set(ylabel="mean return", title=title)
    ax.legend(fontsize=7, ncol=min(4, len(names)))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    if "learning_curve" in images:
        b.append(("img", images["learning_curve"]))
    for pop_name, pop in summary.items():
        trained, ref = pop["trained"], pop["reference"]
        b += [("h2", f"Population `{pop_name}`"),
              ("p", f"Overrides of the training population: `{pop['population_overrides']}`"
                    if pop["population_overrides"] else "The training population."),
              ("h3", "Mean return per policy (95% CI)")]
        safety = sorted({k for p in pop["policies"].values() for k in p
                         if k in ("false_intervention_rate", "interventions_per_episode",
                                  "opt_out_rate")})
        rows = [[n + (" (privileged)" if p["privileged"] else ""), _f(p["mean"], ".4f"),
                 f"[{_f(p['ci_low'], '.4f')}, {_f(p['ci_high'], '.4f')}]",
                 _f(p["oracle_normalised"]), _f(p["mean_length"], ".2f"),
                 *[_f(p.get(k)) for k in safety]] for n, p in pop["policies"].items()]
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
            [a, str(row["users"]), *[_f(row[n]) for n in names]]
            for a, row in pop["per_archetype"].items()])))
        if f"archetypes_{pop_name}" in images:
            b.append(("img", images[f"archetypes_{pop_name}"]))
    return b


def render_markdown(blocks: list[Block]) -> str:
    out = []
    for kind, x in blocks:
        if kind in ("h1", "h2", "h3"):
            out += ["#" * int(kind[1]) + " " + x, ""]
        elif kind == "p":
            out += [x, ""]
        elif kind == "img":
            out += [f"![{x}]({x})", ""]
        else:
            head, rows = x
            out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            out += ["| " + " | ".join(r) + " |" for r in rows] + [""]
    return "\n".join(out)


def render_html(blocks: list[Block], title: str) -> str:
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
           "</title><style>body{font-family:sans-serif;max-width:70em;margin:2em auto}"
           "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;"
           "text-align:right}td:first-child{text-align:left}</style></head><body>"]
    for kind, x in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{html.escape(x)}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{html.escape(x)}</p>")
        elif kind == "img":
            out.append(f"<img src='{html.escape(x)}' alt='{html.escape(x)}'>")
        else:
            head, rows = x
            out.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head)
                       + "</tr>" + "".join("<tr>" + "".join(
                           f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
                       + "</table>")
    return "\n".join(out + ["</body></html>"])


def write_report(run_dir: Path, summary: dict[str, Any], meta: dict[str, Any],
                 metric_rows: Sequence[dict[str, Any]]) -> Path:
    """Write the plots, ``report.md`` and ``report.html``; returns the Markdown path."""
    images: dict[str, str] = {}
    if learning_curve(metric_rows, run_dir / "learning_curve.png",
                      f"{meta['agent']} on {meta['env_id']}"):
        images["learning_curve"] = "learning_curve.png"
    for pop_name, pop in summary.items():
        name = f"archetypes_{pop_name}.png"
        archetype_bars(pop, run_dir / name, f"return by archetype — {pop_name}")
        images[f"archetypes_{pop_name}"] = name
    blocks = _blocks(summary, meta, images)
    (run_dir / "report.md").write_text(render_markdown(blocks))
    (run_dir / "report.html").write_text(render_html(blocks, blocks[0][1]))
    return run_dir / "report.md"
