"""Primary-persona accuracy of persona fusion vs the exact Bayes filter, and bot detection.

The simulator's noise parameters are the documented defaults (``synth.behaviour``,
``synth.population``); drift is off so the Bayes filter is exact for the model, and bots are
excluded (they have no persona). Accuracy is split by the margin between the user's two
largest mixture weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rewards.quality import QualityModel
from synth.behaviour import interaction_loglik, sample_session
from synth.fusion import BayesPersonaFilter, PersonaFusion
from synth.population import PopulationConfig, PopulationSampler

INTERACTIONS = (1, 2, 3, 5, 10, 15, 20, 30, 50, 100)
MARGINS = ((0.0, 0.1), (0.1, 0.2), (0.2, 0.4), (0.4, 1.01))


def run(users: int, particles: int, seed: int = 0) -> dict[str, Any]:
    """Accuracy table and bot-detection figures, printed and returned."""
    H = max(INTERACTIONS)
    sampler = PopulationSampler(PopulationConfig(drift_rate=0.0, bot_fraction=0.0))
    rng = np.random.default_rng(seed)
    pop = sampler.sample(users, rng)
    ses = sample_session(pop, sampler, H, rng)
    ll = interaction_loglik(sampler.base, ses.task, ses.latency, ses.explore)
    ours = PersonaFusion(sampler.proportions[0]).run(ll, np.ones((users, H))).primary
    post, ess = BayesPersonaFilter(sampler, particles, np.random.default_rng(seed + 1)
                                   ).posterior(ll)
    bayes = post.argmax(axis=2)
    margin = pop.margin()
    table: dict[str, Any] = {}
    print(f"primary-persona accuracy, {users} users, ours / Bayes filter")
    header = "interactions | all | " + " | ".join(f"margin [{a}, {min(b, 1)})"
                                                  for a, b in MARGINS)
    print(header)
    for t in INTERACTIONS:
        row = {"all": [float((ours[:, t] == pop.primary).mean()),
                       float((bayes[:, t] == pop.primary).mean())]}
        for lo, hi in MARGINS:
            sel = (margin >= lo) & (margin < hi)
            row[f"{lo}-{min(hi, 1)}"] = [float((ours[sel, t] == pop.primary[sel]).mean()),
                                         float((bayes[sel, t] == pop.primary[sel]).mean()),
                                         int(sel.sum())]
        table[str(t)] = row
        print(f"{t:12d} | " + " | ".join(f"{v[0]:.3f} / {v[1]:.3f}" for v in row.values()))
    reach = {name: next((t for t in INTERACTIONS if table[str(t)]["all"][i] >= 0.9), None)
             for i, name in enumerate(("ours", "bayes"))}
    print(f"first interaction count with >= 90% accuracy (all users): {reach}")
    print(f"Bayes filter Monte Carlo: {particles} draws per archetype, median ESS of the "
          f"final MAP class {np.median(ess):.0f}")
    return {"users": users, "particles_per_archetype": particles, "accuracy": table,
            "reach_90pct": reach, "bayes_median_ess": float(np.median(ess)),
            "bots": bot_detection(seed)}


def bot_detection(seed: int, users: int = 100_000) -> dict[str, Any]:
    """Precision/recall of ``QualityModel.flagged`` after t interactions (5% bots)."""
    sampler = PopulationSampler(PopulationConfig(bot_fraction=0.05))
    rng = np.random.default_rng(seed + 2)
    pop = sampler.sample(users, rng)
    ses = sample_session(pop, sampler, 20, rng)
    qm = QualityModel()
    quality = qm.score(ses.latency, pop.metadata_missing)
    out = {}
    print("bot detection (quality < 0.5), 5% bots:")
    for t in (1, 3, 5, 10, 20):
        flagged = qm.flagged(quality[:, t - 1])
        tp = int((flagged & pop.is_bot).sum())
        out[str(t)] = {"precision": tp / max(int(flagged.sum()), 1),
                       "recall": tp / int(pop.is_bot.sum())}
        print(f"  after {t:2d} interactions: precision {out[str(t)]['precision']:.3f}, "
              f"recall {out[str(t)]['recall']:.3f}")
    return out
