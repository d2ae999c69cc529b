"""Annotate preference pairs, train a Bradley–Terry reward model, export fine-tuning files.

    python -m experiments.preferences
    python -m experiments.preferences context=observation          # for reward=learned
    python -m experiments.preferences task=routing context=observation
    python -m experiments.preferences bias.taste=flattery bias.strength=0.4 export=true

``pairs`` users of the env's one-step setting (``envs.turns``: PersonalityAdaptation's first
turn, continuous styles by default; AgentRouting with ``horizon=1``) each get one pair of
candidate actions judged by ``annotators.count`` personas of the population
(``rewards.preferences``), optionally with an exploitable taste. ``holdout`` of the pairs
are kept aside; a reward model (``agents.learners.bradley_terry``) is trained on the rest and
scored on them — pair accuracy against the annotators' ceiling, calibration, agreement with
the true reward. Writes ``pairs.npz``, ``reward_model.npz`` (what ``reward=learned
reward.model=<path>`` trains PPO against, when ``context=observation``) and
``report.md``/``.html``. With ``export=true`` (PersonalityAdaptation): the pairs as TRL's
standard and conversational DPO files and the chosen replies as chat JSONL
(``rewards.dpo``, ``rewards.replies``), every row checked. Mistakes exit with status 2.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from experiments.cli import check_command_line, check_fresh, run_app
from experiments.preference_options import (annotator_options, reward_model_config,
                                            taste_options)
from experiments.rendering import Block, human, write_reports
from experiments.schema import register_configs
from personarl.errors import ConfigError, DataError, check_int, check_range

__all__ = ["preferences", "export_pairs", "main", "TASKS"]

log = logging.getLogger(__name__)
register_configs()

#: task option -> env id (the envs with a one-step setting, envs.turns.TURN_ENVS)
TASKS = {"adaptation": "personarl/PersonalityAdaptation-v0",
        "routing": "personarl/AgentRouting-v0"}


#: what a run writes (a directory that holds any of them is another run's)
OUTPUTS = ("pairs.npz", "reward_model.npz", "export.json", "preferences.*.jsonl")


def _checked(cfg: DictConfig) -> dict[str, Any]:
    from envs.turns import CONTEXTS
    from rewards.dpo import FORMATS

    if cfg.task not in TASKS:
        raise ConfigError(f"task={cfg.task!r}; valid: {', '.join(TASKS)}")
    if cfg.context not in CONTEXTS:
        raise ConfigError(f"context={cfg.context!r}; valid: {', '.join(CONTEXTS)}")
    if cfg.action_mode not in ("continuous", "discrete"):
        raise ConfigError(f"action_mode={cfg.action_mode!r}; valid: continuous, discrete")
    env_kwargs = ({"action_mode": cfg.action_mode} if cfg.task == "adaptation"
                  else {"horizon": 1})
    env_kwargs["population"] = OmegaConf.to_container(cfg.persona, resolve=True)
    taste, strength = taste_options(cfg.bias.taste, cfg.bias.strength, required=False)
    if taste is not None and cfg.task != "adaptation":
        raise ConfigError(f"bias.taste={taste!r} is a taste over assistant styles; "
                          f"task={cfg.task} has none: use bias.taste=null")
    formats = list(cfg.formats)
    for f in formats:
        if f not in FORMATS:
            raise ConfigError(f"formats: {f!r}; valid: {', '.join(FORMATS)}")
    if cfg.export and cfg.task != "adaptation":
        raise ConfigError("export=true renders PersonalityAdaptation's styles as replies; "
                          f"task={cfg.task} acts with agents, not text")
    if cfg.export and not formats:
        raise ConfigError(f"export=true with formats=[]: name at least one of "
                          f"{', '.join(FORMATS)}")
    pairs = check_int("pairs", cfg.pairs, 20, 1 << 20)
    holdout = check_int("holdout", cfg.holdout, 10, pairs - 10)
    return dict(env_id=TASKS[cfg.task], env_kwargs=env_kwargs, pairs=pairs, holdout=holdout,
                seed=check_int("seed", cfg.seed, 0, 2**31 - 1),
                sd=check_range("candidate_sd", cfg.candidate_sd, 0, 1, low_open=True),
                **annotator_options(cfg.annotators), taste=taste, strength=strength,
                model=reward_model_config(cfg.model, "model"), formats=formats)


def preferences(cfg: DictConfig, run_dir: Path) -> Path:
    """Annotate, train, score and export per ``cfg`` into ``run_dir``; the report's path."""
    from agents.learners.bradley_terry import fit_reward_model
    from envs.registration import describe
    from envs.turns import turn_contexts
    from personarl.seeds import generator, stream_seed32
    from rewards.preferences import pairs_summary, population_annotators
    from rewards.reward_model import pair_metrics

    s = _checked(cfg)
    check_fresh(run_dir, OUTPUTS)
    seed = s["seed"]
    ctx = turn_contexts(s["env_id"], s["pairs"], stream_seed32(seed, "preference_users", 0),
                        context=cfg.context, env_kwargs=s["env_kwargs"])
    pool = population_annotators(s["count"], generator(seed, "annotation", 0),
                                 population=s["env_kwargs"]["population"], tau=s["tau"],
                                 flip=s["flip"], bias=s["strength"])
    pairs = ctx.compare(pool, generator(seed, "annotation", 1), sd=s["sd"], taste=s["taste"])
    train, held = pairs.split(s["holdout"] / len(pairs), generator(seed, "annotation", 2))
    model = fit_reward_model(train, s["model"], seed=stream_seed32(seed, "optimisation", 3))
    metrics = pair_metrics(model, held)
    model.meta.update(env_id=s["env_id"], env_kwargs=s["env_kwargs"], context=cfg.context,
                      env_configuration=describe(s["env_id"], s["env_kwargs"]).configuration(),
                      heldout=metrics)
    pairs.save(run_dir / "pairs.npz")
    model.save(run_dir / "reward_model.npz")
    exported = export_pairs(pairs, s["formats"], run_dir) if cfg.export else {}
    log.info("held-out accuracy %.4f, ceiling %.4f", metrics["accuracy"], metrics["ceiling"])
    return write_reports(run_dir, _report(cfg, s, pairs_summary(pairs), metrics, model,
                                          exported))


