"""Rank the AI agents per task type × persona from a logged AgentRouting dataset.

    python -m experiments.rank data=<logged.parquet>
    python -m experiments.rank data=<logged.parquet> persona_from=latent

``data`` is a file ``experiments.collect`` wrote from AgentRouting (the behaviour policy's
own exploration decides how fair the comparison is: a uniformly random router's log
ranks every agent on the same users). Each decision's task type comes from the
observation; its persona from fusion's estimate in the observation (``persona_from=fusion``:
its argmax when its confidence is at least ``min_confidence``, else the "unknown" row —
the persona router's cells) or from the simulator's latent primary archetype
(``persona_from=latent``, a log collected with ``record_truth=true``).
``agents.baselines.rankings`` gives each agent's mean reward with its ``level`` interval,
its rank and its routing weight (``temperature``). A log with the truth also gets each
agent's true quality per task type × latent archetype and Kendall's τ between the two
orders. Writes ``rankings.parquet`` (one row per task × persona × agent) and
``report.md`` / ``report.html`` into the run directory. Mistakes exit with status 2.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from experiments.cli import check_command_line, run_app
from experiments.rendering import Block, number, write_reports
from experiments.schema import register_configs
from personarl.errors import ConfigError, DataError, check_range

__all__ = ["rank_agents", "main"]

log = logging.getLogger(__name__)
register_configs()

PERSONAS = ("fusion", "latent")


def rank_agents(cfg: DictConfig, run_dir: Path) -> Path:
    """Rank per ``cfg`` into ``run_dir``; the report's path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import envs
    from agents.baselines.rankings import (AgentRankings, fusion_persona, kendall_tau,
                                           true_quality)
    from ope.files import read_logged
    from synth.archetypes import ARCHETYPE_NAMES, TASK_TYPES

    if cfg.persona_from not in PERSONAS:
        raise ConfigError(f"persona_from={cfg.persona_from!r}; valid: {list(PERSONAS)}")
    min_confidence = check_range("min_confidence", cfg.min_confidence, 0, 1)
    path = Path(str(cfg.data))
    if not path.is_file():
        raise ConfigError(f"data={cfg.data!r} does not exist; give a Parquet file from "
                          "python -m experiments.collect (AgentRouting)")
    data = read_logged(path)
    env_id = data.meta.get("env_id")
    if env_id is None or "AgentRouting" not in str(env_id):
        raise DataError(f"data={cfg.data!r} was logged on {env_id!r}; agent rankings need "
                        "an AgentRouting log (its actions are agents)")
    cols = envs.record(env_id).observation_layout(data.meta.get("env_config") or {})
    task = data.obs[:, cols["task"]].argmax(axis=1)
    A = cols["persona_scores"].stop - cols["persona_scores"].start
    truth_cols = ("latent_primary", "expected_reward")
    has_truth = data.context is not None and all(k in data.context for k in truth_cols)
    if cfg.persona_from == "latent":
        if not has_truth:
            raise DataError(f"persona_from=latent needs the simulator's truth in the log; "
                            f"collect with record_truth=true (data={cfg.data!r} has none)")
        persona = data.context["latent_primary"].astype(np.int64)
        rows = list(ARCHETYPE_NAMES[:A])
    else:
        persona = fusion_persona(data.obs, cols, min_confidence)
        rows = [*ARCHETYPE_NAMES[:A], "unknown"]
    shape = (len(TASK_TYPES), len(rows), data.n_actions)
    ranks = AgentRankings.from_log(task, persona, data.action, data.reward, shape,
                                   temperature=cfg.temperature, level=cfg.level)
    truth = tau = None
    if has_truth:
        truth = true_quality(task, data.context["latent_primary"].astype(np.int64),
                             data.context["expected_reward"], (len(TASK_TYPES), A,
                                                               data.n_actions))
        tau = kendall_tau(ranks.mean[:, :A], truth)
    t, p, k = np.indices(shape).reshape(3, -1)
    table = {"task": [TASK_TYPES[i] for i in t], "persona": [rows[i] for i in p],
             "agent": k, "count": ranks.count.ravel().astype(np.int64),
             "mean": ranks.mean.ravel(), "low": ranks.low.ravel(), "high": ranks.high.ravel(),
             "rank": ranks.rank.ravel().astype(np.int64), "weight": ranks.weight.ravel()}
    if truth is not None:
        padded = np.full(shape, np.nan)
        padded[:, :A] = truth
        table["true_mean"] = padded.ravel()
    pq.write_table(pa.table(table), run_dir / "rankings.parquet")
    log.info("ranked %d agents over %d decisions", data.n_actions, data.n)
    return _report(cfg, run_dir, data.n, ranks, rows, truth, tau)


def _report(cfg: DictConfig, run_dir: Path, n: int, ranks: Any, rows: list[str],
            truth: np.ndarray | None, tau: np.ndarray | None) -> Path:
    from synth.archetypes import TASK_TYPES

    b: list[Block] = [
        ("h1", "Agent rankings per task type × persona"),
        ("p", f"{n:,} logged decisions from `{cfg.data}`; persona: "
              + ("fusion's estimate (confidence ≥ "
                 f"{cfg.min_confidence}; else unknown)" if cfg.persona_from == "fusion" else
                 "the latent primary archetype")
              + f". Each agent's mean reward with its {cfg.level:.0%} Student-t interval "
              f"(— below two rewards), its rank and its routing weight = softmax(mean / "
              f"{cfg.temperature}) and the rewards it rests on (n): a cell's order is only "
              "as good as its counts; an agent without rewards gets no weight, and a cell "
              "without any gives every agent rank 1 and an even weight. Every decision "
              "counts, suspected bots' included (the reward already weighs them by the "
              "quality score). Each cell: the agents by rank."),
    ]
    header = ["task", "persona", "agent (rank): mean [interval], weight, n"]
    if truth is not None:
        header += ["true order", "Kendall τ"]
    body = []
    for i, task in enumerate(TASK_TYPES):
        for j, persona in enumerate(rows):
            order = np.argsort(ranks.rank[i, j], kind="stable")
            cell = "; ".join(
                f"{a} ({int(ranks.rank[i, j, a])}): {number(ranks.mean[i, j, a], '.3f')} "
                f"[{number(ranks.low[i, j, a], '.3f')}, {number(ranks.high[i, j, a], '.3f')}]"
                f", {number(ranks.weight[i, j, a], '.2f')}, {int(ranks.count[i, j, a])}"
                for a in order)
            line = [task, persona, cell]
            if truth is not None and tau is not None:
                known = j < truth.shape[1] and np.isfinite(truth[i, j]).all()
                line += [" > ".join(str(a) for a in np.argsort(-truth[i, j], kind="stable"))
                         if known else "—", number(tau[i, j], ".2f") if known else "—"]
            body.append(line)
    b.append(("table", (header, body)))
    if tau is not None:
        b.append(("p", f"Mean Kendall τ over the cells with data: "
                       f"{number(float(np.nanmean(tau)), '.3f')}."))
    return write_reports(run_dir, b)


@hydra.main(version_base="1.3", config_path="../configs", config_name="rank")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    path = run_app("rank", cfg, lambda: rank_agents(cfg, run_dir), run_dir)
    print(f"report: {path}")


if __name__ == "__main__":
    check_command_line("rank", "rank")
    main()
