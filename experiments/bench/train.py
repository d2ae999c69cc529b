"""Time-to-target: our RLlib PPO pipeline against Stable-Baselines3 PPO, same protocol.

Both learners get the same env, PPO hyperparameters and network — ``experiments.train``'s
composed config with an ``experiment`` overlay: InterventionTiming by default, where
reaching the target takes real training (on AgentRouting a random policy already scores
half the final return, so the target is met after one iteration and start-up is all that
is compared) — the same number of parallel envs (our native vector env; SB3 steps it
through ``agents.learners.sb3_ppo.SB3VecEnv``), one process (``num_env_runners=0``) and one torch
thread. RLlib's adaptive KL penalty is switched off (``kl_coeff=0``) because SB3 has none.
Every ``eval_every`` env steps the clock is paused and the greedy policy is evaluated on
the same held-out users (``eval_episodes``, fixed seed). The clock includes everything
``experiments.train`` does to start a learner — Ray's start-up where the run needs Ray
(``ray_start="auto"``, as ``experiments.train``: PPO in this process starts none, see
``agents.learners.rllib_ppo.build_algorithm``; ``"always"`` starts one for every RLlib run,
as before 2026-12-01) — and building the learner; it excludes those evaluations and
the process's one-time costs: Python's imports and one untimed iteration of each learner
before the first run (Numba compiles the env's kernels on their first call and torch and
RLlib set themselves up on theirs — ≈ 0.5 s that would otherwise land on whichever
learner ran first, always ours).

The target is 90% of the final evaluation return of our PPO (median over seeds);
time-to-target is the wall time until a run's evaluation first reaches it. Seeds are
interleaved (ours, SB3, ours, SB3, …) so drifts in machine speed hit both alike; the ratio
is of the medians measured in this run, with a 90% bootstrap interval over the seeds
(``scipy.stats.bootstrap``, the seeds resampled in pairs: each seed's two runs ran side by
side). The profile splits each run into start-up, the
gradient phase (RLlib's learner-group update, SB3's ``PPO.train``; GAE included for RLlib)
and sampling with everything else in an iteration (env stepping, inference, episode
bookkeeping and connectors).
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
import warnings
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


def _protocol(experiment: str | None, num_envs: int | None, ray_start: str
              ) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``_config(experiment)`` as both learners get it: plain clipped PPO (SB3 has no KL
    penalty), ``num_envs`` lanes where given.

    Raises:
        ValueError: ``ray_start`` is not one of ``experiments.train``'s ``ray.start``
            values.
    """
    from experiments.wiring import RAY_STARTS

    if ray_start not in RAY_STARTS:
        raise ValueError(f"ray_start={ray_start!r}; valid: {', '.join(RAY_STARTS)}")
    env_id, env_kwargs, agent = _config(experiment)
    agent["kl_coeff"] = 0.0
    if num_envs is not None:
        agent["num_envs_per_env_runner"] = num_envs
    return env_id, env_kwargs, agent


def _build(kind: str, env_id: str, env_kwargs: dict[str, Any], agent: dict[str, Any],
           seed: int, ray_start: str) -> Any:
    """A learner of ``kind`` (``rllib`` or ``sb3``) as ``experiments.train`` builds it,
    Ray started first where ``ray_start`` or the config asks for it (``ray.shutdown()`` is
    the caller's)."""
    import ray

    if kind == "sb3":
        from agents.learners.sb3_ppo import SB3PPO
        return SB3PPO(env_id, env_kwargs, agent, seed)
    from agents.learners.rllib_ppo import RLlibPPO, build_ppo_config, runs_in_process
    config = build_ppo_config(env_id, env_kwargs, agent, seed)
    if ray_start == "always" or not runs_in_process(config):
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir="/tmp/personarl-bench",
                 log_to_driver=False)
    with warnings.catch_warnings():
        # RLlib registers its env wrapper under one id at every build: Gymnasium warns
        # from the second build in a process on
        warnings.filterwarnings("ignore", message=".*Overriding environment rllib-")
        return RLlibPPO(config, Path(tempfile.mkdtemp(prefix="bench-rllib-")))


