"""Fit a generator to a table of users, release synthetic users, and score them against
the real ones.

    python -m experiments.synthesize generator=gmm table=behaviour
    python -m experiments.synthesize generator=gmm table=persona epsilon=1.0 utility=true
    python -m experiments.synthesize generator=vae data=<users.parquet> table=behaviour epsilon=1

**The real table.** ``table=behaviour``: the behaviour features of persona discovery
(``synth.generators.behaviour``); ``table=persona``: the latent persona table the envs
consume (``synth.generators.persona``). Either is simulated — the first ``users``
consenting users of the ``persona`` population (seed ``seed``) — and written to the run
directory as ``real.parquet``, or read from ``data`` (a Parquet file with those columns and
``consent``). Its rows are shuffled (seeded) and halved: the generator is fitted to the
training half, the held-out half only measures.

**The fit** (``generator=gmm|vae``, ``synth.generators``): without DP, or with ``epsilon``
— then it spends from the privacy ledger beside the data file (``<data>.privacy.json``: an
existing one as it is; a new one created with budget ``budget``, default ``epsilon``, at
``delta``); a fit the ledger cannot pay for is refused before it runs.

**The release.** ``samples`` synthetic rows (default: as many as the training rows), each
tagged ``source=generated``, scored against the held-out rows in the encoded space
(numeric columns standardised by the training rows, categorical ones one-hot;
``synth.fidelity``): unbiased MMD², per-feature KL (a categorical column's over its
categories), coverage, and the DCR share on the full training and held-out sets. The
memorisation gate (share within ``gate_tolerance`` of 0.5) decides the release: passed,
``generator.npz`` (usable as ``persona.generator=`` with ``table=persona``) and
``synthetic.parquet`` are written; failed, neither is, and the report says why. With
``utility=true`` (``table=persona`` only): the utility on PersonalityAdaptation of a policy
trained on the generator's users (``utility_of``). Every option is checked before anything
is read, fitted or spent. Mistakes exit with status 2.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from experiments.cli import check_command_line, run_app
from experiments.rendering import Block, human, write_reports
from experiments.schema import register_configs
from personarl.errors import ConfigError, check_int, check_range

__all__ = ["synthesize", "utility_of", "fidelity_scores", "main", "TABLES", "GENERATORS"]

log = logging.getLogger(__name__)
register_configs()

TABLES = ("behaviour", "persona")
GENERATORS = ("gmm", "vae")


def fidelity_scores(spec: Any, train: Any, holdout: Any, synthetic: Any,
                    tolerance: float = 0.03) -> dict[str, Any]:
    """The fidelity and memorisation scores of ``synthetic`` rows against ``holdout`` (and
    ``train``, for the DCR share), in the training rows' encoded space (module doc)."""
    from synth.fidelity import (categorical_kl, coverage, dcr_share, feature_kl,
                                memorisation_gate, mmd2)
    from synth.generators import TableEncoder

    encoder = TableEncoder.fit(spec, train)
    x_train, x_holdout, x_syn = (encoder.encode(t) for t in (train, holdout, synthetic))
    m = len(spec.numeric)
    kl = dict(zip([c.name for c in spec.numeric],
                  feature_kl(x_holdout[:, :m], x_syn[:, :m]).tolist() if m else []))
    for c in spec.categorical:
        kl[c.name] = categorical_kl(holdout[c.name].astype(str), synthetic[c.name].astype(str),
                                    c.categories)
    share = dcr_share(x_syn, x_train, x_holdout)
    return {"mmd2": mmd2(x_holdout, x_syn), "kl": kl, "kl_max": max(kl.values()),
            "coverage": coverage(x_holdout, x_syn), "dcr_share": share,
            "gate_tolerance": tolerance, "gate": memorisation_gate(share, tolerance)}


