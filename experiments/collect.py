"""Log a behaviour policy in the simulator, for offline policy evaluation.

    python -m experiments.collect                                  # AgentRouting, persona router, ε = 0.2
    python -m experiments.collect env.horizon=1 episodes=10000
    python -m experiments.collect env=intervention reward=intervention behaviour=greedy \\
        exploration.epsilon=0.3 episodes=1000
    python -m experiments.collect behaviour=outputs/<date>/<time>/policy \\
        exploration.mode=sample exploration.temperature=2

``behaviour`` is a baseline's name (learning baselines first learn online for
``warmup_steps`` batched steps, then are frozen) or a policy bundle directory. Writes
``logged.parquet`` (``ope.data``: episode, step, observation, action, reward, the behaviour
probability of the logged action and the full distribution, done; metadata: env id and
version, env config, seed, behaviour, exploration, config hash) into the Hydra run
directory, or to ``out`` (an existing file is replaced only with ``overwrite=true``).
``record_truth=true`` also keeps the simulator's per-user truth
at every decision (``context.*`` columns), which privileged evaluation policies such as the
planner need. Every row also says who decided: the user's quasi-identifiers (``age_band``,
``city``, ``group``), ``consent`` and — with ``user_id=hash``, the default — ``user_id``, the
keyed hash (HMAC-SHA256 under ``$PERSONARL_PII_KEY``) of the simulated user's id
``sim:<seed>:<episode>``, which ``experiments.erase`` can find and remove; ``user_id=drop``
writes no ``user_id``. Mistakes exit with status 2 and a message naming the key.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from agents.serving.exploration import Exploration
from experiments.cli import check_command_line, run_app
from experiments.schema import register_configs
from experiments.wiring import env_kwargs, load_policy_spec
from personarl.identifiers import Pseudonymiser
from personarl.seeds import MAX_EPISODES, MAX_SEED
from personarl.errors import ConfigError, check_flag, check_int

__all__ = ["collect_data", "main"]

log = logging.getLogger(__name__)
register_configs()


def collect_data(cfg: DictConfig, out: Path) -> Path:
    """Collect per ``cfg`` and write the Parquet file ``out``."""
    from envs.creator import vector_maker
    from ope.collect import collect
    from ope.files import write_logged
    from synth.population import PopulationConfig

    env_id, kwargs = env_kwargs(cfg)
    episodes = check_int("episodes", cfg.episodes, 1, MAX_EPISODES)
    check_int("seed", cfg.seed, 0, MAX_SEED - 1)
    record_truth = check_flag("record_truth", cfg.record_truth)
    if cfg.user_id not in ("hash", "drop"):
        raise ConfigError(f"user_id={cfg.user_id!r}; valid: ['hash', 'drop']")
    pseudonymise = None
    if cfg.user_id == "hash":            # no key: refused here, naming it, before any work
        try:
            pseudonymise = Pseudonymiser.from_env()
        except ConfigError as exc:
            raise ConfigError(f"{exc}; or pass user_id=drop to log no user ids") from None
    if out.exists() and not check_flag("overwrite", cfg.overwrite):     # before the work
        raise ConfigError(f"out={str(out)!r} already exists; choose another out= or pass "
                          "overwrite=true")
    x = Exploration.of(cfg.exploration)
    policy, name = load_policy_spec(str(cfg.behaviour), env_id, kwargs, cfg.seed,
                                    check_int("warmup_steps", cfg.warmup_steps, 0),
                                    "behaviour")
    if policy.privileged:
        raise ConfigError(f"behaviour={cfg.behaviour!r} reads the latent truth; a behaviour "
                          "policy must act on what the platform observes")
    if name == "random" and x.mode != "sample":
        raise ConfigError(f"behaviour=random with exploration.mode={x.mode}: a uniformly "
                          "random policy has no greedy action (every action ties), so "
                          "greedy/epsilon would log the first action; use "
                          "exploration.mode=sample")
    plain = OmegaConf.to_container(cfg, resolve=True)
    meta = dict(env_id=env_id, env_version=int(env_id.rsplit("-v", 1)[-1]), env_config=kwargs,
                behaviour=name, config_hash=hashlib.sha256(json.dumps(
                    plain, sort_keys=True).encode()).hexdigest()[:16])
    groups = kwargs["population"].get("groups") or PopulationConfig().groups
    data = collect(policy, vector_maker(env_id, kwargs), episodes, seed=cfg.seed,
                   exploration=x, meta=meta, record_truth=record_truth,
                   pseudonymise=pseudonymise, group_names=list(groups))
    try:
        write_logged(data, out)
    except OSError as exc:
        raise ConfigError(f"out={str(out)!r} cannot be written: {exc}") from None
    log.info("logged %d decisions in %d episodes of %s (%s, %s) to %s", data.n,
             data.n_episodes, env_id, name, x.mode, out)
    return out


@hydra.main(version_base="1.3", config_path="../configs", config_name="collect")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    path = run_app("collect", cfg, lambda: collect_data(
        cfg, Path(cfg.out) if cfg.out else run_dir / "logged.parquet"), run_dir)
    print(f"logged data: {path}")


if __name__ == "__main__":
    check_command_line("collect", "collect")
    main()
