"""Hyperparameter search on Ray Tune: Optuna proposes, ASHA stops weak trials early.

    python -m experiments.sweep sweep=routing_small budget=300000 eval.episodes=2048
    python -m experiments.sweep sweep=routing_small ray.address=<head>:6379   # on a cluster

The search space is ``sweep.space`` (``configs/sweep/<name>.yaml``): keys of the training
config, nested as in the config (``agent: {lr: ...}``), each ``{type: loguniform|uniform|int,
low, high}`` or ``{type: choice, values: [...]}``. Every trial runs ``experiments.job.train`` — the same code as a single
run — with the sampled keys set, in ``trials/<trial>/`` under the sweep's Hydra run
directory (Tune's own storage, ``tune/``, is kept apart), reserving ``sweep.cpus_per_trial`` CPUs and
sampling in its own process (``agent.num_env_runners=0``). A trial reports ``objective``
to Tune after every iteration (the training episodic return, which ASHA compares at its
rungs) and, once trained, the final evaluation return on the training population.
``sweep.max_concurrent`` trials run at once; with one, the sweep is reproducible: Optuna's
sampler is seeded from the ``search`` stream of the run's ``seed``, and every trial trains
with that ``seed`` (so trials are compared on the same training and evaluation users). The
``sweep.top_k`` best trials (by final evaluation, or by the objective ASHA stopped them at)
are then trained again to the full budget with ``sweep.reruns`` fresh seeds each (in
``reruns/``) — the ``trial_seeds`` stream of the run's seed, never the search's own seed —
and the winner is the one with the best mean over those fresh seeds. ``sweep.json`` lists every trial, the re-runs, the search's best and the winner;
``python -m experiments.report <sweep dir>`` compares them.

An invalid search space (an unknown key, an empty choice, ``low > high``, a value outside
the key's valid range) fails before any trial starts, naming the parameter.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from experiments.cli import check_command_line, configure_console, run_app
from experiments.rendering import human
from experiments.run_files import stop_ray_leftovers
from experiments.schema import register_configs
from experiments.wiring import validate
from personarl import jsonio
from personarl.locks import exclusive_lock
from personarl.seeds import stream_seed32
from personarl.errors import ConfigError, PersonaRLError, check_int

__all__ = ["check_space", "sweep", "rerun_seeds", "main", "SPACE_TYPES"]

log = logging.getLogger(__name__)
register_configs()
SPACE_TYPES = ("loguniform", "uniform", "int", "choice")
_ABSENT = object()


def check_space(cfg: DictConfig) -> dict[str, Any]:
    """The search space as plain specs, checked against the training config.

    Raises:
        ConfigError: naming the parameter — unknown key, unknown type, empty choice,
            ``low >= high``, a non-positive ``loguniform`` bound, or a value the training
            config itself rejects (checked by validating the config at each bound/choice).
    """
    if cfg.get("sweep") is None:
        raise ConfigError("no search: pass sweep=<name> (configs/sweep/); e.g. "
                          "sweep=routing_small")
    space = _flatten(OmegaConf.to_container(cfg.sweep.space, resolve=True))
    if not space:
        raise ConfigError("sweep.space is empty: declare at least one parameter")
    for key, spec in space.items():
        where = f"sweep.space.{key!r}"
        if key.split(".")[0] in ("sweep", "ray", "logger", "resume", "trust_checkpoint",
                                 "progress"):
            raise ConfigError(f"{where}: {key.split('.')[0]}.* is not a training parameter")
        if OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
            raise ConfigError(f"{where}: unknown parameter (no such key in the training "
                              "config)")
        if not isinstance(spec, dict) or spec.get("type") not in SPACE_TYPES:
            raise ConfigError(f"{where}: needs type: one of {list(SPACE_TYPES)}; got {spec!r}")
        if spec["type"] == "choice":
            values = spec.get("values")
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{where}: a choice needs a non-empty list of values")
            candidates = values
        else:
            low, high = spec.get("low"), spec.get("high")
            if not all(isinstance(v, (int, float)) for v in (low, high)) or not low < high:
                raise ConfigError(f"{where}: needs numbers low < high; got low={low!r}, "
                                  f"high={high!r}")
            if spec["type"] == "loguniform" and low <= 0:
                raise ConfigError(f"{where}: loguniform needs low > 0; got {low!r}")
            candidates = [low, high]
        for value in candidates:            # the training config's own range checks
            trial = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
            try:
                OmegaConf.update(trial, key, value, merge=False)
                validate(trial)
            except PersonaRLError as exc:
                raise ConfigError(f"{where}: value {value!r} is invalid: {exc}") from None
            except Exception as exc:        # OmegaConf type errors (a string for a float…)
                raise ConfigError(f"{where}: value {value!r} does not fit the key: "
                                  f"{exc}") from None
    return space


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{agent: {lr: {type: …}}}`` -> ``{"agent.lr": {type: …}}`` (a dict with ``type`` is
    a parameter; anything else that is not a dict is a malformed entry, kept for the check)."""
    if not isinstance(tree, dict) or "type" in tree:
        return {prefix[:-1]: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}{key}."))
    return out


