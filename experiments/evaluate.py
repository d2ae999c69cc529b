"""The offline policy evaluation report: logged data + candidate policies -> estimates with
intervals, the true values beside them, rankings and a recommendation.

    python -m experiments.evaluate data=outputs/<date>/<time>/logged.parquet
    python -m experiments.evaluate data=<...> policies=[greedy,random,outputs/<...>/policy]
    python -m experiments.evaluate data=<...> ci.refit=true       # model error in DM/FQE CIs

Writes ``report.md``, ``report.html``, ``summary.json`` and ``estimates.png`` into the Hydra
run directory. The env comes from the data's metadata; a bundle for another env is refused.
The policies act under ``exploration`` (``greedy`` unless set; the random baseline always
samples), in the estimates and in the truth alike.
Per policy and estimator: the estimate (None where undefined), its percentile-bootstrap CI
(whole episodes resampled; ``ci.refit=true`` refits the reward/Q model in each of
``ci.refit_resamples`` resamples so model-based intervals include the model's error), the
share of resamples where it is undefined, the empirical-Bernstein lower bound (plain-mean
estimators), the true value (on-policy Monte Carlo in the simulator, with its CI) and the
normalised error ``|V̂ − V| / (V_top − V_random)`` — ``V_top`` the best privileged baseline's
true value; which estimator to trust for that policy (or that none can be), and one for
ranking them all. Every random stream comes from ``seed`` by purpose (``personarl.seeds``):
the truth's users are never the logged users, even when ``experiments.collect`` ran with the
same seed. Mistakes exit with status 2 and a message.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import hydra
import numpy as np
from tqdm import tqdm
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from agents.serving.exploration import Exploration
from experiments.cli import check_command_line, run_app
from experiments.rendering import (Block, fairness_blocks, human, number, save_figure,
                                   short_label, write_reports)
from experiments.schema import register_configs
from experiments.wiring import flatten, load_policy_spec
from personarl import jsonio
from personarl.seeds import MAX_EPISODES, MAX_SEED
from personarl.errors import (ConfigError, DataError, PersonaRLError, check_flag, check_int,
                              check_range)

__all__ = ["evaluate_offline", "main"]

log = logging.getLogger(__name__)
register_configs()


def _timed(fit: Callable[..., np.ndarray], resamples: int, fits_per_resample: int
           ) -> Callable[..., np.ndarray]:
    """``fit`` that logs, after its first call, what refitting every resample will cost."""
    first = True

    def wrapped(*args: Any) -> np.ndarray:
        nonlocal first
        start = time.perf_counter()
        out = fit(*args)
        if first:
            first = False
            seconds = time.perf_counter() - start
            log.info("ci.refit: one model fit took %.1f s; %d resamples x %d fit(s) each ≈ "
                     "%.0f s", seconds, resamples, fits_per_resample,
                     seconds * resamples * fits_per_resample)
        return out

    return wrapped


def _env_of(path: str, env_id: str, kwargs: Any, data: Any) -> Callable[[int], Any]:
    """``make_env`` for the env the log names in its metadata, checked against the log.

    Raises:
        DataError: the metadata's env config does not build the env, the log's observations
            are not that env's width, or its episodes are longer than the env's.
    """
    from envs.creator import vector_maker
    from envs.registration import describe

    if not isinstance(kwargs, dict):
        raise DataError(f"{path}: metadata env_config={kwargs!r} must be a mapping")
    try:
        core = describe(env_id, kwargs)
    except (PersonaRLError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: its metadata env {env_id} with env_config {kwargs} does "
                        f"not build: {exc}") from None
    obs_dim = data.obs.shape[1]
    if core.obs_size != obs_dim:
        raise DataError(f"{path}: observations have {obs_dim} columns but {env_id} with "
                        f"env_config {kwargs} observes {core.obs_size}; the log is not from "
                        "that env")
    if data.max_episode_length > core.horizon:
        raise DataError(f"{path}: episodes of up to {data.max_episode_length} decisions, but "
                        f"{env_id} with env_config {kwargs} ends every episode within "
                        f"{core.horizon} (its horizon); the log is not from that env")
    return vector_maker(env_id, kwargs)


def _read_data(cfg: DictConfig) -> Any:
    """The logged data ``data=`` names — a Parquet file (``experiments.collect``) or a
    server's decision-log directory (``ope.served``, one ``arm`` of it if given) — or, with
    ``registry=`` and ``model=``, every episode one version served in the log directories
    servers recorded in the registry (``Registry.record_serving``).

    Raises:
        ConfigError: neither or both of ``data`` and ``registry``; ``data`` does not exist;
            ``arm`` given for a file; a registry version never served.
        RegistryError: an unknown registry, model, stage or version.
        DataError: the data cannot be read (naming what is wrong).
    """
    from ope.files import read_logged
    from ope.served import from_decision_logs

    if cfg.arm is not None and not isinstance(cfg.arm, str):
        raise ConfigError(f"arm={cfg.arm!r} must be an arm's name (primary, candidate) or null")
    if (cfg.data is None) == (cfg.registry is None):
        raise ConfigError("give exactly one of data=<a logged.parquet file or a server's "
                          "decision_logs dir> or registry=<dir> with model=<name> (got "
                          f"data={cfg.data!r}, registry={cfg.registry!r})")
    if cfg.registry is not None:
        return _served_version(cfg)
    path = Path(cfg.data)
    if path.is_dir():
        return from_decision_logs(path, arm=cfg.arm)
    if not path.is_file():
        raise ConfigError(f"data={cfg.data!r} does not exist; give a Parquet file from "
                          "python -m experiments.collect, or a server's decision_logs "
                          "directory")
    if cfg.arm is not None:
        raise ConfigError(f"arm={cfg.arm!r} selects an arm of a server's decision logs; "
                          f"data={cfg.data!r} is a file from experiments.collect (one "
                          "behaviour policy): drop arm=")
    return read_logged(path)


def _served_version(cfg: DictConfig) -> Any:
    """Every whole episode a registry version served (``_read_data``), with its own
    propensities, from each log directory recorded for it that still exists."""
    from agents.serving.registry import Registry, version_label
    from ope.served import from_decision_logs

    if cfg.model is None:
        raise ConfigError("registry= needs model=<name> (python -m experiments.registry "
                          "action=list shows the names)")
    if cfg.version is None and cfg.stage is None:
        raise ConfigError(f"registry= needs version=<number> or stage=<production|staging|"
                          f"…>: which version of {cfg.model!r} to evaluate the decisions of")
    registry = Registry(cfg.registry)
    _, entry = registry.resolve(cfg.model, version=cfg.version,
                                stage=None if cfg.version is not None else cfg.stage)
    label = f"{cfg.model} v{entry['version']}"
    recorded = registry.log_dirs(cfg.model, entry["version"])
    found = [d for d in recorded if d.is_dir()]
    if not found:
        gone = f" (recorded, no longer there: {[str(d) for d in recorded]})" if recorded else ""
        raise ConfigError(f"{label} has no decision logs{gone}: a server records its log_dir "
                          f"in the registry when it serves a version (python -m "
                          f"experiments.serve registry={cfg.registry} model={cfg.model} "
                          f"version={entry['version']})")
    for d in recorded:
        if d not in found:
            log.warning("%s: decision-log directory %s is recorded but no longer there; "
                        "evaluating the others", label, d)
    data = from_decision_logs(found, arm=cfg.arm,
                              version=version_label(cfg.model, entry["version"]))
    data.meta["registry"] = f"{label} in registry {registry.root}"
    return data


def _trained_elsewhere(policies: dict[str, Any], env_id: str, kwargs: dict[str, Any]
                       ) -> dict[str, list[str]]:
    """A warning for each bundle built for another config of the log's env (allowed: a
    policy evaluated under a shifted population is a question worth asking — but said)."""
    from envs.registration import env_differences

    out = {}
    for label, (policy, _) in policies.items():
        spec = getattr(policy, "spec", None)               # bundles have one, baselines not
        env = spec.get("env") if isinstance(spec, dict) else None
        if isinstance(env, dict):
            differ = env_differences(env_id, kwargs, env["id"], env.get("config") or {})
            if differ:
                config = human(flatten(env.get("config") or {})) or "its defaults"
                out[label] = [f"this bundle was built for {env['id']} with {config}, not the "
                              f"log's env config ({', '.join(differ)} differ): it is "
                              "evaluated off the env it was trained on"]
    return out


def _settings(cfg: DictConfig, data: Any) -> dict[str, Any]:
    """The run's checked settings (before any policy is built or trained).

    Raises:
        ConfigError: naming the key and what is valid.
    """
    from ope.evaluate import estimator_names

    if cfg.estimators is not None and (not OmegaConf.is_list(cfg.estimators)
                                       or not len(cfg.estimators)):
        raise ConfigError(f"estimators={cfg.estimators!r} must be a non-empty list such as "
                          f"[ips,dm], or null for every estimator; valid: "
                          f"{estimator_names(data)}")
    if not OmegaConf.is_list(cfg.policies):
        raise ConfigError(f"policies={cfg.policies!r} must be a list such as [greedy,random] "
                          "(baselines by name, or bundle directories)")
    try:
        names = estimator_names(data, None if cfg.estimators is None else cfg.estimators)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    check_int("seed", cfg.seed, 0, MAX_SEED - 1)
    return dict(
        names=names, exploration=Exploration.of(cfg.exploration), refit=check_flag("ci.refit", cfg.ci.refit),
        gamma=check_range("gamma", cfg.gamma, 0.0, 1.0),
        lam=check_range("switch_lambda", cfg.switch_lambda, 0.0, float("inf")),
        resamples=check_int("ci.resamples", cfg.ci.resamples, 10),
        alpha=check_range("ci.alpha", cfg.ci.alpha, 0.0, 0.5, low_open=True, high_open=True),
        refit_resamples=check_int("ci.refit_resamples", cfg.ci.refit_resamples, 10),
        truth_episodes=check_int("truth_episodes", cfg.truth_episodes, 100, MAX_EPISODES),
        normalisation_episodes=check_int("normalisation_episodes",
                                         cfg.normalisation_episodes, 100, MAX_EPISODES),
        folds=check_int("folds", cfg.folds, 2),
        warmup_steps=check_int("warmup_steps", cfg.warmup_steps, 0))


def _models(data: Any, pis: dict[str, np.ndarray], names: list[str], s: dict[str, Any],
            seed: int) -> tuple[list[str], dict[str, Any], float | None, dict[str, Any],
                                list[str]]:
    """``(estimator names, q_hat per policy, out-of-fold R², refitted intervals per policy,
    notes)``: the one-step reward model (cross-fitted, shared) or FQE per policy, fitted
    only when a model-based estimator is asked for; refitted per resample with
    ``ci.refit``. The names lose the model-based estimators when every estimator was asked
    for and the log is too small to cross-fit."""
    from ope import estimators as E
    from ope.models import fitted_q, out_of_fold_r2, reward_model
    from ope.uncertainty import refit_bootstrap

    one_step = data.max_episode_length == 1
    table = E.ONE_STEP if one_step else E.SEQUENTIAL
    notes = []
    if one_step and data.n_episodes < s["folds"] and names == list(table):
        notes.append(f"the model-based estimators are left out: cross-fitting with "
                     f"{s['folds']} folds needs {s['folds']} episodes, and the log has "
                     f"{data.n_episodes}")
        names = [n for n in names if n not in E.MODEL_BASED]
    model_based = {n: table[n] for n in names if n in E.MODEL_BASED}
    if not model_based:
        return names, {label: None for label in pis}, None, {}, notes

    def fit(weights: np.ndarray | None, pi_e: np.ndarray) -> np.ndarray:
        if one_step:
            return reward_model(data, n_folds=s["folds"], seed=seed, sample_weight=weights)
        return fitted_q(data, pi_e, gamma=s["gamma"], sample_weight=weights)

    shared = fit(None, None) if one_step else None
    q_hats = {label: shared if one_step else fit(None, pi) for label, pi in pis.items()}
    refit = {} if not s["refit"] else refit_bootstrap(
        data, pis, model_based, _timed(fit, s["refit_resamples"], 1 if one_step else len(pis)),
        n_resamples=s["refit_resamples"], alpha=s["alpha"], seed=seed,
        shared_model=one_step, gamma=s["gamma"], lam=s["lam"])
    return names, q_hats, out_of_fold_r2(data, shared) if one_step else None, refit, notes


def evaluate_offline(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """The whole study; returns the summary (also written to ``summary.json``)."""
    from agents.baselines.factory import baselines_for, make_policy
    from ope.collect import evaluation_probs, true_value
    from ope.evaluate import (combine_diagnostics, estimate, normalised_error, rank_study,
                              recommend)
    data = _read_data(cfg)
    source = str(Path(cfg.data).resolve()) if cfg.data is not None else data.meta["source"]
    env_id, kwargs = data.meta.get("env_id"), data.meta.get("env_config", {})
    if not env_id:
        raise ConfigError(f"{source} has no env_id in its metadata; cannot simulate the "
                          "ground truth")
    make_env = _env_of(source, env_id, kwargs, data)
    s = _settings(cfg, data)
    policies = {}
    for spec in cfg.policies:
        policy, name = load_policy_spec(str(spec), env_id, kwargs, cfg.seed,
                                        s["warmup_steps"], "policies")
        if policy.privileged and not data.context:
            raise ConfigError(f"policies: {spec!r} reads the latent truth, which this log "
                              "does not hold (collect with record_truth=true to evaluate it "
                              "on simulated logs)")
        label = str(spec) if name.startswith("bundle:") else name     # as the user wrote it
        # uniform has no most probable action: random always samples
        policies[label] = (policy, Exploration("sample") if name == "random"
                           else s["exploration"])
    if len(policies) < 1:
        raise ConfigError("policies is empty; name at least one baseline or bundle")
    shifted = _trained_elsewhere(policies, env_id, kwargs)

    top_names = [n for n in baselines_for(env_id, kwargs) if n in ("oracle", "planner")]
    # one bar over the phases (on a terminal): models, the normalisation's truths, then an
    # estimate and a truth per policy
    bar = tqdm(total=1 + 1 + len(top_names) + 2 * len(policies), unit="phase",
               disable=None if check_flag("progress", cfg.progress) else True, leave=False)

    def phase(text: str) -> None:
        bar.set_description(text[:60])

    pis = {label: evaluation_probs(p, data.obs, x, context=data.context)
           for label, (p, x) in policies.items()}
    phase("fitting the reward/Q model(s)")
    names, q_hats, r2, refit, notes = _models(data, pis, s["names"], s, cfg.seed)
    bar.update()
    # the normalisation: random and the best privileged baseline, both simulated on
    # normalisation_episodes (they only scale the errors; the planner is slow to simulate)
    episodes, scale = s["truth_episodes"], s["normalisation_episodes"]
    phase("simulating random's true value")
    random = make_policy(env_id, "random", kwargs, seed=cfg.seed)
    v_random = true_value(random, make_env, scale, cfg.seed, "sample")["value"]
    bar.update()
    tops = {}
    for n in top_names:
        phase(f"simulating {n}'s true value")
        tops[n] = true_value(make_policy(env_id, n, kwargs, seed=cfg.seed), make_env,
                             scale, cfg.seed)["value"]
        bar.update()
    top_name = max(tops, key=tops.get)
    v_top = tops[top_name]

    from envs.creator import info_keys
    from envs.registration import describe

    group_names = describe(env_id, kwargs).sampler.group_names \
        if "group" in info_keys(env_id, kwargs) else None
    results: dict[str, Any] = {}
    for label, (policy, x) in policies.items():
        phase(f"estimating {short_label(label)}")
        res = estimate(data, pis[label], q_hats[label], names=names, gamma=s["gamma"],
                       lam=s["lam"], n_resamples=s["resamples"], alpha=s["alpha"],
                       seed=cfg.seed, refit=refit.get(label))
        bar.update()
        phase(f"simulating {short_label(label)}'s true value")
        truth = true_value(policy, make_env, episodes, cfg.seed, x, group_names=group_names)
        bar.update()
        for r in res["estimates"].values():
            defined = r["estimate"] is not None
            r["normalised_error"] = normalised_error(r["estimate"], truth["value"], v_top,
                                                     v_random) if defined else None
            r["covers_truth"] = (bool(r["ci_low"] <= truth["value"] <= r["ci_high"])
                                 if defined and r["ci_low"] is not None else None)
        res["warnings"] = notes + shifted.get(label, []) + res["warnings"]
        choice, reason = recommend(data, res["diagnostics"], r2, res["estimates"])
        results[label] = dict(exploration=x.describe(), truth=truth, **res,
                              recommendation=dict(estimator=choice, reason=reason))
        log.info("%s: truth %.4f; %s", label, truth["value"], ", ".join(
            f"{e} {'undefined' if r['estimate'] is None else format(r['estimate'], '.4f')}"
            for e, r in res["estimates"].items()))
    bar.close()
    ranking = rank_study({p: {e: r["estimate"] for e, r in v["estimates"].items()
                              if r["estimate"] is not None} for p, v in results.items()},
                         {p: v["truth"]["value"] for p, v in results.items()})
    # one estimator for ranking them all: judged on the weakest weights of any policy, among
    # the estimators every policy has with an estimate and an interval (the least defined)
    common = {e: max((v["estimates"][e] for v in results.values()),
                     key=lambda r: r["undefined_share"])
              for e in names if all(e in v["estimates"] and v["estimates"][e]["estimate"]
                                    is not None and v["estimates"][e]["ci_low"] is not None
                                    for v in results.values())}
    choice, reason = recommend(data, combine_diagnostics(
        [v["diagnostics"] for v in results.values()]), r2, common)
    summary = dict(
        data=dict(path=source, env_id=env_id, episodes=data.n_episodes,
                  decisions=data.n, max_episode_length=data.max_episode_length,
                  meta=data.meta),
        model=dict(kind="cross-fitted reward model" if data.max_episode_length == 1 else
                   "fitted-Q evaluation", out_of_fold_r2=r2),
        intervals=dict(resamples=s["resamples"], alpha=s["alpha"], refit=s["refit"],
                       refit_resamples=s["refit_resamples"] if s["refit"] else None),
        normalisation=dict(random=v_random, top=v_top, top_policy=top_name, episodes=scale),
        policies=results, ranking=ranking, logged_fairness=_logged_fairness(data, cfg.seed),
        recommendation=dict(estimator=choice, reason=reason))
    (run_dir / "summary.json").write_text(jsonio.dumps(summary, indent=2))
    _write_report(run_dir, summary)
    return summary


def _plot(summary: dict[str, Any], path: Path) -> None:
    """Per policy (two panels a row): each estimate with its interval, the true value
    dashed and its interval shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pols = list(summary["policies"])
    cols = min(2, len(pols))
    rows = -(-len(pols) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(pols):]:
        ax.set_visible(False)
    for ax, p in zip(axes.flat, pols):
        v = summary["policies"][p]
        names = [e for e, r in v["estimates"].items() if r["estimate"] is not None]
        for i, e in enumerate(names):
            r = v["estimates"][e]
            if r["ci_low"] is not None:             # a percentile interval may exclude the
                ax.vlines(i, r["ci_low"], r["ci_high"], color="C0")   # estimate itself
            fixed = r["model_error"] == "not included"
            ax.plot([i], [r["estimate"]], "o", color="C0", mfc="white" if fixed else "C0",
                    label=("estimate, 95% CI (model held fixed)" if fixed else
                           "estimate, 95% CI"))
        ax.axhline(v["truth"]["value"], color="k", ls="--", lw=1, label="true value")
        ax.axhspan(v["truth"]["ci_low"], v["truth"]["ci_high"], color="k", alpha=0.1)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_title(f"{short_label(p)} ({_acting(v['exploration'])})", fontsize=10)
        ax.set_ylabel("value (return per episode)")
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))           # one entry per kind of mark
        ax.legend(unique.values(), unique.keys(), fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def _ci(r: dict[str, Any]) -> str:
    if r["ci_low"] is None:
        return "—"
    label = " (model error not included)" if r["model_error"] == "not included" else ""
    return f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]{label}"


