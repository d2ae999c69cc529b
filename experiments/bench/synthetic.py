"""Synthetic users scored against the real ones: fidelity, memorisation and utility
(issue 22).

**Fidelity** on one fixed dataset: users of the default population (seed 0) until 10,000
consent (only consenting users are fitted on), their behaviour features over a
50-interaction window (``synth.generators.behaviour``), split 5,000 train / 5,000 holdout,
standardised by the training rows' mean and SD. Each generator — Gaussian mixture
(``K = components``), VAE — without DP and at each ε (DP-GMM; DP-SGD VAE, each fit with a
fresh ledger of budget ε at δ = 1e-5) is fitted on the training rows for each seed and
samples 5,000 rows; scored against the holdout: unbiased MMD² (RBF at the holdout's median
distance), per-feature KL(real ‖ synthetic) over 20 quantile bins with add-½, coverage
(k = 5), and the DCR share on the full training and holdout sets (``synth.fidelity``).
Medians over seeds, with the range.

**Memorisation gate** (0.5 ± 0.03): every fit above, a planted leak (half the synthetic
rows copied from training, half from a clean GMM), the clean GMM alone, and — its false
alarms — a one-component GMM fitted to the held-out half (it never saw a training row), and
the smallest ε's DP-GMM fits repeated, same seeds, on the held-out half.

**Utility** on PersonalityAdaptation (discrete styles; the best style depends on the
persona): for each seed, ``utility_users`` users of the default population make the "real"
persona table (``synth.generators.persona``); a GMM, a VAE, a DP-GMM (ε = 1) and three
negative controls — a GMM fitted to the table with each column shuffled independently; the
same with the shuffle done in trait space (each user's traits as columns, shuffled, then
turned back into offsets against the shuffled weights: the table stores offsets, from which
a population recomputes traits, so a shuffle of the offsets keeps the link between traits
and archetypes); and a GMM fitted to the users whose primary archetype is ``optimizer`` (a
biased sample) — are fitted to its consenting users and saved, and each serves as the population
(``PopulationConfig.generator``) that a learning policy is trained on for ``warmup_steps``
batched steps of 256 users — the observed greedy baseline (running means over 24 buckets of
phase, sentiment and perceived neuroticism) and LinUCB on the whole observation; "real"
trains on the simulator's population itself. Every policy, and the uniformly random one,
is evaluated on the same ``episodes`` real users (common random numbers). Utility =
``(R_syn − R_random) / (R_real − R_random)`` with a paired percentile-bootstrap CI over
those users; across seeds the mean with a t interval.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from personarl.stats import mean_ci
from synth.fidelity import dcr_share, memorisation_gate

__all__ = ["run", "fidelity_dataset", "fidelity_study", "utility_study"]

DELTA = 1e-5


def fidelity_dataset(users: int = 10_000, seed: int = 0, interactions: int = 50
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(train, holdout)``: the first ``users`` consenting users' behaviour features,
    halved (module doc)."""
    from synth.generators.behaviour import behaviour_table

    table = behaviour_table(int(users * 1.25), seed, interactions)
    table = table[table["consent"]].iloc[:users].reset_index(drop=True)
    if len(table) < users:
        raise RuntimeError(f"only {len(table)} consenting users in the sample")
    half = users // 2
    return table.iloc[:half].reset_index(drop=True), table.iloc[half:2 * half].reset_index(
        drop=True)


