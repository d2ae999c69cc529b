"""Hydra configs of experiments.train: every group composes and validates; mistakes fail
at compose time (unknown key, wrong type) or in validate() (ranges), naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from hydra.errors import ConfigCompositionException

from experiments.schema import register_configs
from experiments.wiring import config_diff, config_hash, env_kwargs, validate
from personarl.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
register_configs()


def load(*overrides: str):
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["env", "persona", "reward", "agent", "logger", "eval",
                                   "experiment"])
def test_every_option_of_every_group_composes_and_validates(group, tmp_path):
    assert options(group), group
    for option in options(group):
        extra = []
        if group == "reward":                 # a reward family goes with its env
            extra = [f"env={option}"] if option in options("env") else []
        if group == "reward" and option == "learned":     # a model of the default env
            extra = [f"reward.model={_routing_reward_model(tmp_path)}"]
        if group == "persona" and option != "default":   # the default shift names the
            extra = ["~eval.populations.shifted"]        # six default archetypes
        if group == "eval" and option == "custom_example":
            extra = ["persona=custom_example"]           # it names that persona's
        cfg = load(f"{group}={option}", *extra)
        validate(cfg)
        env_id, kwargs = env_kwargs(cfg)
        assert env_id == cfg.env.id and "population" in kwargs


def _routing_reward_model(directory: Path) -> Path:
    """An (untrained) reward model of the default env's observations and agents."""
    import numpy as np

    from envs.registration import describe
    from rewards.reward_model import RewardModel

    env_id, kwargs = env_kwargs(load())
    core = describe(env_id, kwargs)
    d, k = core.obs_size, core.actions.k
    model = RewardModel([(np.zeros((1, d + k, 1)), np.zeros((1, 1)))], np.zeros(d),
                        np.ones(d), k, {"env_id": env_id, "context": "observation",
                                        "env_configuration": core.configuration()})
    return model.save(directory / "reward_model.npz")


def test_the_reward_family_follows_the_env():
    assert set(load("env=intervention").reward) == {"sentiment", "engagement", "compliance",
                                                    "false_penalty"}
    assert set(load("env=adaptation").reward) == {"engagement", "resonance", "explicit"}
    assert set(load().reward) == {"weights", "confidence"}


def test_experiment_overlays_set_only_what_changes():
    cfg = load("experiment=intervention")
    assert cfg.env.id == "personarl/InterventionTiming-v0" and cfg.agent.name == "ppo"
    assert load("experiment=adaptation_continuous").env.action_mode == "continuous"


@pytest.mark.parametrize("override, key", [("agent.foo=1", "agent.foo"),
                                           ("agent.lr=abc", "agent.lr"),
                                           ("env.horizon=1.5", "env.horizon"),
                                           ("persona.bogus=1", "persona.bogus")])
def test_unknown_keys_and_wrong_types_fail_at_compose_time(override, key):
    with pytest.raises(ConfigCompositionException) as err:
        load(override)
    assert key in str(err.value) + str(err.value.__cause__)


@pytest.mark.parametrize("override, key", [
    ("agent.lr=-1", "agent.lr"), ("agent.gamma=1.5", "agent.gamma"),
    ("+agent.foo=1", "agent.foo"), ("+eval.bar=1", "eval.bar"),
    ("agent=sb3_ppo agent.kl_coeff=0.1", "agent.kl_coeff"),
    ("agent.minibatch_size=32768", "agent.minibatch_size"), ("budget=0", "budget"),
    ("env.horizon=0", "horizon"), ("persona.bot_fraction=2", "bot_fraction"),
    ("eval.episodes=1", "eval.episodes"), ("checkpoint.keep=0", "checkpoint.keep"),
    ("agent=persona_router env=intervention", "persona_router"),
    ("eval.baselines=[planner]", "planner"),
    ("+eval.populations.bad={bot_fraction:3}", "eval.populations.bad"),
    ("seed=-1", "seed"),
])
def test_out_of_range_values_fail_validation_naming_the_key(override, key):
    cfg = load(*override.split())
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(cfg)


def test_config_hash_ignores_run_settings_and_names_the_differing_keys():
    a, b = load(), load("budget=5", "logger=none", "progress=false")
    assert config_hash(a) == config_hash(b)
    c = load("agent.lr=1e-3")
    assert config_hash(a) != config_hash(c)
    diff = config_diff(OmegaConf.to_container(a, resolve=True), c)
    assert diff == ["agent.lr: 0.0003 -> 0.001"]


@pytest.mark.slow
@pytest.mark.parametrize("override, key", [("agent.foo=1", "foo"), ("agent.lr=-1", "agent.lr"),
                                           ("env=nope", "env/nope")])
def test_cli_rejects_bad_overrides_before_ray_starts(tmp_path, override, key):
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.train", override, f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=120, cwd=CONFIGS.parent)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert key in out
    assert "Started a local Ray instance" not in out
    assert "Traceback" not in out


#: each schema and the YAML option that is its group's default (what a plain run composes)
_DEFAULT_OPTIONS = [("", None, "TrainSchema"),
                    ("agent=ppo", "agent", "PPOSchema"),
                    ("persona=default", "persona", "PersonaSchema"),
                    ("logger=wandb_offline", "logger", "LoggerSchema"),
                    ("eval=default", "eval", "EvalSchema")]


