"""Time-to-target: our RLlib PPO pipeline against Stable-Baselines3 PPO, same protocol.

Both learners get the same env, PPO hyperparameters and network — ``experiments.train``'s
composed config with an ``experiment`` overlay: InterventionTiming by default, where
reaching the target takes real training (on AgentRouting a random policy already scores
half the final return, so the target is met after one iteration and start-up is all that
is compared) — the same number of parallel envs (our native vector env; SB3 steps it
through ``agents.learners.sb3_ppo.SB3VecEnv``), one process (``num_env_runners=0``) and one torch
thread. RLlib's adaptive KL penalty is switched off (``kl_coeff=0``) because SB3 has none.
Every ``eval_every`` env steps the clock is paused and the greedy policy is evaluated on
the same held-out users (``eval_episodes``, fixed seed). The clock includes Ray's start-up
and building the learner; it excludes those evaluations and Python's imports (done once
per process, before the first run).

The target is 90% of the final evaluation return of our PPO (median over seeds);
time-to-target is the wall time until a run's evaluation first reaches it. Seeds are
interleaved (ours, SB3, ours, SB3, …) so drifts in machine speed hit both alike; the ratio
is of the medians measured in this run. The profile splits each run into start-up, the
gradient phase (RLlib's learner-group update, SB3's ``PPO.train``; GAE included for RLlib)
and sampling with everything else in an iteration (env stepping, inference, episode
bookkeeping and connectors).
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from agents.baselines.evaluation import run_episodes
from envs.creator import vector_maker

def _config(experiment: str | None) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``(env id, env kwargs, agent config)`` of ``experiments.train``'s composed config."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from experiments.schema import register_configs
    from experiments.wiring import env_kwargs
    register_configs()
    configs = Path(__file__).resolve().parents[2] / "configs"
    overrides = [f"experiment={experiment}"] if experiment else []
    with initialize_config_dir(str(configs), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    env_id, kwargs = env_kwargs(cfg)
    return env_id, kwargs, OmegaConf.to_container(cfg.agent, resolve=True)


def _one_run(kind: str, env_id: str, env_kwargs: dict[str, Any], agent: dict[str, Any],
             seed: int, budget: int, eval_every: int, eval_episodes: int) -> dict[str, Any]:
    import ray
    import torch

    torch.set_num_threads(1)
    make_env = vector_maker(env_id, env_kwargs)
    paused = 0.0
    start = time.perf_counter()
    if kind == "rllib":
        from agents.learners.rllib_ppo import RLlibPPO, build_ppo_config
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir="/tmp/personarl-bench",
                 log_to_driver=False)
        learner = RLlibPPO(build_ppo_config(env_id, env_kwargs, agent, seed),
                           Path(tempfile.mkdtemp(prefix="bench-rllib-")))
    else:
        from agents.learners.sb3_ppo import SB3PPO
        learner = SB3PPO(env_id, env_kwargs, agent, seed)
    startup = time.perf_counter() - start
    curve: list[tuple[float, int, float]] = []
    sample_s = learn_s = iter_s = 0.0
    next_eval = eval_every
    try:
        while learner.env_steps < budget:
            m = learner.train()
            sample_s += m["perf/sample_s"]
            learn_s += m["perf/learn_s"]
            iter_s += m["perf/iteration_s"]
            if learner.env_steps >= next_eval or learner.env_steps >= budget:
                wall = time.perf_counter() - start - paused
                t = time.perf_counter()
                ret = run_episodes(learner.policy(), make_env, eval_episodes, seed=99).returns
                paused += time.perf_counter() - t
                curve.append((wall, learner.env_steps, float(ret.mean())))
                next_eval += eval_every
    finally:
        learner.close()
        if kind == "rllib":
            ray.shutdown()
    total = time.perf_counter() - start - paused
    return dict(kind=kind, seed=seed, startup_s=startup, train_s=total,
                steps_per_s=learner.env_steps / iter_s, curve=curve,
                profile=dict(startup_s=startup, sample_s=sample_s, learn_s=learn_s,
                             other_s=max(total - startup - sample_s - learn_s, 0.0)))


def _time_to(curve: list[tuple[float, int, float]], target: float) -> float:
    """Wall time at the first evaluation reaching ``target``; infinite when none did."""
    for wall, _, ret in curve:
        if ret >= target:
            return wall
    return math.inf


def _finite(x: float) -> float | None:
    """``x``, or ``None`` (JSON ``null``) for a target never reached."""
    return x if math.isfinite(x) else None


def run(experiment: str | None = "intervention", budget: int = 500_000, seeds: int = 3,
        eval_every: int = 25_000, eval_episodes: int = 1024, num_envs: int | None = None
        ) -> dict[str, Any]:
    """Interleaved runs of both learners on ``experiments.train``'s config with the overlay
    ``experiment``; prints and returns the figures. ``num_envs`` overrides the config's
    ``num_envs_per_env_runner`` for both."""
    # Python imports happen once, before any clock starts: RLlib's seeding
    # (torch.use_deterministic_algorithms) imports torch._dynamo on first use, ~2 s that
    # would otherwise land on whichever run came first
    import torch._dynamo  # noqa: F401

    import agents.learners.rllib_ppo  # noqa: F401
    import agents.learners.sb3_ppo  # noqa: F401

    env_id, env_kwargs, agent = _config(experiment)
    agent["kl_coeff"] = 0.0             # plain clipped PPO: SB3 has no KL penalty
    if num_envs is not None:
        agent["num_envs_per_env_runner"] = num_envs
    runs = []
    for seed in range(seeds):
        for kind in ("rllib", "sb3"):
            r = _one_run(kind, env_id, env_kwargs, agent, seed, budget, eval_every,
                         eval_episodes)
            print(f"{kind:>5} seed {seed}: final eval {r['curve'][-1][2]:.3f}, "
                  f"{r['steps_per_s']:,.0f} steps/s, {r['train_s']:.1f} s", flush=True)
            runs.append(r)
    final = statistics.median(r["curve"][-1][2] for r in runs if r["kind"] == "rllib")
    target = 0.9 * final
    if final <= 0:
        print(f"warning: the final PPO score {final:.3f} is not positive, so 90% of it is not "
              "a meaningful target; give a larger --budget")
    out: dict[str, Any] = dict(env=env_id, experiment=experiment, budget=budget, seeds=seeds,
                               eval_every=eval_every,
                               eval_episodes=eval_episodes, agent=agent,
                               final_ppo_score=final, target=target, runs=runs)
    for kind in ("rllib", "sb3"):
        mine = [r for r in runs if r["kind"] == kind]
        times = [_time_to(r["curve"], target) for r in mine]
        out[kind] = dict(
            # a run that never reached the target counts as infinitely slow in the median
            time_to_target_s=_finite(statistics.median(times)),
            times=[_finite(t) for t in times],
            steps_per_s=statistics.median(r["steps_per_s"] for r in mine),
            final_eval=statistics.median(r["curve"][-1][2] for r in mine),
            profile={k: float(np.median([r["profile"][k] for r in mine]))
                     for k in mine[0]["profile"]})
    ours, theirs = out["rllib"]["time_to_target_s"], out["sb3"]["time_to_target_s"]
    out["ratio_rllib_over_sb3"] = (ours / theirs if ours is not None and theirs is not None
                                   else None)
    print(f"\ntarget = 90% of final PPO eval return {final:.3f} = {target:.3f}")
    print(f"{'':>6} {'time-to-target':>15} {'steps/s':>9} {'final':>7}  profile (median s)")
    for kind in ("rllib", "sb3"):
        o = out[kind]
        prof = ", ".join(f"{k[:-2]} {v:.1f}" for k, v in o["profile"].items())
        reached = (f"{o['time_to_target_s']:>14.1f}s" if o["time_to_target_s"] is not None
                   else f"{'not reached':>15}")
        print(f"{kind:>6} {reached} {o['steps_per_s']:>9,.0f} {o['final_eval']:>7.3f}  {prof}")
    if out["ratio_rllib_over_sb3"] is None:
        late = [k for k in ("rllib", "sb3") if out[k]["time_to_target_s"] is None]
        print(f"ratio ours / SB3 (time-to-target): none — {' and '.join(late)} did not reach "
              "the target within the budget (the median run); give a larger --budget")
    else:
        print(f"ratio ours / SB3 (time-to-target) = {out['ratio_rllib_over_sb3']:.2f}")
    return out
