"""One record per env: everything the rest of PersonaRL asks about an env, in one place.

An env is added by writing its module(s) and calling ``register(EnvRecord(...))`` once;
Gymnasium learns the id (``gym.make`` and ``gym.make_vec`` work), the config schemas of
``experiments`` are derived from the record's dataclasses, the baselines come from its
``baselines`` entry point, the final evaluation reads its safety metrics, and the contract
suite (``envs.contract``) runs over every registered id. No other table is keyed by env id.

Imports neither Ray nor torch nor anything from ``agents``: entry points are
``"module:attribute"`` strings, resolved when first needed (as Gymnasium's are).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import gymnasium as gym
import numpy as np

from personarl.errors import ConfigError

__all__ = ["EnvRecord", "register", "unregister", "record", "env_ids", "build_core",
           "check_arguments", "describe", "env_differences", "load_entry_point", "backends"]


@dataclass(frozen=True)
class EnvRecord:
    """What the rest of the code asks about one env.

    Attributes:
        id: the Gymnasium id, ``"<namespace>/<Name>-v<version>"``.
        entry_point, vector_entry_point: ``"module:Class"`` of the single env and of the
            native ``VectorEnv`` (``num_envs`` lanes); both take the same keyword arguments.
        build_core: ``"module:function"``, ``(num_lanes, **kwargs) -> BaseCore``: validates
            the arguments (``ConfigError`` naming the bad one) and builds the batched core.
        config_name: the option name of the env in the ``env/`` and ``reward/`` config
            groups (``env=<config_name>`` picks it).
        env_config: dataclass of the env's own keyword arguments with their defaults,
            ``id`` first (the schema of ``env/<config_name>``); population and reward
            arguments are not in it.
        reward_arg: the keyword argument the reward config goes in through.
        reward_config: dataclass of the reward config (the schema of
            ``reward/<config_name>``).
        observation_layout: ``(kwargs) -> {column name: slice}`` of the flat observation,
            in order, computed from the constructor's arguments without building the env.
        action_modes: name -> the keyword arguments that select it (``{}`` = the default);
            the contract suite runs every mode.
        safety_keys: ``info`` keys read after each episode's last step for
            ``safety_metrics``.
        safety_metrics: ``({key: (episodes,) array}) -> {metric: float | None}``: the env's
            safety figures for the final evaluation (``None`` when there are none).
        baselines: ``"module:function"`` of the baselines entry, ``(core) -> {name:
            builder}``; the builders add to the baselines every env gets
            (``agents.baselines.factory``). ``None``: the env has no baselines yet.
        renamed: ``{old argument name: current name}``; an old name is refused with a
            message that gives the current one.
    """

    id: str
    entry_point: str
    vector_entry_point: str
    build_core: str
    config_name: str
    env_config: type
    reward_arg: str
    reward_config: type
    observation_layout: Callable[[Mapping[str, Any]], dict[str, slice]]
    action_modes: Mapping[str, Mapping[str, Any]] = field(
        default_factory=lambda: {"discrete": {}})
    safety_keys: tuple[str, ...] = ()
    safety_metrics: Callable[[Mapping[str, np.ndarray]], dict[str, Any]] | None = None
    baselines: str | None = None
    renamed: Mapping[str, str] = field(default_factory=dict)

    @property
    def version(self) -> int | None:
        """The ``-v<N>`` of the id (Gymnasium's parse), ``None`` when unversioned."""
        return gym.envs.registration.parse_env_id(self.id)[2]


_RECORDS: dict[str, EnvRecord] = {}


def load_entry_point(target: str) -> Any:
    """The attribute named by ``"module:attribute"`` (``ConfigError`` when it is not
    there)."""
    module, _, name = target.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"entry point {target!r} cannot be loaded: {exc}") from None