def utility_of(populations: Mapping[str, str | None], population: Any = None, seed: int = 0,
               episodes: int = 2000, warmup_steps: int = 2000,
               policy: str = "greedy") -> dict[str, Any]:
    """Utility on PersonalityAdaptation of a policy trained on each named population.

    Args:
        populations: name -> a persona generator file, or ``None`` for the real population
            itself (required, under the name ``"real"``).
        population: the real population (a ``PopulationConfig``, a mapping of its fields or
            ``None``: the default); a generator population is this config with its
            ``generator`` set (drift, consent and metadata rates come from it).
        seed: the run's seed (users, the policy's draws).
        episodes: real users every policy is evaluated on (the same for all).
        warmup_steps: batched steps (256 users) each policy learns for.
        policy: the learning baseline (``agents.baselines.factory``).

    Returns:
        ``{"mean_return": {name: R}, "utility": {name: {ratio, ci_low, ci_high}}}`` with
        ``ratio = (R_name − R_random) / (R_real − R_random)`` and its paired percentile
        bootstrap interval over the evaluation users (``personarl.stats.bootstrap_ci``).

    Raises:
        ConfigError: no ``"real"`` population, a population the env cannot use (not the
            six default archetypes), or a bad policy name or count.
    """
    import dataclasses

    from agents.baselines.evaluation import run_episodes, warm_up
    from agents.baselines.factory import make_policy
    from envs.adaptation import ENV_ID, PersonalityAdaptationVectorEnv
    from envs.batched import coerce_config
    from personarl.stats import bootstrap_ci
    from synth.population import PopulationConfig

    if populations.get("real", "") is not None:
        raise ConfigError("utility needs the real population: populations['real'] = None")
    base = coerce_config(population, PopulationConfig, "population")
    configs = {name: base if path is None else dataclasses.replace(base, generator=path)
               for name, path in populations.items()}
    make = lambda config: lambda n: PersonalityAdaptationVectorEnv(  # noqa: E731
        n, population=config, info_level="full")
    real_env = make(base)
    returns = {"random": run_episodes(make_policy(ENV_ID, "random", {}, seed=seed),
                                      real_env, episodes, seed=seed).returns}
    for name, config in configs.items():
        learner = warm_up(make_policy(ENV_ID, policy, {}, seed=seed), make(config),
                          warmup_steps, seed=seed + 1)
        returns[name] = run_episodes(learner, real_env, episodes, seed=seed).returns
    floor, real = returns["random"], returns["real"]
    rng = np.random.default_rng(seed)
    utility = {}
    for name in populations:
        if name == "real":
            continue

        def ratio(i: np.ndarray, r: np.ndarray = returns[name]) -> np.ndarray:
            i = i.astype(np.int64)               # bootstrap_ci hands indices as floats
            low = floor[i].mean(-1)
            return (r[i].mean(-1) - low) / (real[i].mean(-1) - low)

        point, low, high = bootstrap_ci([np.arange(len(floor))], ratio, rng)
        utility[name] = {"ratio": point, "ci_low": low, "ci_high": high}
    return {"env": ENV_ID, "policy": policy, "episodes": len(floor),
            "warmup_steps": warmup_steps,
            "mean_return": {k: float(v.mean()) for k, v in returns.items()},
            "utility": utility}


#: held-out users the scores need: coverage compares each with its 5 nearest
MIN_HOLDOUT = 6
#: the most users simulated and synthetic rows scored (MMD² costs the square of them)
MAX_ROWS = 100_000
#: the largest δ a new ledger may take (δ should be far below 1 / users)
MAX_DELTA = 1e-3


def _needs(generator: str, checked: Mapping[str, Any]) -> str:
    """What the smallest table is made of (the end of a too-few-users message)."""
    components = (f" (at least components={checked['components']})" if generator == "gmm"
                  else "")
    return (f"{generator} needs at least {checked['min_users']}: half to fit{components}, "
            f"half — at least {MIN_HOLDOUT} — to measure")


