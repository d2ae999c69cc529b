"""Every baseline of every env by name: what training, evaluation and (later) OPE build.

``baselines_for(env_id, env_kwargs)`` lists the names that apply to an env (the persona
router only routes; planners need a model of the env; continuous actions rule out the
discrete baselines) and ``make_policy(env_id, name, env_kwargs, seed=..., **params)``
builds one. The env's own validated parts (its model, its reward function, its observation
layout) are taken from a freshly built core, so a privileged planner plans with exactly the
dynamics and reward the env was configured with.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

from agents.adaptation_baselines import ObservedStyleGreedy, AdaptationPlanner
from agents.bandits import LinearThompson, LinUCB
from agents.baselines import (GreedyRouter, MyopicOracle, PersonaRouter, Policy, RandomPolicy,
                              RandomVector)
from agents.intervention_baselines import ObservedGreedy
from agents.planning import LookaheadPlanner
from envs import ADAPTATION_ID, ENV_IDS, INTERVENTION_ID, ROUTING_ID
from envs import adaptation, intervention, routing
from personarl.seeds import name_key, stream_seed
from personarl.errors import ConfigError

__all__ = ["baselines_for", "make_policy", "env_core"]

_BUILDERS = {ROUTING_ID: routing.build_core, INTERVENTION_ID: intervention.build_core,
             ADAPTATION_ID: adaptation.build_core}


def env_core(env_id: str, env_kwargs: Mapping[str, Any]) -> Any:
    """A one-lane core of ``env_id`` built (and so validated) from ``env_kwargs``."""
    if env_id not in _BUILDERS:
        raise ConfigError(f"unknown env id {env_id!r}; valid: {list(ENV_IDS)}")
    return _BUILDERS[env_id](1, **{**env_kwargs, "info_level": "none"})


def _discrete(core: Any) -> bool:
    return getattr(core, "discrete", True)


def _table(env_id: str, core: Any) -> dict[str, Callable[..., Policy]]:
    if not _discrete(core):
        dim = core.actions.space().shape[0]
        return {"random": lambda seed=0, **kw: RandomVector(dim, seed=seed, **kw),
                "oracle": lambda seed=0, **kw: MyopicOracle(dim, **kw)}
    k = core.actions.space().n
    d = core.obs.shape[1]
    table: dict[str, Callable[..., Policy]] = {
        "random": lambda seed=0, **kw: RandomPolicy(k, seed=seed, **kw),
        "linucb": lambda seed=0, **kw: LinUCB(k, d, seed=seed, **kw),
        "thompson": lambda seed=0, **kw: LinearThompson(k, d, seed=seed, **kw),
        "oracle": lambda seed=0, **kw: MyopicOracle(k, **kw),
    }
    if env_id == ROUTING_ID:
        table["greedy"] = lambda seed=0, **kw: GreedyRouter(core.layout, seed=seed, **kw)
        table["persona_router"] = lambda seed=0, **kw: PersonaRouter(core.layout, seed=seed,
                                                                     **kw)
    elif env_id == INTERVENTION_ID:
        table["greedy"] = lambda seed=0, **kw: ObservedGreedy(seed=seed, **kw)
        table["planner"] = lambda seed=0, **kw: LookaheadPlanner(
            core.model, core.reward_fn, slots_per_day=core.slots, horizon=core.H, **kw)
    else:
        table["greedy"] = lambda seed=0, **kw: ObservedStyleGreedy(seed=seed, **kw)
        table["planner"] = lambda seed=0, **kw: AdaptationPlanner(
            core.model, core.reward_fn, max_turns=core.H, **kw)
    return table


def baselines_for(env_id: str, env_kwargs: Mapping[str, Any]) -> list[str]:
    """Names of the baselines that apply to ``env_id`` configured with ``env_kwargs``."""
    return list(_table(env_id, env_core(env_id, env_kwargs)))


def make_policy(env_id: str, name: str, env_kwargs: Mapping[str, Any], seed: int = 0,
                **params: Any) -> Policy:
    """Build baseline ``name`` for ``env_id``; ``params`` go to its constructor. ``seed`` is
    the run's seed: the policy's own draws (exploration, tie-breaking) are its ``policy``
    stream keyed by ``name``, so two policies of one run never share draws.

    Raises:
        ConfigError: ``name`` does not apply to this env (the message lists those that
            do), or a parameter is unknown or out of range.
    """
    table = _table(env_id, env_core(env_id, env_kwargs))
    if name not in table:
        raise ConfigError(f"baseline {name!r} does not apply to {env_id}; valid: "
                          f"{sorted(table)}")
    try:
        return table[name](seed=stream_seed(seed, "policy", name_key(name)), **params)
    except TypeError:
        # the table entries bind the env's own arguments (layout, sizes); name the rest
        bound = {"self", "seed", "layout", "num_actions", "obs_dim", "dim", "model",
                 "reward_fn", "slots_per_day", "horizon", "max_turns"}
        valid = sorted(set(inspect.signature(type(table[name]())).parameters) - bound)
        unknown = sorted(set(params) - set(valid)) or sorted(params)
        raise ConfigError(f"baseline {name!r} got unknown parameter(s) {unknown}; "
                          f"valid: {valid}") from None
