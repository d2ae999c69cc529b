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
— then it spends from the privacy ledger beside the data file (``<data>.privacy.json``,
created with budget ``budget`` (default ``epsilon``) at ``delta``); a fit the ledger cannot
pay for is refused before it runs.

**The release.** ``samples`` synthetic rows (default: as many as the training rows), each
tagged ``source=generated``, scored against the held-out rows in the encoded space
(numeric columns standardised by the training rows, categorical ones one-hot;
``synth.fidelity``): unbiased MMD², per-feature KL (a categorical column's over its
categories), coverage, and the DCR share on the full training and held-out sets. The memorisation gate (share within ``gate_tolerance`` of 0.5)
decides the release: passed, ``generator.npz`` (usable as ``persona.generator=`` with
``table=persona``) and ``synthetic.parquet`` are written; failed, neither is, and the report
says why. With ``utility=true`` (``table=persona`` only): the utility on
PersonalityAdaptation of a policy trained on the generator's users
(``utility_of``). Mistakes exit with status 2.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from experiments.cli import check_command_line, run_app
from experiments.rendering import Block, human, write_reports
from experiments.schema import register_configs
from personarl.errors import ConfigError

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


def utility_of(populations: Mapping[str, str | None], seed: int = 0, episodes: int = 2000,
               warmup_steps: int = 2000, policy: str = "greedy") -> dict[str, Any]:
    """Utility on PersonalityAdaptation of a policy trained on each named population.

    Args:
        populations: name -> a persona generator file, or ``None`` for the simulator's
            own default population ("real"; required, under the name ``"real"``).
        seed: the run's seed (users, the policy's draws).
        episodes: real users every policy is evaluated on (the same for all).
        warmup_steps: batched steps (256 users) each policy learns for.
        policy: the learning baseline (``agents.baselines.factory``).

    Returns:
        ``{"mean_return": {name: R}, "utility": {name: {ratio, ci_low, ci_high}}}`` with
        ``ratio = (R_name − R_random) / (R_real − R_random)`` and its paired percentile
        bootstrap interval over the evaluation users (``personarl.stats.bootstrap_ci``).

    Raises:
        ConfigError: no ``"real"`` population, or a bad policy name or count.
    """
    from agents.baselines.evaluation import run_episodes, warm_up
    from agents.baselines.factory import make_policy
    from envs.adaptation import ENV_ID, PersonalityAdaptationVectorEnv
    from personarl.stats import bootstrap_ci
    from synth.population import PopulationConfig

    if populations.get("real", "") is not None:
        raise ConfigError("utility needs the real population: populations['real'] = None")
    real_env = lambda n: PersonalityAdaptationVectorEnv(n, info_level="full")  # noqa: E731
    returns = {"random": run_episodes(make_policy(ENV_ID, "random", {}, seed=seed),
                                      real_env, episodes, seed=seed).returns}
    for name, path in populations.items():
        config = PopulationConfig(generator=path)
        train_env = lambda n, c=config: PersonalityAdaptationVectorEnv(  # noqa: E731
            n, population=c, info_level="full")
        learner = warm_up(make_policy(ENV_ID, policy, {}, seed=seed), train_env,
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
            base = floor[i].mean(-1)
            return (r[i].mean(-1) - base) / (real[i].mean(-1) - base)

        point, low, high = bootstrap_ci([np.arange(len(floor))], ratio, rng)
        utility[name] = {"ratio": point, "ci_low": low, "ci_high": high}
    return {"env": ENV_ID, "policy": policy, "episodes": len(floor),
            "warmup_steps": warmup_steps,
            "mean_return": {k: float(v.mean()) for k, v in returns.items()},
            "utility": utility}


def _real_table(cfg: DictConfig, run_dir: Path) -> tuple[Any, Any, Path]:
    """``(table, spec, data file)``: read from ``cfg.data`` or simulated into the run."""
    import pandas as pd

    from synth.generators.behaviour import behaviour_spec, behaviour_table
    from synth.generators.persona import persona_spec, persona_table
    from synth.population import PopulationConfig, PopulationSampler

    if cfg.table not in TABLES:
        raise ConfigError(f"table={cfg.table!r}; valid: {list(TABLES)}")
    persona = OmegaConf.to_container(cfg.persona, resolve=True)
    sampler = PopulationSampler(PopulationConfig(**persona))
    spec = behaviour_spec() if cfg.table == "behaviour" else persona_spec(sampler)
    if cfg.data is not None:
        path = Path(str(cfg.data))
        if not path.is_file():
            raise ConfigError(f"data={cfg.data!r} does not exist; give a Parquet file of "
                              f"users with columns {spec.names} and consent")
        try:
            return pd.read_parquet(path), spec, path
        except (OSError, ValueError) as exc:
            raise ConfigError(f"data={cfg.data!r} is not a Parquet file: {exc}") from None
    users = int(cfg.users)
    if users < 4:
        raise ConfigError(f"users={users}; give at least 4 (two to fit, two to measure)")
    draw = int(users / max(sampler.config.consent_rate, 0.05) * 1.2) + 10
    if cfg.table == "behaviour":
        table = behaviour_table(draw, int(cfg.seed), sampler=sampler)
    else:
        table = persona_table(sampler.sample(draw, np.random.default_rng(int(cfg.seed))),
                              sampler)
    table = table[table["consent"]].iloc[:users].reset_index(drop=True)
    path = run_dir / "real.parquet"
    table.to_parquet(path, index=False)
    return table, spec, path


def synthesize(cfg: DictConfig, run_dir: Path) -> Path:
    """Fit, release and report per ``cfg`` into ``run_dir``; the report's path."""
    from synth.generators import check_table, fit_gmm, fit_vae
    from synth.privacy.consent import consenting
    from synth.privacy.ledger import PrivacyLedger

    if cfg.generator not in GENERATORS:
        raise ConfigError(f"generator={cfg.generator!r}; valid: {list(GENERATORS)}")
    if cfg.utility and cfg.table != "persona":
        raise ConfigError("utility=true measures a persona generator as a population: it "
                          "needs table=persona")
    table, spec, data = _real_table(cfg, run_dir)
    rows = check_table(consenting(table), spec)
    if len(rows) < 4:
        raise ConfigError(f"{len(rows)} consenting user(s) in the table; at least 4 are "
                          "needed (two to fit, two to measure)")
    order = np.random.default_rng(int(cfg.seed)).permutation(len(rows))
    half = len(rows) // 2
    train = rows.iloc[order[:half]].reset_index(drop=True).assign(consent=True)
    holdout = rows.iloc[order[half:2 * half]].reset_index(drop=True)
    ledger = None
    if cfg.epsilon is not None:
        budget = cfg.budget if cfg.budget is not None else cfg.epsilon
        ledger = PrivacyLedger.open(data, budget, cfg.delta)
    label = f"{cfg.generator} on {data.name} ({run_dir.name})"
    if cfg.generator == "gmm":
        gen = fit_gmm(train, spec, cfg.components, seed=cfg.seed, epsilon=cfg.epsilon,
                      ledger=ledger, label=label)
    else:
        gen = fit_vae(train, spec, epochs=cfg.epochs, seed=cfg.seed, epsilon=cfg.epsilon,
                      ledger=ledger, label=label)
    samples = int(cfg.samples) if cfg.samples is not None else len(train)
    if samples < 2:
        raise ConfigError(f"samples={samples}; give at least 2")
    synthetic = gen.sample(samples, np.random.default_rng(int(cfg.seed) + 1))
    scores = fidelity_scores(spec, train, holdout, synthetic, cfg.gate_tolerance)
    released = bool(scores["gate"])
    written = []
    if released:
        written = [gen.save(run_dir / "generator").name, "synthetic.parquet"]
        synthetic.to_parquet(run_dir / "synthetic.parquet", index=False)
    utility = None
    if cfg.utility and released:
        utility = utility_of({"real": None, cfg.generator: str(run_dir / "generator.npz")},
                             seed=int(cfg.seed), episodes=int(cfg.episodes),
                             warmup_steps=int(cfg.warmup_steps))
    log.info("%s: MMD² %.4g, DCR share %.3f, gate %s", cfg.generator, scores["mmd2"],
             scores["dcr_share"], "passed" if released else "failed")
    return _report(cfg, run_dir, data, rows, train, gen, scores, written, utility, ledger)


def _report(cfg: DictConfig, run_dir: Path, data: Path, rows: Any, train: Any, gen: Any,
            scores: Mapping[str, Any], written: list[str], utility: Mapping | None,
            ledger: Any) -> Path:
    dp = (f"with differential privacy, ε = {gen.privacy['epsilon']:g} at δ = "
          f"{gen.privacy['delta']:g} ({gen.privacy['method']}; ledger entry "
          f"{gen.privacy['entry']} of `{Path(gen.privacy['ledger']).name}`)"
          if gen.privacy else "without differential privacy")
    b: list[Block] = [
        ("h1", f"Synthetic users: {cfg.generator} on the {cfg.table} table"),
        ("p", f"{len(rows):,} consenting users of `{data.name}`; the generator was fitted "
              f"to {len(train):,} of them {dp}; the other {len(rows) - len(train):,} only "
              "measure."),
        ("table", (["score (synthetic vs held-out users)", "value", "healthy"], [
            ["MMD² (unbiased, RBF at the median distance)", human(scores["mmd2"]), "≈ 0"],
            ["largest per-feature KL (20 quantile bins, add-½)", human(scores["kl_max"]),
             "≈ 0"],
            ["coverage (k = 5)", human(scores["coverage"]), "≈ 1"],
            ["DCR share (closer to training than to held-out)",
             human(scores["dcr_share"]), f"0.5 ± {scores['gate_tolerance']:g}"]])),
        ("table", (["feature", "KL(real ‖ synthetic)"],
                   [[k, human(v)] for k, v in scores["kl"].items()])),
    ]
    if written:
        b.append(("p", f"Memorisation gate **passed**: released `{'`, `'.join(written)}` "
                       f"(every row tagged `source=generated`)."
                       + (f" Use it as a population: `persona.generator={run_dir}/"
                          "generator.npz`." if cfg.table == "persona" else "")))
    else:
        b.append(("p", "Memorisation gate **failed**: the synthetic rows sit closer to the "
                       "training users than to held-out ones, so the generator copies what "
                       "it saw. Nothing was released (no generator file, no synthetic "
                       "rows)."))
    if utility is not None:
        u = utility["utility"][cfg.generator]
        b.append(("table", (["policy trained on", "mean return on real users"],
                            [[k, human(v)] for k, v in utility["mean_return"].items()])))
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
