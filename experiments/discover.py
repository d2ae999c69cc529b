"""Discover personas in windows of simulated users, track their evolution, score both
against the truth, and review the events found.

    python -m experiments.discover                                  # default population
    python -m experiments.discover persona.concentration=0.5 windows=6 \\
        'persona.events=[{kind: split, at: 3, source: explorer, name: tinkerer, strength: 0.5, behaviour_shift: {exploration: -0.3}}]'
    python -m experiments.discover review.events=<run dir>/events.parquet \\
        review.id=w3-0 review.status=approved

``users`` users of the ``persona`` population persist over ``windows`` windows of
``interactions`` interactions each (``synth.windows``; population time counts windows, so
an event with ``at: 3`` first shows in window 3). Per window: the users' behaviour
features from the logged interactions (``ope.features``), suspected bots set aside by the
quality score (``rewards.quality``), and the persona model and its evolution events
(``synth.evolution``, window 0's k chosen by the silhouette unless ``k`` is given). Writes
into the run directory ``events.parquet`` (every event, status ``pending``),
``discovery.json`` (the figures), ``report.md`` / ``report.html`` with its plots (personas'
sizes over windows, each persona's cohesion and paired archetype, the transition matrix
from the first to the last window, the events,
the scheduled events against what was found, and the adjusted Rand index of each window's
personas against the latent primary archetype).

``review.events=…`` does only the review: sets event ``review.id``'s status
(``approved`` / ``rejected`` / ``pending``) in that file, and renders the report beside it
again. Mistakes exit with status 2 and a message naming the key.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from experiments.cli import check_command_line, run_app
from experiments.rendering import Block, number, save_figure, write_reports
from experiments.schema import register_configs
from personarl import jsonio
from personarl.errors import ConfigError, check_int
from personarl.seeds import MAX_SEED, generator

__all__ = ["discover_personas", "review_event", "main"]

log = logging.getLogger(__name__)
register_configs()

#: at most this many users per window (the features, the windows' draws and the model fit
#: in memory; experiments.bench discovery measures 10^6)
MAX_USERS = 2_000_000
#: at most this many interactions per window (users × interactions, ≈ 3.4 GB of logs)
MAX_INTERACTIONS = 200_000_000


def discover_personas(cfg: DictConfig, run_dir: Path) -> Path:
    """Simulate, discover, track and report per ``cfg`` into ``run_dir``; the report's
    path."""
    from ope.features import window_features
    from synth.discovery import adjusted_rand, archetype_centroids
    from synth.evolution import EvolutionTracker, write_events
    from synth.population import PopulationConfig, PopulationSampler
    from synth.windows import PersistentPopulation

    if cfg.review.id is not None:
        raise ConfigError(f"review.id={cfg.review.id!r} without review.events: give the "
                          "events.parquet to review (review.events=<run dir>/events.parquet)")
    users = check_int("users", cfg.users, 3, MAX_USERS)
    windows = check_int("windows", cfg.windows, 1, 1000)
    interactions = check_int("interactions", cfg.interactions, 1, 100_000)
    if users * interactions > MAX_INTERACTIONS:
        raise ConfigError(f"users × interactions = {users * interactions:,} per window is "
                          f"more than {MAX_INTERACTIONS:,} (≈ 17 bytes each in memory); "
                          "lower users= or interactions=")
    seed = check_int("seed", cfg.seed, 0, MAX_SEED - 1)
    k_min, k_max = check_int("k_min", cfg.k_min, 2), check_int("k_max", cfg.k_max, 2)
    if k_max < k_min:
        raise ConfigError(f"k_max={k_max} is below k_min={k_min}")
    persona = OmegaConf.to_container(cfg.persona, resolve=True)
    sampler = PopulationSampler(PopulationConfig(**persona))         # range-checked here
    reference = archetype_centroids(sampler, generator(seed, "discovery_reference"), 5000)
    tracker = EvolutionTracker(
        k=None if cfg.k is None else check_int("k", cfg.k, 2, users - 1),
        k_range=range(k_min, k_max + 1), seed=seed % 2**32, alpha=cfg.alpha,
        min_share=cfg.min_share, min_shift=cfg.min_shift,
        reference=reference, archetype_names=sampler.base.names)
    population = PersistentPopulation(sampler, users, generator(seed, "discovery_users"))
    per_window, first_labels, first_users = [], None, None
    for w in range(windows):
        window = population.window(interactions)
        features, kept = window_features(window)
        if w == 0 and cfg.k is None and k_max >= kept.sum():
            raise ConfigError(f"k_max={k_max} is not below the {kept.sum():,} users left "
                              "once suspected bots are set aside; lower k_max or raise "
                              "users")
        tracker.update(features.users[kept], features.values[kept])
        labels = tracker.personas(features.values[kept])
        humans = ~window.is_bot[kept]
        per_window.append({
            "window": w, "users": int(kept.sum()), "set_aside": int((~kept).sum()),
            "bots_set_aside": int((window.is_bot & ~kept).sum()),
            "personas": len(tracker.ids),
            "ari": adjusted_rand(labels, window.primary[kept], humans),
            "ari_clear_cut": adjusted_rand(labels, window.primary[kept],
                                           humans & window.clear_cut[kept])})
        if w == 0:
            first_labels, first_users = labels, features.users[kept]
            assert tracker.model is not None
            silhouette = tracker.model.silhouette
        log.info("window %d: %d users, %d personas, events: %d", w, kept.sum(),
                 len(tracker.ids), sum(e.window == w for e in tracker.events))
    last_users = features.users[kept]
    _, i0, i1 = np.intersect1d(first_users, last_users, return_indices=True)
    model = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "personas": {str(k): v for k, v in tracker.names.items()},
        "silhouette": {str(k): v for k, v in silhouette.items()},
        "windows": per_window, "sizes": [{str(k): v for k, v in s.items()}
                                         for s in tracker.sizes],
        "transition": _transition(first_labels[i0], labels[i1], tracker.names),
        "model": _personas(tracker, sampler.base.names),
        "scheduled": [_scheduled(e) for e in sampler.events],
    }
    write_events(tracker.events, tracker.names, run_dir / "events.parquet")
    (run_dir / "discovery.json").write_text(jsonio.dumps(model, indent=1))
    _figures(model, run_dir)
    return _report(run_dir)


def _transition(before: np.ndarray, after: np.ndarray, names: dict[int, str]
                ) -> dict[str, Any]:
    """Counts of users by persona in the first (rows) and last (columns) window, the
    personas present in each."""
    from synth.evolution import transition_counts

    ids = sorted(names)
    counts = transition_counts(before, after, ids)
    rows, cols = counts.sum(axis=1) > 0, counts.sum(axis=0) > 0
    return {"rows": [names[p] for p, r in zip(ids, rows) if r],
            "columns": [names[p] for p, c in zip(ids, cols) if c],
            "counts": counts[rows][:, cols].tolist()}


def _personas(tracker: Any, archetypes: tuple[str, ...]) -> dict[str, Any]:
    """The persona model in force at the end: each persona's users in the last window, its
    cohesion at the model's fit, and the known archetype the Hungarian method assigned it
    with the distance (``synth.discovery``), paired or — beyond ``new_distance`` — new."""
    model, last = tracker.model, tracker.sizes[-1]
    return {"new_distance": model.new_distance, "personas": [
        {"persona": tracker.names[int(p)], "users": last.get(int(p), 0),
         "cohesion": float(model.cohesion[j]), "paired": bool(model.archetype[j] >= 0),
         "assigned": archetypes[model.matched[j]] if model.matched[j] >= 0 else None,
         "distance": float(model.match_distance[j])}
        for j, p in enumerate(tracker.ids)]}


def _scheduled(event: Any) -> dict[str, Any]:
    """A scheduled ``PopulationEvent`` as the report lists it."""
    return {"kind": event.kind, "at": event.at, "source": event.source,
            "target": event.target or event.added, "strength": event.strength}


def _figures(model: dict[str, Any], run_dir: Path) -> None:
    """``sizes.png`` (users per persona over windows) and ``transition.png``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import MaxNLocator

    names = model["personas"]
    fig, ax = plt.subplots(figsize=(11, 4))
    windows = range(len(model["sizes"]))
    for pid, name in names.items():           # a persona is drawn from its first window
        ax.plot(windows, [s.get(pid, np.nan) for s in model["sizes"]], marker="o",
                label=name)
    ax.set_xlabel("window")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("users in the persona")
    ax.set_title("Persona sizes over windows")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    save_figure(fig, run_dir / "sizes.png")
    t = model["transition"]
    fig, ax = plt.subplots(figsize=(7, 6))
    counts = np.asarray(t["counts"], float)
    image = ax.imshow(counts, cmap="Blues")
    for (r, c), v in np.ndenumerate(counts):
        ax.text(c, r, f"{int(v):,}", ha="center", va="center", fontsize=8,
                color="white" if v > counts.max() / 2 else "black")
    ax.set_xticks(range(len(t["columns"])), t["columns"], rotation=45, ha="right")
    ax.set_yticks(range(len(t["rows"])), t["rows"])
    ax.set_xlabel("persona in the last window")
    ax.set_ylabel("persona in window 0")
    fig.colorbar(image, ax=ax, label="users")
    fig.tight_layout()
    save_figure(fig, run_dir / "transition.png")