def export_pairs(pairs: Any, formats: list[str], out: Path) -> dict[str, Any]:
    """PersonalityAdaptation pairs as the ``formats`` files in ``out`` (``rewards.dpo``).

    Pairs whose two replies render the same text are left out; ``export.json`` maps each
    row to its pair and gives the counts. Returns that manifest.
    """
    from envs.adaptation_core import OBS_COLUMNS
    from envs.adaptation_model import style_vectors
    from rewards.dpo import chat_records, preference_records, write_jsonl
    from rewards.replies import SYSTEM_PROMPT, assistant_reply, user_message

    obs = pairs.context[:, :OBS_COLUMNS["last_style"].stop]
    topic = obs[:, OBS_COLUMNS["topic"]].argmax(axis=1)
    if pairs.num_actions is None:
        chosen, rejected = pairs.chosen, pairs.rejected
    else:
        perceived = obs[:, OBS_COLUMNS["perceived"]].astype(np.float64)
        chosen = style_vectors(pairs.chosen, perceived)
        rejected = style_vectors(pairs.rejected, perceived)
    prompts = [user_message(int(t), float(x), float(u)) for t, x, u in
               zip(topic, obs[:, OBS_COLUMNS["sentiment"].start],
                   obs[:, OBS_COLUMNS["urgency"].start])]
    good = [assistant_reply(a, int(t)) for a, t in zip(chosen, topic)]
    bad = [assistant_reply(a, int(t)) for a, t in zip(rejected, topic)]
    keep = [i for i in range(len(prompts)) if good[i] != bad[i]]
    if not keep:
        raise DataError(f"all {len(prompts)} pairs render the same reply for chosen and "
                        "rejected (their styles fall in the same bands of the template "
                        "library, rewards.replies): widen candidate_sd")
    p, c, r = ([x[i] for i in keep] for x in (prompts, good, bad))
    files = {}
    for fmt in formats:
        records = (chat_records(p, c, system=SYSTEM_PROMPT) if fmt == "chat" else
                   preference_records(p, c, r, fmt))
        files[fmt] = write_jsonl(out / f"preferences.{fmt}.jsonl", records, fmt).name
    manifest = {"pairs": len(pairs), "rows": len(keep), "same_text_dropped":
                len(pairs) - len(keep), "files": files, "pair_of_row": keep}
    (out / "export.json").write_text(json.dumps(manifest))
    return manifest


