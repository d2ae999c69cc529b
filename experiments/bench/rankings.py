"""Agent rankings per task type × persona against the simulator's true agent quality
(issue 20).

AgentRouting (its registered defaults) logged under a uniformly random router (every agent
equally likely: the rankings' means are then unbiased per cell), with the simulator's
truth recorded (``ope.collect``). From the first ``n`` logged decisions,
``agents.baselines.rankings.AgentRankings`` ranks the agents per task type × persona, the
persona being (a) fusion's estimate in the observation (its argmax when its confidence is
at least the persona router's 0.6; decisions without one are left out) or (b) the latent
primary archetype (what a perfect persona estimate would give). The truth is
``true_quality``: each agent's expected reward (``info``) averaged over the cell's
decisions of the whole log. Kendall's τ-b between the two orders, per cell, is averaged
over the cells with at least one reward for every agent; seeds give the spread.
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

from agents.baselines.policies import RandomPolicy
import envs
from agents.baselines.rankings import (AgentRankings, fusion_persona, kendall_tau,
                                       true_quality)
from agents.serving.exploration import Exploration
from envs.creator import vector_maker
from ope.collect import collect

ENV = "personarl/AgentRouting-v0"
SIZES = (1_000, 10_000, 100_000)
MIN_CONFIDENCE = 0.6


def _log(decisions: int, seed: int, agents: int) -> Any:
    """At least ``decisions`` logged decisions of a uniformly random router, with the truth."""
    episodes = max(decisions // 3, 256)
    while True:
        data = collect(RandomPolicy(agents), vector_maker(ENV), episodes, seed,
                       exploration=Exploration("sample"), record_truth=True)
        if data.n >= decisions:
            return data
        episodes *= 2


def run(seeds: int, sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    """τ per logged-decision count and persona source, printed and returned."""
    out: dict[str, Any] = {}
    per: dict[tuple[int, str], list[float]] = {}
    cols = envs.record(ENV).observation_layout({})
    shape = tuple(cols[c].stop - cols[c].start
                  for c in ("task", "persona_scores", "last_action"))
    for seed in range(seeds):
        data = _log(max(sizes), seed, shape[2])
        task = data.obs[:, cols["task"]].argmax(axis=1)
        estimated = fusion_persona(data.obs, cols, MIN_CONFIDENCE)
        confident = estimated < shape[1]                 # a usable estimate
        latent = data.context["latent_primary"].astype(np.int64)
        truth = true_quality(task, latent, data.context["expected_reward"], shape)
        for n in sizes:
            first = slice(0, n)
            for source, persona, keep in (
                    ("fusion estimate", estimated, confident),
                    ("latent archetype", latent, np.ones(len(task), bool))):
                rows = np.flatnonzero(keep[first])
                ranks = AgentRankings.from_log(task[rows], persona[rows], data.action[rows],
                                               data.reward[rows], shape)
                tau = kendall_tau(ranks.mean, truth)
                per.setdefault((n, source), []).append(float(np.nanmean(tau)))
    for (n, source), values in sorted(per.items()):
        mean = statistics.fmean(values)
        sd = statistics.pstdev(values) if len(values) > 1 else float("nan")
        out.setdefault(str(n), {})[source] = {"tau": mean, "sd": sd, "seeds": len(values)}
        print(f"{n:>7,} logged decisions, persona = {source:16s}: mean Kendall tau "
              f"{mean:.3f} (sd {sd:.3f} over {len(values)} seeds)", flush=True)
    return {"env": ENV, "behaviour": "uniformly random router", "taus": out}
