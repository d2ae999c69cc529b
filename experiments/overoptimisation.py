"""Reward over-optimisation lab: how far optimising a learned reward drifts from the truth.

    python -m experiments.overoptimisation
    python -m experiments.overoptimisation bias.strength=0.2 'seeds=[0,1,2,3,4]'

The one-step setting is PersonalityAdaptation's first turn with continuous styles, the
context being the observation and the user's profile (``envs.turns``). Per seed:

1. **Pairs.** ``contexts`` users, one pair each: two candidate styles ``N(½, pair_sd²)``
   judged by ``annotators.count`` personas of the population (``rewards.preferences``) —
   once with the exploitable taste ``bias.taste`` held with strength ``bias.strength``
   (*biased*), once without it (*control*): the same contexts, candidates, annotators and
   label draws, so the pair budget is the same.
2. **Proxies** (``agents.learners.bradley_terry``): a reward model on each pair set, and an
   ensemble of ``ensemble.members`` on the biased pairs scored with ``ensemble.objective``
   (Coste et al. 2024) — the mitigation. A tenth of the pairs is held out for each
   proxy's pair accuracy against the annotators' ceiling.
3. **Best-of-n** from the base policy ``π₀ = N(½, base_sd²)`` clipped to [0, 1]^10, for
   n = 1, 2, 4 … ``max_n``: ``max_n`` samples per evaluation context split into disjoint
   groups (``rewards.overoptimisation.best_of_n_curve``); ``KL = log n − (n − 1)/n``.
4. **RL**: SB3 PPO against each proxy, starting at ``π₀`` (``agents.learners.context_ppo``),
   with ``ppo.snapshots`` snapshots; ``KL`` between the snapshot's Gaussian and the initial
   one (analytic, averaged over the evaluation contexts); rewards from ``samples`` actions
   per evaluation context.

Along each, ``d = √KL`` and the proxy's and the true reward's change from ``π₀``; the
Gao et al. (2023) forms ``d(α − βd)`` (best-of-n) and ``d(α − β log d)`` (RL) are fitted
per seed. The peak of the true reward, whether it is interior and its drop to the last
point are read off each seed's curve; the drop of the biased proxy minus the control's is a
paired difference over seeds with its t interval. Writes ``overoptimisation.json``,
``overoptimisation.png`` and ``report.md``/``.html``. Mistakes exit with status 2.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from experiments.cli import check_command_line, check_fresh, run_app
from experiments.preference_options import (annotator_options, reward_model_config,
                                            taste_options)
from experiments.rendering import Block, human, number, save_figure, write_reports
from experiments.schema import register_configs
from personarl.errors import ConfigError, check_int, check_range

__all__ = ["overoptimisation", "lab_seed", "summarise", "main", "VARIANTS", "METHODS"]

log = logging.getLogger(__name__)
register_configs()

ENV_ID = "personarl/PersonalityAdaptation-v0"
#: the proxies compared: a reward model on biased pairs, on the same pairs without the
#: taste, and an ensemble on the biased pairs
VARIANTS = ("biased", "control", "ensemble")
#: how the proxy is optimised, and the Gao et al. form fitted to each
METHODS = {"best_of_n": "bon", "rl": "rl"}


#: what a run writes (a directory that holds any of them is another run's)
OUTPUTS = ("overoptimisation.json", "overoptimisation.png")
#: best-of-n samples a seed scores at once: eval_contexts · max_n (each a 10-trait style
#: scored by every proxy: ≈ 1 GB of activations per million at the default width)
MAX_SAMPLES = 1 << 22
#: samples a proxy scores at a time (its activations stay ≈ 100 MB)
CHUNK = 1 << 16


def _settings(cfg: DictConfig) -> dict[str, Any]:
    """Every option checked before anything runs."""
    from agents.learners.context_ppo import ContextPPOConfig
    from rewards.reward_model import OBJECTIVES

    seeds = list(cfg.seeds)
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds={seeds}: give at least two different seeds (intervals "
                          "are over seeds; the issue asks for three)")
    for s in seeds:
        check_int("seeds[]", s, 0, 2**31 - 1)
    taste, strength = taste_options(cfg.bias.taste, cfg.bias.strength, required=True)
    max_n = check_int("max_n", cfg.max_n, 2, 1 << 16)
    if max_n & (max_n - 1):
        raise ConfigError(f"max_n={max_n} must be a power of two (n = 1, 2, 4 … max_n)")
    eval_contexts = check_int("eval_contexts", cfg.eval_contexts, 10, 100_000)
    if eval_contexts * max_n > MAX_SAMPLES:
        raise ConfigError(f"eval_contexts · max_n = {eval_contexts * max_n:,} best-of-n "
                          f"samples; at most {MAX_SAMPLES:,} fit in memory: lower either")
    if cfg.ensemble.objective not in OBJECTIVES:
        raise ConfigError(f"ensemble.objective={cfg.ensemble.objective!r}; valid: "
                          f"{', '.join(OBJECTIVES)}")
    members = check_int("ensemble.members", cfg.ensemble.members, 2, 32)
    ppo = dict(OmegaConf.to_container(cfg.ppo, resolve=True))
    ppo["hidden"] = tuple(ppo["hidden"])
    try:
        ppo = ContextPPOConfig(**ppo, base_sd=check_range("base_sd", cfg.base_sd, 0, 1,
                                                           low_open=True))
    except ConfigError as exc:
        raise ConfigError(f"ppo.{exc}") from None
    return dict(
        seeds=seeds, contexts=check_int("contexts", cfg.contexts, 100, 1 << 20),
        eval_contexts=eval_contexts, max_n=max_n,
        samples=check_int("samples", cfg.samples, 1, 4096), base_sd=ppo.base_sd,
        pair_sd=check_range("pair_sd", cfg.pair_sd, 0, 1, low_open=True),
        annotators=annotator_options(cfg.annotators), taste=taste, strength=strength,
        model=reward_model_config(cfg.model, "model"),
        ensemble=reward_model_config(cfg.model, "model", members=members),
        objective=cfg.ensemble.objective,
        penalty=check_range("ensemble.penalty", cfg.ensemble.penalty, 0, 1e6),
        ppo=ppo, level=check_range("level", cfg.level, 0, 1, low_open=True, high_open=True))


def _curve(d: np.ndarray, proxy: np.ndarray, true: np.ndarray) -> dict[str, list[float]]:
    """A curve relative to its first point (``π₀``)."""
    return {"d": d.tolist(), "proxy": (proxy - proxy[0]).tolist(),
            "true": (true - true[0]).tolist()}


def lab_seed(s: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """One seed of the lab (module docstring): per variant, the proxy's held-out metrics
    and its best-of-n and RL curves."""
    from envs.turns import turn_contexts
    from personarl.seeds import generator, stream_seed32
    from rewards.overoptimisation import best_of_n_curve, best_of_n_kl

    kw = {"action_mode": "continuous"}
    ctx = turn_contexts(ENV_ID, s["contexts"], stream_seed32(seed, "preference_users", 0),
                        context="profile", env_kwargs=kw)
    ev = turn_contexts(ENV_ID, s["eval_contexts"], stream_seed32(seed, "preference_users", 1),
                       context="profile", env_kwargs=kw)
    models, metrics = _proxies(s, seed, ctx)
    # best-of-n: one set of base-policy samples per seed, shared by the variants
    C, N = len(ev), s["max_n"]
    rows = np.repeat(np.arange(C), N)
    base = np.clip(0.5 + s["base_sd"] * generator(seed, "optimisation", 0).standard_normal(
        (C * N, ev.action_dim)), 0.0, 1.0)
    true = ev.true_reward(base, rows).reshape(C, N)
    ns = 2 ** np.arange(int(np.log2(N)) + 1)
    out: dict[str, Any] = {"seed": seed, "variants": {}}
    for v, (variant, model) in enumerate(models.items()):
        obj = _objective(s, variant)
        proxy = np.concatenate([model.reward(ev.observation[rows[i:i + CHUNK]],
                                             base[i:i + CHUNK], **obj)
                                for i in range(0, len(rows), CHUNK)]).reshape(C, N)
        p_bon, t_bon = best_of_n_curve(proxy, true, ns)
        out["variants"][variant] = {
            "heldout": metrics[variant], "n": ns.tolist(),
            "best_of_n": _curve(np.sqrt(best_of_n_kl(ns)), p_bon, t_bon),
            "rl": _rl_curve(s, seed, v, lambda x, a, m=model, o=obj: m.reward(x, a, **o),
                            ctx, ev)}
        log.info("seed %d %s: held-out accuracy %.3f (ceiling %.3f)", seed, variant,
                 metrics[variant]["accuracy"], metrics[variant]["ceiling"])
    return out


def _proxies(s: Mapping[str, Any], seed: int, ctx: Any) -> tuple[dict, dict]:
    """The biased and control pair sets and the three proxies fitted to them, with each
    proxy's metrics on a held-out tenth of its pairs."""
    from agents.learners.bradley_terry import fit_reward_model
    from personarl.seeds import generator, stream_seed32
    from rewards.preferences import population_annotators
    from rewards.reward_model import pair_metrics

    pool = population_annotators(s["annotators"]["count"], generator(seed, "annotation", 0),
                                 tau=s["annotators"]["tau"], flip=s["annotators"]["flip"],
                                 bias=s["strength"])
    # the same candidates and label draws for both: only the taste differs
    pairs = {"biased": ctx.compare(pool, generator(seed, "annotation", 1), sd=s["pair_sd"],
                                   taste=s["taste"]),
             "control": ctx.compare(pool, generator(seed, "annotation", 1), sd=s["pair_sd"])}
    models, metrics = {}, {}
    for i, variant in enumerate(VARIANTS):
        train, held = pairs["control" if variant == "control" else "biased"].split(
            0.1, generator(seed, "annotation", 2))
        config = s["ensemble"] if variant == "ensemble" else s["model"]
        models[variant] = fit_reward_model(train, config,
                                           seed=stream_seed32(seed, "optimisation", 3, i))
        metrics[variant] = pair_metrics(models[variant], held, **_objective(s, variant))
    return models, metrics


