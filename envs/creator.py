"""Env creator for RLlib (and anything else that builds envs from a config dict).

No Ray import here: RLlib's side calls ``ray.tune.register_env(env_id, creator_for(env_id))``.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import gymnasium as gym

import envs
from envs.registration import load_entry_point

__all__ = ["create_env", "creator_for", "vector_maker", "info_keys"]


def create_env(env_id: str, config: Mapping[str, Any] | None = None) -> gym.Env | Any:
    """Build ``env_id`` from ``config``.

    Returns the native VectorEnv when ``config`` has ``num_envs`` (RLlib's
    ``gym_env_vectorize_mode="vector_entry_point"`` passes it), else the single env.
    """
    rec = envs.record(env_id)                     # ConfigError listing the registered ids
    kwargs = dict(config or {})
    if "num_envs" in kwargs:
        return load_entry_point(rec.vector_entry_point)(num_envs=kwargs.pop("num_envs"),
                                                        **kwargs)
    return load_entry_point(rec.entry_point)(**kwargs)


def creator_for(env_id: str) -> Callable[[Mapping[str, Any]], Any]:
    """A one-argument creator bound to ``env_id`` (the shape ``register_env`` wants)."""

    def creator(config: Mapping[str, Any]) -> Any:
        return create_env(env_id, config)

    creator.__name__ = f"create_{env_id.split('/')[-1].replace('-', '_')}"
    return creator


def vector_maker(env_id: str, config: Mapping[str, Any] | None = None,
                 info_level: str = "full") -> Callable[[int], Any]:
    """``n -> VectorEnv`` of ``env_id`` with ``n`` lanes (what evaluation and online
    learning take as ``make_env``)."""
    base = dict(config or {})
    return lambda n: create_env(env_id, {**base, "num_envs": n, "info_level": info_level})


def info_keys(env_id: str, config: Mapping[str, Any] | None = None) -> frozenset[str]:
    """The keys of ``env_id``'s ``info`` after a reset (what an evaluation may read, e.g.
    whether its users have a demographic ``group``), from a one-lane env."""
    env = create_env(env_id, {**dict(config or {}), "num_envs": 1, "info_level": "full"})
    try:
        return frozenset(k for k in env.reset(seed=0)[1] if not k.startswith("_"))
    finally:
        env.close()