def _logged_fairness(data: Any, seed: int) -> dict[str, Any] | None:
    """The logged (behaviour) return per episode by its user's demographic group, and its
    parity — None when the log has no ``group`` column."""
    from personarl.parity import group_parity
    from personarl.seeds import generator

    groups = data.episode_users("group")
    if groups is None:
        return None
    known = np.array([g is not None for g in groups], dtype=bool)
    return group_parity(data.episode_returns()[known], groups[known].astype(str),
                        generator(seed, "bootstrap", 2), reps=500).as_dict()


def _write_report(run_dir: Path, s: dict[str, Any]) -> None:
    d, meta = s["data"], s["data"]["meta"]
    ci = s["intervals"]
    rec = s["recommendation"]
    b: list[Block] = [
        ("h1", f"Offline policy evaluation — {d['env_id']}"),
        ("p", _provenance(d, meta) + f" Model: {s['model']['kind']}"
              + (f", out-of-fold R² {s['model']['out_of_fold_r2']:.3f}."
                 if s["model"]["out_of_fold_r2"] is not None else ".")),
        ("p", f"Intervals: {1 - ci['alpha']:.0%} percentile bootstrap over whole episodes "
              f"({ci['resamples']:,} resamples), over the resamples where an estimator is "
              "defined; " + (f"model-based estimators refit their model in each of "
                             f"{ci['refit_resamples']:,} resamples, so their intervals include "
                             "the model's error." if ci["refit"] else
                             "the reward/Q model is held fixed, so DM/FQE intervals leave out "
                             "the model's own error (`ci.refit=true` includes it).")),
        ("p", f"Normalised error = |V̂ − V| / (V_top − V_random) with V_top = "
              f"{s['normalisation']['top']:.4f} (`{s['normalisation']['top_policy']}`, "
              f"privileged) and V_random = {s['normalisation']['random']:.4f}"
              + (f", each from {s['normalisation']['episodes']:,} simulated episodes"
                 if s["normalisation"].get("episodes") else "")
              + "; true values are on-policy Monte Carlo in the simulator, on users "
              "independent of the log."),
        ("p", (f"**Recommended estimator for ranking the policies: {rec['estimator']}** — "
               if rec["estimator"] else "**No estimator can be recommended for ranking the "
               "policies** — ") + f"{rec['reason']}."),
        ("img", "estimates.png")]
    for p, v in s["policies"].items():
        t, pr = v["truth"], v["recommendation"]
        b += [("h2", f"`{p}` ({_acting(v['exploration'])})"),
              ("p", f"True value {t['value']:.4f} [{t['ci_low']:.4f}, {t['ci_high']:.4f}] "
                    f"({t['episodes']:,} simulated episodes). ESS "
                    f"{v['diagnostics']['ess']:.1f} ({v['diagnostics']['ess_fraction']:.1%}),"
                    f" max weight {v['diagnostics']['max_weight']:.2f}, mean weight "
                    f"{v['diagnostics']['mean_weight']:.3f}, mass outside the behaviour's "
                    f"support {_pct(v['diagnostics']['unsupported_mass'])}."),
              ("p", (f"Recommended: **{pr['estimator']}** — " if pr["estimator"] else
                     "No estimator can be recommended — ") + f"{pr['reason']}.")]
        for w in v["warnings"]:
            b.append(("p", f"**Warning:** {w}."))
        b.append(("table", (["estimator", "estimate", "bootstrap SE", "95% CI",
                             "undefined resamples", "lower bound (EB)", "normalised error",
                             "CI covers truth"], [
            [e + (" (recommended)" if e == pr["estimator"] else ""),
             number(r["estimate"], missing="undefined"), number(r["se"]), _ci(r),
             f"{r['undefined_share']:.1%}",
             number(r["lower_bound"]), number(r["normalised_error"]),
             "—" if r["covers_truth"] is None else "yes" if r["covers_truth"] else "no"]
            for e, r in v["estimates"].items()])))
    b += [("h2", "Ranking of the policies"),
          ("p", "True ranking: " + " > ".join(sorted(s["policies"], key=lambda p: -s[
              "policies"][p]["truth"]["value"])) + "."),
          ("table", (["estimator", "Spearman ρ vs truth", "picks", "regret@1"], [
              [e, "—" if r["spearman"] is None else f"{r['spearman']:.2f}", r["pick"],
               f"{r['regret_at_1']:.4f}"] for e, r in s["ranking"].items()]))]
    truths = {p: v["truth"]["fairness"] for p, v in s["policies"].items()
              if "fairness" in v["truth"]}
    if truths:
        b += fairness_blocks(truths, "true value")
    if s.get("logged_fairness"):
        b += fairness_blocks({"logged (behaviour)": s["logged_fairness"]}, "logged return")
    _plot(s, run_dir / "estimates.png")
    write_reports(run_dir, b)