def _report(cfg: DictConfig, s: dict[str, Any], summary: dict[str, Any],
            metrics: dict[str, Any], model: Any, exported: dict[str, Any]) -> list[Block]:
    gap = metrics["ceiling"] - metrics["accuracy"]
    b: list[Block] = [
        ("h1", "Preference pairs and a Bradley–Terry reward model"),
        ("p", f"{s['env_id']} one-step setting "
              f"({human({k: v for k, v in s['env_kwargs'].items() if k != 'population'})}; "
              f"users from `persona`), context "
              f"`{cfg.context}`. {summary['pairs']:,} pairs from {summary['annotators']} "
              f"annotators (τ {s['tau']}, flip {s['flip']}"
              + (f", taste `{s['taste']}` at strength {s['strength']}" if s["taste"] else "")
              + f"); {summary['agree_with_truth']:.1%} of the labels agree with the true "
              "reward."),
        ("h2", "Held-out pairs"),
        ("table", (["pairs", "accuracy", "annotators' ceiling", "gap (points)", "log loss",
                    "ECE", "agrees with the truth"],
                   [[f"{metrics['pairs']:,}", f"{metrics['accuracy']:.4f}",
                     f"{metrics['ceiling']:.4f}", f"{100 * gap:.2f}",
                     f"{metrics['log_loss']:.4f}", f"{metrics['ece']:.4f}",
                     f"{metrics['agree_with_truth']:.4f}"]])),
        ("p", "The ceiling is E[f + (1 − 2f)·σ(|Δu|/τ)] over the held-out pairs: the "
              "accuracy of a predictor that knows every annotator's utility. On the "
              "`observation` context the model cannot see the latent user the annotators "
              "judge for, so it stays further below it than on `profile`."),
        ("p", f"Model: {model.members} member(s), hidden {list(s['model'].hidden)}, "
              f"{model.meta['epochs_run']} epochs on {model.meta['pairs_train']:,} pairs "
              "(`reward_model.npz`; scored in NumPy by `rewards.reward_model.RewardModel`)."
              + (" Train PPO against it: `python -m experiments.train reward=learned "
                 "reward.model=<run dir>/reward_model.npz`" +
                 (" with `experiment=adaptation_continuous`." if s["env_kwargs"].get("action_mode")
                  == "continuous" else ".")
                 if cfg.context == "observation" else ""))]
    if exported:
        b += [("h2", "Export"),
              ("p", f"{exported['rows']:,} rows ({exported['same_text_dropped']:,} pairs "
                    "dropped: their two replies render the same text): "
                    + ", ".join(f"`{f}`" for f in exported["files"].values())
                    + "; `export.json` maps rows to pairs.")]
    return b


@hydra.main(version_base="1.3", config_path="../configs", config_name="preferences")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    path = run_app("learn preferences", cfg, lambda: preferences(cfg, run_dir), run_dir)
    print(f"report: {path}")


if __name__ == "__main__":
    check_command_line("preferences", "learn preferences")
    main()