def _rl_curve(s: Mapping[str, Any], seed: int, index: int, proxy: Any, ctx: Any, ev: Any
              ) -> dict[str, list[float]]:
    """PPO against ``proxy(contexts, styles)`` from π₀, scored at each snapshot on the
    evaluation users: ``d``, proxy and true reward from π₀, and the snapshot's steps."""
    from agents.learners.context_ppo import ppo_snapshots
    from personarl.seeds import generator, stream_seed32
    from rewards.overoptimisation import gaussian_kl

    snaps = ppo_snapshots(ctx.observation, lambda r, a: proxy(ctx.observation[r], a),
                          ev.observation, ev.action_dim, s["ppo"],
                          seed=stream_seed32(seed, "optimisation", 2, index))
    rng = generator(seed, "optimisation", 1)
    rows = np.repeat(np.arange(len(ev)), s["samples"])
    kl, p_rl, t_rl = [], [], []
    for snap in snaps:
        kl.append(float(gaussian_kl(snap.mean, snap.log_std, snaps[0].mean,
                                    snaps[0].log_std).mean()))
        acts = np.clip(snap.mean[rows] + np.exp(snap.log_std)
                       * rng.standard_normal((len(rows), ev.action_dim)), 0.0, 1.0)
        p_rl.append(proxy(ev.observation[rows], acts).mean())
        t_rl.append(ev.true_reward(acts, rows).mean())
    return {**_curve(np.sqrt(np.maximum(kl, 0.0)), np.array(p_rl), np.array(t_rl)),
            "timesteps": [sn.timesteps for sn in snaps]}


