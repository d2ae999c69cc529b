"""Persona discovery scored against the latent truth, and its speed (issue 20).

For each population — the default one and a well-separated one (Dirichlet concentration
0.5) — and each window length (10, 50, 200 interactions per user): ``users`` users'
window (``synth.windows``), their behaviour features from the logged interactions
(``ope.features``), suspected bots removed by the quality score the platform computes
from the same window (``rewards.quality``, quality < 0.5), then k-means++
(``synth.discovery``) at k = 6 (the true number of archetypes) and at the k the silhouette
picks from 2..10. Each is scored by the adjusted Rand index against the latent primary
archetype (the argmax of the user's mean mixture over the window), for all kept users and
for clear-cut ones (primary weight >= 0.7), beside the *noiseless reference*: the same
pipeline on the users' expected features (``synth.features``). Seeds give the spread.

AgentRouting sessions (one window: its users live one session) logged under a uniformly
random router: discovery on the 8 behaviour features and on those plus 4 signal features
(engagement depth — scroll depth and dwell —, conversion, sharing; they answer the agent
chosen, so they describe users under this policy), k = 6, humans, ARI against each
session's latent primary archetype at its first decision.

Speed: ``speed_users`` users' features from a 10-interaction window, widened to 12
columns with standard-normal columns (the 8 behaviour features are all a window yields
today; the padding stands for the 4 signal features the issue's width counts), then
``discover`` with k chosen on a 50,000-user subsample and the final fit on everyone
(``MiniBatchKMeans`` above 200,000 users).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from ope.features import behaviour_features, window_features
from synth.discovery import adjusted_rand, archetype_centroids, discover
from synth.features import BEHAVIOUR_FEATURES
from synth.population import PopulationConfig, PopulationSampler
from synth.windows import PersistentPopulation

POPULATIONS = {"default": PopulationConfig(), "separated (concentration 0.5)":
               PopulationConfig(concentration=0.5)}
INTERACTIONS = (10, 50, 200)
TRUE_K = 6


def _one(sampler: PopulationSampler, reference: np.ndarray, users: int, interactions: int,
         seed: int, choose: bool) -> dict[str, Any]:
    window = PersistentPopulation(sampler, users, np.random.default_rng(seed)).window(
        interactions)
    features, keep = window_features(window)
    observed = features.values
    x, expected = observed[keep], window.expected_features[keep]
    truth, clear = window.primary[keep], window.clear_cut[keep]
    row: dict[str, Any] = {"kept": int(keep.sum()), "bots_kept": int(window.is_bot[keep].sum()),
                           "humans_dropped": int((~window.is_bot & ~keep).sum())}
    ks = [TRUE_K]
    if choose:
        chosen = discover(x, reference=reference, seed=seed)
        row["chosen_k"], row["silhouette"] = chosen.k, chosen.silhouette
        ks.append(chosen.k)
    for label, k in zip(("k=6", "chosen"), ks):
        found = discover(x, k=k, reference=reference, seed=seed)
        noiseless = discover(expected, k=k, reference=reference, seed=seed)
        row[label] = {
            "ari": adjusted_rand(found.labels, truth),
            "ari_reference": adjusted_rand(noiseless.labels, truth),
            "ari_clear_cut": adjusted_rand(found.labels, truth, clear),
            "ari_clear_cut_reference": adjusted_rand(noiseless.labels, truth, clear),
            "paired_clusters": int((found.archetype >= 0).sum())}
    return row


def _summary(rows: list[dict[str, Any]], label: str) -> dict[str, Any]:
    out = {}
    for key in ("ari", "ari_reference", "ari_clear_cut", "ari_clear_cut_reference"):
        values = [r[label][key] for r in rows]
        out[key] = statistics.fmean(values)
        out[key + "_sd"] = statistics.pstdev(values)
    out["ratio"] = statistics.fmean(r[label]["ari"] / r[label]["ari_reference"] for r in rows)
    out["ratio_clear_cut"] = statistics.fmean(
        r[label]["ari_clear_cut"] / r[label]["ari_clear_cut_reference"] for r in rows)
    return out


def accuracy(users: int, seeds: int, k_seeds: int) -> dict[str, Any]:
    """The ARI table: every population × window length over ``seeds`` seeds (``k_seeds``
    at 200 interactions, where the choice of k is counted)."""
    result: dict[str, Any] = {}
    for name, config in POPULATIONS.items():
        sampler = PopulationSampler(config)
        reference = archetype_centroids(sampler, np.random.default_rng(10**6))
        result[name] = {}
        for m in INTERACTIONS:
            n_seeds = k_seeds if m == max(INTERACTIONS) else seeds
            rows = [_one(sampler, reference, users, m, seed, choose=True)
                    for seed in range(n_seeds)]
            chosen = [r["chosen_k"] for r in rows]
            entry = {"seeds": n_seeds, "k=6": _summary(rows, "k=6"),
                     "chosen": _summary(rows, "chosen"),
                     "chosen_k": {str(k): chosen.count(k) for k in sorted(set(chosen))},
                     "kept": rows[0]["kept"], "bots_kept": sum(r["bots_kept"] for r in rows),
                     "humans_dropped": sum(r["humans_dropped"] for r in rows),
                     "paired_clusters_k6": statistics.fmean(
                         r["k=6"]["paired_clusters"] for r in rows)}
            result[name][str(m)] = entry
            s6, sc = entry["k=6"], entry["chosen"]
            print(f"{name:30s} n={m:3d} ({n_seeds} seeds): k=6 ARI {s6['ari']:.3f} "
                  f"(ref {s6['ari_reference']:.3f}, ratio {s6['ratio']:.3f}); clear-cut "
                  f"{s6['ari_clear_cut']:.3f} (ref {s6['ari_clear_cut_reference']:.3f}, "
                  f"ratio {s6['ratio_clear_cut']:.3f}); chosen k {entry['chosen_k']}: ARI "
                  f"{sc['ari']:.3f} (ref {sc['ari_reference']:.3f})", flush=True)
    return result


def sessions(episodes: int, seeds: int) -> dict[str, Any]:
    """Discovery on AgentRouting sessions logged under a uniformly random router: the 8
    behaviour features alone and with the 4 signal features (``ope.features``), k = 6,
    ARI against each session's latent primary archetype at its first decision."""
    import envs
    from agents.baselines.policies import RandomPolicy
    from agents.serving.exploration import Exploration
    from envs.creator import vector_maker
    from ope.collect import collect
    from ope.features import session_features

    env_id = "personarl/AgentRouting-v0"
    layout = envs.record(env_id).observation_layout({})
    k = layout["last_action"].stop - layout["last_action"].start
    scores: dict[str, list[float]] = {"behaviour (8)": [], "behaviour + signals (12)": []}
    for seed in range(seeds):
        data = collect(RandomPolicy(k), vector_maker(env_id), episodes, seed,
                       exploration=Exploration("sample"), record_truth=True)
        first = data.step == 0
        primary = dict(zip(data.episode[first], data.context["latent_primary"][first]))
        human = dict(zip(data.episode[first], ~data.context["is_bot"][first].astype(bool)))
        f = session_features(data, layout)
        truth = np.array([primary[u] for u in f.users])
        mask = np.array([human[u] for u in f.users])
        for label, columns in (("behaviour (8)", slice(0, len(BEHAVIOUR_FEATURES))),
                               ("behaviour + signals (12)", slice(None))):
            found = discover(f.values[mask][:, columns], k=TRUE_K, seed=seed,
                             names=f.names[columns])
            scores[label].append(adjusted_rand(found.labels, truth[mask]))
    out = {"episodes": episodes, "seeds": seeds, "policy": "uniformly random router"}
    for label, values in scores.items():
        out[label] = {"ari": statistics.fmean(values), "sd": statistics.pstdev(values)}
        print(f"AgentRouting sessions, {label}: k=6 ARI {out[label]['ari']:.3f} "
              f"(sd {out[label]['sd']:.3f}, {seeds} seeds x {episodes:,} sessions)",
              flush=True)
    return out