def _one_run(kind: str, env_id: str, env_kwargs: dict[str, Any], agent: dict[str, Any],
             seed: int, budget: int, eval_every: int, eval_episodes: int,
             ray_start: str = "auto") -> dict[str, Any]:
    import ray
    import torch

    torch.set_num_threads(1)
    make_env = vector_maker(env_id, env_kwargs)
    paused = 0.0
    start = time.perf_counter()
    learner = _build(kind, env_id, env_kwargs, agent, seed, ray_start)
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
        if ray.is_initialized():
            ray.shutdown()
    total = time.perf_counter() - start - paused
    return dict(kind=kind, seed=seed, startup_s=startup, train_s=total,
                steps_per_s=learner.env_steps / iter_s, curve=curve,
                profile=dict(startup_s=startup, sample_s=sample_s, learn_s=learn_s,
                             other_s=max(total - startup - sample_s - learn_s, 0.0)))


#: the profile's parts: name -> the (file suffix, function) whose cumulative cProfile time
#: it is; where a part has several (ours and RLlib's own update), the largest counts
PROFILE_PARTS: dict[str, dict[str, tuple[tuple[str, str], ...]]] = {
    "rllib": {"iteration": (("rllib_ppo.py", "train"),),
              "sampling": (("single_agent_env_runner.py", "sample"),),
              "  env step": (("/env_runner.py", "_try_env_step"),),
              "  policy forward": (("torch_rl_module.py", "_forward_exploration"),),
              "  episode bookkeeping": (("rllib_batched.py", "_advance_lanes"),),
              "learner update": (("/learner.py", "update"), ("rllib_batched.py", "update")),
              "  advantages (GAE)": (("rllib_batched.py", "__call__"),),
              "  minibatch updates": (("torch_learner.py", "_uncompiled_update"),
                                      ("rllib_batched.py", "_minibatch_update")),
              "    forward": (("torch_rl_module.py", "forward_train"),
                            ("default_ppo_torch_rl_module.py", "_forward_train")),
              "    loss": (("/learner.py", "compute_losses"),),
              "    backward": (("_tensor.py", "backward"),),
              "    gradient clipping": (("/learner.py", "postprocess_gradients"),),
              "    optimiser step": (("torch_learner.py", "apply_gradients"),
                                     ("rllib_batched.py", "apply_gradients"))},
    "sb3": {"iteration": (("sb3_ppo.py", "train"),),
            "sampling": (("on_policy_algorithm.py", "collect_rollouts"),),
            "  env step": (("sb3_ppo.py", "step_wait"),),
            "  policy forward": (("policies.py", "forward"),),
            "learner update": (("/ppo/ppo.py", "train"),),
            "    forward": (("policies.py", "evaluate_actions"),),
            "    backward": (("_tensor.py", "backward"),),
            "    gradient clipping": (("clip_grad.py", "clip_grad_norm_"),),
            "    optimiser step": (("optimizer.py", "wrapper"),)},
}


def profile(experiment: str | None = "intervention", iterations: int = 20, seed: int = 0,
            num_envs: int | None = None, ray_start: str = "auto") -> dict[str, Any]:
    """Where one training iteration's time goes, for both learners on the time-to-target
    protocol's config (``num_envs`` and ``ray_start`` as for ``run``): ``iterations``
    iterations after three untimed ones, timed alone (milliseconds per iteration) and
    again under ``cProfile`` (each part's cumulative share of the profiled iteration — the
    profiler slows Python more than torch, so the shares are the figure to compare, not
    its milliseconds).

    Raises:
        ValueError: ``iterations`` below 1 or an unknown ``ray_start``.
    """
    import cProfile
    import pstats

    import ray
    import torch

    if iterations < 1:
        raise ValueError(f"iterations={iterations}; profile at least one iteration")
    env_id, env_kwargs, agent = _protocol(experiment, num_envs, ray_start)
    torch.set_num_threads(1)
    out: dict[str, Any] = dict(env=env_id, experiment=experiment, iterations=iterations,
                               ray_start=ray_start, agent=agent)
    for kind in ("rllib", "sb3"):
        learner = _build(kind, env_id, env_kwargs, agent, seed, ray_start)
        try:
            for _ in range(3):
                learner.train()
            start = time.perf_counter()
            for _ in range(iterations):
                learner.train()
            wall_ms = (time.perf_counter() - start) / iterations * 1e3
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(iterations):
                learner.train()
            prof.disable()
        finally:
            learner.close()
            if ray.is_initialized():
                ray.shutdown()
        stats = pstats.Stats(prof).stats                 # (file, line, name) -> timings
        parts = {name: max(sum(cum for (file, _, fn), (_, _, _, cum, _) in stats.items()
                               if fn == func and file.endswith(suffix))
                           for suffix, func in where)
                 for name, where in PROFILE_PARTS[kind].items()}
        total = parts["iteration"]
        out[kind] = dict(ms_per_iteration=wall_ms,
                         shares={k: v / total for k, v in parts.items()})
    print(f"one iteration ({out['env']}, {iterations} iterations): share of the profiled time")
    for kind in ("rllib", "sb3"):
        print(f"  {kind}: {out[kind]['ms_per_iteration']:.1f} ms per iteration (no profiler)")
        for name, share in out[kind]["shares"].items():
            print(f"    {name:<24} {share:6.1%}")
    return out


