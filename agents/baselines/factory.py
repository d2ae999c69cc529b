"""Every baseline of every env by name: what training, evaluation and OPE build.

Every env gets ``random`` and the privileged myopic ``oracle``; discrete envs also the
contextual bandits ``linucb`` and ``thompson``; the rest comes from the env's baselines
entry (``EnvRecord.baselines``, e.g. ``agents.baselines.policies:routing_baselines``), a function
of the env's core. ``baselines_for(env_id, env_kwargs)`` lists the names that apply to an
env and ``make_policy(env_id, name, env_kwargs, seed=..., **params)`` builds one. The env's
own validated parts (its model, its reward function, its observation layout) are read from
its described core (``envs.registration.describe``: built once per configuration), so a
privileged planner plans with exactly the dynamics and reward the env was configured with.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

import gymnasium as gym

from agents.baselines.bandits import LinearThompson, LinUCB
from agents.baselines.policies import MyopicOracle, Policy, RandomPolicy, RandomVector
from envs.registration import describe, env_ids, load_entry_point, record
from personarl.errors import ConfigError
from personarl.seeds import name_key, stream_seed

__all__ = ["baselines_for", "make_policy"]


def _table(env_id: str, core: Any) -> dict[str, Callable[..., Policy]]:
    entry = record(env_id).baselines
    if entry is None:
        known = [i for i in env_ids() if record(i).baselines is not None]
        raise ConfigError(f"{env_id} has no baselines entry (EnvRecord.baselines); envs "
                          f"with baselines: {known}")
    space = core.actions.space()
    if not isinstance(space, gym.spaces.Discrete):
        dim = space.shape[0]
        table: dict[str, Callable[..., Policy]] = {
            "random": lambda seed=0, **kw: RandomVector(dim, seed=seed, **kw),
            "oracle": lambda seed=0, **kw: MyopicOracle(dim, **kw)}
    else:
        k, d = space.n, core.obs.shape[1]
        table = {
            "random": lambda seed=0, **kw: RandomPolicy(k, seed=seed, **kw),
            "linucb": lambda seed=0, **kw: LinUCB(k, d, seed=seed, **kw),
            "thompson": lambda seed=0, **kw: LinearThompson(k, d, seed=seed, **kw),
            "oracle": lambda seed=0, **kw: MyopicOracle(k, **kw)}
    table.update(load_entry_point(entry)(core))
    return table


def baselines_for(env_id: str, env_kwargs: Mapping[str, Any]) -> list[str]:
    """Names of the baselines that apply to ``env_id`` configured with ``env_kwargs``."""
    return list(_table(env_id, describe(env_id, env_kwargs)))


def make_policy(env_id: str, name: str, env_kwargs: Mapping[str, Any], seed: int = 0,
                **params: Any) -> Policy:
    """Build baseline ``name`` for ``env_id``; ``params`` go to its constructor. ``seed`` is
    the run's seed: the policy's own draws (exploration, tie-breaking) are its ``policy``
    stream keyed by ``name``, so two policies of one run never share draws.

    Raises:
        ConfigError: ``name`` does not apply to this env (the message lists those that
            do), or a parameter is unknown or out of range.
    """
    table = _table(env_id, describe(env_id, env_kwargs))
    if name not in table:
        raise ConfigError(f"baseline {name!r} does not apply to {env_id}; valid: "
                          f"{sorted(table)}")
    try:
        return table[name](seed=stream_seed(seed, "policy", name_key(name)), **params)
    except TypeError:
        # the table entries bind the env's own arguments (layout, sizes); name the rest
        bound = {"self", "seed", "layout", "num_actions", "obs_dim", "dim", "model",
                 "reward_fn", "slots_per_day", "horizon"}
        valid = sorted(set(inspect.signature(type(table[name]())).parameters) - bound)
        unknown = sorted(set(params) - set(valid)) or sorted(params)
        raise ConfigError(f"baseline {name!r} got unknown parameter(s) {unknown}; "
                          f"valid: {valid}") from None
