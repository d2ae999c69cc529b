"""An A/B test of a treatment policy against a control on simulated users, read out,
monitored sequentially, checked for fairness, with a rollback rule stated in advance.

    python -m experiments.abtest
    python -m experiments.abtest control=persona_router treatment=random users=20000
    python -m experiments.abtest treatment=outputs/<date>/<time>/policy mde=0.01

**Arms.** ``control`` and ``treatment`` are baselines by name (warmed up and frozen) or
policy bundles. ``users`` users (``abtest.simulate``) meet both arms' policies — each has a
potential outcome under each, so the true effect is known — and a pre-period session
under the control (CUPED's covariate); each user is assigned to the treatment with
probability ``share`` (the ``assignment`` stream), as a traffic split would.

**Readout** (``abtest.readout``): every metric's Welch change (relative where the
control's mean is positive), its bootstrap interval, the CUPED-adjusted change, Holm's
correction across metrics, the sample-ratio check, a decision with its reason, and the
true change beside each. **Power**: the users per arm a two-sided test needs for a
relative change of ``mde`` on the primary metric (the pre-period's spread).
**Sequential monitoring** (``abtest.sequential``): ``looks`` equally spaced looks in
arrival order; the rule, stated before the first look: roll back when the confidence
sequence's upper bound of the ``guardrail``'s relative change is below ``rollback_below``.
**Fairness** (``personarl.parity``): the primary metric per demographic group in each arm,
its parity and the alert.

**From served logs** (``mode=logs logs=<dir>``): the arms are a canary's or A/B test's
primary and candidate in a server's decision and feedback logs, each whole session one
user's (``ope.served``); no pre-period and no truth; groups where the clients sent
them (``group`` on ``/v1/act``). **Through a registry**
(``registry= model= candidate=``): the control is the model's production version, the
treatment the candidate version; when the rollback rule fires the candidate is archived
with the reason in the registry's history, production staying. Writes ``abtest.json`` and
``report.md``/``.html``. Mistakes exit with status 2.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from abtest.readout import DIRECTIONS
from envs.registration import record
from experiments.cli import check_command_line, check_fresh, run_app
from experiments.rendering import Block, fairness_blocks, number, write_reports
from experiments.schema import register_configs
from experiments.wiring import env_kwargs, load_policy_spec
from personarl.errors import ConfigError, check_int, check_range

__all__ = ["abtest", "main"]

log = logging.getLogger(__name__)
register_configs()

OUTPUTS = ("abtest.json",)


def _checked(cfg: DictConfig) -> dict[str, Any]:
    from abtest.simulate import METRICS

    env_id, kwargs = env_kwargs(cfg)
    if cfg.mode not in ("simulated", "logs"):
        raise ConfigError(f"mode={cfg.mode!r}; valid: simulated, logs")
    if cfg.registry is not None and (cfg.model is None or cfg.candidate is None):
        raise ConfigError("registry= needs model=<name> and candidate=<version>")
    if DIRECTIONS.get(cfg.guardrail, 1) == 0:
        raise ConfigError(f"guardrail={cfg.guardrail!r} is neither better nor worse when it "
                          "changes: a rollback rule needs a metric with a direction")
    if cfg.mode == "simulated" and cfg.registry is None and \
            str(cfg.control) == str(cfg.treatment):
        raise ConfigError(f"control and treatment are both {cfg.control!r}: an A/B test "
                          "compares two different policies")
    metrics = (*METRICS, "conversions", *record(env_id).safety_keys)
    for key in ("primary", "guardrail"):
        if cfg[key] not in metrics:
            raise ConfigError(f"{key}={cfg[key]!r}; valid: {', '.join(metrics)}")
    mde = cfg.mde
    if isinstance(mde, bool) or not isinstance(mde, (int, float)) or not 0 < mde < 10:
        raise ConfigError(f"mde={mde!r} must be a positive relative change (0.02 = 2%)")
    threshold = check_range("rollback_below", cfg.rollback_below, -1, 0, high_open=True)
    return dict(env_id=env_id, kwargs=kwargs, users=check_int("users", cfg.users, 20, 10**7),
                share=check_range("share", cfg.share, 0, 1, low_open=True, high_open=True),
                mde=float(mde), alpha=check_range("alpha", cfg.alpha, 0, 1, low_open=True,
                                                   high_open=True),
                looks=check_int("looks", cfg.looks, 1, 1000), rollback_below=threshold,
                min_group=check_int("min_group", cfg.min_group, 2),
                seed=check_int("seed", cfg.seed, 0, 2**31 - 1),
                warmup=check_int("warmup_steps", cfg.warmup_steps, 0))


@dataclass
class Arms:
    """What a test compares, however it was gathered: per arm, metric -> per-user values in
    order of arrival; optionally each user's pre-period values (CUPED), their groups, the
    true change per metric and the sample the power analysis reads."""

    names: dict[str, str]
    values: dict[str, dict[str, np.ndarray]]
    share: float
    #: metric -> values known before the test (the pre-period; None: the control arm's)
    baseline: dict[str, np.ndarray] | None = None
    covariates: tuple[dict, dict] | None = None
    groups: dict[str, np.ndarray] | None = None
    truth: dict[str, tuple[float, float]] | None = None     # metric -> (control, treatment)
    source: str = "simulated users"


def abtest(cfg: DictConfig, run_dir: Path) -> Path:
    """Run the test per ``cfg`` into ``run_dir``; the report's path."""
    s = _checked(cfg)
    check_fresh(run_dir, OUTPUTS)
    specs = _registry_arms(cfg) if cfg.registry is not None else None   # checks the versions
    arms = _from_logs(cfg, s) if cfg.mode == "logs" else _simulated(cfg, s, specs)
    summary = _analyse(cfg, s, arms)
    if summary["rolled_back"] is not None and cfg.registry is not None:
        summary["registry"] = _roll_back(cfg, summary["rolled_back"], s, run_dir)
    (run_dir / "abtest.json").write_text(json.dumps(summary, indent=1, default=float))
    log.info("decision %s: %s", summary["decision"], summary["reason"])
    return write_reports(run_dir, _report(cfg, summary))


