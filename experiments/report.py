"""Compare the runs of a multirun or a sweep.

    python -m experiments.report multirun/2026-11-24/09-00-00        # a Hydra multirun
    python -m experiments.report outputs/2026-11-24/09-10-00         # an experiments.sweep dir

Finds every training run below the directory (a folder with ``run.json``), groups them into
configurations (runs whose configs differ only in ``seed``), and writes into the directory:

* ``report.csv`` — per configuration: the keys that vary, seeds, the final evaluation
  return's mean with a 95% t-interval over seeds, its interquartile mean (IQM) with a
  bootstrap CI over runs, and the probability that the best configuration beats it;
* ``report.md`` / ``report.html`` — the same, the best configuration, and for a sweep the
  trials (stopped early or trained), the re-runs and the winner;
* ``learning_curves.png`` — the training return against env steps per configuration, mean
  with a 95% band over seeds; ``parameters.png`` (sweeps) — the objective against each
  searched parameter.

Aggregates follow Agarwal et al. 2021 (rliable: IQM with bootstrap CIs, probability of
improvement); the ``rliable`` package itself does not import with the current ``arch``, so
the few lines are ours. Runs stopped early by ASHA have no final evaluation and count only
in the sweep's trial table.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig
from scipy import stats

from experiments.cli import check_command_line, run_app
from experiments.rendering import Block, human, number, save_figure, write_reports
from experiments.schema import register_configs
from experiments.run_files import MetricsLog, read_json_object
from experiments.wiring import HASH_EXCLUDED, flatten
from personarl.seeds import MAX_SEED, generator
from personarl.stats import bootstrap_ci, mean_ci
from personarl.errors import ConfigError, check_int

__all__ = ["collect_runs", "group_runs", "iqm_ci", "probability_of_improvement", "main"]

log = logging.getLogger(__name__)
register_configs()


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    final: float | None                      # final evaluation return (None: stopped)
    curve: list[tuple[int, float]] = field(default_factory=list)


def collect_runs(root: Path) -> list[Run]:
    """Every training run below ``root``."""
    runs = []
    for run_file in sorted(root.rglob("run.json")):
        d = run_file.parent
        config = read_json_object(run_file).get("config")
        if not isinstance(config, dict):
            raise ConfigError(f"{run_file} has no 'config' object; it is not the run.json "
                              "experiments.train writes")
        final = None
        if (d / "summary.json").exists():
            summary = read_json_object(d / "summary.json")
            try:
                pop = summary["populations"]["train"]
                final = float(pop["policies"][pop["trained"]]["mean"])
            except (KeyError, TypeError, ValueError):
                raise ConfigError(f"{d / 'summary.json'} has no train population's trained "
                                  "policy mean; it is not the summary experiments.train "
                                  "writes") from None
        curve = [(row["env_steps"], row["charts/episodic_return"])
                 for row in MetricsLog(d / "metrics.jsonl").rows()
                 if row.get("charts/episodic_return") is not None
                 and row.get("env_steps") is not None]
        runs.append(Run(d, config, final, curve))
    return runs


def group_runs(runs: list[Run]) -> dict[str, list[Run]]:
    """Configurations (label -> runs): runs whose hashed configs match apart from ``seed``,
    labelled by the keys that vary between configurations."""
    flats = [{k: v for k, v in flatten(r.config).items()
              if k.split(".")[0] not in HASH_EXCLUDED and k != "seed"} for r in runs]
    keys = sorted({k for f in flats for k in f})
    varying = [k for k in keys if len({json.dumps(f.get(k)) for f in flats}) > 1]
    groups: dict[str, list[Run]] = {}
    for run, f in zip(runs, flats):
        label = ", ".join(f"{k}={human(f.get(k))}" for k in varying) or "default"
        groups.setdefault(label, []).append(run)
    return groups


def iqm_ci(x: np.ndarray, reps: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Interquartile mean and a 95% percentile-bootstrap CI over runs."""
    return bootstrap_ci([x], lambda a: stats.trim_mean(a, 0.25, axis=-1),
                        generator(seed, "bootstrap"), reps)