def _domains(space: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    from ray import tune

    make = {"loguniform": lambda s: tune.loguniform(s["low"], s["high"]),
            "uniform": lambda s: tune.uniform(s["low"], s["high"]),
            "int": lambda s: tune.randint(int(s["low"]), int(s["high"]) + 1),
            "choice": lambda s: tune.choice(list(s["values"]))}
    return {key: make[spec["type"]](spec) for key, spec in space.items()}


def _with(base: dict[str, Any], values: Mapping[str, Any]) -> DictConfig:
    """The training config ``base`` with the dotted keys in ``values`` set."""
    cfg = OmegaConf.create(base)
    for key, value in values.items():
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


def _trial_dir(root: Path, tune_trial_dir: str | Path) -> Path:
    """Where a trial's run lives: ``<root>/trials/<the name of Tune's trial folder>``."""
    return root / "trials" / Path(tune_trial_dir).name


def _trial(config: dict[str, Any], base: dict[str, Any], group: str, root: str) -> None:
    """One trial: ``experiments.job.train`` with the sampled keys, reporting to Tune, in
    ``<root>/trials/<trial>/``: outside Tune's own storage (``tune/``), which Tune copies
    while trials run (a file a trial renamed meanwhile failed that copy)."""
    from ray import tune

    from experiments.job import train

    cfg = _with(base, config)
    run_dir = _trial_dir(Path(root), tune.get_context().get_trial_dir())
    last: dict[str, float] = {}

    def report(row: dict[str, Any]) -> None:
        ret = row.get("charts/episodic_return")
        if ret is not None and math.isfinite(ret):
            last["objective"] = float(ret)
        tune.report({"objective": last.get("objective", float("-inf")),
                     "env_steps": row["env_steps"]})

    result = train(cfg, run_dir, wandb_group=group, on_iteration=report)
    train_pop = result["populations"]["train"]
    final = train_pop["policies"][train_pop["trained"]]
    tune.report({"objective": final["mean"], "eval_return": final["mean"],
                 "eval_ci_low": final["ci_low"], "eval_ci_high": final["ci_high"],
                 "env_steps": result["meta"]["env_steps"], "done_training": True})


def rerun_seeds(seed: int, reruns: int) -> list[int]:
    """The fresh seeds of the re-runs: the ``trial_seeds`` stream of the sweep's ``seed``
    (32-bit, as a run's seed must fit RLlib's), distinct from it and from each other."""
    seeds: list[int] = []
    i = 0
    while len(seeds) < reruns:
        s = stream_seed32(seed, "trial_seeds", i)
        if s != seed and s not in seeds:
            seeds.append(s)
        i += 1
    return seeds


def _rerun(base: dict[str, Any], top: list[dict[str, Any]], seeds: list[int], root: Path
           ) -> list[dict[str, Any]]:
    """Train each of the ``top`` configurations again with every seed in ``seeds`` (fresh
    seeds: a search's winner is often a lucky seed); each run in ``root/<rank>-seed<seed>``."""
    from experiments.job import train

    out = []
    for rank, trial in enumerate(top):
        for seed in seeds:
            cfg = _with(base, {**trial["config"], "seed": seed})
            run = root / f"{rank}-seed{seed}"
            result = train(cfg, run)
            pop = result["populations"]["train"]
            out.append(dict(rank=rank, seed=seed, config=trial["config"], path=str(run),
                            eval_return=pop["policies"][pop["trained"]]["mean"]))
    return out


def sweep(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Check the space, run the search, write ``sweep.json``; returns its content.

    Raises:
        ConfigError: a bad space or setting (before Ray starts); ``InUseError`` when
            another sweep runs in ``run_dir`` (held through ``run_dir/run.lock``).
    """
    validate(cfg)
    space = check_space(cfg)
    s = cfg.sweep
    for key, low in (("num_samples", 1), ("max_concurrent", 1), ("cpus_per_trial", 1),
                     ("top_k", 0), ("reruns", 1), ("asha.grace_period", 1),
                     ("asha.reduction_factor", 2)):
        check_int(f"sweep.{key}", OmegaConf.select(s, key), low)
    if cfg.agent.name == "ppo" and cfg.agent.num_env_runners != 0:
        raise ConfigError(f"agent.num_env_runners={cfg.agent.num_env_runners}: a trial samples "
                          "in its own process (0); env runners started outside the trial's "
                          "reservation hang on a small machine")
    per_iteration = cfg.agent.get("train_batch_size", 4096)
    max_iterations = max(1, math.ceil(cfg.budget / per_iteration)) + 1   # + the final report
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    # one sweep per directory; then what a killed one left (its Ray processes) can go
    lock = exclusive_lock(run_dir / "run.lock", "{path} is in use by a sweep: {holder}; "
                          "wait for it to end (or kill it), or choose another hydra.run.dir")
    try:
        stop_ray_leftovers(run_dir)
        return _search(cfg, run_dir, space, max_iterations)
    finally:
        lock.close()


def _trial_bar(total: int, enabled: bool) -> Any:
    """A Tune callback drawing a progress bar of finished trials (on a terminal)."""
    from ray import tune
    from tqdm import tqdm

    class TrialBar(tune.Callback):
        def __init__(self) -> None:
            self.bar = tqdm(total=total, unit="trial", desc="sweep trials", leave=False,
                            disable=None if enabled else True)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any,
                              **info: Any) -> None:
            self.bar.update()

        on_trial_error = on_trial_complete

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            self.bar.close()

    return TrialBar()


def _search(cfg: DictConfig, run_dir: Path, space: dict[str, Any], max_iterations: int
            ) -> dict[str, Any]:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from experiments.job import ray_session

    # importing Optuna sets its logger to INFO (it announces every study it creates): the
    # console's levels are set again after it, as ray_session does after RLlib's import
    configure_console(bool(cfg.get("verbose", False)))

    s = cfg.sweep
    base = OmegaConf.to_container(cfg, resolve=True)
    base.pop("sweep")
    base["progress"] = False
    with ray_session(cfg, run_dir):
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(_trial, base=base, group=run_dir.name,
                                                     root=str(run_dir)),
                                {"cpu": s.cpus_per_trial}),
            param_space=_domains(space),
            tune_config=tune.TuneConfig(
                metric="objective", mode="max", num_samples=s.num_samples,
                max_concurrent_trials=s.max_concurrent,
                search_alg=OptunaSearch(seed=stream_seed32(cfg.seed, "search")),
                scheduler=ASHAScheduler(time_attr="training_iteration",
                                        max_t=max_iterations,
                                        grace_period=s.asha.grace_period,
                                        reduction_factor=s.asha.reduction_factor)),
            run_config=tune.RunConfig(storage_path=str(run_dir), name="tune", verbose=0,
                                      callbacks=[_trial_bar(s.num_samples, cfg.progress)]))
        results = tuner.fit()
        cluster = ray.get_runtime_context().gcs_address
        trials = []
        for r in results:
            m = r.metrics or {}
            trials.append(dict(config=r.config, objective=m.get("objective"),
                               eval_return=m.get("eval_return"),
                               iterations=m.get("training_iteration"),
                               finished=bool(m.get("done_training")),
                               path=str(_trial_dir(run_dir, r.path)),
                               error=str(r.error) if r.error else None))
        # the search's ranking: final evaluation for trained trials, the last reported
        # objective for trials ASHA stopped
        ranked = sorted((t for t in trials if t["objective"] is not None),
                        key=lambda t: -(t["eval_return"] if t["finished"] else t["objective"]))
        reruns = _rerun(base, ranked[:s.top_k], rerun_seeds(cfg.seed, s.reruns),
                        run_dir / "reruns")
    finished = [t for t in ranked if t["finished"]]
    best = finished[0] if finished else None
    winner = None
    if reruns:                   # the top-k judged on the same fresh seeds, full budget each
        scores = {}
        for rank, t in enumerate(ranked[:s.top_k]):
            values = [r["eval_return"] for r in reruns if r["rank"] == rank]
            scores[rank] = (sum(values) / len(values), values)
        top = max(scores, key=lambda k: scores[k][0])
        winner = dict(config=ranked[top]["config"], mean_eval_return=scores[top][0],
                      eval_returns=scores[top][1], search_rank=top)
    out = dict(space=space, num_samples=s.num_samples, seed=cfg.seed, cluster=cluster,
               trials=trials, best=best, reruns=reruns, winner=winner)
    (run_dir / "sweep.json").write_text(jsonio.dumps(out, indent=2, default=str))
    return out


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    out = run_app("sweep", cfg, lambda: sweep(cfg, run_dir), run_dir)
    done = sum(t["finished"] for t in out["trials"])
    winner = out["winner"]
    print(f"{len(out['trials'])} trials ({done} trained to the budget, the rest stopped "
          f"early); " + (f"winner after {len(out['reruns'])} re-run(s): "
                         f"{human(winner['config'])} -> {human(winner['mean_eval_return'])}"
                         if winner else "no winner (no trial trained to the budget)"))
    print(f"sweep: {run_dir / 'sweep.json'}")


if __name__ == "__main__":
    check_command_line("train", "sweep")
    main()
