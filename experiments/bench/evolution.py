"""Persona evolution events scored against the scheduled truth (issue 20).

Each scenario is ``users`` users of the well-separated population (Dirichlet
concentration 0.5) over windows of ``interactions`` interactions each
(``synth.windows``), their behaviour features (``ope.features``), suspected bots removed by
the quality score (``rewards.quality``), and ``synth.evolution.EvolutionTracker`` (k chosen
by the silhouette in window 0). A scheduled event starts at window ``AT`` = 3 (the tests
run from window 2); it is *detected* when the tracker emits an event of its kind at window
3 or 4 (within two windows), and its delay is the number of windows after 3 it took.
Recall over seeds has a Wilson 95% interval.

The size of a split's or new archetype's shift is stated in within-archetype standard
deviations of the feature it moves: the difference between a typical user of the new
archetype and of its source (``synth.discovery.archetype_centroids``), over the SD of that
feature among the source's users in a window of the same length.

Stationary populations (no events; ``drift_rate`` 0, and the default 0.03 for contrast)
run ``windows`` windows; every event is a false one, counted per tested window transition
(windows 2 onwards) with an exact Poisson 95% interval (Garwood 1936).
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

from ope.features import behaviour_features, window_features
from synth.archetypes import TRAITS
from synth.discovery import archetype_centroids
from synth.evolution import EvolutionTracker
from synth.features import BEHAVIOUR_FEATURES
from synth.population import PopulationConfig, PopulationSampler
from synth.windows import PersistentPopulation

AT = 3
CONCENTRATION = 0.5


def scenarios() -> dict[str, dict[str, Any]]:
    """Scenario name -> the scheduled event and the feature it moves."""
    def split(shift: float) -> dict[str, Any]:
        return {"event": dict(kind="split", at=AT, source="explorer", name="tinkerer",
                              strength=0.5, behaviour_shift={"exploration": -shift}),
                "feature": "explore_rate"}
    return {
        "split, exploration -0.05": split(0.05),
        "split, exploration -0.1": split(0.1),
        "split, exploration -0.2": split(0.2),
        "new, learner with timing +0.4": {
            "event": dict(kind="new", at=AT, source="learner", name="scholar",
                          strength=0.15, behaviour_shift={"response_timing": 0.4}),
            "feature": "log_latency_mean"},
        "merge, explorer + helper": {
            "event": dict(kind="merge", at=AT, source="explorer", target="helper",
                          strength=1.0), "feature": None},
        "drift, helper -> learner 0.5": {
            "event": dict(kind="drift", at=AT, source="helper", target="learner",
                          strength=0.5), "feature": None},
        "split, traits only (control)": {
            "event": dict(kind="split", at=AT, source="explorer", name="tinkerer",
                          strength=0.5, trait_shift={t: -0.3 for t in TRAITS[:5]}),
            "feature": None},
    }


def _track(config: PopulationConfig, users: int, interactions: int, windows: int,
           seed: int) -> tuple[EvolutionTracker, PopulationSampler, list[Any]]:
    sampler = PopulationSampler(config)
    reference = archetype_centroids(sampler, np.random.default_rng(10**6), 5000)
    tracker = EvolutionTracker(seed=seed, reference=reference,
                               archetype_names=sampler.base.names)
    population = PersistentPopulation(sampler, users, np.random.default_rng(seed))
    seen = []
    for _ in range(windows):
        window = population.window(interactions)
        f, keep = window_features(window)
        tracker.update(f.users[keep], f.values[keep])
        seen.append(window)
    return tracker, sampler, seen


def shift_in_sd(sampler: PopulationSampler, first_window: Any, feature: str) -> float:
    """The event's shift of ``feature`` in within-archetype SDs (module doc)."""
    ev = sampler.events[0]
    j = BEHAVIOUR_FEATURES.index(feature)
    source = sampler.base.index(ev.source)
    after = sampler.epoch(ev.at)
    rng = np.random.default_rng(7)
    typical = archetype_centroids(sampler, rng, 5000, epoch=int(after),
                                  rows=[source, sampler.num_archetypes - 1])
    observed = behaviour_features(*first_window.flat()).values[:, j]
    sd = observed[(first_window.primary == source) & ~first_window.is_bot].std()
    return float(abs(typical[1, j] - typical[0, j]) / sd)