def _simulated(cfg: DictConfig, s: dict[str, Any], specs: dict[str, str] | None) -> Arms:
    """Both arms' policies on the same simulated users, assigned by ``share``."""
    from abtest.simulate import user_outcomes
    from envs.creator import vector_maker
    from envs.registration import describe
    from personarl.seeds import generator

    make_env = vector_maker(s["env_id"], s["kwargs"])
    specs = specs or {"control": str(cfg.control), "treatment": str(cfg.treatment)}
    policies, names = {}, {}
    for arm, spec in specs.items():
        policies[arm], names[arm] = load_policy_spec(spec, s["env_id"], s["kwargs"],
                                                     s["seed"], s["warmup"], arm)
        if policies[arm].privileged:
            raise ConfigError(f"{arm}={spec!r} reads the latent truth; an arm serves users "
                              "from what the platform observes")
    seed, n = s["seed"], s["users"]
    keys = tuple(record(s["env_id"]).safety_keys)
    outcome = {arm: user_outcomes(p, make_env, n, seed, final_keys=keys)
               for arm, p in policies.items()}
    pre = user_outcomes(policies["control"], make_env, n, seed, session=1, final_keys=keys)
    metrics = [m for m in outcome["control"].metrics if m in outcome["treatment"].metrics]
    treated = generator(seed, "assignment", 0).random(n) < s["share"]
    rows = {"control": np.flatnonzero(~treated), "treatment": np.flatnonzero(treated)}
    group_names = np.array(describe(s["env_id"], s["kwargs"]).sampler.group_names)
    return Arms(
        names=names, share=s["share"], baseline=pre.metrics,
        values={a: {m: outcome[a].metrics[m][r] for m in metrics} for a, r in rows.items()},
        covariates=tuple({m: pre.metrics[m][rows[a]] for m in metrics}
                         for a in ("control", "treatment")),
        groups={a: group_names[outcome[a].group[r]] for a, r in rows.items()},
        truth={m: (float(outcome["control"].metrics[m].mean()),
                   float(outcome["treatment"].metrics[m].mean())) for m in metrics})


