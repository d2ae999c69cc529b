"""The NumPy reference and the compiled kernels (``personarl.backend``) simulate the same thing:
for one seed and one action sequence, every observation, reward, end and ``info`` value
agrees (floats to 1e-9: a compiled sum may round its last bit differently from BLAS)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import envs
from personarl.backend import numba_available, resolve_backend
from envs.creator import create_env
from envs.registration import backends
from personarl.errors import ConfigError, InvalidActionError, ResetNeededError

pytestmark = pytest.mark.skipif(not numba_available(), reason="the fast extra is not installed")

COMPILED = [env_id for env_id in envs.env_ids() if "numba" in backends(env_id)]


def _same(a, b, where: str) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(a)} vs {sorted(b)}"
        for k in a:
            _same(a[k], b[k], f"{where}[{k!r}]")
        return
    if isinstance(a, tuple):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
        return
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype.kind == b.dtype.kind, \
        f"{where}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
    if a.dtype.kind == "f":
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=where)
    else:
        assert np.array_equal(a, b), f"{where}: {a} vs {b}"


@pytest.mark.parametrize("env_id", COMPILED)
def test_both_backends_give_the_same_vector_trajectory(env_id):
    faces = [create_env(env_id, {"num_envs": 64, "backend": b}) for b in ("numpy", "numba")]
    outs = [env.reset(seed=11) for env in faces]
    _same(outs[0], outs[1], "reset")
    rng = np.random.default_rng(0)
    ends = 0
    for t in range(120):
        action = rng.integers(0, faces[0].single_action_space.n, 64)
        outs = [env.step(action) for env in faces]
        _same(outs[0], outs[1], f"step {t}")
        ends += int(outs[0][2].sum())
    assert ends > 64, f"only {ends} episodes ended: restarts were hardly compared"


@pytest.mark.parametrize("env_id", COMPILED)
def test_both_backends_give_the_same_single_env_trajectory(env_id):
    faces = [gym.make(env_id, backend=b) for b in ("numpy", "numba")]
    _same(faces[0].reset(seed=3), faces[1].reset(seed=3), "reset")
    for t, a in enumerate(np.random.default_rng(1).integers(0, faces[0].action_space.n, 300)):
        outs = [env.step(int(a)) for env in faces]
        _same(outs[0], outs[1], f"step {t}")
        if outs[0][2]:
            _same(faces[0].reset(), faces[1].reset(), f"reset after step {t}")


@pytest.mark.parametrize("env_id", COMPILED)
def test_a_state_saved_on_one_backend_continues_on_the_other(env_id):
    """The backends share one state layout: a run saved on NumPy resumes on Numba (and the
    ground truth, which the kernels keep in work arrays, is recomputed after the restore)."""
    rng = np.random.default_rng(5)
    saved = create_env(env_id, {"num_envs": 16, "backend": "numpy"})
    saved.reset(seed=5)
    k = saved.single_action_space.n
    for _ in range(25):
        saved.step(rng.integers(0, k, 16))
    resumed = create_env(env_id, {"num_envs": 16, "backend": "numba"})
    resumed.set_state(saved.get_state())
    for t in range(40):
        action = rng.integers(0, k, 16)
        _same(saved.step(action), resumed.step(action), f"step {t} after the restore")


def test_a_custom_reward_function_runs_beside_the_kernels():
    """A reward function the kernels cannot compute is called on their components: the
    default weights written as a plain function give the default env's rewards."""
    from rewards.intervention import intervention_reward
    custom = lambda dv, de, complied, false: intervention_reward(dv, de, complied, false)  # noqa
    rng = np.random.default_rng(2)
    actions = rng.integers(0, 6, (60, 32))
    runs = {}
    for name, kwargs in {"default": {}, "custom": {"reward_fn": custom}}.items():
        for backend in ("numpy", "numba"):
            env = create_env(envs.INTERVENTION_ID, {"num_envs": 32, "backend": backend,
                                                    **kwargs})
            env.reset(seed=4)
            runs[name, backend] = [env.step(a) for a in actions]
    for key, run in runs.items():
        for t, (a, b) in enumerate(zip(run, runs["default", "numpy"])):
            _same(a, b, f"{key} step {t}")