def speed(users: int, seed: int = 0) -> dict[str, Any]:
    """Seconds to choose k and fit on ``users`` users × 12 feature columns."""
    sampler = PopulationSampler(PopulationConfig())
    rng = np.random.default_rng(seed)
    window = PersistentPopulation(sampler, users, rng).window(10)
    observed = behaviour_features(*window.flat()).values
    x = np.column_stack([observed, rng.standard_normal((users, 12 - observed.shape[1]))])
    names = tuple(f"f{j}" for j in range(x.shape[1]))
    start = time.perf_counter()
    found = discover(x, names=names, seed=seed)
    total = time.perf_counter() - start
    start = time.perf_counter()
    discover(x, k=found.k, names=names, seed=seed)
    fit = time.perf_counter() - start
    print(f"speed: {users:,} users x 12 features: selection + final fit {total:.1f} s "
          f"(final fit alone {fit:.1f} s; k = {found.k}); target <= 60 s")
    return {"users": users, "features": 12, "seconds": total, "fit_seconds": fit,
            "k": found.k, "target_seconds": 60.0}


def run(users: int, seeds: int, k_seeds: int, speed_users: int,
        sessions_per_seed: int = 20_000) -> dict[str, Any]:
    """Every figure, printed and returned."""
    return {"users": users, "accuracy": accuracy(users, seeds, k_seeds),
            "sessions": sessions(sessions_per_seed, seeds), "speed": speed(speed_users)}
