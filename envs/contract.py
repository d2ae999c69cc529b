"""The contract every registered env keeps, in every action mode, single and vector.

``check_contract(env_id)`` runs every check below on every action mode of the env's record
(``EnvRecord.action_modes``); ``CHECKS`` names them one by one, so a test suite can
parametrise over ``envs.env_ids()`` × modes × checks (``tests/test_env_contract.py`` does,
as Gymnasium's own tests parametrise over every spec). Each check raises
``AssertionError`` naming what broke.

1. ``gymnasium``: Gymnasium's ``check_env`` with its determinism checks (full info and
   ``info_level="none"``), plus ``info_level="none"`` returning no ground truth.
2. ``sb3``: Stable-Baselines3's env checker (imported here only; ``train`` extra).
3. ``seeds``: one seed reproduces the bytes of a rollout, single and vector; another seed
   changes them.
4. ``batch_of_one``: a vector env of one lane equals the single env step for step —
   observations, rewards, flags and every ``info`` array — across episode ends.
5. ``autoreset``: both of Gymnasium's autoreset modes: ``next_step`` restarts an ended lane
   on its next step (reward 0, not terminated); ``same_step`` returns the ended episode's
   last observation and info in ``final_obs`` / ``final_info`` and the new episode's first
   observation — each equal to the single env's.
6. ``expected_reward``: where ``info`` carries ``expected_reward`` (one column per
   discrete action; discrete envs must), the expected rewards of the actions taken sum,
   per episode, to the realised return in the mean over many users (|z| < 4.5).
7. ``owned``: nothing returned by ``reset`` or ``step`` changes afterwards (no views of
   the core's state), in all three faces.
8. ``state``: ``get_state`` → a state file → ``set_state`` into a fresh env continues
   exactly, in all three faces; what the state leaves out (configuration) never changes
   over 256 lanes × 300 steps in either autoreset mode.
9. ``layout``: the record's ``observation_layout`` tiles the observation exactly.
10. ``truth``: ``info`` (full) carries what evaluation reads — ``latent_primary`` and
    ``is_bot`` per lane, ``oracle_action`` shaped like an action per lane — and, after every
    step, the record's ``safety_keys``; the core has ``horizon`` (an int: the most decisions
    an episode can have) and ``sampler`` (with archetype names).
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import gymnasium as gym
import numpy as np

from envs.creator import create_env
from envs.registration import record
from envs.rollout import Lanes
from personarl.errors import ConfigError

__all__ = ["CHECKS", "check_contract"]

FACES = ("single", "vector-next_step", "vector-same_step")


def _equal(a: Any, b: Any) -> bool:
    """Exact equality of nested results (arrays by dtype and bytes; NaN equals NaN)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(
            _equal(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(
            a, b, equal_nan=a.dtype.kind in "fc")
    return a == b or (a != a and b != b)


def _make(env_id: str, kwargs: Mapping[str, Any], face: str, lanes: int = 4) -> Any:
    if face == "single":
        return gym.make(env_id, **kwargs).unwrapped
    return create_env(env_id, {**kwargs, "num_envs": lanes,
                               "autoreset_mode": face.split("-")[1]})


def _actions(space: gym.Space, n: int, seed: int) -> list[Any]:
    space.seed(seed)
    return [space.sample() for _ in range(n)]


# ---------------------------------------------------------------- 1, 2
def check_gymnasium(env_id: str, kwargs: Mapping[str, Any]) -> None:
    from gymnasium.utils.env_checker import check_env

    for level in ("full", "none"):
        check_env(gym.make(env_id, **{**kwargs, "info_level": level}).unwrapped,
                  skip_render_check=True)
    env = gym.make(env_id, **{**kwargs, "info_level": "none"}).unwrapped
    assert env.reset(seed=0)[1] == {}, "info_level='none' returned ground truth on reset"
    assert env.step(env.action_space.sample())[4] == {}, \
        "info_level='none' returned ground truth on step"
    vec = create_env(env_id, {**kwargs, "num_envs": 3, "info_level": "none"})
    assert vec.reset(seed=0)[1] == {}


def check_sb3(env_id: str, kwargs: Mapping[str, Any]) -> None:
    import warnings

    from stable_baselines3.common.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")       # SB3 reports problems as warnings
        # a recommendation, not a fault: a trait vector in [0, 1] is the action's meaning
        warnings.filterwarnings("ignore", message="We recommend you to use a symmetric")
        check_env(gym.make(env_id, **kwargs).unwrapped, warn=True, skip_render_check=True)


# ---------------------------------------------------------------- 3, 4, 5
def _single_rollout(env: Any, seed: int, actions: list[Any]) -> list[Any]:
    out = [env.reset(seed=seed)]
    for a in actions:
        step = env.step(a)
        out.append(step)
        if step[2] or step[3]:
            out.append(env.reset())
    return out


def check_seeds(env_id: str, kwargs: Mapping[str, Any]) -> None:
    single = gym.make(env_id, **kwargs).unwrapped
    actions = _actions(single.action_space, 200, 0)
    first = _single_rollout(single, 3, actions)
    assert _equal(_single_rollout(gym.make(env_id, **kwargs).unwrapped, 3, actions), first), \
        "the same seed did not reproduce the single env's rollout"
    assert not _equal(_single_rollout(single, 4, actions), first), \
        "another seed reproduced the same rollout"

    def vector(seed: int) -> list[Any]:
        env = create_env(env_id, {**kwargs, "num_envs": 32})
        batch = _actions(env.action_space, 60, 1)
        return [env.reset(seed=seed)] + [env.step(a) for a in batch]

    assert _equal(vector(11), vector(11)), "the same seed did not reproduce the vector env"
    assert not _equal(vector(11), vector(12)), "another seed reproduced the vector env"


def _lane(value: Any) -> Any:
    """Lane 0 of a vector env's ``info`` (a dict of arrays; a key whose ``_key`` mask is
    off for the lane is absent from it, Gymnasium's convention) or of one array."""
    if isinstance(value, dict):
        return {k: _lane(v) for k, v in value.items()
                if not k.startswith("_") and value.get(f"_{k}", [True])[0]}
    return value[0]


def _same_info(single: Mapping[str, Any], lane: Mapping[str, Any]) -> bool:
    """The single env's ``info`` equals lane 0 of the vector env's (``_lane``)."""
    return single.keys() == lane.keys() and all(
        np.array_equal(np.asarray(single[k]), np.asarray(lane[k])) for k in single)


def check_batch_of_one(env_id: str, kwargs: Mapping[str, Any]) -> None:
    single = gym.make(env_id, **kwargs).unwrapped
    vector = create_env(env_id, {**kwargs, "num_envs": 1})
    s_obs, s_info = single.reset(seed=5)
    v_obs, v_info = vector.reset(seed=5)
    ends = 0
    for t, a in enumerate(_actions(single.action_space, 300, 2)):
        assert np.array_equal(v_obs[0], s_obs), f"observations differ at step {t}"
        assert _same_info(s_info, _lane(v_info)), f"info differs at step {t}"
        s_obs, s_r, s_term, s_trunc, s_info = single.step(a)
        v_obs, v_r, v_term, v_trunc, v_info = vector.step(np.asarray([a]))
        assert type(s_r) is float and type(s_term) is bool and type(s_trunc) is bool
        assert (s_r, s_term, s_trunc) == (v_r[0], v_term[0], v_trunc[0]), \
            f"reward or flags differ at step {t}"
        if s_term or s_trunc:
            ends += 1
            s_obs, s_info = single.reset()
            v_obs, v_r, v_term, _, v_info = vector.step(np.asarray([a]))   # next_step reset
    assert ends >= 3, f"only {ends} episodes ended in 300 steps: nothing was compared"


def check_autoreset(env_id: str, kwargs: Mapping[str, Any]) -> None:
    single = gym.make(env_id, **kwargs).unwrapped
    actions = _actions(single.action_space, 300, 3)
    for mode in ("next_step", "same_step"):
        vector = create_env(env_id, {**kwargs, "num_envs": 1, "autoreset_mode": mode})
        s_obs, _ = single.reset(seed=8)
        v_obs, _ = vector.reset(seed=8)
        ends = 0
        for t, a in enumerate(actions):
            s_obs, s_r, s_term, s_trunc, s_info = single.step(a)
            v_obs, v_r, v_term, v_trunc, v_info = vector.step(np.asarray([a]))
            assert v_r[0] == s_r and v_term[0] == s_term, f"{mode}: step {t} differs"
            if not (s_term or s_trunc):
                assert np.array_equal(v_obs[0], s_obs), f"{mode}: obs differ at step {t}"
                continue
            ends += 1
            if mode == "same_step":
                assert np.array_equal(v_info["final_obs"][0], s_obs), \
                    f"{mode}: final_obs is not the ended episode's last observation"
                assert _same_info(s_info, _lane(v_info["final_info"])), \
                    f"{mode}: final_info is not the ended episode's last info"
                s_obs, _ = single.reset()
                assert np.array_equal(v_obs[0], s_obs), \
                    f"{mode}: the returned observation is not the new episode's first"
            else:
                s_obs, _ = single.reset()
                v_obs, v_r, v_term, _, _ = vector.step(np.asarray([a]))
                assert v_r[0] == 0.0 and not v_term[0], \
                    f"{mode}: the restart step returned reward {v_r[0]}, terminated " \
                    f"{v_term[0]}"
                assert np.array_equal(v_obs[0], s_obs), f"{mode}: restart obs differ"
        assert ends >= 3, f"{mode}: only {ends} episodes ended: nothing was compared"


# ---------------------------------------------------------------- 6
def check_expected_reward(env_id: str, kwargs: Mapping[str, Any], lanes: int = 20_000
                          ) -> None:
    """Per episode, Σ_t expected_reward[t, a_t] against Σ_t r_t (delayed rewards, e.g.
    conversions, are paid within the episode), paired over ``lanes`` users acting at
    random."""
    env = create_env(env_id, {**kwargs, "num_envs": lanes})
    episodes = Lanes(env, *env.reset(seed=9), first_episode_only=True)
    if "expected_reward" not in episodes.info:
        assert not isinstance(env.single_action_space, gym.spaces.Discrete), \
            "a discrete env must give expected_reward (one column per action) in info"
        return
    rng = np.random.default_rng(0)
    expected, realised = np.zeros(lanes), np.zeros(lanes)
    for t in episodes.run(lambda obs, info: rng.integers(0, env.single_action_space.n,
                                                         lanes)):
        expected += t.live * t.info["expected_reward"][np.arange(lanes), t.action]
        realised += t.live * t.reward
    diff = realised - expected
    se = diff.std(ddof=1) / np.sqrt(lanes)
    assert abs(diff.mean()) <= 4.5 * se + 1e-12, \
        f"the mean return differs from the sum of expected rewards by {diff.mean():.4g} " \
        f"(standard error {se:.3g}, {lanes} episodes)"


# ---------------------------------------------------------------- 7, 8
def check_owned(env_id: str, kwargs: Mapping[str, Any]) -> None:
    for face in FACES:
        env = _make(env_id, kwargs, face)
        kept: list[tuple[str, Any, Any]] = []

        def keep(where: str, returned: Any) -> Any:
            kept.append((where, returned, copy.deepcopy(returned)))
            return returned

        def play(label: str, actions: list[Any]) -> int:
            ends = 0
            for t, a in enumerate(actions):
                out = keep(f"{label} step {t}", env.step(a))
                done = bool(np.any(out[2]) or np.any(out[3]))
                ends += done
                if face == "single" and done:
                    keep(f"{label} reset after step {t}", env.reset())
            return ends

        keep("reset(seed=1)", env.reset(seed=1))
        ends = play("first", _actions(env.action_space, 60, 0))
        keep("reset(seed=2)", env.reset(seed=2))
        play("second", _actions(env.action_space, 5, 1))
        assert ends, f"{face}: no episode ended: a restart was never seen"
        changed = [w for w, returned, snap in kept if not _equal(returned, snap)]
        assert not changed, f"{face}: values returned changed later: {changed[:5]}"


def check_state(env_id: str, kwargs: Mapping[str, Any]) -> None:
    from personarl.statefile import read_state, write_state

    for face in FACES:
        env = _make(env_id, kwargs, face)
        env.reset(seed=7)
        config = env._core.configuration()
        actions = _actions(env.action_space, 160, 1)

        def play(e: Any, batch: list[Any]) -> list[Any]:
            out = []
            for a in batch:
                step = e.step(a)
                out.append(step)
                if face == "single" and (step[2] or step[3]):
                    out.append(e.reset())
            return out

        play(env, actions[:40])
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "env.npz"
            write_state(path, env.get_state())
            original = play(env, actions[40:])
            restored = _make(env_id, kwargs, face)
            restored.set_state(read_state(path))
        assert _equal(play(restored, actions[40:]), original), \
            f"{face}: the restored env did not continue exactly"
        assert env._core.configuration() == config, \
            f"{face}: configuration outside state_fields changed while stepping"
    for mode in ("next_step", "same_step"):
        env = create_env(env_id, {**kwargs, "num_envs": 256, "autoreset_mode": mode})
        config = env._core.configuration()
        env.reset(seed=3)
        for a in _actions(env.action_space, 300, 0):
            env.step(a)
        now = env._core.configuration()
        changed = [k for k in config if now.get(k) != config[k]]
        assert changed == [], f"{mode}: attributes outside state_fields changed: {changed}"


# ---------------------------------------------------------------- 9
def check_layout(env_id: str, kwargs: Mapping[str, Any]) -> None:
    layout = record(env_id).observation_layout(kwargs)
    env = gym.make(env_id, **kwargs).unwrapped
    stop = 0
    for name, cols in layout.items():
        assert cols.start == stop and cols.stop >= cols.start, \
            f"layout column {name!r} {cols} does not follow at {stop}"
        stop = cols.stop
    assert (stop,) == env.observation_space.shape, \
        f"the layout covers {stop} columns; the observation has " \
        f"{env.observation_space.shape}"


# ---------------------------------------------------------------- 10
def check_truth(env_id: str, kwargs: Mapping[str, Any]) -> None:
    rec = record(env_id)
    env = create_env(env_id, {**kwargs, "num_envs": 5})
    core = env._core
    assert isinstance(getattr(core, "horizon", None), (int, np.integer)), \
        "the core has no int horizon (the most decisions an episode can have)"
    sampler = getattr(core, "sampler", None)
    assert sampler is not None and len(sampler.tables[-1].names) > 0, \
        "the core has no sampler with archetype names (core.sampler.tables[-1].names)"
    _, info = env.reset(seed=0)
    for key in ("latent_primary", "is_bot"):
        assert key in info and np.shape(info[key]) == (5,), \
            f"info has no per-lane {key!r} (the per-archetype tables read it)"
    action_shape = (5, *env.single_action_space.shape)
    assert "oracle_action" in info and np.shape(info["oracle_action"]) == action_shape, \
        f"info has no 'oracle_action' of shape {action_shape} (the oracle baseline acts on it)"
    for t, a in enumerate(_actions(env.action_space, 3, 0)):
        _, _, _, _, info = env.step(a)
        missing = [k for k in rec.safety_keys if k not in info]
        assert not missing, f"step {t}: info lacks the record's safety_keys {missing}"


#: check name -> ``(env_id, kwargs) -> None`` (raises ``AssertionError``)
CHECKS: dict[str, Callable[[str, Mapping[str, Any]], None]] = {
    "gymnasium": check_gymnasium, "sb3": check_sb3, "seeds": check_seeds,
    "batch_of_one": check_batch_of_one, "autoreset": check_autoreset,
    "expected_reward": check_expected_reward, "owned": check_owned, "state": check_state,
    "layout": check_layout, "truth": check_truth}


def check_contract(env_id: str, modes: list[str] | None = None) -> None:
    """Every check on every action mode of ``env_id`` (``modes``: a subset by name).

    Raises:
        ConfigError: an unknown env id or mode (naming the valid ones).
        AssertionError: the first check that fails, naming the env, the mode and the check.
    """
    rec = record(env_id)
    if modes is not None and (isinstance(modes, str) or
                              not set(modes) <= set(rec.action_modes)):
        raise ConfigError(f"modes={modes!r}; valid: a list of {list(rec.action_modes)}")
    for mode in modes or list(rec.action_modes):
        for name, check in CHECKS.items():
            try:
                check(env_id, dict(rec.action_modes[mode]))
            except AssertionError as exc:
                raise AssertionError(f"{env_id} ({mode}) fails {name!r}: {exc}") from None