def test_an_unknown_or_missing_backend_is_a_config_error():
    for backend in ("fortran", np.array("numpy"), None):
        with pytest.raises(ConfigError, match=r"backend=.*; valid: \['auto', 'numpy', "
                                              r"'numba'\]"):
            gym.make(envs.INTERVENTION_ID, backend=backend)
    assert resolve_backend("auto") == "numba"


BROKEN_REWARDS = {
    "raises": (lambda *a: 1 / 0, "reward_fn raised ZeroDivisionError"),
    "shape": (lambda *a: np.zeros(7), r"reward_fn returned shape \(7,\); it must return shape"),
    "text": (lambda *a: np.full(np.shape(a[0]), "x"), "reward_fn returned <U1 values"),
    "nan": (lambda *a: np.full(np.shape(a[0]), np.nan), "reward_fn returned non-finite"),
}


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("broken", sorted(BROKEN_REWARDS))
def test_a_broken_reward_function_is_named_and_the_env_must_be_reset(backend, broken):
    """Both backends alike: a ConfigError naming what the function did, then (the step was
    cut short) a reset is required; a number for every user is fine."""
    fn, message = BROKEN_REWARDS[broken]
    for face in ("single", "vector"):
        env = (gym.make(envs.INTERVENTION_ID, backend=backend, reward_fn=fn) if face == "single"
               else create_env(envs.INTERVENTION_ID, {"num_envs": 4, "backend": backend,
                                                      "reward_fn": fn}))
        action = 1 if face == "single" else np.ones(4, dtype=np.int64)
        with pytest.raises(ConfigError, match=message):
            env.reset(seed=0)
            env.step(action)
        with pytest.raises(ResetNeededError):
            env.step(action)
    constant = create_env(envs.ADAPTATION_ID, {"num_envs": 4, "backend": backend,
                                               "reward_fn": lambda *a: 1})
    constant.reset(seed=0)
    reward = constant.step(np.zeros(4, dtype=np.int64))[1]
    assert reward.dtype == np.float64 and np.all(reward == 1.0)


@pytest.mark.parametrize("env_id", COMPILED)
def test_a_state_that_cannot_be_continued_is_refused(env_id):
    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    for key, value, message in [("pool_pos", 10**9, "past the pool's"),
                                ("pool_pos", -5, r"not a count \(an integer >= 0\)"),
                                ("population_time", 2.5, "not a count"),
                                ("exo_rng", None, "no generator state")]:
        state = env.get_state()
        if key not in state["core"]:
            continue
        state["core"][key] = value
        with pytest.raises(ConfigError, match=message):
            env.set_state(state)


def test_actions_are_integers_or_real_numbers_on_both_faces():
    single = gym.make(envs.INTERVENTION_ID)
    single.reset(seed=0)
    for action in (True, 3.0, np.float64(2)):
        with pytest.raises(InvalidActionError, match="is not an integer in"):
            single.step(action)
    single.step(np.int32(1))
    continuous = gym.make(envs.ADAPTATION_ID, action_mode="continuous")
    continuous.reset(seed=0)
    with pytest.raises(InvalidActionError, match="must be real numbers"):
        continuous.step(np.zeros(10) + 1j)
    with pytest.raises(ConfigError, match=r"num_envs=1000000000 is outside the valid range "
                                          r"\[1, 1048576\]"):
        create_env(envs.ROUTING_ID, {"num_envs": 10**9})


def test_the_lane_loops_compile_without_reference_counting():
    # every row view and helper argument in a lane loop would cost two atomic updates a
    # lane (personarl.backend.kernel's refcounts=False): the loops are compiled without
    import importlib
    loops = {"envs.routing_kernels": ("step_lanes", "begin_lanes", "truth_lanes"),
             "envs.adaptation_kernels": ("step_lanes", "observe_lanes", "truth_lanes"),
             "envs.intervention_kernels": ("step_lanes", "observe_lanes", "truth_lanes")}
    for env_id in COMPILED:
        env = create_env(env_id, {"num_envs": 2, "backend": "numba"})
        env.reset(seed=0)
        env.step(np.zeros(2, dtype=np.int64))
        env.close()
    for module, names in loops.items():
        kernels = importlib.import_module(module)
        for name in names:
            compiled = getattr(kernels, name)
            assert compiled.targetoptions.get("_nrt") is False, f"{module}.{name}"