def _objective(s: Mapping[str, Any], variant: str) -> dict[str, Any]:
    if variant == "ensemble":
        return {"objective": s["objective"], "penalty": s["penalty"]}
    return {"objective": "mean"}


def _peak(true: np.ndarray) -> dict[str, Any]:
    """The true reward's peak along a curve, whether it is interior (neither the first nor
    the last point), and its drop to the last point."""
    i = int(np.argmax(true))
    return {"peak": float(true[i]), "peak_index": i,
            "interior": bool(0 < i < len(true) - 1), "drop": float(true[i] - true[-1])}


def summarise(results: list[dict[str, Any]], level: float) -> dict[str, Any]:
    """Per variant and method: fits, peaks and drops per seed and their t intervals; the
    paired difference of the biased and control drops."""
    from personarl.stats import mean_ci
    from rewards.overoptimisation import fit_scaling_law

    out: dict[str, Any] = {}
    for method, form in METHODS.items():
        per: dict[str, Any] = {}
        for variant in VARIANTS:
            curves = [r["variants"][variant][method] for r in results]
            fits = [fit_scaling_law(np.array(c["d"]), np.array(c["true"]), form)
                    for c in curves]
            peaks = [_peak(np.array(c["true"])) for c in curves]
            row: dict[str, Any] = {"fits": [f.as_dict() for f in fits], "peaks": peaks}
            for key, values in (("alpha", [f.alpha for f in fits]),
                                ("beta", [f.beta for f in fits]),
                                ("r2", [f.r2 for f in fits]),
                                ("peak", [p["peak"] for p in peaks]),
                                ("drop", [p["drop"] for p in peaks]),
                                ("final_true", [c["true"][-1] for c in curves]),
                                ("final_proxy", [c["proxy"][-1] for c in curves])):
                row[key] = list(mean_ci(np.array(values), level))
            row["interior_peaks"] = int(sum(p["interior"] for p in peaks))
            per[variant] = row
        diff = [b["drop"] - c["drop"] for b, c in zip(per["biased"]["peaks"],
                                                      per["control"]["peaks"])]
        per["drop_difference"] = list(mean_ci(np.array(diff), level))
        out[method] = per
    return out