def probability_of_improvement(x: np.ndarray, y: np.ndarray, reps: int = 2000, seed: int = 0
                               ) -> tuple[float, float, float]:
    """P(X > Y) + ½ P(X = Y) for a run of X against a run of Y, with a bootstrap CI."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)

    def prob(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        diff = a[..., :, None] - b[..., None, :]
        return ((diff > 0) + 0.5 * (diff == 0)).mean(axis=(-1, -2))

    return bootstrap_ci([x, y], prob, generator(seed, "bootstrap", 1), reps)


def _curves(groups: dict[str, list[Run]], path: Path) -> bool:
    """The training curves' figure; ``False`` (nothing written) when no run logged two
    points of its curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = {label: [np.array(r.curve) for r in runs if len(r.curve) > 1]
             for label, runs in groups.items()}
    drawn = {label: curves for label, curves in drawn.items() if curves}
    if not drawn:
        return False
    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    for label, curves in drawn.items():
        grid = np.linspace(max(c[0, 0] for c in curves), min(c[-1, 0] for c in curves), 50)
        ys = np.stack([np.interp(grid, c[:, 0], c[:, 1]) for c in curves])
        mean, low, high = mean_ci(ys, axis=0)
        ax.plot(grid, mean, label=f"{label} ({len(curves)} runs)")
        if len(curves) > 1:
            ax.fill_between(grid, low, high, alpha=0.2)
    ax.set_xlabel("env steps")
    ax.set_ylabel("training episodic return (reward per episode)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    save_figure(fig, path)
    return True


def _parameters(sweep: dict[str, Any], path: Path) -> None:
    """Each searched parameter against the trials' returns: the final evaluation of the
    trials that trained to the end (top row) and, apart, the training return at which ASHA
    stopped the others (bottom row) — two different quantities, never on one axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator, NullFormatter

    keys = list(sweep["space"])
    rows = [(True, "eval_return", "o", "final evaluation return"),
            (False, "objective", "x", "training return when stopped")]
    rows = [r for r in rows if any(t["finished"] == r[0] and t[r[1]] is not None
                                   for t in sweep["trials"])]
    cols = min(len(keys), 4)
    per = -(-len(keys) // cols)             # grid rows per quantity
    fig, axes = plt.subplots(len(rows) * per, cols, squeeze=False,
                             figsize=(2.9 * cols, 2.6 * len(rows) * per))
    for ax in axes.flat:
        ax.set_visible(False)
    for r, (finished, field_name, marker, label) in enumerate(rows):
        for k, key in enumerate(keys):
            ax = axes[r * per + k // cols][k % cols]
            ax.set_visible(True)
            space = sweep["space"][key]
            values = space.get("values")         # a choice: one evenly spaced slot each
            pts = [(values.index(t["config"][key]) if values else t["config"][key],
                    t[field_name]) for t in sweep["trials"]
                   if t["finished"] == finished and t[field_name] is not None]
            if pts:
                ax.scatter(*zip(*pts), marker=marker, color="C0" if finished else "C3")
            if values:
                ax.set_xticks(range(len(values)), [human(v) for v in values])
                ax.set_xlim(-0.5, len(values) - 0.5)
            elif space["type"] == "loguniform":  # the whole searched range, rows alike
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())    # decades only
                ax.set_xlim(space["low"] / 1.3, space["high"] * 1.3)
            else:
                ax.xaxis.set_major_locator(MaxNLocator(4))
                pad = 0.05 * (space["high"] - space["low"])
                ax.set_xlim(space["low"] - pad, space["high"] + pad)
            ax.yaxis.get_major_formatter().set_useOffset(False)
            ax.tick_params(axis="x", labelsize=7, labelrotation=30)
            ax.set_xlabel(key, fontsize=8)
            ax.set_ylabel(label if k % cols == 0 else "", fontsize=8)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def write_report(root: Path, reps: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Everything above, written into ``root``; returns the table."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"dir={str(root)!r} is not a directory (give a multirun or sweep "
                          "run directory)")
    runs = collect_runs(root)
    if not runs:
        raise ConfigError(f"no training runs (run.json) below {root}")
    groups = group_runs(runs)
    finals = {k: np.array([r.final for r in v if r.final is not None]) for k, v in
              groups.items()}
    finals = {k: v for k, v in finals.items() if len(v)}
    if not finals:
        raise ConfigError(f"none of the {len(runs)} runs below {root} finished its final "
                          "evaluation")
    best = max(finals, key=lambda k: finals[k].mean())
    table = []
    for label, x in finals.items():
        mean, low, high = mean_ci(x)
        iqm, iqm_low, iqm_high = iqm_ci(x, reps, seed)
        poi = probability_of_improvement(finals[best], x, reps, seed) if label != best \
            else (float("nan"),) * 3
        table.append(dict(configuration=label, runs=len(x),
                          seeds=" ".join(str(r.config["seed"]) for r in groups[label]
                                         if r.final is not None),
                          mean=mean, ci_low=low, ci_high=high, iqm=iqm, iqm_ci_low=iqm_low,
                          iqm_ci_high=iqm_high, p_best_beats_it=poi[0],
                          p_ci_low=poi[1], p_ci_high=poi[2]))
    table.sort(key=lambda r: -r["mean"])
    with open(root / "report.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()                # an undefined value is an empty field
        writer.writerows({k: "" if isinstance(v, float) and v != v else v
                          for k, v in row.items()} for row in table)
    curves = _curves(groups, root / "learning_curves.png")
    if not curves:
        (root / "learning_curves.png").unlink(missing_ok=True)   # an older report's
    sweep_file = root / "sweep.json"
    sweep = read_json_object(sweep_file) if sweep_file.exists() else None
    if sweep:
        _parameters(sweep, root / "parameters.png")
    write_reports(root, _blocks(root, table, best, sweep, len(runs), curves))
    return dict(best=best, table=table, runs=len(runs))


def _blocks(root: Path, table: list[dict[str, Any]], best: str, sweep: dict[str, Any] | None,
            n_runs: int, curves: bool) -> list[Block]:
    b: list[Block] = [
        ("h1", f"Run comparison — {root.name}"),
        ("p", f"{n_runs} training runs below `{root}`; {len(table)} configuration(s) with a "
              "final evaluation. Final evaluation return on the training population; 95% "
              "t-interval over seeds; IQM with a 95% bootstrap CI over runs; P(best > it): "
              "the probability that a run of the best configuration beats a run of this one "
              "(Agarwal et al. 2021)."),
        ("p", f"**Best configuration: {best}**."),
        ("table", (["configuration", "runs", "seeds", "mean", "95% CI", "IQM", "IQM 95% CI",
                    "P(best > it)"], [
            [r["configuration"], str(r["runs"]), r["seeds"], number(r["mean"]),
             f"[{number(r['ci_low'])}, {number(r['ci_high'])}]", number(r["iqm"]),
             f"[{number(r['iqm_ci_low'])}, {number(r['iqm_ci_high'])}]",
             "—" if r["p_best_beats_it"] != r["p_best_beats_it"] else
             f"{number(r['p_best_beats_it'], '.2f')} [{number(r['p_ci_low'], '.2f')}, "
             f"{number(r['p_ci_high'], '.2f')}]"]
            for r in table])),
        ("img", "learning_curves.png") if curves else
        ("p", "No learning curves: no run logged two points of its training return (a run "
              "shorter than two iterations, or one that logged no episodes).")]
    if sweep:
        keys = list(sweep["space"])
        b += [("h2", "Search"),
              ("p", f"{len(sweep['trials'])} trials (Optuna, seed {sweep['seed']}; ASHA "
                    "stops weak trials early: their objective is the training return when "
                    "stopped)."),
              ("table", (["trial", *keys, "objective", "final eval", "iterations",
                          "trained"], [
                  [str(i), *[human(t["config"].get(k)) for k in keys],
                   number(t["objective"]), number(t["eval_return"]),
                   str(t["iterations"]), "yes" if t["finished"] else "stopped"]
                  for i, t in enumerate(sweep["trials"])])),
              ("img", "parameters.png")]
        if sweep.get("winner"):
            w = sweep["winner"]
            top = len({r["rank"] for r in sweep["reruns"]})
            b.append(("p", f"**Winner after re-running the top {top} with fresh seeds:** "
                           f"{human(w['config'])} — mean final evaluation "
                           f"{w['mean_eval_return']:.4f} over {len(w['eval_returns'])} fresh "
                           f"seeds (search rank {w['search_rank'] + 1})."))
    return b


@hydra.main(version_base="1.3", config_path="../configs", config_name="report")
def main(cfg: DictConfig) -> None:
    """Hydra entry point (``python -m experiments.report <dir>`` works too)."""
    out = run_app("report", cfg, lambda: write_report(
        Path(cfg.dir), check_int("bootstrap", cfg.bootstrap, 1),
        check_int("seed", cfg.seed, 0, MAX_SEED - 1)))
    print(f"{out['runs']} runs; best configuration: {out['best']}; report: "
          f"{Path(cfg.dir) / 'report.md'}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and "=" not in sys.argv[1] and not sys.argv[1].startswith("-"):
        sys.argv[1] = f"dir={sys.argv[1]}"          # the directory as a positional argument
    check_command_line("report", "report")
    main()