def _from_logs(cfg: DictConfig, s: dict[str, Any]) -> Arms:
    """A canary's or A/B test's arms from a server's decision and feedback logs: whole
    episodes served by the primary (control) and by the candidate (treatment)
    (``ope.served``), each one user's session, in the order they were served."""
    from agents.serving.decision_log import read_servings
    from agents.serving.registry import version_label
    from ope.served import from_decision_logs

    if cfg.logs is None:
        raise ConfigError("mode=logs needs logs=<a server's log directory>")
    root = Path(str(cfg.logs))
    serving = (read_servings(root) or [{}])[-1]
    shares = {a.get("arm"): a for a in serving.get("arms", [])}
    if set(shares) != {"primary", "candidate"}:
        raise ConfigError(f"logs={str(root)!r} were not served by a canary or an A/B test "
                          f"(its last serving's arms: {sorted(map(str, shares))}); "
                          "serve with traffic.mode=canary or ab")
    if cfg.registry is not None:
        label = version_label(str(cfg.model), int(cfg.candidate))
        if shares["candidate"].get("version") != label:
            raise ConfigError(f"the logs' candidate is {shares['candidate'].get('version')!r}, "
                              f"not {label} (model={cfg.model}, candidate={cfg.candidate})")
    values, names, groups = {}, {}, {}
    for arm, served in (("control", "primary"), ("treatment", "candidate")):
        data = from_decision_logs(root, arm=served)
        if data.meta.get("env_id") not in (None, s["env_id"]):
            raise ConfigError(f"the logs are of {data.meta.get('env_id')}, not {s['env_id']}")
        total = data.episode_returns()
        length = np.bincount(data.episode, minlength=data.n_episodes).astype(np.float64)
        values[arm] = {"return": total, "length": length,
                       "reward_per_step": total / np.maximum(length, 1)}
        group = data.episode_users("group")           # where the clients sent them
        if group is not None:
            groups[arm] = group
        names[arm] = f"{served} {shares[served].get('version') or ''}".strip()
    share = float(shares["candidate"].get("share", 0.5))
    return Arms(names=names, values=values, share=share, source=f"logs {root}",
                groups=groups if len(groups) == 2 else None)


def _analyse(cfg: DictConfig, s: dict[str, Any], arms: Arms) -> dict[str, Any]:
    """Readout, power, sequential monitor, fairness: the summary a report renders."""
    from abtest.readout import readout
    from abtest.sequential import sequential_interval
    from abtest.stats import users_per_arm, welch
    from personarl.parity import group_parity
    from personarl.seeds import generator

    for key in ("primary", "guardrail"):
        if cfg[key] not in arms.values["control"]:
            raise ConfigError(f"{key}={cfg[key]!r} is not measured from {arms.source}; "
                              f"valid: {', '.join(arms.values['control'])}")
    control, treatment = arms.values["control"], arms.values["treatment"]
    shares = (1 - arms.share, arms.share)
    result = readout(control, treatment, primary=cfg.primary, shares=shares,
                     alpha=s["alpha"], covariates=arms.covariates,
                     rng=generator(s["seed"], "bootstrap", 0))
    plain = readout(control, treatment, primary=cfg.primary, shares=shares, alpha=s["alpha"])
    baseline = arms.baseline or control
    base = baseline[cfg.primary]
    try:
        needed = users_per_arm(s["mde"] * abs(float(base.mean())), float(base.std(ddof=1)),
                               alpha=s["alpha"], ratio=arms.share / (1 - arms.share))
    except ConfigError as exc:            # a constant metric, or no n reaches the power
        needed, why = None, str(exc)
    else:
        why = None
    # sequential monitoring of the guardrail, each arm's users in arrival order. The rule is
    # fixed before the first look: the change is relative when the metric's mean before the
    # test is positive (else it cannot be a share of it and the rule does not apply), and
    # "worse" is the metric's direction (readout.DIRECTIONS: churn worsens when it rises)
    g = cfg.guardrail
    direction = DIRECTIONS.get(g, 1)
    relative = bool(baseline[g].mean() > 0)
    monitor, rolled = [], None
    total = sum(len(v[g]) for v in arms.values.values())
    for k in range(1, s["looks"] + 1):
        a = control[g][:round(len(control[g]) * k / s["looks"])]
        b = treatment[g][:round(len(treatment[g]) * k / s["looks"])]
        if min(len(a), len(b)) < 2 or (relative and not a.mean() > 0):
            continue
        d = welch(a, b, relative=relative)
        low, high = sequential_interval(d, alpha=s["alpha"], tuning=max(total, 1))
        monitor.append({"look": k, "users": len(a) + len(b), "estimate": d.estimate,
                        "low": low, "high": high, "relative": d.relative})
        worst_plausible = high if direction > 0 else -low     # the least-bad change, signed
        if relative and worst_plausible < s["rollback_below"]:
            rolled = monitor[-1]
            break
    fairness = {}
    if arms.groups is not None:
        for arm in ("control", "treatment"):
            known = np.array([x is not None for x in arms.groups[arm]], dtype=bool)
            fairness[arm] = group_parity(arms.values[arm][cfg.primary][known],
                                         np.asarray(arms.groups[arm])[known].astype(str),
                                         generator(s["seed"], "bootstrap", 1),
                                         min_size=s["min_group"]).as_dict()
            fairness[arm]["without_group"] = int((~known).sum())
    truth = {}
    for m, (c, t) in (arms.truth or {}).items():
        truth[m] = t / c - 1 if plain.metrics[m].diff.relative else t - c
    return {
        "env_id": s["env_id"], "source": arms.source, "arms": arms.names,
        "users": {a: int(len(v[cfg.primary])) for a, v in arms.values.items()},
        "share": arms.share, "srm_p": result.srm_p, "alpha": s["alpha"],
        "decision": result.decision,
        "reason": result.reason, "cuped": arms.covariates is not None,
        "power": {"mde": s["mde"], "users_per_arm_needed": needed, "not_computable": why},
        "guardrail_relative": relative, "guardrail_direction": direction,
        "min_group": s["min_group"],
        "metrics": {m: {"cuped": _metric(result.metrics[m]), "plain": _metric(plain.metrics[m]),
                        "truth": truth.get(m)} for m in control},
        "monitor": monitor, "rolled_back": rolled, "rollback_below": s["rollback_below"],
        "guardrail": g, "fairness": fairness}