def _checked(cfg: DictConfig) -> dict[str, Any]:
    """Every option checked before anything is read, fitted or spent (names as on the
    command line)."""
    from synth.generators.base import MAX_FIT_SEED
    from synth.privacy.ledger import MAX_TARGET, MIN_TARGET

    if cfg.generator not in GENERATORS:
        raise ConfigError(f"generator={cfg.generator!r}; valid: {list(GENERATORS)}")
    if cfg.table not in TABLES:
        raise ConfigError(f"table={cfg.table!r}; valid: {list(TABLES)}")
    out = {"seed": check_int("seed", cfg.seed, 0, MAX_FIT_SEED - 1),   # seed + 1 samples
           "components": check_int("components", cfg.components, 1, 1000),
           "epochs": check_int("epochs", cfg.epochs, 1, 100_000),
           "gate_tolerance": check_range("gate_tolerance", cfg.gate_tolerance, 0.0, 0.5,
                                         low_open=True),
           "samples": None if cfg.samples is None else check_int(
               "samples", cfg.samples, 2, MAX_ROWS),
           "epsilon": None, "budget": None}
    # the generator fits half the users (a GMM at least one per component), the other half
    # measures it
    out["min_users"] = 2 * max(MIN_HOLDOUT, out["components"] if cfg.generator == "gmm"
                               else 1)
    if cfg.data is None:
        users = check_int("users", cfg.users, 1, MAX_ROWS)
        if users < out["min_users"]:
            raise ConfigError(f"users={users}; {_needs(cfg.generator, out)}")
        out["users"] = users
    if cfg.epsilon is not None:
        out["epsilon"] = check_range("epsilon", cfg.epsilon, MIN_TARGET, MAX_TARGET)
        check_range("delta", cfg.delta, 0.0, MAX_DELTA, low_open=True)
        if cfg.budget is not None:
            out["budget"] = check_range("budget", cfg.budget, 0.0, math.inf, low_open=True,
                                        high_open=True)
            if out["budget"] < out["epsilon"]:
                raise ConfigError(f"budget={cfg.budget} is below epsilon={cfg.epsilon}: the "
                                  "ledger would refuse this fit; give budget >= epsilon")
    elif cfg.budget is not None:
        raise ConfigError("budget= sets a new privacy ledger's budget; it needs epsilon= "
                          "(a fit without differential privacy spends nothing)")
    if cfg.utility:
        if cfg.table != "persona":
            raise ConfigError("utility=true measures a persona generator as a population: "
                              "it needs table=persona")
        out["episodes"] = check_int("episodes", cfg.episodes, 1)
        out["warmup_steps"] = check_int("warmup_steps", cfg.warmup_steps, 0)
    return out


def _real_table(cfg: DictConfig, checked: Mapping[str, Any], sampler: Any,
                run_dir: Path) -> tuple[Any, Any, Path]:
    """``(table, spec, data file)``: read from ``cfg.data`` or simulated into the run."""
    import pandas as pd

    from synth.generators.behaviour import behaviour_spec, behaviour_table
    from synth.generators.persona import persona_spec, persona_table

    spec = behaviour_spec() if cfg.table == "behaviour" else persona_spec(sampler)
    if cfg.data is not None:
        path = Path(str(cfg.data))
        if not path.is_file():
            raise ConfigError(f"data={cfg.data!r} is not a file; give a Parquet file of "
                              f"users with columns {spec.names} and consent")
        try:
            return pd.read_parquet(path), spec, path
        except (OSError, ValueError) as exc:
            raise ConfigError(f"data={cfg.data!r} is not a Parquet file: {exc}") from None
    users, seed = checked["users"], checked["seed"]
    draw = int(users / max(sampler.config.consent_rate, 0.05) * 1.2) + 10
    if cfg.table == "behaviour":
        table = behaviour_table(draw, seed, sampler=sampler)
    else:
        table = persona_table(sampler.sample(draw, np.random.default_rng(seed)), sampler)
    table = table[table["consent"]].iloc[:users].reset_index(drop=True)
    path = run_dir / "real.parquet"
    table.to_parquet(path, index=False)
    return table, spec, path


def _ledger(data: Path, checked: Mapping[str, Any], delta: float) -> Any:
    """The data's ledger: the existing one as it is (a budget given must match it), else a
    new one with budget ``budget`` (default ``epsilon``)."""
    from synth.privacy.ledger import PrivacyLedger

    if PrivacyLedger.path_for(data).exists() and checked["budget"] is None:
        return PrivacyLedger.open(data)
    budget = checked["budget"] if checked["budget"] is not None else checked["epsilon"]
    return PrivacyLedger.open(data, budget, delta)