def _report(run_dir: Path) -> Path:
    """``report.md`` / ``report.html`` from ``discovery.json`` and ``events.parquet``."""
    from synth.evolution import read_events

    model = jsonio.loads_strict((run_dir / "discovery.json").read_bytes())
    events, names = read_events(run_dir / "events.parquet")
    cfg = model["config"]
    b: list[Block] = [
        ("h1", "Persona discovery and evolution"),
        ("p", f"{cfg['users']:,} simulated users over {cfg['windows']} windows of "
              f"{cfg['interactions']} interactions each; seed {cfg['seed']}. Features: the "
              "share of each task type, the mean and SD of log response latency and the "
              "exploring rate (`ope.features`); users the quality score flags as bots are "
              "set aside. Personas are scored by the adjusted Rand index (ARI) against "
              "the latent primary archetype of the window's mean mixture (humans; "
              "clear-cut: primary weight ≥ 0.7)."),
        ("h2", "Personas per window"),
        ("table", (["window", "users", "set aside (bots among them)", "personas", "ARI",
                    "ARI clear-cut"],
                   [[str(r["window"]), f"{r['users']:,}",
                     f"{r['set_aside']:,} ({r['bots_set_aside']:,})", str(r["personas"]),
                     number(r["ari"], ".3f"), number(r["ari_clear_cut"], ".3f")]
                    for r in model["windows"]])),
        ("img", "sizes.png"),
        ("p", "Window 0's number of personas: " + (
            f"given (k = {cfg['k']})." if cfg["k"] is not None else
            "the highest mean silhouette of k-means++ on a subsample (≤ 50,000 users; "
            "silhouette on ≤ 5,000 of them): " + ", ".join(
                f"k = {k}: {number(v, '.3f')}" for k, v in model["silhouette"].items())
            + ".")),
        ("h2", "The personas at the end"),
        ("p", "Users in the last window; cohesion (1 / (1 + mean distance to the centroid)) "
              "at the persona model's last fit; the known archetype the Hungarian method "
              "assigned to each persona's centroid — a typical user of it, "
              "`synth.discovery.archetype_centroids` — and its distance. Distances are in "
              "standardised feature units (each feature divided by its SD over the users); "
              "a persona pairs with its archetype within "
              f"{number(model['model']['new_distance'], '.2f')} (half the smallest distance "
              "between two archetypes), else it is new."),
        ("table", (["persona", "users", "cohesion", "archetype", "distance", "paired"],
                   [[r["persona"], f"{r['users']:,}", number(r["cohesion"], ".3f"),
                     r["assigned"] or "—", number(r["distance"], ".2f"),
                     "yes" if r["paired"] else "new"]
                    for r in model["model"]["personas"]])),
        ("h2", "From the first window to the last"),
        ("img", "transition.png"),
        ("h2", "Evolution events"),
    ]
    b.append(("p", "Drift: users moving from one persona to another (strength: the net "
                   "share of the source's users), or a persona's profile moving in place "
                   "(source → itself; strength: the norm of its mean change, standardised "
                   "units). Split: the share of the source's users that moved to the new "
                   "persona. New: the new persona's share of all users. Merge: the share of "
                   "the distance between the two that closed. `synth.evolution` says how "
                   "each is found; p is the largest p-value of the tests that found it."))
    if events:
        b.append(("table", (["id", "window", "kind", "source → target", "strength",
                             "users", "p", "status"],
                            [[e.id, str(e.window), e.kind,
                              ", ".join(names[i] for i in e.source) + " → "
                              + ", ".join(names[i] for i in e.target),
                              number(e.strength, ".3f"), f"{len(e.affected_users):,}",
                              f"{e.p_value:.2g}", e.status] for e in events])))
        b.append(("p", "Review an event: `python -m experiments.discover "
                       f"review.events={run_dir / 'events.parquet'} review.id=<id> "
                       "review.status=approved` (or `rejected`)."))
    else:
        b.append(("p", "No events were found."))
    b.append(("h2", "Scheduled events (the truth)"))
    if model["scheduled"]:
        rows = []
        for s in model["scheduled"]:
            found = [e for e in events if e.kind == s["kind"] and s["at"] <= e.window
                     <= s["at"] + 1]
            testable = 2 <= s["at"] < cfg["windows"]
            rows.append([s["kind"], str(s["at"]), f"{s['source']} → {s['target']}",
                         number(s["strength"], ".2f"),
                         ", ".join(e.id for e in found) or ("not found" if testable else
                         "not testable (changes are read from window 2 on, within the run)")])
        b.append(("table", (["kind", "window", "source → target", "strength",
                             "found within two windows"], rows)))
    else:
        b.append(("p", "None: every event above is a false one."))
    return write_reports(run_dir, b)


def review_event(cfg: DictConfig) -> Path:
    """Set one event's status in ``review.events``; re-render the report beside it."""
    from synth.evolution import review_file

    path = Path(str(cfg.review.events))
    if cfg.review.id is None:
        raise ConfigError("review.id is missing: give the id of the event to review "
                          "(the report's events table lists them)")
    event = review_file(path, str(cfg.review.id), str(cfg.review.status))
    log.info("event %s is now %s", event.id, event.status)
    if (path.parent / "discovery.json").is_file():
        _report(path.parent)
    return path


@hydra.main(version_base="1.3", config_path="../configs", config_name="discover")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if cfg.review.events is not None:
        path = run_app("review the event", cfg, lambda: review_event(cfg), run_dir)
        print(f"event {cfg.review.id}: {cfg.review.status} in {path}")
        return
    path = run_app("discover", cfg, lambda: discover_personas(cfg, run_dir), run_dir)
    print(f"report: {path}")


if __name__ == "__main__":
    check_command_line("discover", "discover")
    main()