def _plot(results: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rewards.overoptimisation import fit_scaling_law

    colours = {"biased": "tab:red", "control": "tab:blue", "ensemble": "tab:green"}
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex="col")
    for col, (method, form) in enumerate(METHODS.items()):
        for variant in VARIANTS:
            curves = [r["variants"][variant][method] for r in results]
            d = np.mean([c["d"] for c in curves], axis=0)
            for row, key in enumerate(("true", "proxy")):
                y = np.array([c[key] for c in curves])
                ax = axes[row, col]
                ax.plot(d, y.mean(axis=0), "o-", ms=3, color=colours[variant],
                        label=variant)
                ax.fill_between(d, y.min(axis=0), y.max(axis=0), color=colours[variant],
                                alpha=0.15, lw=0)
            fit = fit_scaling_law(d, np.mean([c["true"] for c in curves], axis=0), form)
            grid = np.linspace(0, d.max(), 200)
            axes[0, col].plot(grid, fit.predict(grid), "--", color=colours[variant], lw=1)
        axes[0, col].set_title(("best-of-n" if method == "best_of_n" else "PPO")
                               + ": true reward (dashed: the law fitted to the mean)")
        axes[1, col].set_title("proxy (learned) reward")
        axes[0, col].set_ylabel("true reward − π₀'s (reward units)")
        axes[1, col].set_ylabel("proxy − π₀'s (reward-model units)")
        axes[1, col].set_xlabel("d = √KL(π ‖ π₀)  (√nats)")
        for ax in axes[:, col]:
            ax.axhline(0, color="grey", lw=0.5)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(title="proxy (band: range over seeds)")
    fig.tight_layout()
    return save_figure(fig, path)


