"""From a composed Hydra config to one validated run, its env arguments and a config hash.

Hydra's schemas (``experiments.schema``) already rejected unknown keys and wrong types;
``validate`` checks every range before Ray starts and names the offending key
(``agent.lr=-1 …``), so a bad run fails in a second, not after a cluster came up. It
returns a ``Run``: the config with everything derived from it once — the env id, its record,
the training env's arguments, every evaluation population's arguments, the baselines the
final evaluation runs and the config hash — which the rest of the run reads instead of
deriving them again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from agents.baselines.factory import baselines_for
from experiments.schema import LearnedRewardSchema
from envs.registration import EnvRecord, describe, record
from synth.population import GENERATOR_REPLACES
from personarl.seeds import MAX_EPISODES, MAX_SEED, name_key, stream_seed
from personarl.errors import ConfigError, check_int, check_range, check_widths

__all__ = ["Run", "env_kwargs", "validate", "load_policy_spec", "config_hash", "config_diff",
           "PPO_AGENTS", "HASH_EXCLUDED", "RESUME_NOTED", "RAY_STARTS", "flatten"]

#: agents trained by a PPO implementation (the rest are baselines learning online)
PPO_AGENTS = ("ppo", "sb3_ppo")
#: agent.sampler (agents.learners.rllib_ppo.build_ppo_config)
SAMPLERS = ("batched", "rllib")
#: top-level keys that do not change what is trained (left out of the config hash, so a
#: resumed run may change them: e.g. raise the budget, turn wandb off, move to a cluster)
HASH_EXCLUDED = ("resume", "trust_checkpoint", "progress", "budget", "checkpoint", "ray",
                 "logger", "eval", "sweep")
#: ray.start: when a training run starts Ray (experiments.job.needs_ray)
RAY_STARTS = ("auto", "always")
#: the keys of HASH_EXCLUDED that change what a run produces (how long it trains, what its
#: report evaluates, which checkpoints it keeps): a resume that changes one says so
RESUME_NOTED = ("budget", "eval", "checkpoint")


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def env_kwargs(cfg: DictConfig, persona_overrides: Mapping[str, Any] | None = None
               ) -> tuple[str, dict[str, Any]]:
    """``(env id, constructor kwargs)`` from ``cfg.env``, ``cfg.persona`` and ``cfg.reward``.

    ``persona_overrides`` replaces top-level persona keys (an evaluation population).
    """
    env = _plain(cfg.env)
    env_id = env.pop("id")
    rec = _prefixed("env.id", record, env_id)
    env["population"] = {**_plain(cfg.persona), **dict(persona_overrides or {})}
    if env["population"].get("generator") is not None:
        # absolute: env runners and exported bundles need not share the launch directory
        env["population"]["generator"] = str(Path(env["population"]["generator"]).resolve())
    reward = _plain(cfg.reward)
    if reward.get("kind") == LearnedRewardSchema.kind:
        # a reward model pays instead of the env's reward (envs.learned_reward); evaluation
        # populations leave it out (validate): they are scored on the true reward
        del reward["kind"]
        model = reward["model"]
        reward["model"] = str(Path(model).resolve()) if model and str(model).strip() else None
        env["learned_reward"] = reward
    else:
        env[rec.reward_arg] = reward
    return env_id, env


def _prefixed(prefix: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except ConfigError as exc:
        raise ConfigError(f"{prefix}: {exc}") from None


def _check_known_keys(node: Any, prefix: str) -> None:
    """Keys a ``+key=value`` override slipped past the schema (Hydra lets ``+`` add them)."""
    schema = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(schema):
        return
    fields = {f.name for f in dataclasses.fields(schema)}
    for key in node:
        if key not in fields:
            raise ConfigError(f"unknown key {prefix}{key}; valid: {sorted(fields)}")
        child = node._get_node(key)
        if OmegaConf.is_dict(child):
            _check_known_keys(child, f"{prefix}{key}.")


@dataclasses.dataclass(frozen=True)
class Run:
    """One validated run: its config and what is derived from it (``validate`` builds it).

    Attributes:
        cfg: the composed config, as given.
        env_id: ``cfg.env.id``; ``record`` its ``EnvRecord``.
        env_kwargs: the training env's constructor arguments (``env_kwargs(cfg)``).
        populations: evaluation population name -> ``(persona overrides, env kwargs)``, in
            ``cfg.eval.populations`` order.
        eval_baselines: the baselines the final evaluation runs besides the trained agent.
        config_hash: ``config_hash(cfg)``.
    """

    cfg: DictConfig
    env_id: str
    record: EnvRecord
    env_kwargs: dict[str, Any]
    populations: dict[str, tuple[dict[str, Any], dict[str, Any]]]
    eval_baselines: list[str]
    config_hash: str


def validate(cfg: DictConfig) -> Run:
    """Every range check that can run without Ray; returns the ``Run``.

    Raises:
        ConfigError: naming the key and what is valid.
    """
    _check_known_keys(cfg, "")
    check_int("seed", cfg.seed, 0, MAX_SEED - 1)     # every random stream derives from it
    check_int("budget", cfg.budget, 1)
    check_int("checkpoint.every", cfg.checkpoint.every, 0)
    check_int("checkpoint.keep", cfg.checkpoint.keep, 1)
    check_int("ray.num_cpus", cfg.ray.num_cpus, 1)
    if cfg.ray.start not in RAY_STARTS:
        raise ConfigError(f"ray.start={cfg.ray.start!r}; valid: 'auto' (only when the run "
                          "needs Ray), 'always'")
    if cfg.logger.name not in ("wandb", "none"):
        raise ConfigError(f"logger.name={cfg.logger.name!r}; valid: 'wandb', 'none'")
    if cfg.logger.mode not in ("offline", "online", "disabled"):
        raise ConfigError(f"logger.mode={cfg.logger.mode!r}; valid: offline, online, disabled")
    env_id, kwargs = env_kwargs(cfg)
    _prefixed("env/persona/reward", describe, env_id, kwargs)
    populations = {}
    for name, overrides in cfg.eval.populations.items():
        overrides = _plain(overrides)
        replaced = sorted(set(overrides) & set(GENERATOR_REPLACES))
        if cfg.persona.get("generator") is not None and replaced:
            raise ConfigError(
                f"eval.populations.{name} overrides {replaced}, which persona.generator "
                "replaces (its users come from the generator): it would evaluate the "
                f"training users again. Drop it: '~eval.populations.{name}'")
        eval_kwargs = env_kwargs(cfg, overrides)[1]
        eval_kwargs.pop("learned_reward", None)     # scored on the env's own reward
        populations[name] = (overrides, eval_kwargs)
        # its overrides are merged into persona: archetypes it names must be the persona's
        # (eval=custom_example goes with persona=custom_example)
        _prefixed(f"eval.populations.{name} (merged into persona)", describe, env_id,
                  populations[name][1])
    if not populations:
        raise ConfigError("eval.populations is empty; give at least one (e.g. train: {})")
    check_int("eval.episodes", cfg.eval.episodes, 2, MAX_EPISODES)
    check_int("eval.baseline_warmup_steps", cfg.eval.baseline_warmup_steps, 0)
    check_int("eval.baseline_warmup_envs", cfg.eval.baseline_warmup_envs, 1)
    available = baselines_for(env_id, kwargs)
    for name in cfg.eval.baselines or []:
        if name not in available:
            raise ConfigError(f"eval.baselines: {name!r} does not apply to {env_id}; "
                              f"valid: {available}")
    agent = cfg.agent
    if agent.name in PPO_AGENTS:
        validate_ppo(agent)
    elif agent.name not in available:
        raise ConfigError(f"agent={agent.name!r} does not apply to {env_id}; valid: "
                          f"{list(PPO_AGENTS) + available}")
    else:
        check_int("agent.num_envs", agent.num_envs, 1)
    names = list(cfg.eval.baselines) if cfg.eval.baselines is not None else available
    return Run(cfg=cfg, env_id=env_id, record=record(env_id), env_kwargs=kwargs,
               populations=populations,
               eval_baselines=[n for n in names if n != agent.name],   # the agent is itself
               config_hash=config_hash(cfg))


def validate_ppo(agent: DictConfig) -> None:
    """Ranges of the PPO hyperparameters (RLlib validates their combination later)."""
    positive = dict(low=0, high=float("inf"), low_open=True, high_open=True)
    check_range("agent.lr", agent.lr, **positive)
    check_range("agent.gamma", agent.gamma, 0, 1)
    check_range("agent.gae_lambda", agent.gae_lambda, 0, 1)
    check_range("agent.clip_param", agent.clip_param, **positive)
    check_range("agent.entropy_coeff", agent.entropy_coeff, 0, float("inf"), high_open=True)
    check_range("agent.vf_loss_coeff", agent.vf_loss_coeff, 0, float("inf"), high_open=True)
    check_range("agent.grad_clip", agent.grad_clip, **positive)
    check_range("agent.kl_coeff", agent.kl_coeff, 0, float("inf"), high_open=True)
    if agent.name == "sb3_ppo" and agent.kl_coeff > 0:
        raise ConfigError(f"agent.kl_coeff={agent.kl_coeff}: SB3's PPO has no KL penalty; "
                          "set agent.kl_coeff=0")
    check_int("agent.num_epochs", agent.num_epochs, 1)
    batch = check_int("agent.train_batch_size", agent.train_batch_size, 2)
    mini = check_int("agent.minibatch_size", agent.minibatch_size, 1)
    envs = check_int("agent.num_envs_per_env_runner", agent.num_envs_per_env_runner, 1)
    check_int("agent.num_env_runners", agent.num_env_runners, 0)
    if mini > batch:
        raise ConfigError(f"agent.minibatch_size={mini} must be <= agent.train_batch_size="
                          f"{batch}")
    if batch < envs:
        raise ConfigError(f"agent.train_batch_size={batch} must be >= "
                          f"agent.num_envs_per_env_runner={envs} (one step of every env)")
    check_widths("agent.hidden", list(agent.hidden))
    if agent.sampler not in SAMPLERS:
        raise ConfigError(f"agent.sampler={agent.sampler!r}; valid: {list(SAMPLERS)}")
    if agent.activation not in ("tanh", "relu", "swish", "linear", "elu"):
        raise ConfigError(f"agent.activation={agent.activation!r}; valid: tanh, relu, swish, "
                          "linear, elu")


def _hashed_part(tree: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level keys of a config (as plain containers) that the config hash covers."""
    return {k: v for k, v in tree.items() if k not in HASH_EXCLUDED}