def _fit(kind: str, train: pd.DataFrame, spec: Any, epsilon: float | None, seed: int,
         folder: Path, components: int, epochs: int) -> Any:
    from synth.generators import fit_gmm, fit_vae
    from synth.privacy.ledger import PrivacyLedger

    ledger = None
    if epsilon is not None:
        data = folder / f"{kind}_{epsilon}_{seed}.parquet"
        data.touch()
        ledger = PrivacyLedger.open(data, epsilon, DELTA)
    if kind == "gmm":
        return fit_gmm(train, spec, components, seed=seed, epsilon=epsilon, ledger=ledger)
    return fit_vae(train, spec, epochs=epochs, seed=seed, epsilon=epsilon, ledger=ledger)


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("mmd2", "kl_max", "coverage", "dcr_share", "seconds"):
        values = [r[key] for r in runs]
        out[key] = {"median": statistics.median(values), "min": min(values),
                    "max": max(values)}
    out["kl_median_by_feature"] = np.median([list(r["kl"].values()) for r in runs],
                                            axis=0).tolist()
    out["gate_passed"] = sum(r["gate"] for r in runs)
    return out


def fidelity_study(seeds: int = 5, epsilons: tuple[float, ...] = (0.1, 1.0, 10.0),
                   users: int = 10_000, components: int = 8, epochs: int = 30,
                   generators: tuple[str, ...] = ("gmm", "vae")) -> dict[str, Any]:
    """The fidelity table and the memorisation gate (module doc)."""
    from experiments.synthesize import fidelity_scores
    from synth.generators import TableEncoder
    from synth.generators.behaviour import behaviour_spec

    spec = behaviour_spec()
    train, holdout = fidelity_dataset(users)
    cols = spec.names
    matrix = TableEncoder.fit(spec, train).encode        # the scores' standardisation
    x_train, x_holdout = matrix(train), matrix(holdout)
    n = len(holdout)
    rows: dict[str, Any] = {}
    clean = None
    with tempfile.TemporaryDirectory() as tmp:
        for kind in generators:
            for epsilon in (None, *epsilons):
                name = f"{kind}, " + ("no DP" if epsilon is None else f"ε = {epsilon:g}")
                runs = []
                for seed in range(seeds):
                    start = time.perf_counter()
                    gen = _fit(kind, train, spec, epsilon, seed, Path(tmp), components,
                               epochs)
                    seconds = time.perf_counter() - start
                    synthetic = gen.sample(n, np.random.default_rng(1000 + seed))
                    runs.append({**fidelity_scores(spec, train, holdout, synthetic),
                                 "seconds": seconds,
                                 "steps": (gen.privacy or {}).get("steps")})
                    if kind == "gmm" and epsilon is None and seed == 0:
                        clean = matrix(synthetic)
                rows[name] = {"generator": kind, "epsilon": epsilon, **_summary(runs),
                              "runs": runs}
                print(f"{name:>18}: MMD² {rows[name]['mmd2']['median']:.4f}  max KL "
                      f"{rows[name]['kl_max']['median']:.3f}  coverage "
                      f"{rows[name]['coverage']['median']:.3f}  DCR share "
                      f"{rows[name]['dcr_share']['median']:.3f}  gate "
                      f"{rows[name]['gate_passed']}/{seeds}  fit "
                      f"{rows[name]['seconds']['median']:.1f} s", flush=True)
    gate: dict[str, Any] = {}
    if clean is not None:
        leak = clean.copy()
        rng = np.random.default_rng(7)
        copied = rng.choice(n, n // 2, replace=False)
        leak[copied] = x_train[rng.choice(len(x_train), n // 2, replace=False)]
        for label, rows_ in (("clean GMM", clean), ("planted leak (half copied)", leak)):
            share = dcr_share(rows_, x_train, x_holdout)
            gate[label] = {"dcr_share": share, "passes": memorisation_gate(share)}
            print(f"gate: {label}: DCR share {share:.3f} -> "
                  f"{'passes' if gate[label]['passes'] else 'FAILS'}")
        # false alarms: a one-component mixture fitted to the held-out half has never seen
        # a training row, yet its share against this split need not be 0.5
        from synth.generators import fit_gmm

        blind = [dcr_share(matrix(fit_gmm(holdout.assign(consent=True), spec, 1, seed=seed)
                                  .sample(n, np.random.default_rng(2000 + seed))),
                           x_train, x_holdout) for seed in range(seeds)]
        gate["one-component GMM fitted to the held-out half"] = {
            "dcr_share": blind, "passes": [memorisation_gate(v) for v in blind]}
        print("gate: one-component GMM fitted to the held-out half: DCR shares "
              + ", ".join(f"{v:.3f}" for v in blind))
        if epsilons and "gmm" in generators:
            # the smallest ε's DP-GMM fits again, with the same seeds, on the held-out half
            eps = min(epsilons)
            with tempfile.TemporaryDirectory() as tmp:
                swapped = [dcr_share(matrix(_fit("gmm", holdout.assign(consent=True), spec,
                                                 eps, seed, Path(tmp), components, epochs)
                                            .sample(n, np.random.default_rng(1000 + seed))),
                                     x_train, x_holdout) for seed in range(seeds)]
            label = f"gmm, ε = {eps:g}, fitted to the held-out half"
            gate[label] = {"dcr_share": swapped,
                           "passes": [memorisation_gate(v) for v in swapped],
                           "fitted_to_train": [r["dcr_share"] for r in
                                               rows[f"gmm, ε = {eps:g}"]["runs"]]}
            print(f"gate: {label}: DCR shares " + ", ".join(f"{v:.3f}" for v in swapped)
                  + " (fitted to the training half: " + ", ".join(
                      f"{v:.3f}" for v in gate[label]["fitted_to_train"]) + ")")
    return {"users": users, "train": len(train), "holdout": n, "features": cols,
            "components": components, "vae_epochs": epochs, "seeds": seeds,
            "delta": DELTA, "rows": rows, "gate": gate}


def _shuffled(table: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Each column permuted on its own (the weights renormalised): the marginals kept, the
    joint structure gone."""
    out = table.copy()
    for c in out.columns:
        out[c] = out[c].to_numpy()[rng.permutation(len(out))]
    w = [c for c in out.columns if c.startswith("w_")]
    out[w] = out[w].to_numpy() / out[w].to_numpy().sum(axis=1, keepdims=True)
    return out


def _shuffled_traits(table: pd.DataFrame, sampler: Any, rng: np.random.Generator
                     ) -> pd.DataFrame:
    """``_shuffled`` in trait space: each user's traits (what the offsets and weights make)
    shuffled column by column with every other column, then turned back into offsets against
    the shuffled weights (clipped to the offsets' public bounds)."""
    from synth.archetypes import TRAITS

    weights = [f"w_{a}" for a in sampler.tables[0].names]
    offsets = [f"offset_{t}" for t in TRAITS]
    w = table[weights].to_numpy()
    traits = sampler.traits_of(w, np.exp(table[offsets].to_numpy()), np.zeros(len(w), int))
    out = _shuffled(table.drop(columns=offsets).assign(
        **{f"trait_{t}": traits[:, j] for j, t in enumerate(TRAITS)}), rng)
    logit = lambda p: np.log(p) - np.log1p(-p)  # noqa: E731
    means = np.clip(out[weights].to_numpy() @ sampler.trait_table[0], 1e-6, 1 - 1e-6)
    shuffled = np.clip(out[[f"trait_{t}" for t in TRAITS]].to_numpy(), 1e-6, 1 - 1e-6)
    bound = max(6.0 * sampler.trait_noise, 0.05)
    delta = np.clip(logit(shuffled) - logit(means), -bound, bound)
    out = out.drop(columns=[f"trait_{t}" for t in TRAITS])
    return out.assign(**{o: delta[:, j] for j, o in enumerate(offsets)})[table.columns]


def utility_study(seeds: int = 5, utility_users: int = 10_000, episodes: int = 2000,
                  warmup_steps: int = 2000, components: int = 8, epochs: int = 30,
                  policies: tuple[str, ...] = ("greedy", "linucb")) -> dict[str, Any]:
    """Utility on PersonalityAdaptation (module doc), for each learning baseline in
    ``policies``."""
    from envs.adaptation import ENV_ID
    from experiments.synthesize import utility_of
    from synth.generators import fit_gmm, fit_vae
    from synth.generators.persona import persona_spec, persona_table
    from synth.population import PopulationSampler
    from synth.privacy.ledger import PrivacyLedger

    sampler = PopulationSampler()
    spec = persona_spec(sampler)
    weights = [f"w_{a}" for a in sampler.tables[0].names]
    per_seed: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(seeds):
            table = persona_table(sampler.sample(utility_users, np.random.default_rng(seed)),
                                  sampler)
            data = Path(tmp) / f"persona_{seed}.parquet"
            data.touch()
            ledger = PrivacyLedger.open(data, 1.0, DELTA)
            fits = {
                "gmm": fit_gmm(table, spec, components, seed=seed),
                "vae": fit_vae(table, spec, epochs=epochs, seed=seed),
                "dp-gmm ε=1": fit_gmm(table, spec, components, seed=seed, epsilon=1.0,
                                      ledger=ledger),
                "shuffled-column gmm (control)": fit_gmm(
                    _shuffled(table, np.random.default_rng(seed)), spec, components,
                    seed=seed),
                "shuffled-column gmm, traits (control)": fit_gmm(
                    _shuffled_traits(table, sampler, np.random.default_rng(seed)), spec,
                    components, seed=seed),
                "one-archetype gmm (control)": fit_gmm(
                    table[table["w_optimizer"] == table[weights].max(axis=1)], spec,
                    components, seed=seed)}
            populations: dict[str, Any] = {"real": None}
            for name, gen in fits.items():
                populations[name] = str(gen.save(Path(tmp) / f"{seed}_{len(populations)}"))
            for policy in policies:
                row = {"seed": seed, **utility_of(populations, seed=seed, episodes=episodes,
                                                  warmup_steps=warmup_steps, policy=policy)}
                per_seed.setdefault(policy, []).append(row)
                print(f"utility {policy}, seed {seed}: mean returns " + "  ".join(
                    f"{k} {v:.3f}" for k, v in row["mean_return"].items()))
                print(f"utility {policy}, seed {seed}: " + "  ".join(
                    f"{k} {v['ratio']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]"
                    for k, v in row["utility"].items()), flush=True)
    summary: dict[str, dict[str, Any]] = {}
    for policy, rows in per_seed.items():
        for name in rows[0]["utility"]:
            ratios = np.array([r["utility"][name]["ratio"] for r in rows])
            m, lo, hi = mean_ci(ratios) if len(ratios) > 1 else (ratios[0], np.nan, np.nan)
            summary.setdefault(policy, {})[name] = {"mean": float(m), "ci_low": float(lo),
                                                    "ci_high": float(hi)}
            print(f"utility {policy}, {name}: {m:.3f} [{lo:.3f}, {hi:.3f}] over {seeds} "
                  "seed(s)")
    return {"env": ENV_ID, "policies": list(policies), "warmup_steps": warmup_steps,
            "episodes": episodes, "users": utility_users, "components": components,
            "vae_epochs": epochs, "seeds": per_seed, "summary": summary}


def run(seeds: int = 5, users: int = 10_000, utility_users: int = 10_000,
        episodes: int = 2000, warmup_steps: int = 2000,
        parts: tuple[str, ...] = ("fidelity", "utility")) -> dict[str, Any]:
    """The studies in ``parts`` (module doc)."""
    unknown = sorted(set(parts) - {"fidelity", "utility"})
    if unknown:
        raise SystemExit(f"--parts names {unknown}; valid: fidelity, utility")
    warnings.filterwarnings("ignore", message="Secure RNG turned off")
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    out: dict[str, Any] = {}
    if "fidelity" in parts:
        out["fidelity"] = fidelity_study(seeds=seeds, users=users)
    if "utility" in parts:
        out["utility"] = utility_study(seeds=seeds, utility_users=utility_users,
                                       episodes=episodes, warmup_steps=warmup_steps)
    return out