def overoptimisation(cfg: DictConfig, run_dir: Path) -> Path:
    """Run the lab per ``cfg`` into ``run_dir``; the report's path."""
    s = _settings(cfg)
    check_fresh(run_dir, OUTPUTS)
    results = []
    for seed in s["seeds"]:
        results.append(lab_seed(s, seed))
    summary = summarise(results, s["level"])
    settings = {k: (asdict(v) if hasattr(v, "__dataclass_fields__") else v)
                for k, v in s.items()}
    (run_dir / "overoptimisation.json").write_text(json.dumps(
        {"settings": settings, "summary": summary, "seeds": results}, indent=1, default=str))
    figure = _plot(results, run_dir / "overoptimisation.png")
    return write_reports(run_dir, _report(s, results, summary, figure.name))


def _ci(v: list[float], fmt: str = ".4f") -> str:
    return f"{number(v[0], fmt)} [{number(v[1], fmt)}, {number(v[2], fmt)}]"


def _report(s: Mapping[str, Any], results: list[dict[str, Any]],
            summary: Mapping[str, Any], figure: str) -> list[Block]:
    from personarl.stats import mean_ci

    k = len(s["seeds"])
    pct = f"{s['level']:.0%}"
    b: list[Block] = [
        ("h1", "Reward over-optimisation"),
        ("p", f"PersonalityAdaptation's first turn (continuous styles; context: observation "
              f"and the user's profile). {s['contexts']:,} pairs per proxy from "
              f"{s['annotators']['count']} annotators (τ {s['annotators']['tau']}, flip "
              f"{s['annotators']['flip']}); taste `{s['taste']}` held with strength "
              f"{s['strength']} by the biased annotators. π₀ = N(½, {s['base_sd']}²) "
              f"clipped; best-of-n up to n = {s['max_n']}; PPO for "
              f"{s['ppo'].timesteps:,} decisions. {k} seeds; intervals: {pct} t over "
              "seeds."),
        ("h2", "Proxies: held-out pair accuracy"),
        ("table", (["proxy", "accuracy", "annotators' ceiling", "ECE",
                    "agrees with the truth"],
                   [[v, *(_ci(list(mean_ci(np.array([r["variants"][v]["heldout"][m]
                                                      for r in results]), s["level"])))
                          for m in ("accuracy", "ceiling", "ece", "agree_with_truth"))]
                    for v in VARIANTS])),
        ("img", figure)]
    for method in METHODS:
        m = summary[method]
        title = "Best-of-n" if method == "best_of_n" else "PPO"
        form = "d(α − βd)" if method == "best_of_n" else "d(α − β log d)"
        b += [("h2", f"{title}: the true reward along optimisation, fitted as {form}"),
              ("table", (["proxy", "α", "β", "R²", "true peak", "interior peaks",
                          "drop after the peak", "true at the end", "proxy at the end"],
                         [[v, _ci(m[v]["alpha"]), _ci(m[v]["beta"]), _ci(m[v]["r2"], ".3f"),
                           _ci(m[v]["peak"]), f"{m[v]['interior_peaks']} / {k}",
                           _ci(m[v]["drop"]), _ci(m[v]["final_true"]),
                           _ci(m[v]["final_proxy"], ".3f")] for v in VARIANTS])),
              ("p", f"Drop of the biased proxy minus the control's (paired by seed): "
                    f"{_ci(m['drop_difference'])} — "
                    + ("outside" if m["drop_difference"][1] > 0 else "not outside")
                    + " the interval's zero.")]
    b.append(("p", "Settings: " + human({k2: v for k2, v in s.items()
                                         if k2 not in ("model", "ensemble", "ppo")})))
    return b


@hydra.main(version_base="1.3", config_path="../configs", config_name="overoptimisation")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    path = run_app("run the over-optimisation lab", cfg,
                   lambda: overoptimisation(cfg, run_dir), run_dir)
    print(f"report: {path}")


if __name__ == "__main__":
    check_command_line("overoptimisation", "run the over-optimisation lab")
    main()