def _hashed(cfg: DictConfig) -> dict[str, Any]:
    return _hashed_part(_plain(cfg))


def config_hash(cfg: DictConfig) -> str:
    """SHA-256 (first 16 hex digits) of everything that changes what is trained."""
    text = json.dumps(_hashed(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict of dotted keys."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def config_diff(old: Mapping[str, Any], cfg: DictConfig,
                keys: tuple[str, ...] | None = None) -> list[str]:
    """``key: old -> new`` for every hashed key (or, given ``keys``, every key under those
    top-level keys) that differs between a stored config and ``cfg``."""
    def kept(tree: Mapping[str, Any]) -> dict[str, Any]:
        return (_hashed_part(tree) if keys is None
                else {k: v for k, v in tree.items() if k in keys})

    a, b = flatten(kept(old)), flatten(kept(_plain(cfg)))
    return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
            for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")]


def load_policy_spec(spec: str, env_id: str, kwargs: dict[str, Any], seed: int,
                     warmup_steps: int, label: str) -> tuple[Any, str]:
    """A baseline by name (warmed up if it learns) or a bundle by path, for offline
    evaluation (``collect``, ``evaluate``); with its name. ``seed`` is the run's seed (the
    policy's own and the warm-up users' streams derive from it).

    Raises:
        ConfigError: an env configured with continuous actions or a continuous bundle
            (offline evaluation needs action probabilities), an unknown baseline (listing
            the valid ones) or a bundle for another env.
    """
    import gymnasium as gym

    from agents.baselines.evaluation import warm_up
    from agents.baselines.factory import baselines_for, make_policy
    from envs.creator import vector_maker

    if not isinstance(describe(env_id, kwargs).actions.space(), gym.spaces.Discrete):
        modes = ", ".join(f"{m} ({', '.join(f'{k}={x}' for k, x in v.items()) or 'default'})"
                          for m, v in record(env_id).action_modes.items())
        raise ConfigError(f"{env_id} is configured with continuous actions; offline "
                          "evaluation (collect, evaluate) needs action probabilities, so "
                          f"discrete actions (its action modes: {modes})")

    if Path(spec, "policy.json").is_file():
        from agents.serving.loader import load_policy

        policy = load_policy(spec, seed=stream_seed(seed, "policy", name_key(spec)))
        if policy.env_id != env_id:
            raise ConfigError(f"{label}={spec!r} is a bundle for {policy.env_id}, but this "
                              f"run's env is {env_id}")
        if not policy.discrete:
            raise ConfigError(f"{label}={spec!r} is a continuous-action policy "
                              f"({policy.spec['distribution']}); offline evaluation needs "
                              "action probabilities (a categorical policy)")
        return policy, f"bundle:{Path(spec).resolve()}"
    if spec not in baselines_for(env_id, kwargs):
        raise ConfigError(f"{label}={spec!r} is neither a bundle directory nor a baseline of "
                          f"{env_id}; baselines: {baselines_for(env_id, kwargs)}")
    policy = make_policy(env_id, spec, kwargs, seed=seed)
    warm_up(policy, vector_maker(env_id, kwargs), warmup_steps, seed=seed)
    return policy, spec