def _registry_arms(cfg: DictConfig) -> dict[str, str]:
    """The control (``model``'s production version) and the treatment (its ``candidate``
    version) as bundle directories of the registry."""
    from agents.serving.registry import Registry

    reg = Registry(str(cfg.registry))
    control, entry = reg.resolve(str(cfg.model), stage="production")
    treatment, cand = reg.resolve(str(cfg.model), version=cfg.candidate)
    if cand["stage"] == "archived":
        raise ConfigError(f"candidate={cfg.candidate} is archived already: test a version "
                          "in stage none or staging")
    if cand["version"] == entry["version"]:
        raise ConfigError(f"candidate={cfg.candidate} is {cfg.model}'s production version: "
                          "test a candidate against production")
    return {"control": str(control), "treatment": str(treatment)}


def _roll_back(cfg: DictConfig, look: dict[str, Any], s: dict[str, Any], run_dir: Path
               ) -> dict[str, Any]:
    """Archive the candidate in the registry, saying why (production stays)."""
    from agents.serving.registry import Registry

    reason = (f"experiments.abtest rolled back at look {look['look']} ({look['users']:,} "
              f"users): the confidence sequence's upper bound of the {cfg.guardrail} change "
              f"{look['high']:+.2%} is below {s['rollback_below']:+.0%} ({run_dir})")
    reg = Registry(str(cfg.registry))
    entry = reg.set_stage(str(cfg.model), int(cfg.candidate), "archived", reason=reason)
    production = reg.resolve(str(cfg.model), stage="production")[1]["version"]
    return {"model": str(cfg.model), "archived": entry["version"], "production": production,
            "reason": reason}


def _metric(r: Any) -> dict[str, Any]:
    d = r.diff
    return {"control": d.mean_a, "treatment": d.mean_b, "relative": d.relative,
            "estimate": d.estimate, "low": d.low, "high": d.high, "p": d.p_value,
            "p_holm": r.p_adjusted, "boot_low": r.boot_low, "boot_high": r.boot_high,
            "verdict": r.verdict, "cuped_theta": r.cuped_theta}


def _change(x: float, relative: bool) -> str:
    return f"{x:+.2%}" if relative else f"{x:+.4f}"


