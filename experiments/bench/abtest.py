"""A/B statistics measured on simulated users: error rates, power, CUPED, SRM, rollback and
the fairness alert, against effects the simulator knows.

    python -m experiments.bench abtest [--users 1000000] [--arm-users 5000] [--out ...]

**The pools** (``abtest.simulate``): ``users`` AgentRouting users in one session each under
the control — the persona router, warmed up and frozen — and under the treatment (greedy,
warmed up and frozen), with common random numbers, plus a pre-period session of the same
users under the control (CUPED's covariate). Every study *resamples users from these
pools* (with replacement), so a study's thousands of readouts cost seconds; a drawn user
brings all of their outcomes, so an arm's outcome is that user's potential outcome under
the arm, and an injected effect (a shift or a scale of the control's outcomes) is the
known truth.

**Studies.** A/A: ``readouts`` readouts of two arms of the control (Welch on the primary
metric, and the family-wise rate of the whole readout after Holm). Sequential: A/A runs
with ``looks`` equally spaced looks — the confidence sequence against naive peeking at the
fixed-horizon test. Power: tests at the users ``users_per_arm`` gives for a stated MDE (a
shift of the return). CUPED: the treatment pool against the control with and without the
pre-period covariate — bias against the pools' true effect, and the variance ratio
against ``1 − ρ²``. SRM: 52/48 and 50.5/49.5 at 10,000 users. Rollback: a true −10% and a
true 0% change of the return, looked at ``looks`` times up to ``arm_users`` per arm,
rolled back when the sequence's upper bound of the relative change is below −5%.
Fairness: the alert on a treatment arm whose one group's return is scaled by 0.8, and on a
fair one.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

ENV = "personarl/AgentRouting-v0"


def _pools(users: int, seed: int) -> dict[str, Any]:
    from abtest.simulate import user_outcomes
    from agents.baselines.evaluation import warm_up
    from agents.baselines.factory import make_policy
    from envs.creator import vector_maker

    make_env = vector_maker(ENV, {})
    control = warm_up(make_policy(ENV, "persona_router", {}, seed=seed), make_env, 2000, seed)
    treatment = warm_up(make_policy(ENV, "greedy", {}, seed=seed), make_env, 2000, seed)
    t = time.perf_counter()
    out = {"control": user_outcomes(control, make_env, users, seed),
           "pre": user_outcomes(control, make_env, users, seed, session=1),
           "treatment": user_outcomes(treatment, make_env, users, seed)}
    out["seconds"] = time.perf_counter() - t
    return out


def _draw(rng: np.random.Generator, users: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two arms of ``n`` users each, drawn with replacement from the pool."""
    rows = rng.integers(0, users, 2 * n)
    return rows[:n], rows[n:]


def _rate(hits: np.ndarray) -> dict[str, float]:
    """A share with its exact (Clopper–Pearson) 95% interval."""
    from scipy.stats import binomtest

    k, n = int(np.sum(hits)), len(hits)
    ci = binomtest(k, n).proportion_ci(0.95)
    return {"rate": k / n, "low": float(ci.low), "high": float(ci.high), "runs": n}