THREADED = [(env_id, {}) for env_id in COMPILED] + [(envs.ADAPTATION_ID,
                                                      {"action_mode": "continuous"})]


@pytest.mark.parametrize("env_id, kwargs", THREADED)
def test_a_step_shared_out_to_threads_gives_the_same_bits(env_id, kwargs):
    """``num_threads`` cuts the lanes into blocks (37 lanes: 12, 13, 12) stepped at once;
    every observation, reward, end and ground-truth value is the single thread's, bit
    for bit, and a state saved on three threads continues on one."""
    faces = [create_env(env_id, {"num_envs": 37, "backend": "numba", "num_threads": n,
                                 **kwargs}) for n in (1, 3)]
    assert [len(env.unwrapped._core._blocks.slices) for env in faces] == [1, 3]
    outs = [env.reset(seed=8) for env in faces]
    space = faces[0].action_space
    space.seed(2)
    ends = 0
    for t in range(80):
        action = space.sample()
        outs = [env.step(action) for env in faces]
        for a, b in zip(outs[0], outs[1]):
            assert not isinstance(a, dict) or a.keys() == b.keys()
            for x, y in (zip(a.values(), b.values()) if isinstance(a, dict) else [(a, b)]):
                assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), f"step {t}"
        ends += int(outs[0][2].sum())
    assert ends > 37, f"only {ends} episodes ended: restarts were hardly compared"
    resumed = create_env(env_id, {"num_envs": 37, "backend": "numba", **kwargs})
    resumed.set_state(faces[1].get_state())
    action = space.sample()
    assert np.array_equal(resumed.step(action)[0], faces[1].step(action)[0])


def test_the_blocks_run_on_their_own_threads_and_a_failure_is_raised_after_all_end():
    import threading
    import time
    from envs.batched import LaneBlocks
    blocks = LaneBlocks(10, 4, "numba")
    assert [(s.start, s.stop) for s in blocks.slices] == [(0, 2), (2, 5), (5, 8), (8, 10)]
    seen, done = {}, []
    together = threading.Barrier(4, timeout=10)   # broken unless all four run at once

    def kernel(rows, placeholder, label):
        seen[label] = (threading.get_ident(), rows.tolist(), len(placeholder))
        together.wait()
        if label == 2:
            raise ValueError("block 2 failed")
        time.sleep(0.05 if label == 3 else 0.0)
        done.append(label)

    with pytest.raises(ValueError, match="block 2 failed"):
        blocks.run(kernel, (np.arange(10), np.zeros(0)), [(b,) for b in range(4)])
    assert sorted(done) == [0, 1, 3], "run returned before every block had ended"
    assert [seen[b][1] for b in range(4)] == [[0, 1], [2, 3, 4], [5, 6, 7], [8, 9]]
    assert {seen[b][2] for b in range(4)} == {0}, "a placeholder was cut"
    assert seen[0][0] == threading.get_ident() and len({s[0] for s in seen.values()}) == 4
    assert len(LaneBlocks(2, 8, "numba").slices) == 2       # never an empty block


