"""The Ray side of the env creators: register every PersonaRL id with ``ray.tune``.

Kept out of ``envs/`` so the simulator never imports Ray. Call ``register_envs()`` in the
driver before building an Algorithm; RLlib's env runners resolve the ids through Ray's
registry (``env_config`` gets ``num_envs`` in ``vector_entry_point`` mode and the creator
returns our native VectorEnv).
"""

from __future__ import annotations

from ray.tune.registry import register_env

from envs import env_ids
from envs.creator import creator_for

__all__ = ["register_envs"]


def register_envs() -> tuple[str, ...]:
    """Register every registered env id (``envs.env_ids()``, including envs registered
    after import) with Ray Tune's registry; returns the ids."""
    ids = env_ids()
    for env_id in ids:
        register_env(env_id, creator_for(env_id))
    return ids
