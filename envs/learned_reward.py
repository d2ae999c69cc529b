"""A learned reward model paid in place of an env's reward (``reward=learned`` in training).

``learned_reward={"model": <reward_model.npz>, "objective": ..., "penalty": ...}`` among an
env's arguments (``registration.build_core`` takes it for every env) makes each step pay
``r_θ(observation acted on, action)`` — ``rewards.reward_model.RewardModel`` scored in
NumPy — while the env's own reward goes on being computed and is reported as
``true_reward`` in the step's ``info`` (``BaseCore.step_paid``). The model must come from
the same env's observations (``experiments.preferences context=observation``): its file
names the env, its configuration (the horizon of the one-step setting aside), the context
and the action space it was trained for, and a model that does not fit is refused before
any step. The configuration is compared as ``BaseCore.configuration`` digests, so an env
must be built as the model's was: from the same persona config (``experiments.train``
does; a hand-built env passes ``population=`` the same mapping).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from personarl.errors import ConfigError, PersonaRLError
from envs.batched import configuration_differences
from rewards.reward_model import OBJECTIVES, RewardModel, check_penalty

__all__ = ["LearnedReward", "learned_reward_for", "ONE_STEP"]

#: configuration a model may differ in from the env it pays: the one-step setting's horizon
#: (``envs.turns``; ``dims`` packs it) — the observation's width is checked on its own
ONE_STEP = frozenset({"horizon", "dims"})


class LearnedReward:
    """``(B,)`` learned rewards of observations ``(B, d)`` and actions (indices, or vectors
    clipped into the box as the env executes them)."""

    def __init__(self, model: RewardModel, objective: str = "mean", penalty: float = 1.0,
                 path: str | None = None) -> None:
        self.model, self.objective, self.penalty, self.path = model, objective, penalty, path

    def __call__(self, obs: np.ndarray, action: np.ndarray) -> np.ndarray:
        a = action if self.model.num_actions is not None else np.clip(action, 0.0, 1.0)
        return self.model.reward(obs, a, objective=self.objective, penalty=self.penalty)


def learned_reward_for(env_id: str, core: Any, spec: Mapping[str, Any]) -> LearnedReward:
    """The learned reward ``spec`` names, checked against ``core`` (an ``env_id`` core).

    Raises:
        ConfigError: a missing key, an unknown objective, a model that cannot be read or
            was trained for another env, context or action space.
    """
    if not isinstance(spec, Mapping) or "model" not in spec:
        raise ConfigError(f"learned_reward={spec!r} must be a mapping with 'model' (a "
                          "reward_model.npz from python -m experiments.preferences)")
    unknown = sorted(set(spec) - {"model", "objective", "penalty"})
    if unknown:
        raise ConfigError(f"learned_reward has no key(s) {unknown}; valid: model, "
                          "objective, penalty")
    path = spec["model"]
    where = f"reward.model={path!r}"
    if path is None or not str(path).strip():
        raise ConfigError("reward=learned needs reward.model=<reward_model.npz>: train one "
                          "with python -m experiments.preferences context=observation")
    objective = spec.get("objective", "mean")
    if objective not in OBJECTIVES:
        raise ConfigError(f"reward.objective={objective!r}; valid: {', '.join(OBJECTIVES)}")
    penalty = check_penalty(spec.get("penalty", 1.0), "reward.penalty")
    try:
        model = RewardModel.load(Path(str(path)))
    except PersonaRLError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    meta = model.meta
    if meta.get("env_id") != env_id:
        raise ConfigError(f"{where} was trained on {meta.get('env_id')!r}, not {env_id}")
    if meta.get("context") != "observation":
        raise ConfigError(f"{where} reads the context {meta.get('context')!r}; an env pays "
                          "from what it observes: train with context=observation")
    if model.context_dim != core.obs_size:
        raise ConfigError(f"{where} reads {model.context_dim} observation columns; this "
                          f"env has {core.obs_size} (another configuration)")
    k = getattr(core.actions, "k", None)
    if k != model.num_actions or (k is None and model.action_dim != core.actions.dim):
        have = f"Discrete({k})" if k is not None else f"Box({core.actions.dim})"
        want = (f"Discrete({model.num_actions})" if model.num_actions is not None
                else f"Box({model.action_dim})")
        raise ConfigError(f"{where} scores {want} actions; this env acts in {have}"
                          " (action_mode?)")
    trained = meta.get("env_configuration")
    if not isinstance(trained, Mapping):
        raise ConfigError(f"{where} records no env configuration: train it with python -m "
                          "experiments.preferences")
    differ = [k for k in configuration_differences(core.configuration(), trained)
              if k not in ONE_STEP]
    if differ:
        raise ConfigError(f"{where} was trained on another configuration of {env_id} "
                          f"({', '.join(differ)} differ): it scores another world's "
                          "rewards; train it with this env's settings")
    return LearnedReward(model, objective, penalty, str(path))