_CONFIG_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _problems(rec: EnvRecord) -> list[str]:
    """What makes ``rec`` unusable, one phrase per field."""
    out = []
    try:
        gym.envs.registration.parse_env_id(rec.id)
    except (gym.error.Error, TypeError):
        return [f"id={rec.id!r} is not a Gymnasium id ('[namespace/]Name-v<N>')"]
    for field_name in ("entry_point", "vector_entry_point", "build_core", "baselines"):
        target = getattr(rec, field_name)
        if field_name == "baselines" and target is None:
            continue
        if not isinstance(target, str) or not re.match(r"^[\w.]+:\w+$", target):
            out.append(f"{field_name}={target!r} is not 'module:attribute'")
    if not isinstance(rec.config_name, str) or not _CONFIG_NAME.match(rec.config_name):
        out.append(f"config_name={rec.config_name!r} is not a config option name "
                   "([a-z][a-z0-9_]*)")
    config = rec.env_config
    if not (isinstance(config, type) and dataclasses.is_dataclass(config)) or \
            [f.name for f in dataclasses.fields(config)][:1] != ["id"]:
        out.append(f"env_config={config!r} is not a dataclass whose first field is 'id'")
    elif dataclasses.fields(config)[0].default != rec.id:
        default = dataclasses.fields(config)[0].default
        out.append(f"env_config.id has no default; give it {rec.id!r}"
                   if default is dataclasses.MISSING else
                   f"env_config.id defaults to {default!r}, not the id")
    if not (isinstance(rec.reward_config, type) and dataclasses.is_dataclass(rec.reward_config)):
        out.append(f"reward_config={rec.reward_config!r} is not a dataclass (the class, not "
                   "an instance)")
    if not isinstance(rec.reward_arg, str) or not rec.reward_arg.isidentifier():
        out.append(f"reward_arg={rec.reward_arg!r} is not an argument name")
    if not callable(rec.observation_layout):
        out.append(f"observation_layout={rec.observation_layout!r} is not a function of the "
                   "env's arguments")
    if not isinstance(rec.action_modes, Mapping) or not rec.action_modes or not all(
            isinstance(k, str) and isinstance(v, Mapping) for k, v in rec.action_modes.items()):
        out.append(f"action_modes={rec.action_modes!r} is not a non-empty mapping of mode "
                   "name -> the keyword arguments that select it")
    if isinstance(rec.safety_keys, str) or not isinstance(rec.safety_keys, (tuple, list)) \
            or not all(isinstance(k, str) for k in rec.safety_keys):
        out.append(f"safety_keys={rec.safety_keys!r} is not a tuple of info keys")
    if rec.safety_metrics is not None and not callable(rec.safety_metrics):
        out.append(f"safety_metrics={rec.safety_metrics!r} is not a function")
    if rec.safety_keys and rec.safety_metrics is None:
        out.append(f"safety_keys {list(rec.safety_keys)} without safety_metrics")
    if not isinstance(rec.renamed, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in rec.renamed.items()):
        out.append(f"renamed={rec.renamed!r} is not a mapping of old -> current argument "
                   "names")
    elif dataclasses.is_dataclass(config):
        current = {f.name for f in dataclasses.fields(config)}
        stale = sorted(v for v in rec.renamed.values() if v not in current)
        if stale:
            out.append(f"renamed points at {stale}, which env_config does not have")
    taken = {r.config_name: r.id for r in _RECORDS.values() if r.id != rec.id}
    if rec.config_name in taken:
        out.append(f"config_name {rec.config_name!r} is already {taken[rec.config_name]}'s")
    return out


def register(rec: EnvRecord) -> EnvRecord:
    """Register ``rec`` with PersonaRL and Gymnasium; registering the same record again is a
    no-op, another record under a registered id a ``ConfigError``.

    Raises:
        ConfigError: ``rec`` is not an ``EnvRecord``, a field is unusable (every such field
            is named), or the id is taken by another record or another Gymnasium env.
    """
    if not isinstance(rec, EnvRecord):
        raise ConfigError(f"register() takes an EnvRecord; got {type(rec).__name__}")
    problems = _problems(rec)
    if problems:
        raise ConfigError(f"cannot register {rec.id!r}: " + "; ".join(problems))
    if rec.id in _RECORDS:
        if _RECORDS[rec.id] != rec:
            differ = [f.name for f in dataclasses.fields(rec)
                      if getattr(rec, f.name) != getattr(_RECORDS[rec.id], f.name)]
            raise ConfigError(f"{rec.id} is already registered with another record (it "
                              f"differs in {differ}); unregister({rec.id!r}) first to "
                              "replace it")
        return rec
    known = gym.registry.get(rec.id)
    if known is not None and (known.entry_point, known.vector_entry_point) != \
            (rec.entry_point, rec.vector_entry_point):
        raise ConfigError(f"{rec.id} is already in Gymnasium's registry with entry point "
                          f"{known.entry_point!r}; the record names {rec.entry_point!r}")
    if known is None:
        gym.register(id=rec.id, entry_point=rec.entry_point,
                     vector_entry_point=rec.vector_entry_point)
    _RECORDS[rec.id] = rec
    return rec