def synthesize(cfg: DictConfig, run_dir: Path) -> Path:
    """Fit, release and report per ``cfg`` into ``run_dir``; the report's path."""
    from envs.adaptation import ENV_ID
    from envs.registration import describe
    from synth.generators import check_table, fit_gmm, fit_vae
    from synth.population import PopulationConfig, PopulationSampler
    from synth.privacy.consent import consenting

    checked = _checked(cfg)
    persona = OmegaConf.to_container(cfg.persona, resolve=True)
    sampler = PopulationSampler(PopulationConfig(**persona))
    if cfg.table == "persona" and (sampler.events or sampler.generator is not None):
        raise ConfigError("table=persona fits a generator that serves as a population: the "
                          "persona config must have no events and no generator of its own")
    if cfg.utility:
        describe(ENV_ID, {"population": persona})      # the env takes this population
    table, spec, data = _real_table(cfg, checked, sampler, run_dir)
    rows = consenting(table)
    if len(rows) < checked["min_users"]:
        raise ConfigError(f"{len(rows)} consenting user(s) in {data.name}; "
                          f"{_needs(cfg.generator, checked)}")
    if len(rows) > 2 * MAX_ROWS:
        raise ConfigError(f"{len(rows):,} consenting users in {data.name}; synthesize fits and "
                          f"scores at most {2 * MAX_ROWS:,} (MMD² costs the square of the "
                          "rows): give a sample of them")
    rows = check_table(rows, spec)
    seed = checked["seed"]
    order = np.random.default_rng(seed).permutation(len(rows))
    half = len(rows) // 2
    train = rows.iloc[order[:half]].reset_index(drop=True).assign(consent=True)
    holdout = rows.iloc[order[half:2 * half]].reset_index(drop=True)
    ledger = _ledger(data, checked, cfg.delta) if checked["epsilon"] is not None else None
    label = f"{cfg.generator} on {data.name} ({run_dir.name})"
    if cfg.generator == "gmm":
        gen = fit_gmm(train, spec, checked["components"], seed=seed,
                      epsilon=checked["epsilon"], ledger=ledger, label=label)
    else:
        gen = fit_vae(train, spec, epochs=checked["epochs"], seed=seed,
                      epsilon=checked["epsilon"], ledger=ledger, label=label)
    samples = checked["samples"] or len(train)
    synthetic = gen.sample(samples, np.random.default_rng(seed + 1))
    scores = fidelity_scores(spec, train, holdout, synthetic, checked["gate_tolerance"])
    released = bool(scores["gate"])
    written = []
    if released:
        written = [gen.save(run_dir / "generator").name, "synthetic.parquet"]
        synthetic.to_parquet(run_dir / "synthetic.parquet", index=False)
    utility = None
    if cfg.utility and released:
        utility = utility_of({"real": None, cfg.generator: str(run_dir / "generator.npz")},
                             population=persona, seed=seed, episodes=checked["episodes"],
                             warmup_steps=checked["warmup_steps"])
    log.info("%s: MMD² %.4g, DCR share %.3f, gate %s", cfg.generator, scores["mmd2"],
             scores["dcr_share"], "passed" if released else "failed")
    return _report(cfg, run_dir, data, rows, train, gen, scores, written, utility, ledger)


