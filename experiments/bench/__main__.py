"""Benchmarks that print their figures and save them as JSON.

    python -m experiments.bench env     [--seconds 3] [--repeats 5] [--scaling 1,16,...,65536]
                                        [--users 1000000] [--out benchmarks/env.json]
    python -m experiments.bench equivalence [--episodes 400000] [--out benchmarks/equivalence.json]
    python -m experiments.bench fusion  [--users 3000] [--out benchmarks/fusion.json]
    python -m experiments.bench discovery [--users 20000] [--seeds 5] [--k-seeds 20]
                                        [--sessions 20000] [--speed-users 1000000]
                                        [--out benchmarks/discovery.json]
    python -m experiments.bench evolution [--users 3000] [--interactions 200] [--seeds 20]
                                        [--windows 10] [--out benchmarks/evolution.json]
    python -m experiments.bench rankings [--seeds 5] [--out benchmarks/rankings.json]
    python -m experiments.bench privacy [--steps 1000] [--rows 1000000] [--users 100000]
                                        [--settings 5] [--out benchmarks/privacy.json]
    python -m experiments.bench synthetic [--seeds 5] [--users 10000] [--utility-users 10000]
                                        [--episodes 2000] [--warmup-steps 2000]
                                        [--parts fidelity,utility] [--out benchmarks/synthetic.json]
    python -m experiments.bench policies [--episodes 2000] [--out benchmarks/policies.json]
    python -m experiments.bench abtest  [--users 1000000] [--arm-users 5000] [--readouts 2000]
                                        [--runs 1000] [--out benchmarks/abtest.json]
    python -m experiments.bench train   [--experiment intervention] [--budget 500000] [--seeds 3]
                                        [--ray auto|always] [--profile ITERATIONS]
                                        [--out benchmarks/train.json]
    python -m experiments.bench serve   [--run <train run dir>] [--bundle <dir>] [--parts loader,http]
                                        [--rate 200] [--requests 30000] [--ladder 200,400,...]
                                        [--out benchmarks/serve.json]
    python -m experiments.bench faults  [--parts server,registry,training] [--bundle <dir>]
                                        [--kills 12] [--train-kills 4] [--out benchmarks/faults.json]
    python -m experiments.bench sweep   [--budget 200000] [--trials 8] [--repeats 2]
                                        [--out benchmarks/sweep.json]
    python -m experiments.bench ope     [--rows 1000000] [--seeds 100] [--logged 10000]
                                        [--bundle <horizon=1 PPO bundle>] [--parts ...]
                                        [--intervention-bundle <bundle>] [--out benchmarks/ope.json]

Record results in BENCHMARKS.md with the command, date and machine.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from personarl import jsonio  # noqa: E402  (after OMP_NUM_THREADS: it imports NumPy)


def _machine() -> dict[str, object]:
    import numpy as np
    import gymnasium as gym
    return dict(date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), cores=os.cpu_count(),
                machine=platform.machine(), python=platform.python_version(),
                numpy=np.__version__, gymnasium=gym.__version__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench")
    sub = parser.add_subparsers(dest="what", required=True)
    env = sub.add_parser("env", help="env stepping speed vs CartPole-v1")
    env.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    env.add_argument("--repeats", type=int, default=5,
                     help="interleaved measurements (median kept)")
    env.add_argument("--scaling", default="1,16,256,4096,65536",
                     help="batch sizes of the scaling curve (comma-separated)")
    env.add_argument("--users", type=int, default=1_000_000,
                     help="users of the population-sampling measurement")
    env.add_argument("--out", default="benchmarks/env.json")
    eqv = sub.add_parser("equivalence", help="env statistics under fixed policies (the "
                                             "reference a changed env is tested against)")
    eqv.add_argument("--episodes", type=int, default=400_000)
    eqv.add_argument("--out", default="benchmarks/equivalence.json")
    fus = sub.add_parser("fusion", help="persona-fusion accuracy vs the Bayes filter")
    fus.add_argument("--users", type=int, default=3000)
    fus.add_argument("--particles", type=int, default=2000,
                     help="Bayes filter Monte Carlo draws per archetype")
    fus.add_argument("--out", default="benchmarks/fusion.json")
    dis = sub.add_parser("discovery", help="persona discovery's ARI against the truth, "
                                           "and its speed")
    dis.add_argument("--users", type=int, default=20_000, help="users per window")
    dis.add_argument("--seeds", type=int, default=5, help="seeds per table cell")
    dis.add_argument("--k-seeds", type=int, default=20,
                     help="seeds at 200 interactions, where the chosen k is counted")
    dis.add_argument("--speed-users", type=int, default=1_000_000)
    dis.add_argument("--sessions", type=int, default=20_000,
                     help="AgentRouting sessions logged per seed")
    dis.add_argument("--out", default="benchmarks/discovery.json")
    evo = sub.add_parser("evolution", help="persona evolution events against the "
                                           "scheduled truth, and false events")
    evo.add_argument("--users", type=int, default=3000)
    evo.add_argument("--interactions", type=int, default=200, help="per user and window")
    evo.add_argument("--seeds", type=int, default=20)
    evo.add_argument("--windows", type=int, default=10,
                     help="windows of the stationary populations")
    evo.add_argument("--out", default="benchmarks/evolution.json")
    rnk = sub.add_parser("rankings", help="agent rankings per task x persona against the "
                                          "true agent quality")
    rnk.add_argument("--seeds", type=int, default=5)
    rnk.add_argument("--out", default="benchmarks/rankings.json")
    prv = sub.add_parser("privacy", help="the privacy ledger vs Opacus's accountants; DP-SGD "
                                         "overhead, erasure and k-anonymity cost")
    prv.add_argument("--steps", type=int, default=1000, help="DP-SGD steps per path")
    prv.add_argument("--rows", type=int, default=1_000_000, help="logged rows erasure reads")
    prv.add_argument("--users", type=int, default=100_000, help="users k-anonymised")
    prv.add_argument("--settings", type=int, default=5, help="DP-SGD settings compared (of 5)")
    prv.add_argument("--out", default="benchmarks/privacy.json")
    syn = sub.add_parser("synthetic", help="synthetic users: fidelity, memorisation gate and "
                                           "utility against the real ones")
    syn.add_argument("--seeds", type=int, default=5)
    syn.add_argument("--users", type=int, default=10_000, help="consenting users, train + holdout")
    syn.add_argument("--utility-users", type=int, default=10_000,
                     help="users of the real persona table the utility generators fit")
    syn.add_argument("--episodes", type=int, default=2000, help="real users each policy is "
                                                                "evaluated on")
    syn.add_argument("--warmup-steps", type=int, default=2000,
                     help="batched steps (256 users) each policy learns for")
    syn.add_argument("--parts", default="fidelity,utility")
    syn.add_argument("--out", default="benchmarks/synthetic.json")
    abt = sub.add_parser("abtest", help="A/B statistics on simulated users: A/A error, "
                                        "peeking, power, CUPED, SRM, rollback, fairness")
    abt.add_argument("--users", type=int, default=1_000_000, help="users per pool")
    abt.add_argument("--arm-users", type=int, default=5_000, help="users per arm")
    abt.add_argument("--readouts", type=int, default=2_000)
    abt.add_argument("--runs", type=int, default=1_000,
                     help="sequential, CUPED and rollback runs each")
    abt.add_argument("--out", default="benchmarks/abtest.json")
    pol = sub.add_parser("policies", help="InterventionTiming baselines vs the planner")
    pol.add_argument("--episodes", type=int, default=2000)
    pol.add_argument("--out", default="benchmarks/policies.json")
    trn = sub.add_parser("train", help="time-to-target: our RLlib PPO vs SB3 PPO")
    trn.add_argument("--experiment", default="intervention",
                     help="configs/experiment overlay giving env and PPO config ('' for the "
                          "main job's defaults)")
    trn.add_argument("--budget", type=int, default=500_000, help="env steps per run")
    trn.add_argument("--seeds", type=int, default=3)
    trn.add_argument("--eval-every", type=int, default=25_000, help="env steps between evals")
    trn.add_argument("--eval-episodes", type=int, default=1024)
    trn.add_argument("--num-envs", type=int, default=None,
                     help="parallel envs for both (default: configs/agent/ppo.yaml)")
    trn.add_argument("--profile", type=int, default=None, metavar="ITERATIONS",
                     help="instead of the time-to-target runs: where one iteration's time "
                          "goes, over this many iterations (honours --experiment, "
                          "--num-envs and --ray)")
    trn.add_argument("--ray", default="auto", choices=("auto", "always"),
                     help="experiments.train's ray.start: auto starts Ray only where the run "
                          "needs it (PPO in this process needs none); always, as before")
    trn.add_argument("--out", default="benchmarks/train.json")
    srv = sub.add_parser("serve", help="bundle loader vs RLlib inference; the HTTP server")
    srv.add_argument("--run", default=None,
                     help="an experiments.train run dir with checkpoints/ and policy/ (default: "
                          "train a small AgentRouting PPO run first)")
    srv.add_argument("--calls", type=int, default=5000, help="batch-1 calls per path")
    srv.add_argument("--cold-runs", type=int, default=5, help="fresh processes per path")
    srv.add_argument("--bundle", default=None, help="the bundle the HTTP part serves "
                                                     "(default: the run's policy/)")
    srv.add_argument("--parts", default="loader,http", help="comma-separated: loader, http")
    srv.add_argument("--rate", type=float, default=200.0, help="HTTP requests per second")
    srv.add_argument("--requests", type=int, default=30_000, help="HTTP requests at --rate")
    srv.add_argument("--segment-rows", type=int, default=10_000,
                     help="the server's decision-log segment size (rolls every so many)")
    srv.add_argument("--ladder", default="200,300,400,500,600,800",
                     help="comma-separated request rates for the highest sustained one")
    srv.add_argument("--ladder-seconds", type=float, default=10.0)
    srv.add_argument("--out", default="benchmarks/serve.json")
    flt = sub.add_parser("faults", help="kill -9 the server and the registry under load, and "
                                        "training runs; count what was lost")
    flt.add_argument("--bundle", default=None, help="the bundle served (default: a small "
                                                    "untrained AgentRouting bundle)")
    flt.add_argument("--kills", type=int, default=12, help="server kills")
    flt.add_argument("--registry-kills", type=int, default=40, help="registry-writer kills")
    flt.add_argument("--train-kills", type=int, default=4,
                     help="kills of each training configuration")
    flt.add_argument("--parts", default="server,registry,training",
                     help="comma-separated subset of server, registry, training")
    flt.add_argument("--seed", type=int, default=0, help="kill times and load")
    flt.add_argument("--out", default="benchmarks/faults.json")
    swp = sub.add_parser("sweep", help="an 8-trial Optuna/ASHA sweep + re-runs, timed, twice")
    swp.add_argument("--sweep", default="routing_small", help="configs/sweep/<name>")
    swp.add_argument("--budget", type=int, default=200_000, help="env steps per trial")
    swp.add_argument("--trials", type=int, default=8)
    swp.add_argument("--repeats", type=int, default=2, help="identical sweeps to compare")
    swp.add_argument("--out", default="benchmarks/sweep.json")
    ope = sub.add_parser("ope", help="OPE estimator speed and the README journeys over seeds")
    ope.add_argument("--rows", type=int, default=1_000_000, help="decisions for the timings")
    ope.add_argument("--seeds", type=int, default=100, help="independent logs in the study")
    ope.add_argument("--logged", type=int, default=10_000, help="decisions per log")
    ope.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    ope.add_argument("--bundle", default=None,
                     help="a PPO bundle trained on AgentRouting with env.horizon=1 (default: "
                          "train one first, about a minute)")
    ope.add_argument("--intervention-bundle", default=None,
                     help="a PPO bundle trained on InterventionTiming (default: train one)")
    ope.add_argument("--refit-seeds", type=int, default=30,
                     help="logs in the ci.refit study (each refits the model 200 times)")
    ope.add_argument("--parts", default="speed,one_step,sequential",
                     help="comma-separated subset of speed, one_step, sequential, refit, "
                          "journeys, served, served_read")
    ope.add_argument("--out", default="benchmarks/ope.json")
    args = parser.parse_args(argv)
    for name in ("seconds", "repeats", "users", "particles", "episodes", "budget", "seeds",
                 "eval_every", "eval_episodes", "num_envs", "calls", "cold_runs", "rate", "rows",
                 "logged", "resamples", "trials", "repeats", "refit_seeds", "requests",
                 "segment_rows", "ladder_seconds", "kills", "registry_kills", "train_kills"):
        value = getattr(args, name, None)
        if value is not None and not (0 < value < math.inf):      # NaN fails both
            parser.error(f"--{name.replace('_', '-')}={value} must be positive and finite")
    if args.what == "env":
        from experiments.bench.env import run
        from envs.batched import MAX_LANES
        try:
            scaling = tuple(int(b) for b in args.scaling.split(","))
        except ValueError:
            scaling = (0,)
        if min(scaling) < 1 or max(scaling) > MAX_LANES:
            parser.error(f"--scaling={args.scaling!r}: give batch sizes in [1, {MAX_LANES}], "
                         "comma-separated")
        result = run(seconds=args.seconds, repeats=args.repeats, scaling=scaling,
                     users=args.users)
    elif args.what == "equivalence":
        from experiments.bench.equivalence import run
        result = run(episodes=args.episodes)
    elif args.what == "fusion":
        from experiments.bench.fusion import run
        result = run(users=args.users, particles=args.particles)
    elif args.what == "discovery":
        from experiments.bench.discovery import run
        result = run(users=args.users, seeds=args.seeds, k_seeds=args.k_seeds,
                     speed_users=args.speed_users, sessions_per_seed=args.sessions)
    elif args.what == "evolution":
        from experiments.bench.evolution import run
        result = run(users=args.users, interactions=args.interactions, seeds=args.seeds,
                     windows=args.windows)
    elif args.what == "rankings":
        from experiments.bench.rankings import run
        result = run(seeds=args.seeds)
    elif args.what == "privacy":
        from experiments.bench.privacy import run
        result = run(steps=args.steps, rows=args.rows, users=args.users,
                     settings=args.settings)
    elif args.what == "synthetic":
        from experiments.bench.synthetic import run
        result = run(seeds=args.seeds, users=args.users, utility_users=args.utility_users,
                     episodes=args.episodes, warmup_steps=args.warmup_steps,
                     parts=tuple(p for p in args.parts.split(",") if p))
    elif args.what == "policies":
        from experiments.bench.policies import run
        result = run(episodes=args.episodes)
    elif args.what == "abtest":
        from experiments.bench.abtest import run
        result = run(users=args.users, arm_users=args.arm_users, readouts=args.readouts,
                     sequential_runs=args.runs, cuped_runs=args.runs,
                     rollback_runs=args.runs)
    elif args.what == "sweep":
        from experiments.bench.sweep import run
        result = run(sweep=args.sweep, budget=args.budget, trials=args.trials,
                     repeats=args.repeats)
    elif args.what == "ope":
        from experiments.bench.ope import PARTS, run
        parts = tuple(p for p in args.parts.split(",") if p)
        unknown = set(parts) - set(PARTS)
        if unknown or not parts:
            parser.error(f"--parts={args.parts!r}: choose from {', '.join(PARTS)}")
        result = run(rows=args.rows, seeds=args.seeds, logged=args.logged, bundle=args.bundle,
                     resamples=args.resamples, intervention_bundle=args.intervention_bundle,
                     refit_seeds=args.refit_seeds, parts=parts)
    elif args.what == "serve":
        from experiments.bench.serve import PARTS, run
        parts = tuple(p for p in args.parts.split(",") if p)
        if set(parts) - set(PARTS) or not parts:
            parser.error(f"--parts={args.parts!r}: choose from {', '.join(PARTS)}")
        try:
            ladder = [float(r) for r in args.ladder.split(",") if r]
        except ValueError:
            ladder = [-1.0]
        if not ladder or min(ladder) <= 0:
            parser.error(f"--ladder={args.ladder!r}: give positive request rates, "
                         "comma-separated")
        result = run(run_dir=args.run, bundle=args.bundle, parts=parts, calls=args.calls,
                     cold_runs=args.cold_runs, rate=args.rate, requests=args.requests,
                     ladder=ladder, ladder_seconds=args.ladder_seconds,
                     segment_rows=args.segment_rows)
    elif args.what == "faults":
        from experiments.bench.faults import PARTS, run
        parts = tuple(p for p in args.parts.split(",") if p)
        if set(parts) - set(PARTS) or not parts:
            parser.error(f"--parts={args.parts!r}: choose from {', '.join(PARTS)}")
        result = run(bundle=args.bundle, kills=args.kills, registry_kills=args.registry_kills,
                     seed=args.seed, train_kills=args.train_kills, parts=parts)
    else:
        from experiments.bench.train import profile, run
        if args.profile is not None:
            if args.profile < 1:
                parser.error(f"--profile={args.profile}: profile at least one iteration")
            result = profile(experiment=args.experiment or None, iterations=args.profile,
                             num_envs=args.num_envs, ray_start=args.ray)
        else:
            result = run(experiment=args.experiment or None, budget=args.budget,
                         seeds=args.seeds, eval_every=args.eval_every,
                         eval_episodes=args.eval_episodes, num_envs=args.num_envs,
                         ray_start=args.ray)
    result["machine"] = _machine()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(jsonio.dumps(result, indent=2))
    print(f"\nsaved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