def run(users: int = 1_000_000, arm_users: int = 5_000, readouts: int = 2_000,
        sequential_runs: int = 1_000, looks: int = 20, power_tests: int = 2_000,
        mde: float = 0.02, cuped_runs: int = 1_000, rollback_runs: int = 1_000,
        fairness_runs: int = 200, seed: int = 0) -> dict[str, Any]:
    """Every study (module doc); ``mde`` is relative to the control's mean return."""
    from abtest.readout import readout
    from abtest.sequential import sequential_interval
    from abtest.stats import cuped, srm_pvalue, users_per_arm, welch
    from personarl.parity import group_parity
    from personarl.seeds import generator

    pools = _pools(users, seed)
    ctl, pre, trt = pools["control"].metrics, pools["pre"].metrics, pools["treatment"].metrics
    y = ctl["return"]
    truth = {m: float(trt[m].mean() - ctl[m].mean()) for m in ctl}
    out: dict[str, Any] = {
        "pools": {"env": ENV, "users": users, "seconds": pools["seconds"],
                  "control": "persona_router", "treatment": "greedy",
                  "control_means": {m: float(v.mean()) for m, v in ctl.items()},
                  "true_effect": truth,
                  "pre_period_rho": {m: float(np.corrcoef(pre[m], ctl[m])[0, 1]) for m in ctl}}}
    rng = generator(seed, "assignment", 0)

    # A/A: the primary metric's false positives and the readout's family-wise rate
    primary_fp, family_fp = [], []
    for _ in range(readouts):
        a, b = _draw(rng, users, arm_users)
        r = readout({m: v[a] for m, v in ctl.items()}, {m: v[b] for m, v in ctl.items()},
                    primary="return")
        primary_fp.append(welch(y[a], y[b]).p_value < 0.05)
        family_fp.append(any(m.verdict != 0 for m in r.metrics.values()))
    out["aa"] = {"arm_users": arm_users, "primary": _rate(np.array(primary_fp)),
                 "family_holm": _rate(np.array(family_fp)), "metrics": sorted(ctl)}

    # sequential vs naive peeking, A/A
    points = np.linspace(arm_users / looks, arm_users, looks).astype(int)
    naive, seq = [], []
    for _ in range(sequential_runs):
        a, b = _draw(rng, users, arm_users)
        hit_naive = hit_seq = False
        for n in points:
            d = welch(y[a[:n]], y[b[:n]])
            low, high = sequential_interval(d, tuning=2 * arm_users)
            hit_naive |= d.p_value < 0.05
            hit_seq |= low > 0 or high < 0
        naive.append(hit_naive)
        seq.append(hit_seq)
    out["sequential"] = {"looks": looks, "arm_users": arm_users,
                         "naive_peeking": _rate(np.array(naive)),
                         "confidence_sequence": _rate(np.array(seq))}

    # power at the computed n for a stated MDE (a shift of the return)
    shift = mde * float(y.mean())
    n_power = users_per_arm(shift, float(y.std(ddof=1)))
    hits = []
    for _ in range(power_tests):
        a, b = _draw(rng, users, n_power)
        hits.append(welch(y[a], y[b] + shift, relative=False).p_value < 0.05)
    out["power"] = {"mde_relative": mde, "mde_absolute": shift, "users_per_arm": n_power,
                    "power": _rate(np.array(hits)), "planned": 0.8}

    # CUPED on the real treatment (greedy): bias and variance against plain Welch
    plain, adjusted = [], []
    for _ in range(cuped_runs):
        a, b = _draw(rng, users, arm_users)
        plain.append(welch(y[a], trt["return"][b], relative=False).estimate)
        ya, yb, _ = cuped(y[a], trt["return"][b], pre["return"][a], pre["return"][b])
        adjusted.append(welch(ya, yb, relative=False).estimate)
    plain, adjusted = np.array(plain), np.array(adjusted)
    pooled = np.r_[y, trt["return"]]
    rho = float(np.corrcoef(np.r_[pre["return"], pre["return"]], pooled)[0, 1])
    out["cuped"] = {"true_effect": truth["return"], "plain_mean": float(plain.mean()),
                    "cuped_mean": float(adjusted.mean()),
                    "cuped_bias_se": float(adjusted.std(ddof=1) / np.sqrt(cuped_runs)),
                    "variance_ratio": float(adjusted.var(ddof=1) / plain.var(ddof=1)),
                    "one_minus_rho2": 1 - rho ** 2, "rho": rho}

    # sample-ratio mismatch
    out["srm"] = {"52/48 at 10k": srm_pvalue([5200, 4800], [0.5, 0.5]),
                  "50.5/49.5 at 10k": srm_pvalue([5050, 4950], [0.5, 0.5])}

    # rollback: the relative change's sequence upper bound below -5% at any look
    roll: dict[str, Any] = {}
    for change in (-0.10, 0.0):
        rolled, when = [], []
        for _ in range(rollback_runs):
            a, b = _draw(rng, users, arm_users)
            at = None
            for n in points:
                d = welch(y[a[:n]], (1 + change) * y[b[:n]])
                if sequential_interval(d, tuning=2 * arm_users)[1] < -0.05:
                    at = int(n)
                    break
            rolled.append(at is not None)
            if at is not None:
                when.append(at)
        roll[f"{change:+.0%}"] = {"rolled_back": _rate(np.array(rolled)),
                                  "median_users_per_arm_at_rollback":
                                  float(np.median(when)) if when else None}
    out["rollback"] = {"threshold": -0.05, "looks": looks, "arm_users": arm_users, **roll}

    # fairness: one group's return scaled by 0.8 in the treatment arm, or not
    group = pools["control"].group
    worst = sorted(set(group.tolist()))[-1]
    fair: dict[str, Any] = {}
    for name, scale in (("injected_0.8", 0.8), ("fair", 1.0)):
        alerts = []
        for _ in range(fairness_runs):
            _, b = _draw(rng, users, arm_users)
            values = y[b] * np.where(group[b] == worst, scale, 1.0)
            alerts.append(group_parity(values, group[b], rng, reps=500).alert)
        fair[name] = _rate(np.array(alerts))
    out["fairness"] = {"group_scaled": str(worst), "arm_users": arm_users, **fair}
    _print(out)
    return out


def _print(out: dict[str, Any]) -> None:
    p = out["pools"]
    print(f"pools: {p['users']:,} users x 3 sessions in {p['seconds']:.0f} s; true effect of "
          f"greedy on return {p['true_effect']['return']:+.4f}")
    for k in ("primary", "family_holm"):
        r = out["aa"][k]
        print(f"A/A {k}: {r['rate']:.2%} [{r['low']:.2%}, {r['high']:.2%}]")
    for k in ("naive_peeking", "confidence_sequence"):
        r = out["sequential"][k]
        print(f"sequential {k}: {r['rate']:.2%} [{r['low']:.2%}, {r['high']:.2%}]")
    w = out["power"]
    print(f"power at n={w['users_per_arm']:,}/arm for {w['mde_relative']:.0%}: "
          f"{w['power']['rate']:.2%}")
    c = out["cuped"]
    print(f"CUPED: mean {c['cuped_mean']:+.4f} (truth {c['true_effect']:+.4f}, plain "
          f"{c['plain_mean']:+.4f}); variance ratio {c['variance_ratio']:.3f} vs 1-rho^2 "
          f"{c['one_minus_rho2']:.3f}")
    print(f"SRM: {out['srm']}")
    for k in ("-10%", "+0%"):
        print(f"rollback at {k}: {out['rollback'][k]['rolled_back']['rate']:.2%}")
    for k in ("injected_0.8", "fair"):
        print(f"fairness alert, {k}: {out['fairness'][k]['rate']:.2%}")
