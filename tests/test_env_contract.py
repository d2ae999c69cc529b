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


def _same_config(a: Any, b: Any) -> bool:
    """Deep equality that looks inside objects (samplers, models) attribute by attribute."""
    if hasattr(a, "__dict__") and not callable(a) and not isinstance(a, type):
        return type(a) is type(b) and _same_config(vars(a), vars(b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_config(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same_config(x, y) for x, y in zip(a, b))
    if callable(a):
        return True                                  # functions: their closures are config
    return _equal(a, b)


def _config_attributes(env: Any) -> dict[str, Any]:
    """What ``get_state`` leaves out of a core: its configuration (deep copies)."""
    core = env._core
    state = core.get_state()
    return {k: copy.deepcopy(v) for k, v in vars(core).items() if k not in state}


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize("env_id,kwargs", VARIANTS,
                         ids=[f"{i.split('/')[1]}{'-' + k['action_mode'] if k else ''}"
                              for i, k in VARIANTS])
def test_a_saved_state_continues_exactly(env_id, kwargs, face, tmp_path):
    """An env restored (through a state file) into a fresh env continues exactly as the
    original does: observations, rewards, flags and info over episode ends and the pool of
    users drawn ahead; the attributes the state leaves out never change while stepping."""
    from personarl.statefile import read_state, write_state

    env = _make(env_id, kwargs, face)
    space = env.action_space
    space.seed(1)
    env.reset(seed=7)
    config = _config_attributes(env)

    def play(e: Any, actions: list[Any]) -> list[Any]:
        out = []
        for a in actions:
            step = e.step(a)
            out.append(step)
            if face == "single" and (step[2] or step[3]):
                out.append(e.reset())
        return out

    play(env, [space.sample() for _ in range(40)])
    write_state(tmp_path / "env.npz", env.get_state())
    actions = [space.sample() for _ in range(120)]
    original = play(env, actions)
    restored = _make(env_id, kwargs, face)
    restored.set_state(read_state(tmp_path / "env.npz"))
    assert _equal(play(restored, actions), original)
    assert _same_config(_config_attributes(env), config)     # configuration stayed put


def test_a_state_from_another_env_is_refused_and_changes_nothing():
    from personarl.errors import ConfigError

    routing = create_env(envs.ROUTING_ID, {"num_envs": 4})
    routing.reset(seed=0)
    other = create_env(envs.INTERVENTION_ID, {"num_envs": 4})
    other.reset(seed=0)
    before = copy.deepcopy(other.get_state())
    with pytest.raises(ConfigError, match="cannot restore an InterventionCore from this state"):
        other.set_state(routing.get_state())
    assert _equal(other.get_state(), before)
    with pytest.raises(ConfigError, match=r"cannot restore 8 lanes from a state whose "
                                          r"needs_reset is bool of shape \(4,\)"):
        create_env(envs.ROUTING_ID, {"num_envs": 8}).set_state(routing.get_state())
    with pytest.raises(ConfigError, match="valid: \\['MT19937'"):
        routing.set_state({**routing.get_state(), "np_random": {"bit_generator": "Pickle"}})
    with pytest.raises(ConfigError, match="not a PCG64 generator state"):
        routing.set_state({**routing.get_state(),
                           "np_random": {"bit_generator": "PCG64", "state": "x"}})
    with pytest.raises(ConfigError, match=r"expected a mapping with keys \['core', "):
        routing.set_state({"core": {}})
    with pytest.raises(ConfigError, match="expected a mapping"):
        routing.set_state([1, 2])
    # another configuration of the same env: its lane arrays have other shapes
    short = create_env(envs.ROUTING_ID, {"num_envs": 4, "horizon": 5})
    short.reset(seed=0)
    with pytest.raises(ConfigError, match=r"has shape \(4, \d+\), this core's is"):
        routing.set_state(short.get_state())
    single = gym.make(envs.INTERVENTION_ID).unwrapped
    single.reset(seed=1)
    before = copy.deepcopy(single.get_state())
    broken = copy.deepcopy(before)
    broken["core"]["t"] = np.zeros(3, dtype=np.int64)
    with pytest.raises(ConfigError, match="'t' has shape \\(3,\\), this core's is \\(1,\\)"):
        single.set_state(broken)
    assert _equal(single.get_state(), before)                # nothing changed


@pytest.mark.parametrize("mode", ["next_step", "same_step"])
@pytest.mark.parametrize("env_id,kwargs", VARIANTS,
                         ids=[f"{i.split('/')[1]}{'-' + k['action_mode'] if k else ''}"
                              for i, k in VARIANTS])
def test_what_a_state_leaves_out_never_changes(env_id, kwargs, mode):
    """Many lanes over many episodes, so that rare users (bots, opt-outs) occur: every
    attribute outside ``state_fields`` is as it was built."""
    env = create_env(env_id, {**kwargs, "num_envs": 256, "autoreset_mode": mode})
    config = _config_attributes(env)
    env.action_space.seed(0)
    env.reset(seed=3)
    for _ in range(300):
        env.step(env.action_space.sample())
    changed = [k for k, v in _config_attributes(env).items() if not _same_config(v, config[k])]
    assert changed == []
