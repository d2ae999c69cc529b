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
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import gymnasium as gym
import numpy as np

from personarl.errors import ConfigError

__all__ = ["EnvRecord", "register", "unregister", "record", "env_ids", "build_core",
           "describe", "load_entry_point"]


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
            (``agents.factory``). ``None``: the env has no baselines yet.
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


def _check(rec: EnvRecord) -> None:
    if not dataclasses.is_dataclass(rec.env_config) or \
            [f.name for f in dataclasses.fields(rec.env_config)][:1] != ["id"]:
        raise ConfigError(f"{rec.id}: env_config must be a dataclass whose first field is "
                          f"'id'; got {rec.env_config!r}")
    if dataclasses.fields(rec.env_config)[0].default != rec.id:
        raise ConfigError(f"{rec.id}: env_config.id defaults to "
                          f"{dataclasses.fields(rec.env_config)[0].default!r}, not the id")
    if not dataclasses.is_dataclass(rec.reward_config):
        raise ConfigError(f"{rec.id}: reward_config must be a dataclass; got "
                          f"{rec.reward_config!r}")
    for target in (rec.entry_point, rec.vector_entry_point, rec.build_core,
                   *([rec.baselines] if rec.baselines else [])):
        if ":" not in target:
            raise ConfigError(f"{rec.id}: entry point {target!r} is not 'module:attribute'")
    if not rec.action_modes:
        raise ConfigError(f"{rec.id}: action_modes is empty; give at least one")
    if rec.safety_keys and rec.safety_metrics is None:
        raise ConfigError(f"{rec.id}: safety_keys {list(rec.safety_keys)} without "
                          "safety_metrics")
    taken = {r.config_name: r.id for r in _RECORDS.values() if r.id != rec.id}
    if rec.config_name in taken:
        raise ConfigError(f"{rec.id}: config_name {rec.config_name!r} is already "
                          f"{taken[rec.config_name]}'s")


def register(rec: EnvRecord) -> EnvRecord:
    """Register ``rec`` with PersonaRL and Gymnasium; registering the same record again is a
    no-op, another record under a registered id a ``ConfigError``."""
    if rec.id in _RECORDS:
        if _RECORDS[rec.id] != rec:
            raise ConfigError(f"{rec.id} is already registered with another record")
        return rec
    _check(rec)
    if rec.id not in gym.registry:
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


def build_core(env_id: str, num_lanes: int, **kwargs: Any) -> Any:
    """A core of ``env_id`` with ``num_lanes`` lanes (validates ``kwargs``)."""
    return load_entry_point(record(env_id).build_core)(num_lanes, **kwargs)


@functools.lru_cache(maxsize=32)
def _described(env_id: str, kwargs_json: str) -> Any:
    return build_core(env_id, 1, **{**json.loads(kwargs_json), "info_level": "none"})


def describe(env_id: str, kwargs: Mapping[str, Any]) -> Any:
    """A validated one-lane core of ``env_id`` (``info_level="none"``) to read the env's
    configured parts from — its model, reward function, action and observation spaces,
    archetypes — built once per distinct configuration and shared: treat it as read-only
    (it is never stepped)."""
    try:
        kwargs_json = json.dumps(dict(kwargs))    # key order kept: it can matter
    except (TypeError, ValueError):      # injected objects (a world, a sampler): no memo
        return build_core(env_id, 1, **{**kwargs, "info_level": "none"})
    return _described(record(env_id).id, kwargs_json)