def _provenance(d: dict[str, Any], meta: dict[str, Any]) -> str:
    """Where the logged decisions come from: the behaviour, its exploration, the env
    config, and for a server's logs what could not be rebuilt."""
    from ope.served import REASONS

    eps = meta.get("epsilon")
    exploration = f"{meta.get('exploration', '?')} exploration" + (
        f" (ε = {eps:g})" if isinstance(eps, float) and meta.get("exploration") == "epsilon"
        else f" (ε: {eps})" if isinstance(eps, list) else "")
    config = human(flatten(meta.get("env_config") or {}))
    env = f"env config: {config or 'the defaults'}."
    shape = (f"{d['decisions']:,} decisions in {d['episodes']:,} episodes (the longest "
             f"{d['max_episode_length']} decisions)")
    if "not_reconstructed" not in meta:
        return (f"{shape} logged by `{meta.get('behaviour', '?')}` with {exploration}; data "
                f"`{d['path']}`; {env}")
    lost = meta["not_reconstructed"]
    logs = (f"the decision logs of {meta['registry']} (`{d['path']}`)" if "registry" in meta
            else f"a server's decision logs `{d['path']}`")
    return (f"{shape} rebuilt from {logs} "
            f"({meta['decisions']:,} decisions logged), served by {meta['arms']}, with "
            f"{exploration}; {env} "
            + ("Not rebuilt: " + "; ".join(f"{REASONS[k]}: {v:,}" for k, v in lost.items())
               + "." if lost else "Every logged decision is in a rebuilt episode.")
            + (f" {meta['repeated_feedback']:,} repeated feedback rows ignored (the first "
               "kept)." if meta.get("repeated_feedback") else "")
            + (f" {len(meta['log_dirs_without']):,} recorded log directories hold none of its "
               "decisions." if meta.get("log_dirs_without") else ""))


def _acting(x: dict[str, Any]) -> str:
    """How a policy acted, in words: ``greedy``, ``sample`` or ``sample, τ = 2``,
    ``epsilon, ε = 0.1``."""
    if x["mode"] == "sample" and x["temperature"] != 1.0:
        return f"sample, τ = {x['temperature']:g}"
    return f"epsilon, ε = {x['epsilon']:g}" if x["mode"] == "epsilon" else x["mode"]


def _pct(x: float | None) -> str:
    return "unknown (no full behaviour distribution)" if x is None else f"{x:.1%}"


@hydra.main(version_base="1.3", config_path="../configs", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    summary = run_app("evaluate", cfg, lambda: evaluate_offline(cfg, run_dir), run_dir,
                      user_errors=(ValueError,))
    choice = summary["recommendation"]["estimator"]
    print(f"recommended: {choice or 'none (see the report)'}; report: "
          f"{run_dir / 'report.md'}")


if __name__ == "__main__":
    check_command_line("evaluate", "evaluate")
    main()