def event_study(users: int, interactions: int, seeds: int) -> dict[str, Any]:
    """Recall, delay and extra events of each scenario over ``seeds`` seeds."""
    out: dict[str, Any] = {}
    for name, scenario in scenarios().items():
        kind = scenario["event"]["kind"]
        detected, delays, extra, right_source, shift = 0, [], [], 0, None
        for seed in range(seeds):
            config = PopulationConfig(concentration=CONCENTRATION, events=[scenario["event"]])
            tracker, sampler, seen = _track(config, users, interactions, AT + 2, seed)
            if scenario["feature"] and shift is None:
                shift = shift_in_sd(sampler, seen[0], scenario["feature"])
            hits = [e for e in tracker.events if e.kind == kind and e.window in (AT, AT + 1)]
            extra.append(len(tracker.events) - min(len(hits), 1))
            if hits:
                detected += 1
                delays.append(hits[0].window - AT)
                names = [tracker.names[i] for i in hits[0].source]
                right_source += scenario["event"].get("source") in names
        from statsmodels.stats.proportion import proportion_confint
        low, high = proportion_confint(detected, seeds, method="wilson")
        out[name] = {"kind": kind, "shift_sd": shift, "seeds": seeds, "detected": detected,
                     "recall": detected / seeds, "recall_ci": [low, high],
                     "mean_delay": statistics.fmean(delays) if delays else None,
                     "source_named": right_source, "other_events_mean": statistics.fmean(extra)}
        size = f"{shift:.2f} SD" if shift is not None else "—"
        print(f"{name:34s} shift {size:>8s}: detected {detected}/{seeds} "
              f"(95% CI {low:.2f}–{high:.2f}), source named {right_source}, other events "
              f"per run {out[name]['other_events_mean']:.2f}", flush=True)
    return out


def false_events(users: int, interactions: int, seeds: int, windows: int) -> dict[str, Any]:
    """False events per tested transition on stationary populations."""
    out: dict[str, Any] = {}
    for label, drift in (("stationary (drift_rate 0)", 0.0),
                         ("no events, default drift_rate 0.03", 0.03)):
        per_seed = []
        kinds: dict[str, int] = {}
        for seed in range(seeds):
            config = PopulationConfig(concentration=CONCENTRATION, drift_rate=drift)
            tracker, _, _ = _track(config, users, interactions, windows, seed)
            per_seed.append(len(tracker.events) / (windows - 2))
            for e in tracker.events:
                kinds[e.kind] = kinds.get(e.kind, 0) + 1
        # the count of false events over all tested transitions, an exact Poisson interval
        # (Garwood 1936) for its rate per transition
        from scipy.stats import chi2
        transitions = seeds * (windows - 2)
        events = int(round(sum(per_seed) * (windows - 2)))
        low = chi2.ppf(0.025, 2 * events) / 2 / transitions if events else 0.0
        high = chi2.ppf(0.975, 2 * events + 2) / 2 / transitions
        mean = events / transitions
        out[label] = {"seeds": seeds, "windows": windows, "tested_transitions": transitions,
                      "false_events": events, "false_events_per_transition": mean,
                      "ci": [low, high], "by_kind": kinds}
        print(f"{label:40s}: {mean:.3f} events per tested transition (95% CI {low:.3f}–"
              f"{high:.3f}, exact Poisson; {seeds} seeds x {windows - 2} transitions); by "
              f"kind: {kinds or 'none'}", flush=True)
    return out


def run(users: int, interactions: int, seeds: int, windows: int) -> dict[str, Any]:
    """Every figure, printed and returned."""
    print(f"{users:,} users, {interactions} interactions per window, {seeds} seeds per "
          f"scenario (event at window {AT}; stationary: {windows} windows)", flush=True)
    return {"users": users, "interactions": interactions, "concentration": CONCENTRATION,
            "events": event_study(users, interactions, seeds),
            "stationary": false_events(users, interactions, seeds, windows)}
