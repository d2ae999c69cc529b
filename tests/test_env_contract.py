"""The contract every registered env keeps, single and vector, in every action mode.

Nothing an env returns from ``reset`` or ``step`` changes afterwards: observations,
rewards, flags and every array in ``info`` (``final_obs`` and ``final_info`` included) are
the caller's, never views of the core's state.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.creator import create_env

#: every registered id, with each action mode it has
VARIANTS = [(env_id, {}) for env_id in envs.ENV_IDS] + [
    (envs.ADAPTATION_ID, {"action_mode": "continuous"})]
FACES = ["single", "vector-next_step", "vector-same_step"]


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    return a == b or (a != a and b != b)          # NaN scalars equal themselves here


def _make(env_id: str, kwargs: dict, face: str):
    if face == "single":
        return gym.make(env_id, **kwargs).unwrapped
    return create_env(env_id, {**kwargs, "num_envs": 4,
                               "autoreset_mode": face.split("-")[1]})


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize("env_id,kwargs", VARIANTS,
                         ids=[f"{i.split('/')[1]}{'-' + k['action_mode'] if k else ''}"
                              for i, k in VARIANTS])
def test_nothing_returned_changes_afterwards(env_id, kwargs, face):
    env = _make(env_id, kwargs, face)
    space = env.action_space
    space.seed(0)
    kept: list[tuple[str, Any, Any]] = []            # (where, returned object, its copy)

    def keep(where: str, returned: Any) -> Any:
        kept.append((where, returned, copy.deepcopy(returned)))
        return returned

    def play(steps: int, label: str) -> int:
        ends = 0
        for t in range(steps):
            out = keep(f"{label} step {t}", env.step(space.sample()))
            done = out[2] if face == "single" else out[2].any()
            ends += bool(done)
            if face == "single" and done:
                keep(f"{label} reset after step {t}", env.reset())
        return ends

    keep("reset(seed=1)", env.reset(seed=1))
    ends = play(60, "first")
    keep("reset(seed=2)", env.reset(seed=2))
    play(5, "second")
    assert ends, "no episode ended: the test would not see a restart"
    changed = [where for where, returned, snapshot in kept if not _equal(returned, snapshot)]
    assert not changed, f"values returned by {env_id} ({face}) changed later: {changed[:5]}"