def _time_to(curve: list[tuple[float, int, float]], target: float) -> float:
    """Wall time at the first evaluation reaching ``target``; infinite when none did."""
    for wall, _, ret in curve:
        if ret >= target:
            return wall
    return math.inf


def _finite(x: float) -> float | None:
    """``x``, or ``None`` (JSON ``null``) for a target never reached."""
    return x if math.isfinite(x) else None


def ratio_ci(ours: list[float], theirs: list[float], confidence: float = 0.9,
             seed: int = 0) -> tuple[float, float, float]:
    """``(median(ours) / median(theirs), low, high)``: the ratio of the medians and its
    percentile bootstrap interval over the seeds, resampled in pairs (``ours[i]`` and
    ``theirs[i]`` ran side by side). ``inf`` where a run never reached the target."""
    from scipy.stats import bootstrap

    a, b = np.asarray(ours, dtype=float), np.asarray(theirs, dtype=float)
    ratio = float(np.median(a) / np.median(b))
    if a.size < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return ratio, math.nan, math.nan
    res = bootstrap((a, b), lambda x, y, axis: np.median(x, axis=axis) / np.median(y, axis=axis),
                    paired=True, vectorized=True, confidence_level=confidence,
                    n_resamples=10_000, method="percentile", rng=np.random.default_rng(seed))
    return ratio, float(res.confidence_interval.low), float(res.confidence_interval.high)


def run(experiment: str | None = "intervention", budget: int = 500_000, seeds: int = 3,
        eval_every: int = 25_000, eval_episodes: int = 1024, num_envs: int | None = None,
        ray_start: str = "auto") -> dict[str, Any]:
    """Interleaved runs of both learners on ``experiments.train``'s config with the overlay
    ``experiment``; prints and returns the figures. ``num_envs`` overrides the config's
    ``num_envs_per_env_runner`` for both; ``ray_start`` is ``experiments.train``'s
    ``ray.start`` (``auto`` or ``always``)."""
    # Python imports happen once, before any clock starts: RLlib's seeding
    # (torch.use_deterministic_algorithms) imports torch._dynamo on first use, ~2 s that
    # would otherwise land on whichever run came first
    import torch._dynamo  # noqa: F401

    import agents.learners.rllib_ppo  # noqa: F401
    import agents.learners.sb3_ppo  # noqa: F401

    env_id, env_kwargs, agent = _protocol(experiment, num_envs, ray_start)
    for kind in ("rllib", "sb3"):                  # one-time costs: untimed (module doc)
        _one_run(kind, env_id, env_kwargs, agent, 0, 1, 1, 64, ray_start)
    runs = []
    for seed in range(seeds):
        for kind in ("rllib", "sb3"):
            r = _one_run(kind, env_id, env_kwargs, agent, seed, budget, eval_every,
                         eval_episodes, ray_start)
            print(f"{kind:>5} seed {seed}: final eval {r['curve'][-1][2]:.3f}, "
                  f"{r['steps_per_s']:,.0f} steps/s, {r['train_s']:.1f} s", flush=True)
            runs.append(r)
    final = statistics.median(r["curve"][-1][2] for r in runs if r["kind"] == "rllib")
    target = 0.9 * final
    if final <= 0:
        print(f"warning: the final PPO score {final:.3f} is not positive, so 90% of it is not "
              "a meaningful target; give a larger --budget")
    out: dict[str, Any] = dict(env=env_id, experiment=experiment, budget=budget, seeds=seeds,
                               eval_every=eval_every, ray_start=ray_start,
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
    _, low, high = ratio_ci([_time_to(r["curve"], target) for r in runs if r["kind"] == "rllib"],
                            [_time_to(r["curve"], target) for r in runs if r["kind"] == "sb3"])
    out["ratio_ci90"] = [_finite(low), _finite(high)]
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
        ci = (f", 90% bootstrap CI [{low:.2f}, {high:.2f}]" if math.isfinite(high) else
              "; no interval: " + ("one seed" if seeds < 2 else "a run did not reach the "
                                   "target (its time is infinite), give a larger --budget"))
        print(f"ratio ours / SB3 (time-to-target) = {out['ratio_rllib_over_sb3']:.2f}{ci}")
    return out
