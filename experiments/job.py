"""The training job, as library code: what ``experiments.train`` runs and ``experiments.sweep``
runs per trial — validate, train with checkpoints, evaluate, report, export — and
``export_checkpoint`` (what ``experiments.export`` runs).

Everything the run writes lives in Hydra's run directory:

* ``run.lock`` — held by the running process (``flock``; freed when it ends, even by
  ``kill -9``): a second run started in the same directory exits 2 naming the holder;
* ``run.json`` — the config hash and the config (checked on resume), and the SHA-256 of
  every file of every kept checkpoint, recorded as it was saved: ``resume=true`` restores
  only a checkpoint that matches (restoring unpickles RLlib's and SB3's files; a pickle
  can run any code), unless ``trust_checkpoint=true``;
* ``metrics.jsonl`` — one row per iteration: ``iteration``, ``env_steps`` and namespaced
  metrics (``charts/``, ``losses/``; wall-clock figures under ``perf/``);
* ``checkpoints/iter_NNNNNN/`` — the newest ``checkpoint.keep`` complete checkpoints;
* ``rllib/`` (RLlib's own log directory), ``wandb/`` and ``wandb_id.txt``;
* ``ray_session.json`` — while the run's own Ray runs: its session directory, through
  which the next attempt finds and stops what a killed one left;
* ``summary.json``, ``report.md``, ``report.html``, ``*.png`` — the final evaluation;
* ``policy/`` — the final PPO policy's bundle (``model.onnx``, ``policy.json``,
  ``manifest.json``; see ``agents.serving.bundle``), what ``agents.serving.load_policy``
  and ``experiments.serve`` load.

Configuration mistakes exit with status 2 and a message naming the key, before Ray starts.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")      # before torch/Ray are imported

import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from contextlib import contextmanager, nullcontext  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Iterator  # noqa: E402

from omegaconf import DictConfig, OmegaConf  # noqa: E402
from tqdm import tqdm  # noqa: E402

from agents.baselines.factory import make_policy  # noqa: E402
from agents.learners.base import (WEIGHTS_FILE, Learner, OnlineBaseline,  # noqa: E402
                                  load_weights, weights_sha256)
from agents.serving.bundle import BundleError  # noqa: E402
from envs.creator import vector_maker  # noqa: E402
from experiments.cli import configure_console  # noqa: E402
from experiments.final_eval import evaluate_policies, headline  # noqa: E402
from experiments.run_files import (Checkpoints, MetricsLog, Tracker,  # noqa: E402
                                  clean_leftovers, forget_ray_session, read_json_object,
                                  record_ray_session, recorded_digests, stop_ray_leftovers,
                                  write_atomic)
from experiments.train_report import write_report  # noqa: E402
from experiments.wiring import (PPO_AGENTS, RESUME_NOTED, Run, config_diff,  # noqa: E402
                                env_kwargs, validate)
from personarl import jsonio  # noqa: E402
from personarl.errors import ConfigError  # noqa: E402
from personarl.locks import exclusive_lock  # noqa: E402

__all__ = ["train", "needs_ray", "ray_session", "build_learner", "export_checkpoint"]

log = logging.getLogger(__name__)


def needs_ray(cfg: DictConfig) -> bool:
    """Whether an RLlib PPO run needs a Ray instance: ``ray.start=always``, a cluster to
    join (``ray.address``) or a part outside this process (remote env runners:
    ``agents.learners.rllib_ppo.runs_in_process`` on the run's PPO config). With every
    part in this process (``agent.num_env_runners=0``, the default) it trains without one
    (``agents.learners.rllib_ppo.build_algorithm``)."""
    if cfg.ray.start == "always" or cfg.ray.address:
        return True
    from agents.learners.rllib_ppo import build_ppo_config, runs_in_process

    env_id, kwargs = env_kwargs(cfg)
    return not runs_in_process(build_ppo_config(
        env_id, kwargs, OmegaConf.to_container(cfg.agent, resolve=True), cfg.seed))


@contextmanager
def ray_session(cfg: DictConfig, run_dir: Path, start: bool = True) -> Iterator[None]:
    """Ray for the run: reuse a running one (tests), join ``ray.address``, or start one —
    recorded in ``run_dir/ray_session.json`` until it is shut down, so that the next
    attempt can stop what a killed one left (``run_files.stop_ray_leftovers``).
    ``start=False``: none is started or joined; RLlib's loggers are quietened all the
    same."""
    import ray

    if not start:
        _quiet_rllib(cfg)
        yield
        return
    if ray.is_initialized():
        yield
        return
    started = not cfg.ray.address
    level = logging.INFO if cfg.get("verbose") else logging.ERROR    # Ray's own logger
    if cfg.ray.address:
        ray.init(address=cfg.ray.address, log_to_driver=False, logging_level=level)
    else:
        context = ray.init(num_cpus=cfg.ray.num_cpus, include_dashboard=False,
                           _temp_dir=cfg.ray.temp_dir, log_to_driver=False,
                           logging_level=level)
        record_ray_session(run_dir, context.address_info["session_dir"])
    _quiet_rllib(cfg)
    try:
        yield
    finally:
        ray.shutdown()
        if started:
            forget_ray_session(run_dir)


def _quiet_rllib(cfg: DictConfig) -> None:
    """The console's log levels (``experiments.cli.configure_console``), set after RLlib is
    imported: it sets its loggers' levels on import."""
    import ray.rllib  # noqa: F401

    configure_console(bool(cfg.get("verbose", False)))


def build_learner(run: Run, run_dir: Path) -> Learner:
    """The learner named by ``run.cfg.agent.name``."""
    cfg, env_id, kwargs = run.cfg, run.env_id, run.env_kwargs
    agent = OmegaConf.to_container(cfg.agent, resolve=True)
    if agent["name"] in PPO_AGENTS:
        import torch

        torch.set_num_threads(1)          # one thread per process: more only contend here
        if agent["name"] == "ppo":
            from agents.learners.rllib_ppo import RLlibPPO, build_ppo_config
            return RLlibPPO(build_ppo_config(env_id, kwargs, agent, cfg.seed),
                            run_dir / "rllib")
        from agents.learners.sb3_ppo import SB3PPO
        return SB3PPO(env_id, kwargs, agent, cfg.seed)
    policy = make_policy(env_id, agent["name"], kwargs, seed=cfg.seed, **agent["params"])
    num_envs = agent["num_envs"]
    return OnlineBaseline(policy, vector_maker(env_id, kwargs), num_envs=num_envs,
                          steps_per_iteration=max(1, 4096 // num_envs), seed=cfg.seed)


def _start_or_resume(run: Run, run_dir: Path, ckpts: Checkpoints,
                     metrics: MetricsLog) -> Path | None:
    """Check the run directory against ``resume``; returns the checkpoint to restore."""
    cfg, chash = run.cfg, run.config_hash
    run_file = run_dir / "run.json"
    if not cfg.resume:
        if metrics.path.exists() or ckpts.latest() is not None:
            raise ConfigError(f"{run_dir} already holds a run; pass resume=true to continue "
                              "it, or choose another hydra.run.dir")
        full = OmegaConf.to_container(cfg, resolve=True)
        write_atomic(run_file, jsonio.dumps(dict(config_hash=chash, config=full), indent=2))
        return None
    if not run_file.exists():
        raise ConfigError(f"resume=true but {run_dir} holds no run (no run.json); start it "
                          "without resume=true")
    old = read_json_object(run_file)
    if old["config_hash"] != chash:
        diff = config_diff(old["config"], cfg)
        raise ConfigError(f"resume=true but the config differs from the run's (hash "
                          f"{old['config_hash']} vs {chash}): " + "; ".join(diff))
    changed = config_diff(old["config"], cfg, keys=RESUME_NOTED)
    if changed:
        log.warning("resume=true changes settings the run last ran with: %s. The run "
                    "continues with the new values (these keys are outside the config hash, "
                    "so a resume may change them, e.g. raise the budget); pass the old ones "
                    "to continue as before", "; ".join(changed))
    latest = ckpts.latest()
    problems = ckpts.verify(latest) if latest is not None else []
    if problems and not cfg.trust_checkpoint:
        shown = "; ".join(problems[:5]) + (f"; … {len(problems) - 5} more"
                                           if len(problems) > 5 else "")
        raise ConfigError(
            f"{latest} is not what this run saved ({shown}). Restoring a checkpoint "
            "unpickles it, and a pickle runs whatever code it names: resume only from "
            "checkpoints this run wrote: move this folder aside to resume from the one "
            "before it, or pass trust_checkpoint=true if you know where this one came from")
    if problems:
        log.warning("trust_checkpoint=true: restoring %s although %s", latest,
                    "; ".join(problems))
    if changed:               # the next resume compares with the settings of this one
        old["config"] = OmegaConf.to_container(cfg, resolve=True)
        write_atomic(run_file, jsonio.dumps(old, indent=2))
    return latest


def train(cfg: DictConfig, run_dir: Path, wandb_group: str | None = None,
          on_iteration: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The whole job; returns the summary. ``wandb_group`` groups the wandb run when
    ``logger.group`` is unset (a multirun passes its sweep's name); ``on_iteration(row)``
    sees every metrics row (a sweep reports them to Ray Tune).

    Raises:
        PersonaRLError: bad configuration; ``InUseError`` when another process runs in
            ``run_dir`` (the run holds ``run_dir/run.lock`` for its lifetime).
    """
    run = validate(cfg)
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    # the directory is this process's until it ends, however it ends (kill -9 frees it)
    lock = exclusive_lock(run_dir / "run.lock", "{path} is in use by a run: {holder}; wait "
                          "for it to end (or kill it, then resume=true), or choose another "
                          "hydra.run.dir")
    try:
        return _train(run, run_dir, wandb_group, on_iteration)
    finally:
        lock.close()


def _train(run: Run, run_dir: Path, wandb_group: str | None,
           on_iteration: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
    cfg, env_id = run.cfg, run.env_id
    clean_leftovers(run_dir)
    stop_ray_leftovers(run_dir)
    ckpts = Checkpoints(run_dir / "checkpoints", cfg.checkpoint.keep, run_dir / "run.json")
    metrics = MetricsLog(run_dir / "metrics.jsonl")
    restore_from = _start_or_resume(run, run_dir, ckpts, metrics)
    start = time.perf_counter()
    with (ray_session(cfg, run_dir, start=needs_ray(cfg)) if cfg.agent.name == "ppo"
          else nullcontext()):
        learner = build_learner(run, run_dir)
        try:
            restored_iteration = None
            if restore_from is not None:
                learner.restore(restore_from)
                restored_iteration = learner.iteration
                dropped = metrics.truncate_after(learner.iteration)
                log.info("resumed from %s (iteration %d, %d env steps); dropped %d metric "
                         "rows written after it", restore_from.name, learner.iteration,
                         learner.env_steps, dropped)
            elif cfg.resume:
                dropped = metrics.truncate_after(0)
                log.warning("resume=true, but no complete checkpoint yet: training starts "
                            "again from iteration 0 (dropped %d metric rows)", dropped)
            tracker = Tracker(run_dir, cfg.logger, OmegaConf.to_container(cfg, resolve=True),
                              name=run_dir.name, resume=cfg.resume, group=wandb_group,
                              history=metrics.rows() if cfg.resume else None)
            _loop(cfg, learner, ckpts, metrics, tracker, env_id, on_iteration)
            if cfg.agent.name in PPO_AGENTS and not (ckpts.latest() / WEIGHTS_FILE).is_file():
                _save(learner, ckpts)     # a checkpoint from before policy_weights.pt existed
            train_seconds = time.perf_counter() - start
            summary = evaluate_policies(run, learner.policy())
        finally:
            learner.close()
    meta = dict(agent=cfg.agent.name, env_id=env_id, env_steps=learner.env_steps,
                iterations=learner.iteration, config_hash=run.config_hash,
                episodes=cfg.eval.episodes)
    generator = run.env_kwargs.get("population", {}).get("generator")
    if generator is not None:                 # the users came from a fitted generator
        meta["population_generator"] = generator
    learned = run.env_kwargs.get("learned_reward")
    if learned is not None:                   # trained against a reward model, not the env's
        meta["learned_reward"] = learned
    if cfg.agent.name in PPO_AGENTS:          # the trained policy's identity
        meta["weights_sha256"] = weights_sha256(load_weights(ckpts.latest() / WEIGHTS_FILE))
    # wall-clock figures only under perf: everything else is the same for the same seed,
    # resumed or not. train_seconds: this attempt, Ray's start-up (where the run starts
    # Ray) and the restore included
    meta["perf"] = dict(train_seconds=train_seconds, restored_from=restored_iteration)
    write_atomic(run_dir / "summary.json", jsonio.dumps(dict(meta=meta, populations=summary),
                                                      indent=2))
    report = write_report(run_dir, summary, meta, metrics.rows())
    bundle = None
    if cfg.agent.name in PPO_AGENTS:
        bundle = export_checkpoint(ckpts.latest(), run_dir / "policy", overwrite=True)
    tracker.summary(headline(summary))
    tracker.finish()
    return dict(meta=meta, populations=summary, report=str(report),
                bundle=str(bundle) if bundle else None)


def _loop(cfg: DictConfig, learner: Learner, ckpts: Checkpoints, metrics: MetricsLog,
          tracker: Tracker, env_id: str,
          on_iteration: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Train to the budget, logging every iteration and checkpointing every N."""
    bar = tqdm(total=cfg.budget, initial=min(learner.env_steps, cfg.budget), unit="step",
               desc=f"{cfg.agent.name} {env_id.split('/')[-1]}", file=sys.stderr,
               disable=None if cfg.progress else True)      # None: on a terminal only
    start, saved = time.perf_counter(), learner.iteration
    while learner.env_steps < cfg.budget:
        before = learner.env_steps
        row = learner.train()
        row = {"iteration": learner.iteration, "env_steps": learner.env_steps, **row,
               "perf/wall_s": time.perf_counter() - start}
        metrics.append(row)
        tracker.log(row)
        if on_iteration is not None:
            on_iteration(row)
        bar.update(min(learner.env_steps, cfg.budget) - min(before, cfg.budget))
        bar.set_postfix(ret=f"{row.get('charts/episodic_return', float('nan')):.3f}")
        if cfg.checkpoint.every and learner.iteration % cfg.checkpoint.every == 0:
            _save(learner, ckpts)
            saved = learner.iteration
    bar.close()
    if saved != learner.iteration:
        _save(learner, ckpts)


def _save(learner: Learner, ckpts: Checkpoints) -> None:
    ckpts.save(learner.save, dict(iteration=learner.iteration, env_steps=learner.env_steps,
                                  time=time.strftime("%Y-%m-%dT%H:%M:%S")))


def export_checkpoint(checkpoint: Path, out: Path | None = None, overwrite: bool = False
                      ) -> Path:
    """Write the bundle of the policy in ``checkpoint``; returns the bundle directory.

    Raises:
        ConfigError: the path is not a complete checkpoint of an ``experiments.train`` run.
        BundleError: the agent has no bundle format, ``out`` exists, or the export failed
            its parity check.
    """
    from agents.learners.export import actor_from_checkpoint, write_bundle

    checkpoint = Path(checkpoint).resolve()
    if not (checkpoint / "meta.json").is_file():
        raise ConfigError(f"checkpoint={str(checkpoint)!r} is not a complete training "
                          "checkpoint (no meta.json); use one of <run dir>/checkpoints/iter_*")
    run_dir = checkpoint.parent.parent
    run_file = run_dir / "run.json"
    if not run_file.is_file():
        raise ConfigError(f"checkpoint={str(checkpoint)!r} is not inside a training run "
                          f"directory (no {run_file})")
    out = Path(out) if out else run_dir / "policy"
    if out.exists() and not overwrite:           # before the slow part
        raise BundleError(f"{out} already exists; choose another out= or pass overwrite=true")
    run = read_json_object(run_file)
    if not (isinstance(run.get("config"), dict) and isinstance(run.get("config_hash"), str)):
        raise ConfigError(f"{run_file} has no config and config_hash; it is not the run.json "
                          "experiments.train writes")
    cfg = OmegaConf.create(run["config"])
    env_id, kwargs = env_kwargs(cfg)
    # a weights file that differs from the one the run recorded is refused (corrupted or
    # swapped); without a record it is exported as it is — read without unpickling either way
    recorded = recorded_digests(run_file, checkpoint.name) or {}
    actor, source = actor_from_checkpoint(
        checkpoint, OmegaConf.to_container(cfg.agent, resolve=True), env_id, kwargs,
        expected_sha256=recorded.get(WEIGHTS_FILE))
    training = _training_record(run_dir, source["iteration"])
    # a bundle acts; the reward a policy was trained against is not part of its env
    served = {k: v for k, v in kwargs.items() if k != "learned_reward"}
    return write_bundle(actor, out, env_id=env_id,
                        env_config=served, source=source, training=training,
                        config_hash=run["config_hash"], overwrite=overwrite, seed=cfg.seed)


def _training_record(run_dir: Path, iteration: int | None) -> dict[str, Any]:
    """The last logged metrics up to the checkpoint's iteration and, when the run's final
    evaluation is of this checkpoint, the trained policy's evaluation per population."""
    rows = [r for r in MetricsLog(run_dir / "metrics.jsonl").rows()
            if iteration is None or r["iteration"] <= iteration]
    record: dict[str, Any] = {}
    if rows:
        record["metrics"] = {k: v for k, v in rows[-1].items()
                             if k in ("iteration", "env_steps") or k.startswith(("charts/",
                                                                                  "losses/"))}
    summary_file = run_dir / "summary.json"
    if summary_file.is_file():
        summary = read_json_object(summary_file)
        if summary.get("meta", {}).get("iterations") == iteration:
            record["evaluation"] = {
                name: dict(pop["policies"][pop["trained"]], best_baseline=pop["best_baseline"])
                for name, pop in summary["populations"].items()}
    return record