def _report(cfg: DictConfig, run_dir: Path, data: Path, rows: Any, train: Any, gen: Any,
            scores: Mapping[str, Any], written: list[str], utility: Mapping | None,
            ledger: Any) -> Path:
    p = gen.privacy
    dp = (f"with differential privacy, ε = {p['epsilon']:g} at δ = {p['delta']:g} "
          f"({p['method']}; ledger entry {p['entry']} of `{Path(p['ledger']).name}`)"
          if p else "without differential privacy")
    share, tolerance = scores["dcr_share"], scores["gate_tolerance"]
    b: list[Block] = [
        ("h1", f"Synthetic users: {cfg.generator} on the {cfg.table} table"),
        ("p", f"{len(rows):,} consenting users of `{data.name}`; the generator was fitted "
              f"to {len(train):,} of them {dp}; the other {len(rows) - len(train):,} only "
              "measure."),
        ("table", (["score (synthetic vs held-out users)", "value", "reads"], [
            ["MMD² (unbiased, RBF kernel at the median distance)", human(scores["mmd2"]),
             "0 for the real distribution; the DP-GMM goal at ε = 1 is ≤ 0.03"],
            ["largest per-feature KL(real ‖ synthetic) (add-½)", human(scores["kl_max"]),
             "0 for the real marginals; the goal at ε = 1 is ≤ 0.2"],
            ["coverage (k = 5)", human(scores["coverage"]),
             "share of real users with a synthetic one nearby: 1 is fully diverse"],
            ["DCR share (closer to training than to held-out)", human(share),
             f"0.5 when nothing is memorised; the gate passes 0.5 ± {tolerance:g}"]])),
        ("table", (["feature", "KL(real ‖ synthetic)"],
                   [[k, human(v)] for k, v in scores["kl"].items()])),
        ("p", "Numeric features: over 20 quantile bins of the real values; categorical ones: "
              "over their categories."),
    ]
    if written:
        b.append(("p", f"Memorisation gate **passed**: released `{'`, `'.join(written)}` "
                       f"(every row tagged `source=generated`)."
                       + (f" Use it as a population: `persona.generator={run_dir}/"
                          "generator.npz`." if cfg.table == "persona" else "")))
    else:
        why = ("the synthetic rows sit closer to the training users than to held-out ones: "
               "the generator may copy what it saw"
               + (f" — or, the fit being DP and far from the data (MMD² "
                  f"{scores['mmd2']:.3g}), its rows land where the training half happens "
                  "to be denser (BENCHMARKS.md: the gate's false alarms)" if p else "")
               if share > 0.5 else
               "the synthetic rows sit closer to the held-out users than to the training "
               "ones — not copying, but a gap this large says the split or the generator "
               "is off (too few users, or a generator far from the data)")
        spent = (f" The fit's ε = {p['epsilon']:g} is spent all the same (the ledger never "
                 "refunds)." if p else "")
        b.append(("p", f"Memorisation gate **failed** (DCR share {share:.3f}): {why}. "
                       f"Nothing was released (no generator file, no synthetic rows).{spent}"))
    if not p:
        b.append(("p", "Without differential privacy the release carries no privacy "
                       "guarantee: the memorisation gate is a check, not a bound."))
    elif p.get("method", "").startswith("dp-sgd"):
        b.append(("p", f"DP-SGD ran {p['steps']:,} of {p['planned_steps']:,} planned steps, "
                       f"spending ε = {p['epsilon_spent']:.4g} (noise multiplier "
                       f"{p['noise_multiplier']:.3g}, sampling rate {p['sample_rate']:.3g}) "
                       "and was stopped by the ledger. Its noise comes from torch's default "
                       "generator, not a cryptographically secure one (Opacus `secure_mode` "
                       "off): sound for research, not for releasing real people's data."))
    if cfg.utility and utility is None:
        b.append(("p", "Utility was not measured: nothing was released to train on."))
    if utility is not None:
        u = utility["utility"][cfg.generator]
        names = {"random": "none (uniformly random styles)", "real": "the real population",
                 cfg.generator: f"the {cfg.generator}'s synthetic users"}
        b.append(("table", (["policy trained on", "mean return on real users"],
                            [[names.get(k, k), human(v)]
                             for k, v in utility["mean_return"].items()])))
        b.append(("p", f"Utility on PersonalityAdaptation ({utility['policy']} policy): "
                       f"(R_syn − R_random) / (R_real − R_random) = **{u['ratio']:.3f}** "
                       f"[{u['ci_low']:.3f}, {u['ci_high']:.3f}] (95% paired bootstrap over "
                       f"{utility['episodes']:,} real users)."))
    if ledger is not None:
        r = ledger.report()
        b.append(("p", f"Privacy ledger `{ledger.path.name}`: ε spent {r['epsilon']:.4g} of "
                       f"{r['budget']['epsilon']:g} at δ = {r['delta']:g}."))
    return write_reports(run_dir, b)


@hydra.main(version_base="1.3", config_path="../configs", config_name="synthesize")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    path = run_app("synthesize", cfg, lambda: synthesize(cfg, run_dir), run_dir)
    print(f"report: {path}")


if __name__ == "__main__":
    check_command_line("synthesize", "synthesize")
    main()