def _report(cfg: DictConfig, s: dict[str, Any]) -> list[Block]:
    arms = s["arms"]
    rows = []
    for m, v in s["metrics"].items():
        c, p = v["cuped"], v["plain"]
        rel = c["relative"]
        rows.append([m, number(p["control"]), number(p["treatment"]),
                     f"{_change(p['estimate'], rel)} [{_change(p['low'], rel)}, "
                     f"{_change(p['high'], rel)}]",
                     f"{_change(c['estimate'], rel)} [{_change(c['low'], rel)}, "
                     f"{_change(c['high'], rel)}]",
                     f"[{_change(c['boot_low'], rel)}, {_change(c['boot_high'], rel)}]",
                     f"{c['p_holm']:.3g}", {1: "better", -1: "worse", 0: "—"}[c["verdict"]],
                     "—" if v["truth"] is None else _change(v["truth"], rel)])
    b: list[Block] = [
        ("h1", f"A/B test — {arms['treatment']} against {arms['control']}"),
        ("p", f"{s['env_id']}, from {s['source']}; {s['users']['control']:,} control and "
              f"{s['users']['treatment']:,} treatment users (planned share "
              f"{s['share']:.0%}; sample-ratio check p = {s['srm_p']:.3g})."),
        ("h2", f"Decision: {s['decision']}"),
        ("p", s["reason"] + "."),
        ("h2", "Metrics"),
        ("table", (["metric", "control", "treatment", "change (Welch)", "change (CUPED)",
                    "bootstrap (CUPED)", "Holm p", "verdict", "true change"], rows)),
        ("p", "Changes are relative where the control's mean is positive, else absolute; "
              "intervals are Welch's (delta method for relative changes), the bootstrap "
              "resamples users within each arm, and p-values are Holm-corrected across all "
              f"metrics (family-wise α = {s['alpha']:g}). "
              + ("CUPED's covariate is each user's pre-period session under the control. The "
                 "true change is the mean of every user's potential outcomes under both arms "
                 "(the simulator knows them). " if s["cuped"] else
                 "No pre-period covariate and no truth in served logs: CUPED's column "
                 "repeats Welch's. ")
              + (f"Power: {s['power']['users_per_arm_needed']:,} control users detect a "
                 f"{s['power']['mde']:.1%} change of {cfg.primary} with 80% power."
                 if s["power"]["users_per_arm_needed"] is not None else
                 f"Power: not computable ({s['power']['not_computable']}).")),
        ("h2", f"Sequential monitor of {s['guardrail']} (rollback when it "
               + ("falls" if s["guardrail_direction"] > 0 else "rises")
               + f" by more than {-s['rollback_below']:.0%})"),
        ("table", (["look", "users", "change", "confidence sequence"],
                   [[str(x["look"]), f"{x['users']:,}", _change(x["estimate"], x["relative"]),
                     f"[{_change(x['low'], x['relative'])}, "
                     f"{_change(x['high'], x['relative'])}]"] for x in s["monitor"]])),
        ("p", ("**Rolled back** at look {look} ({users:,} users): the whole confidence "
               "sequence is beyond the threshold on the worse side.".format(
                   **s["rolled_back"]))
              if s["rolled_back"] else "Not rolled back: the rule never fired."
              if s["guardrail_relative"] else
              f"Not enforced: {s['guardrail']}'s mean before the test is not positive, so a "
              "relative threshold does not apply (the changes above are absolute).")]
    if "registry" in s:
        r = s["registry"]
        b.append(("p", f"Registry: {r['model']} v{r['archived']} archived; v{r['production']} "
                       f"stays in production. Recorded reason: {r['reason']}."))
    if s["fairness"]:
        b += fairness_blocks(s["fairness"], cfg.primary, min_size=s["min_group"])
        missing = {a: f["without_group"] for a, f in s["fairness"].items()
                   if f["without_group"]}
        if missing:
            b.append(("p", "Left out of fairness, sent without a group: " + ", ".join(
                f"{k:,} {a}" for a, k in missing.items()) + "."))
    else:
        b.append(("p", "The logs carry no demographic group (clients send it as `group` "
                       "on /v1/act): fairness is not scored."))
    return b


@hydra.main(version_base="1.3", config_path="../configs", config_name="abtest")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    path = run_app("run the A/B test", cfg, lambda: abtest(cfg, run_dir), run_dir)
    print(f"report: {path}")


if __name__ == "__main__":
    check_command_line("abtest", "run the A/B test")
    main()