def test_threads_are_a_config_error_out_of_range_or_on_numpy():
    for value, message in [(0, r"num_threads=0 is outside the valid range \[1, 64\]"),
                           (65, r"num_threads=65 is outside the valid range \[1, 64\]"),
                           ("2", r"num_threads='2' must be an integer in \[1, 64\]"),
                           (2.5, r"num_threads=2.5 must be an integer in \[1, 64\]"),
                           (np.array([2]), r"num_threads=array\(\[2\]\) must be an integer"),
                           (True, r"num_threads=True must be an integer in \[1, 64\]")]:
        with pytest.raises(ConfigError, match=message):
            create_env(envs.ROUTING_ID, {"num_envs": 8, "backend": "numba",
                                         "num_threads": value})
    for env_id in COMPILED:
        with pytest.raises(ConfigError, match=r"num_threads=2 needs backend='numba'.*"
                                              r"use num_threads=1"):
            create_env(env_id, {"num_envs": 8, "backend": "numpy", "num_threads": 2})
        gym.make(env_id, backend="numpy", num_threads=1).reset(seed=0)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_the_normals_drawn_beside_the_uniforms_are_the_sequential_draws(backend):
    """With a worker, AgentRouting's per-step normals come from a PCG64 twin jumped past
    the uniforms: the same numbers as drawing in turn, and the generator left in the same
    state — its buffered 32-bit half-word too, which the jump would clear."""
    from envs.batched import LaneBlocks
    blocks = LaneBlocks(8, 2, "numba")
    for buffered in (0, 1):
        for shapes in [((4096, 18), (4096, 7)), ((3, 2), (5,))]:
            sequential, twinned = (np.random.Generator(np.random.PCG64(5)) for _ in range(2))
            state = sequential.bit_generator.state
            state["has_uint32"], state["uinteger"] = buffered, 77
            sequential.bit_generator.state = twinned.bit_generator.state = state
            expected = sequential.random(shapes[0]), sequential.standard_normal(shapes[1])
            drawn = blocks.uniforms_then_normals(twinned, np.empty(shapes[0]),
                                                 np.empty(shapes[1]), backend)
            for a, b in zip(expected, drawn):
                assert np.array_equal(a, b)
            assert twinned.bit_generator.state == sequential.bit_generator.state
            assert twinned.integers(0, 99, 5, dtype=np.int32).tolist() == \
                sequential.integers(0, 99, 5, dtype=np.int32).tolist()


def _lane_threads() -> int:
    import threading
    return sum(t.name.startswith("personarl-lanes") for t in threading.enumerate())


@pytest.mark.parametrize("env_id", COMPILED)
@pytest.mark.parametrize("threads", [1, 2])
def test_a_copy_or_a_pickle_steps_as_the_original(env_id, threads):
    """A deep copy of a view is a separate array: the kernels' bound arguments, the
    step's views and the truth table's vectors are built again over the copy's own."""
    import copy
    import pickle
    env = create_env(env_id, {"num_envs": 16, "backend": "numba", "num_threads": threads})
    env.reset(seed=0)
    action = np.ones(16, dtype=np.int64)
    env.step(action)
    twins = [copy.deepcopy(env)]
    if env_id == envs.ROUTING_ID:   # the others hold a local reward function pickle refuses
        twins.append(pickle.loads(pickle.dumps(env)))
    for t in range(5):
        expected = env.step(action)
        for twin in twins:
            _same(twin.step(action), expected, f"step {t} of a copy")


def test_threaded_envs_close_and_fork():
    """``close`` stops the step threads; a child forked after a threaded step starts its
    own (the parent's do not exist there) and steps as the parent does."""
    import multiprocessing
    before = _lane_threads()
    env = create_env(envs.ROUTING_ID, {"num_envs": 64, "backend": "numba", "num_threads": 2})
    env.reset(seed=0)
    action = np.zeros(64, dtype=np.int64)
    env.step(action)
    assert _lane_threads() == before + 1
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=lambda: results.put(env.step(action)[0].tobytes()))
    child.start()
    child.join(60)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive and child.exitcode == 0, "a forked child's step waited on the parent's threads"
    assert results.get(timeout=10) == env.step(action)[0].tobytes()
    env.close()
    assert _lane_threads() == before


def test_outputs_numpy_cannot_fill_are_drawn_in_turn():
    from envs.batched import LaneBlocks
    blocks = LaneBlocks(8, 2, "numba")
    rng = np.random.Generator(np.random.PCG64(0))
    uniforms, normals = np.zeros(4), np.zeros(50_000)
    uniforms.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        blocks.uniforms_then_normals(rng, uniforms, normals, "numba")
    assert not normals.any(), "the normals were drawn although the uniforms failed"
    shared = np.zeros(10_000)
    sequential = np.random.Generator(np.random.PCG64(0))
    sequential.random(out=shared.copy())
    expected = sequential.standard_normal(10_000)
    blocks.uniforms_then_normals(rng, shared, shared, "numba")
    assert np.array_equal(shared, expected)