def unregister(env_id: str) -> EnvRecord:
    """Remove ``env_id`` from PersonaRL and Gymnasium (an env a test or a notebook added);
    returns its record. ``ConfigError`` when it is not registered."""
    rec = record(env_id)
    del _RECORDS[env_id]
    gym.registry.pop(env_id, None)
    _described.cache_clear()
    return rec


def env_ids() -> tuple[str, ...]:
    """Every registered id, in registration order."""
    return tuple(_RECORDS)


def record(env_id: str) -> EnvRecord:
    """The record of ``env_id``; ``ConfigError`` listing the registered ids otherwise."""
    try:
        return _RECORDS[env_id]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown env id {env_id!r}; valid: {list(_RECORDS)}") from None


def _core_parameters(env_id: str) -> Mapping[str, inspect.Parameter]:
    return inspect.signature(load_entry_point(record(env_id).build_core)).parameters


def backends(env_id: str) -> tuple[str, ...]:
    """The backends (``personarl.backend``) ``env_id`` can be stepped by here: ``("numpy",
    "numba")`` for a core that takes ``backend`` when Numba is installed, ``("numpy",)``
    without it, and ``()`` for a core with no ``backend`` argument (NumPy alone)."""
    from personarl.backend import numba_available
    if "backend" not in _core_parameters(env_id):
        return ()
    return ("numpy", "numba") if numba_available() else ("numpy",)


def check_arguments(env_id: str, kwargs: Mapping[str, Any]) -> None:
    """Refuse keyword arguments ``env_id``'s ``build_core`` does not take: a ``ConfigError``
    naming them and the valid ones, instead of Python's ``TypeError``."""
    params = _core_parameters(env_id)
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    named = [n for n, p in params.items()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    valid = named[1:]                                # the first is num_lanes
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        renamed = record(env_id).renamed
        hint = "".join(f" ({old!r} was renamed {renamed[old]!r})" for old in unknown
                       if old in renamed)
        raise ConfigError(f"{env_id} has no argument(s) {unknown}; valid: {sorted(valid)}"
                          + hint)


def build_core(env_id: str, num_lanes: int, **kwargs: Any) -> Any:
    """A core of ``env_id`` with ``num_lanes`` lanes (validates ``kwargs``: ``ConfigError``
    naming a bad or unknown one). The built-in envs' faces build their cores through it,
    so ``gym.make``, ``create_env`` and ``describe`` refuse alike. Every env also takes
    ``learned_reward`` (``envs.learned_reward``)."""
    learned = kwargs.pop("learned_reward", None)
    check_arguments(env_id, kwargs)
    core = load_entry_point(record(env_id).build_core)(num_lanes, **kwargs)
    if learned is not None:                     # any env can pay a learned reward instead
        from envs.learned_reward import learned_reward_for
        core.learned_reward = learned_reward_for(record(env_id).id, core, learned)
    return core


@functools.lru_cache(maxsize=32)
def _described(env_id: str, kwargs_json: str) -> Any:
    return build_core(env_id, 1, **{**json.loads(kwargs_json), "info_level": "none"})


def describe(env_id: str, kwargs: Mapping[str, Any]) -> Any:
    """A validated one-lane core of ``env_id`` (``info_level="none"``) to read the env's
    configured parts from — its model, reward function, action and observation spaces,
    archetypes — built once per distinct configuration and shared: treat it as read-only
    (it is never stepped). ``ConfigError`` for an unknown id or argument, or a bad value."""
    if not isinstance(kwargs, Mapping):
        raise ConfigError(f"env kwargs={kwargs!r} must be a mapping of {env_id}'s arguments "
                          "({} for its defaults)")
    try:
        kwargs_json = json.dumps(dict(kwargs))    # key order kept: it can matter
    except (TypeError, ValueError):      # injected objects (a world, a sampler): no memo
        return build_core(env_id, 1, **{**kwargs, "info_level": "none"})
    return _described(record(env_id).id, kwargs_json)


def env_differences(env_id: str, config: Mapping[str, Any], other_id: str,
                    other_config: Mapping[str, Any]) -> list[str]:
    """What makes two (env id, config) pairs simulate different things: ``["env id"]``, or
    the core attributes whose configuration differs (``BaseCore.configuration``; the
    backend and the lane count aside) — ``[]`` when they are the same env, however the
    configs are written (``{}`` and ``{"horizon": 20}`` are the same AgentRouting).

    Raises:
        ConfigError: either config does not build.
    """
    from envs.batched import configuration_differences

    if record(env_id).id != record(other_id).id:
        return ["env id"]
    mine = describe(env_id, config).configuration()
    theirs = describe(other_id, other_config).configuration()
    return configuration_differences(mine, theirs)