@pytest.mark.parametrize("override,node,schema", _DEFAULT_OPTIONS,
                         ids=[s for _, _, s in _DEFAULT_OPTIONS])
def test_schema_defaults_are_the_yaml_defaults(override, node, schema):
    """A schema's default is what the default YAML option sets, so code that builds a config
    from the schema alone runs what the command line runs."""
    import experiments.schema as schemas
    from experiments.wiring import flatten

    cfg = load(*([override] if override else []))
    yaml = flatten(OmegaConf.to_container(cfg[node] if node else cfg, resolve=True))
    own = flatten(OmegaConf.to_container(OmegaConf.structured(getattr(schemas, schema))))
    drift = {k: (yaml[k], own[k]) for k in set(yaml) & set(own)
             if own[k] not in (None, "???") and yaml[k] != own[k]}
    assert drift == {}


@pytest.mark.parametrize("env_id", __import__("envs").env_ids())
def test_every_envs_yaml_has_its_records_defaults(env_id):
    """``env/<config_name>.yaml`` and ``reward/<config_name>.yaml`` set what the record's
    ``env_config`` and ``reward_config`` default to (the schemas are mirrored from them)."""
    import dataclasses

    import envs
    from experiments.wiring import flatten

    rec = envs.record(env_id)
    cfg = load(f"env={rec.config_name}")
    for node, config in (("env", rec.env_config), ("reward", rec.reward_config)):
        yaml = flatten(OmegaConf.to_container(cfg[node], resolve=True))
        own = flatten(dataclasses.asdict(config()))
        drift = {k: (yaml.get(k), own.get(k)) for k in set(yaml) | set(own)
                 if yaml.get(k) != own.get(k)}
        assert drift == {}, (node, drift)


@pytest.mark.parametrize("group", ["env", "agent", "reward", "persona", "logger", "eval"])
def test_a_misspelt_option_lists_the_options_and_never_a_schema(group):
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException) as caught:
        load(f"{group}=nosuchoption")
    assert caught.value.options and set(caught.value.options) == set(options(group))
    assert not any("schema" in o for o in caught.value.options)


@pytest.mark.parametrize("app", ["collect", "evaluate", "report", "export", "serve", "registry"])
def test_every_apps_yaml_starts_from_its_schema_with_the_same_defaults(app):
    """An unknown key or a wrong type fails at composition for every app, and the schema's
    defaults are the YAML's."""
    from hydra.errors import ConfigCompositionException

    import experiments.schema as schemas
    from experiments.wiring import flatten

    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose(app)
        with pytest.raises(ConfigCompositionException, match="nosuchkey"):
            compose(app, overrides=["nosuchkey=1"])
    yaml = flatten(OmegaConf.to_container(cfg, resolve=False))
    own = flatten(OmegaConf.to_container(OmegaConf.structured(schemas.APP_SCHEMAS[app])))
    drift = {k: (yaml[k], own[k]) for k in set(yaml) & set(own)
             if own[k] is not None and yaml[k] != own[k]}
    assert drift == {}


def test_configs_compose_into_env_arguments():
    cfg = load("env.horizon=1", "persona.bot_fraction=0.1", "+reward.weights.conversion=0.9")
    env_id, kwargs = env_kwargs(cfg)
    assert env_id == "personarl/AgentRouting-v0" and "id" not in kwargs
    assert kwargs["horizon"] == 1 and kwargs["population"]["bot_fraction"] == 0.1
    assert kwargs["signal_weights"] == {"weights": {"conversion": 0.9}, "confidence": {}}
    # the reward argument is the record's: the other envs take reward_weights
    assert "reward_weights" in env_kwargs(load("env=intervention"))[1]


def test_reward_weights_from_config_change_the_reward():
    import numpy as np

    from envs import AgentRoutingVectorEnv

    returns = []
    for weights in ({}, {"click": 0.0, "scroll_depth": 0.0, "dwell": 0.0}):
        kwargs = env_kwargs(load("env.horizon=1", *[f"+reward.weights.{k}={v}"
                                                    for k, v in weights.items()]))[1]
        env = AgentRoutingVectorEnv(2000, **kwargs)
        env.reset(seed=0)
        returns.append(env.step(np.zeros(2000, np.int64))[1].mean())
    # dropping the implicit engagement signals removes a positive part of every reward
    assert returns[1] < returns[0] - 0.05


def test_custom_archetypes_and_events_from_hydra_config():
    import numpy as np

    from envs import AgentRoutingVectorEnv

    kwargs = env_kwargs(load("persona=custom_example", "eval=default"))[1]
    env = AgentRoutingVectorEnv(256, **kwargs)
    obs, info = env.reset(seed=0)
    sampler = env._core.sampler
    assert sampler.base.names == ("bargain_hunter", "storyteller")
    assert sampler.tables[-1].names[-1] == "night_owl" and sampler.boundaries == [5000]
    assert obs.shape == (256, env.layout.size) and env.layout.num_archetypes == 2
    assert set(np.unique(info["latent_primary"])) <= {0, 1}
