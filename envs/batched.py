"""Gymnasium faces of a batched core: the single env (batch of one) and the native VectorEnv.

A *core* (a ``BaseCore``) steps ``B`` users at once in NumPy and exposes:

* ``B``, ``actions`` (a ``DiscreteActions`` or ``BoxActions``), ``obs`` (``(B, D)``
  float32), ``started``;
* ``observation_space()`` — the single-user Box;
* ``reset_all(rng, reseeded)``, ``reset_lanes(lanes, rng)``;
* ``park(lanes)`` — make lanes that are about to be restarted safe to step;
* ``step(actions) -> (reward, terminated)`` and ``step_info`` (per-lane arrays describing
  the step just taken, e.g. satisfaction);
* ``info()`` (ground truth, arrays over lanes) and ``lane_info(lane)`` (one lane, scalars);
* ``get_state()`` / ``set_state(state)`` — every lane's user, the pool of users drawn ahead
  (``take_users``), the per-step stream (``exo_stream``) and the population clock, as plain
  arrays, generator states and scalars (``personarl.statefile`` stores them without
  pickle), so a run can stop and continue exactly where it was.

Both faces draw every random number from one generator (``np_random``) or from a stream it
seeds (``exo_stream``), so a vector env with ``num_envs=1`` reproduces the single env
exactly. What a face returns is the caller's:
observations, rewards, flags and every array in ``info`` are copies, never views of the
core's state, so nothing returned changes when the env steps or resets later (a core's
``info`` may return views; the faces copy).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import types
import weakref
from concurrent.futures import ThreadPoolExecutor
from abc import ABC, abstractmethod
from typing import Any, Callable, Iterable, Mapping

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from personarl.backend import check_threads, plain_float64, standard_normal
from personarl.errors import ConfigError, InvalidActionError, ResetNeededError, check_int
from synth.demographics import AGE_BANDS, CITIES
from synth.population import PopulationConfig, PopulationSampler

__all__ = ["CoreEnv", "CoreVectorEnv", "BaseCore", "DiscreteActions", "BoxActions",
           "PROFILE_FIELDS",
           "InfoTable", "INFO_LEVELS", "MAX_LANES", "check_info_level", "coerce_config", "coerce_population",
           "column_slices", "owned", "resolve_reward_fn", "checked_reward_fn", "generator_state",
           "generator_from_state", "exo_stream", "copy_records", "RecordCore", "lane_field",
           "LaneBlocks"]

INFO_LEVELS = ("full", "none")
#: the most lanes a core may have (2^20: gigabytes of state per env already)
MAX_LANES = 1 << 20


def check_info_level(info_level: str) -> str:
    """Return ``info_level`` or raise ``ConfigError`` listing the valid levels."""
    if info_level not in INFO_LEVELS:
        raise ConfigError(f"info_level={info_level!r}; valid: {list(INFO_LEVELS)}")
    return info_level


def coerce_config(value: Any, cls: type, label: str) -> Any:
    """``None`` -> ``cls()``, a mapping -> ``cls(**mapping)``, an instance -> itself; an
    unknown key raises ``ConfigError`` listing the valid ones."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        try:
            return cls(**dict(value))
        except TypeError as exc:
            raise ConfigError(f"{label}: {exc}; valid keys are "
                              f"{sorted(cls.__dataclass_fields__)}") from None
    raise ConfigError(f"{label} must be a {cls.__name__} or a mapping, got {value!r}")


def coerce_population(population: Any) -> PopulationSampler:
    """A ``PopulationSampler`` from a sampler, a ``PopulationConfig``, a mapping or ``None``."""
    if isinstance(population, PopulationSampler):
        return population
    return PopulationSampler(coerce_config(population, PopulationConfig, "population"))


def resolve_reward_fn(reward_fn: Callable[..., np.ndarray] | None, reward_weights: Any,
                      weights_cls: type) -> Callable[..., np.ndarray]:
    """The env's reward function: an injected ``reward_fn``, or ``weights_cls`` (from
    ``reward_weights``: an instance, a mapping or ``None``) turned into one; not both."""
    if reward_fn is not None and reward_weights is not None:
        raise ConfigError("give reward_weights or reward_fn, not both (a reward_fn has its "
                          "own weights)")
    if reward_fn is not None:
        if not callable(reward_fn):
            raise ConfigError(f"reward_fn={reward_fn!r} is not callable")
        if linear_weights(reward_fn, weights_cls) is not None:
            return reward_fn              # one of ours (``weights_cls(...).function()``)
        return checked_reward_fn(reward_fn)
    return coerce_config(reward_weights, weights_cls, "reward_weights").function()


def linear_weights(reward_fn: Callable[..., Any], weights_cls: type) -> np.ndarray | None:
    """The weights (fields in order) of a reward function made by
    ``weights_cls(...).function()``, which a compiled kernel computes itself; ``None`` for
    any other function, which the kernels call back."""
    weights = getattr(reward_fn, "weights", None)
    return (np.array(dataclasses.astuple(weights), dtype=np.float64)
            if isinstance(weights, weights_cls) else None)


def checked_reward_fn(reward_fn: Callable[..., Any]) -> Callable[..., np.ndarray]:
    """An injected reward function, held to its contract: it is called elementwise on
    arrays of one shape and must return finite numbers of that shape (or one number for
    all). What it returns is made a float64 array; anything else — an exception, another
    shape, text, NaN or ±inf — becomes a ``ConfigError`` naming it (the faces then require
    a ``reset()``: the step was cut short)."""
    def checked(*args: np.ndarray) -> np.ndarray:
        shape = np.broadcast_shapes(*(np.shape(a) for a in args))
        try:
            value = reward_fn(*args)
        except Exception as exc:          # the user's code: report it as their input
            raise ConfigError(f"reward_fn raised {type(exc).__name__}: {exc}") from exc
        out = np.asarray(value)
        if out.dtype.kind not in "biuf":
            raise ConfigError(f"reward_fn returned {out.dtype} values ({value!r:.60}); it "
                              f"must return numbers of shape {shape} (one per user)")
        try:
            out = np.broadcast_to(out, shape).astype(np.float64)
        except ValueError:
            raise ConfigError(f"reward_fn returned shape {out.shape}; it must return shape "
                              f"{shape} (one reward per user) or one number") from None
        if not np.isfinite(out).all():
            raise ConfigError(f"reward_fn returned non-finite rewards "
                              f"({out[~np.isfinite(out)][:3]}); rewards must be finite")
        return out
    checked.checked_source = reward_fn    # type: ignore[attr-defined]
    return checked


def owned(info: Mapping[str, Any]) -> dict[str, Any]:
    """``info`` with every array copied: what an env returns is the caller's and must not
    change when the env steps or resets later (house style, rule 16)."""
    return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in info.items()}


#: NumPy's bit generators, by the name their ``state`` dict carries
_BIT_GENERATORS = {cls.__name__: cls for cls in (np.random.PCG64, np.random.PCG64DXSM,
                                                  np.random.MT19937, np.random.Philox,
                                                  np.random.SFC64)}


def generator_state(rng: np.random.Generator | None) -> dict[str, Any] | None:
    """``rng``'s bit generator state (a JSON-able dict), or ``None`` for no generator."""
    return None if rng is None else rng.bit_generator.state


def generator_from_state(state: Mapping[str, Any] | None) -> np.random.Generator | None:
    """A generator continuing exactly where the one ``generator_state`` saved was.

    Raises:
        ConfigError: the state names no NumPy bit generator (valid names listed).
    """
    if state is None:
        return None
    name = state.get("bit_generator") if isinstance(state, Mapping) else None
    if name not in _BIT_GENERATORS:
        raise ConfigError(f"a generator state names bit generator {name!r}; valid: "
                          f"{sorted(_BIT_GENERATORS)}")
    bit_generator = _BIT_GENERATORS[name]()
    try:
        bit_generator.state = dict(state)
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(f"not a {name} generator state: {exc}") from None
    return np.random.Generator(bit_generator)


def exo_stream(rng: np.random.Generator) -> np.random.Generator:
    """The per-step stream of a core, seeded from the env's generator ``rng``.

    A core that draws its exogenous noise per step (for all lanes at once, a fixed count
    per step) keeps it apart from the users' stream: a lane restarting draws a user from
    ``rng`` without moving the per-step stream, so every policy facing the same seed sees
    the same noise at the same (lane, step) — common random numbers — and the same users
    in the same order."""
    return np.random.Generator(np.random.PCG64(rng.integers(0, 2**63, size=4)))


def copy_records(dst: np.ndarray, rows: np.ndarray, src: np.ndarray) -> None:
    """``dst[rows] = src`` for arrays of one record dtype, copied as raw bytes (several
    times faster than NumPy's field-by-field copy of structured rows)."""
    dst.view(np.uint8).reshape(len(dst), -1)[rows] = \
        np.ascontiguousarray(src).view(np.uint8).reshape(len(src), -1)


def _array_record(value: Any) -> bool:
    """A dataclass instance whose every field is an array (a batch of users' state)."""
    return (dataclasses.is_dataclass(value) and not isinstance(value, type)
            and all(isinstance(getattr(value, f.name), np.ndarray)
                    for f in dataclasses.fields(value)))


def _state_problems(key: str, mine: Any, theirs: Any, lanes: int) -> list[str]:
    """How a saved state value ``theirs`` does not fit this core's ``mine``: the same kind,
    the same dtypes and dimensions, and — for arrays over the lanes (first axis ``lanes``) —
    the same shape (another lane count, horizon or observation size shows there)."""
    def kind(v: Any) -> str:
        if isinstance(v, np.ndarray):
            return f"a {v.ndim}-d {v.dtype} array"
        return "a mapping" if isinstance(v, Mapping) else type(v).__name__

    def array_problem(where: str, a: np.ndarray, b: Any) -> str | None:
        if not isinstance(b, np.ndarray) or b.dtype != a.dtype or b.ndim != a.ndim:
            return f"{where} is {kind(b)}, this core's is {kind(a)}"
        if a.ndim and a.shape[0] == lanes and b.shape != a.shape:
            return f"{where} has shape {b.shape}, this core's is {a.shape}"
        return None

    if isinstance(mine, np.ndarray):
        found = array_problem(repr(key), mine, theirs)
        return [found] if found else []
    if isinstance(mine, dict):
        if not isinstance(theirs, Mapping):
            return [f"{key!r} is {kind(theirs)}, this core's is a mapping"]
        if mine and theirs and set(mine) != set(theirs):     # empty: before the first step
            return [f"{key!r} has keys {sorted(theirs)}, this core's {sorted(mine)}"]
        return [p for k in set(mine) & set(theirs)
                if (p := array_problem(f"{key}.{k}", mine[k], theirs[k]))]
    if isinstance(mine, (int, np.integer)) and not isinstance(mine, bool):
        # the integers a core saves are counts (a clock, a position in the pool)
        if isinstance(theirs, bool) or not isinstance(theirs, (int, np.integer)) or theirs < 0:
            return [f"{key!r} is {theirs!r}, not a count (an integer >= 0)"]
        return []
    if type(theirs) is not type(mine) and not (
            isinstance(mine, (float, np.floating))
            and isinstance(theirs, (int, float, np.generic)) and not isinstance(theirs, bool)):
        return [f"{key!r} is {kind(theirs)}, this core's is {kind(mine)}"]
    return []


def _digest(digest: Any, value: Any, seen: set[int] | None = None) -> bool:
    """Feed ``value`` into ``digest``: numbers, strings, slices, dtypes, arrays, containers
    of them, and the attributes of objects (a model's or a sampler's settings, a reward
    function's weights), each object once; ``False`` when nothing of those kinds was in
    it."""
    if value is None or isinstance(value, (bool, int, float, str, slice, np.generic,
                                           np.dtype)):
        digest.update(repr(value).encode())
        return True
    if isinstance(value, np.ndarray):
        digest.update(f"{value.dtype.str}{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
        return True
    seen = set() if seen is None else seen
    if id(value) in seen or isinstance(value, (type, types.ModuleType)):
        return False
    seen.add(id(value))
    if isinstance(value, Mapping):
        items = sorted(value.items(), key=lambda kv: repr(kv[0]))
    elif isinstance(value, (tuple, list)):
        items = list(enumerate(value))
    elif hasattr(value, "__dict__"):
        items = sorted(vars(value).items())
    else:
        return False
    found = False
    for key, item in items:
        digest.update(repr(key).encode())
        found = _digest(digest, item, seen) or found
    return found


#: configuration a saved state moves across: the lane count (the shapes say it), the
#: backend, whether the ground truth is computed and a learned reward paid instead of the
#: env's (``envs.learned_reward``: what is simulated stays the same); the threads a step
#: runs on are scratch (``LaneBlocks``)
PORTABLE = frozenset({"B", "rows", "backend", "with_truth", "learned_reward"})


def configuration_differences(mine: Mapping[str, str], theirs: Mapping[str, str]
                              ) -> list[str]:
    """The attributes whose digests differ between two ``BaseCore.configuration`` mappings,
    sorted — what makes two cores simulate different things (``PORTABLE`` aside)."""
    return sorted(k for k in {*mine, *theirs} - PORTABLE if mine.get(k) != theirs.get(k))


def _configuration_problems(mine: Mapping[str, str], theirs: Any) -> list[str]:
    """Why a state's saved ``configuration`` is not this core's (``BaseCore.configuration``)."""
    if not isinstance(theirs, Mapping):
        return [f"'configuration' is a {type(theirs).__name__}, not the mapping "
                "get_state() saves"]
    differ = configuration_differences(mine, theirs)
    if not differ:
        return []
    return [f"it was saved under another configuration of the env ({', '.join(differ)} "
            "differ); build the env with the arguments the state was saved with"]


def _copied(value: Any) -> Any:
    """A copy of a state value; a record of arrays becomes a mapping of its fields, a
    generator its state."""
    if isinstance(value, np.random.Generator):
        return generator_state(value)
    if _array_record(value):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: np.array(v, copy=True) for k, v in value.items()}
    return value.copy() if isinstance(value, np.ndarray) else value


def column_slices(widths: Iterable[tuple[str, int]]) -> dict[str, slice]:
    """Consecutive column ranges for named blocks of the given widths, in order."""
    out, start = {}, 0
    for name, width in widths:
        out[name] = slice(start, start + width)
        start += width
    return out


class _OwnViews:
    """An object holding views of its own arrays (``view_fields``). A deep copy of a view
    is a separate array, so a copy or a pickle takes everything but these and builds them
    again over its own arrays (``_views``; a field with a class default of ``None`` is
    rebuilt lazily instead)."""

    #: the attributes that are views of the object's own arrays
    view_fields: tuple[str, ...] = ()

    def _views(self) -> None:
        """Build the ``view_fields`` needed at once, on construction and in a copy or an
        unpickled object; none by default."""

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k not in self.view_fields}

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)
        self._views()


class BaseCore(_OwnViews, ABC):
    """What the Gymnasium faces need from a batched core, and the plumbing all cores share.

    Subclasses set ``B``, ``actions``, ``rows`` (``arange(B)``), ``t``, ``obs`` (every
    feature in [0, 1]), ``obs_size`` and ``cols`` (observation block name -> column slice),
    ``horizon`` (the most decisions an episode can have), ``sampler`` (the
    ``PopulationSampler`` users come from: its archetype names label the per-archetype
    tables), ``started``, ``population_time``, ``with_truth`` and ``step_info``, and
    implement ``reset_lanes``, ``step`` and ``info``. ``info`` must carry what evaluation
    reads: ``latent_primary`` and ``is_bot`` ``(B,)``, ``oracle_action`` (``(B,)`` or
    ``(B, dim)``), ``expected_reward`` ``(B, K)`` for discrete actions, and the record's
    ``safety_keys`` (``envs.contract`` checks all of it).

    Optional plumbing: a core that draws users ahead defines ``generate_users`` and a
    ``pool``/``pool_pos`` and calls ``take_users``; one that draws per-step noise for all
    lanes sets ``exo_rng`` (re-derived on every seeded restart by ``exo_stream``); one that
    keeps work arrays or caches lists them in ``scratch_fields``; ``lane_info`` may be
    overridden with a faster one-lane readout (``InfoTable``).
    """

    B: int
    #: the attributes ``get_state`` saves (each core lists its own)
    state_fields: tuple[str, ...] = ()
    #: work arrays a step overwrites before it reads them, caches rebuilt after
    #: ``set_state`` and the threads a step runs on (``LaneBlocks``): neither state nor
    #: configuration (``envs.contract`` skips them)
    scratch_fields: tuple[str, ...] = ()
    #: users drawn ahead (``take_users``: name -> array over users; ``None``: the core
    #: does not pool) and the position of the next one
    pool: dict[str, np.ndarray] | None = None
    pool_pos: int = 0
    #: users drawn ahead at a time (``take_users``)
    pool_chunk: int = 512
    #: the stream of the per-step exogenous draws (cores that use one set it on restart)
    exo_rng: np.random.Generator | None = None
    actions: "DiscreteActions | BoxActions"
    obs: np.ndarray
    step_info: dict[str, np.ndarray]
    #: a learned reward paid instead of the env's (``envs.learned_reward``; None: the env's)
    learned_reward: Any = None
    #: the lanes' blocks a compiled step runs on (``LaneBlocks``; None: a core without)
    _blocks: "LaneBlocks | None" = None

    @abstractmethod
    def reset_lanes(self, lanes: np.ndarray, rng: np.random.Generator) -> None:
        """Start new users in ``lanes``."""

    def step_paid(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``step``, paying the learned reward of the observation acted on and the action
        where one is set; the env's own reward is then ``step_info["true_reward"]``."""
        if self.learned_reward is None:
            return self.step(action)
        before = self.obs.copy()
        reward, terminated = self.step(action)
        self.step_info = {**self.step_info, "true_reward": np.array(reward, dtype=np.float64)}
        return self.learned_reward(before, action), terminated

    @abstractmethod
    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One decision for every lane: ``(reward, terminated)``; set ``step_info``."""

    @abstractmethod
    def info(self) -> dict[str, np.ndarray]:
        """Ground truth for every lane's current decision (call ``require_truth`` first);
        arrays may be views of the core's state (the faces copy them)."""

    def require_truth(self) -> None:
        """Refuse to report ground truth the core was built without."""
        if not self.with_truth:
            raise RuntimeError("this core was built without ground truth (info_level='none')")

    def observation_space(self) -> spaces.Box:
        """Every observed feature is in [0, 1]."""
        return spaces.Box(0.0, 1.0, shape=(self.obs_size,), dtype=np.float32)

    def labels(self) -> dict[str, Any]:
        """The observation's named column blocks (``name -> [start, stop)``) and the
        actions' names — what a policy bundle records so its users can read both."""
        return {"observation_columns": {name: [s.start, s.stop] for name, s in self.cols.items()},
                "action_names": list(self.actions.names)}

    def reset_all(self, rng: np.random.Generator, reseeded: bool) -> None:
        """Start every lane with a new user (a seeded reset restarts the population clock)."""
        if reseeded or not self.started:
            self.restart_population(rng)
        self.reset_lanes(self.rows, rng)
        self.started = True

    def restart_population(self, rng: np.random.Generator) -> None:
        """Forget everything drawn for future users — the same seed, the same users — and
        derive the per-step stream from ``rng`` (``exo_stream``)."""
        self.population_time = 0
        if self.pool is not None:
            self.pool, self.pool_pos = {}, 0
        if self.exo_rng is not None:
            self.exo_rng = exo_stream(rng)

    def generate_users(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``n`` new users, every array with ``n`` rows (cores that pool users define it)."""
        raise NotImplementedError(f"{type(self).__name__} does not pool its users")

    def take_users(self, m: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """The next ``m`` users of the pool, which is refilled ``pool_chunk`` users at a time
        (``generate_users``): a batch-of-one env pays the vectorised cost of drawing a user
        once per chunk, not once per episode, and users come in one order whatever the
        policy (the same seed, the same users)."""
        left = (len(next(iter(self.pool.values()))) - self.pool_pos) if self.pool else 0
        if left >= m:
            lo = self.pool_pos
            self.pool_pos += m
            return {k: v[lo:lo + m] for k, v in self.pool.items()}
        fresh = self.generate_users(max(self.pool_chunk, m - left), rng)
        # the pool's last users, then the fresh chunk's first (only these m are copied)
        taken = {k: np.concatenate([v[self.pool_pos:], fresh[k][:m - left]])
                 for k, v in self.pool.items()} if left else {
            k: v[:m] for k, v in fresh.items()}
        self.pool, self.pool_pos = fresh, m - left
        return taken

    def get_state(self) -> dict[str, Any]:
        """A copy of everything that changes as the core steps: the attributes named in
        ``state_fields`` (arrays, mappings of arrays, records of arrays — dataclasses whose
        fields are all arrays, saved as mappings — and scalars). The rest (samplers,
        models, reward functions, sizes, layouts) is configuration and never changes after
        construction (``tests/test_env_contract.py`` checks both for every env)."""
        state = {k: _copied(getattr(self, k)) for k in self.state_fields}
        state["configuration"] = self.configuration()
        return state

    def configuration(self) -> dict[str, str]:
        """A short digest of each configuration attribute — every attribute that is not
        state or scratch: numbers, strings, arrays, containers of them and the attributes
        of objects (the population sampler, the models, a reward function's weights),
        each named by the core's attribute that holds it. Saved with the state, so that
        ``set_state`` refuses a state saved under another configuration (a horizon, a
        model's parameters, a population) even where the lanes' shapes agree, except in
        ``PORTABLE``; the contract checks that stepping never changes it.
        """
        skip = {*self.state_fields, *self.scratch_fields}
        digests = {}
        for name, value in sorted(vars(self).items()):
            digest = hashlib.sha256()
            if name not in skip and _digest(digest, value):
                digests[name] = digest.hexdigest()[:12]
        return digests

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Continue from ``get_state()`` of a core built with the same arguments.

        Raises:
            ConfigError: the state's fields, kinds, dtypes or lane shapes are not this
                core's (it was saved from another env, configuration or version); nothing
                is changed then.
        """
        name = type(self).__name__
        article = "an" if name[0] in "AEIOU" else "a"
        if not isinstance(state, Mapping):
            raise ConfigError(f"cannot restore {article} {name} from a "
                              f"{type(state).__name__}; expected the mapping get_state() "
                              "returns")
        mine = self.get_state()
        problems = [f"missing {k!r}" for k in mine if k not in state]
        problems += [f"unexpected {k!r}" for k in state if k not in mine]
        pool = state.get("pool")
        if "pool_pos" in mine and isinstance(pool, Mapping) and pool:
            size = min(len(v) for v in pool.values() if hasattr(v, "__len__"))
            if isinstance(state.get("pool_pos"), (int, np.integer)) and state["pool_pos"] > size:
                problems.append(f"'pool_pos' is {state['pool_pos']}, past the pool's {size} "
                                "users")
        for k in [k for k in mine if k in state]:
            if k == "configuration":
                problems += _configuration_problems(mine[k], state[k])
            elif isinstance(getattr(self, k), np.random.Generator):
                try:
                    if generator_from_state(state[k]) is None:
                        raise ConfigError("no generator state (None)")
                except ConfigError as exc:
                    problems.append(f"{k!r}: {exc}")
            else:
                problems += _state_problems(k, mine[k], state[k], self.B)
        if not problems:
            problems = self._value_problems(state)
        if problems:
            raise ConfigError(f"cannot restore {article} {name} from this state: "
                              + "; ".join(sorted(problems)))
        for k in self.state_fields:
            current = getattr(self, k)
            if isinstance(current, np.random.Generator):
                setattr(self, k, generator_from_state(state[k]))
                continue
            value = _copied(state[k])
            setattr(self, k, dataclasses.replace(current, **value) if _array_record(current)
                    else value)

    def _value_problems(self, state: Mapping[str, Any]) -> list[str]:
        """Values of a well-formed state that this core cannot step from (``set_state``
        asks once kinds and shapes agree); none by default."""
        return []

    def close(self) -> None:
        """Stop the threads a compiled step runs on, if any (``LaneBlocks``; the faces'
        ``close``)."""
        if self._blocks is not None:
            self._blocks.close()

    def park(self, lanes: np.ndarray) -> None:
        """Lanes about to restart: a valid step index (their state is replaced anyway)."""
        self.t[lanes] = 0

    def lane_info(self, lane: int) -> dict[str, Any]:
        """``info()`` for one lane (the single env's view): Python scalars and copied arrays,
        the caller's own (nothing in it changes when the core steps)."""
        return {k: (v[lane].item() if v.ndim == 1 else v[lane].copy())
                for k, v in self.info().items()}


def lane_field(name: str) -> property:
    """A field of a core's lane records (``lanes[name]``) as an attribute: an array over
    the lanes, a view."""
    return property(lambda self: self.lanes[name], doc=f"``lanes[{name!r}]``: a view")


class LaneBlocks:
    """The lanes cut into ``num_threads`` contiguous blocks that a compiled step kernel
    runs on at once, one thread each (``run``): the kernels release the GIL, and lanes
    never read one another, so a block's kernel call only touches its own rows and every
    trajectory is the same bits whatever the thread count.

    The per-step draws stay in the env's generator, drawn in full before the kernels run;
    only the lane loop is shared out. A core stepped on one thread has one block and no
    thread pool; otherwise ``num_threads - 1`` worker threads, the calling thread running
    the first block. Threads pay at a few thousand lanes (the pool's hand-off costs tens of
    microseconds a step); the numbers are in BENCHMARKS.md.

    Args:
        num_lanes: the core's ``B``.
        num_threads: threads a step may use, 1 to ``personarl.backend.MAX_THREADS``
            (at most ``B`` blocks).
        backend: the core's resolved backend: more than one thread needs ``"numba"`` (the
            NumPy reference holds the GIL).

    Raises:
        ConfigError: ``num_threads`` is not an integer in range, or is above 1 on the NumPy
            backend.
    """

    def __init__(self, num_lanes: int, num_threads: int, backend: str) -> None:
        self.num_threads = check_threads(num_threads, backend)
        edges = np.linspace(0, num_lanes, min(num_threads, num_lanes) + 1).round()
        #: each block's rows, in lane order
        self.slices = [slice(int(lo), int(hi)) for lo, hi in zip(edges[:-1], edges[1:])]
        self._pool: ThreadPoolExecutor | None = None
        self._pid = 0                    # the process the pool's threads belong to

    def _workers(self) -> ThreadPoolExecutor | None:
        """The worker threads (``None`` for one block), started on first use and again in
        a process forked or unpickled since: threads do not cross either."""
        if len(self.slices) == 1:
            return None
        if self._pool is None or self._pid != os.getpid():
            self._pool = ThreadPoolExecutor(len(self.slices) - 1,
                                            thread_name_prefix="personarl-lanes")
            self._pid = os.getpid()
            weakref.finalize(self, self._pool.shutdown, wait=False)
        return self._pool

    def close(self) -> None:
        """Stop the worker threads (a later step starts them again)."""
        if self._pool is not None and self._pid == os.getpid():
            self._pool.shutdown(wait=True)
        self._pool = None

    def __getstate__(self) -> dict[str, Any]:
        """A copy or a pickle holds the blocks, not the threads."""
        return {**vars(self), "_pool": None, "_pid": 0}

    def uniforms_then_normals(self, rng: np.random.Generator, uniforms: np.ndarray,
                              normals: np.ndarray, backend: str) -> tuple[np.ndarray,
                                                                          np.ndarray]:
        """``rng.random(out=uniforms)``, then ``standard_normal(rng, out=normals)``: the
        same numbers, and ``rng`` left where those two calls leave it.

        With a worker thread and a PCG64 generator the normals are drawn meanwhile, by the
        worker, from a twin of ``rng`` jumped past the uniforms (``PCG64.advance``: a
        uniform double takes one 64-bit output, so ``uniforms.size`` of them), and ``rng``
        then takes the twin's state (less the 32-bit half-word ``advance`` clears, which
        neither draw touches). Both fills release the GIL. Any other case draws in turn.
        ``rng`` is a core's own per-step stream: no other thread may draw from it meanwhile.
        Outputs NumPy could not fill (read-only, strided, another dtype) or that overlap
        are drawn in turn, so they fail or mix exactly as the two calls would.
        """
        bits = rng.bit_generator
        pool = self._workers()
        if (pool is None or type(bits) is not np.random.PCG64
                or not (plain_float64(uniforms) and plain_float64(normals))
                or np.may_share_memory(uniforms, normals)):
            rng.random(out=uniforms)
            return uniforms, standard_normal(rng, out=normals, backend=backend)
        start = bits.state
        twin = np.random.PCG64()
        twin.state = start
        twin.advance(uniforms.size)
        future = pool.submit(standard_normal, np.random.Generator(twin), out=normals,
                             backend=backend)
        rng.random(out=uniforms)
        future.result()
        end = twin.state
        end["has_uint32"], end["uinteger"] = start["has_uint32"], start["uinteger"]
        bits.state = end
        return uniforms, normals

    def run(self, kernel: Callable[..., Any], per_call: tuple[np.ndarray, ...],
            bound: list[tuple]) -> None:
        """``kernel(*per_call, *bound[b])`` for every block ``b`` at once, each per-call array
        cut to the block's rows (one of length 0, a placeholder, passed whole); returns
        when every block is done, raising the first block's error if any failed."""
        pool = self._workers()
        if pool is None:
            kernel(*per_call, *bound[0])
            return
        calls = [(*(a[sl] if len(a) else a for a in per_call), *args)
                 for sl, args in zip(self.slices, bound)]
        futures = [pool.submit(kernel, *args) for args in calls[1:]]
        error = None
        try:
            kernel(*calls[0])
        except BaseException as exc:          # the other blocks still write: wait for them
            error = exc
        for future in futures:
            failed = future.exception()
            error = error or failed
        if error is not None:
            raise error


#: the users' quasi-identifiers (``synth.demographics``): every env's lane record carries
#: them from ``PopulationSampler.sample`` into ``info`` (``RecordCore.profile``; the
#: compiled kernels write them into the truth table), so logged data can hold them; no
#: observation or reward reads them
PROFILE_FIELDS = (("age_band", np.int64), ("city", np.int64))


class RecordCore(BaseCore):
    """A core whose lanes are one record array ``lanes`` (a restart copies one row per
    lane, ``copy_records``) and whose compiled backend keeps the ground truth in an
    ``InfoTable`` ``truth``, filled by ``_fill_truth`` when ``_truth_stale``; the kernels'
    arguments are bound once in ``_bound`` (rebound after ``set_state``, which replaces the
    arrays)."""

    backend: str
    truth: "InfoTable"
    _bound: Any = None
    _truth_stale: bool = True
    view_fields = ("_bound", "_step_views")
    #: record fields a subclass reads as attributes — ``core.t`` is ``core.lanes["t"]``,
    #: an array over the lanes (a view); ``lane_field`` names one under another name
    lane_fields: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in cls.__dict__.get("lane_fields", ()):
            if name in cls.__dict__:
                raise TypeError(f"{cls.__name__}.{name} is both a lane field and an attribute")
            setattr(cls, name, lane_field(name))

    def _allocate(self, record: np.dtype, obs_size: int) -> None:
        """The lanes' records and observations, and a core that has not started: an empty
        pool, a placeholder per-step stream (seeded on the first reset), no step yet."""
        self.record, self.lanes = record, np.zeros(self.B, record)
        self.obs = np.zeros((self.B, obs_size), dtype=np.float32)
        self.rows = np.arange(self.B)
        self.pool, self.pool_pos = {}, 0
        self.exo_rng = np.random.default_rng(0)
        self.started, self.population_time = False, 0
        self.step_info: dict[str, np.ndarray] = {}

    @abstractmethod
    def _fill_truth(self) -> Any:
        """Bring ``truth`` up to date (the ``numba`` backend)."""

    def set_state(self, state: Mapping[str, Any]) -> None:
        super().set_state(state)
        self._bound, self._truth_stale = None, True

    def profile(self) -> dict[str, np.ndarray]:
        """The lanes' quasi-identifiers (``PROFILE_FIELDS``), views of the records."""
        return {name: self.lanes[name] for name, _ in PROFILE_FIELDS}

    @staticmethod
    def copy_profile(users: np.ndarray, pop: Any) -> None:
        """Fill new ``users`` records' quasi-identifiers from the ``Population`` drawn."""
        for name, _ in PROFILE_FIELDS:
            users[name] = getattr(pop, name)

    def lane_ranges(self) -> dict[str, tuple[int, int]]:
        """The valid values (inclusive) of the record's index fields — a step index, a
        task, an epoch — which the kernels use to index tables: ``set_state`` refuses a
        state whose lanes or pool hold others (a hand-edited or corrupted file), which
        NumPy would fail on and compiled code would read past an array with. Here the
        fields every env's record may have — the step ``t`` (``0..horizon``), the
        population epoch ``table_id`` and the quasi-identifiers (``PROFILE_FIELDS``) — and
        an env adds its own."""
        names = self.record.names
        ranges = {"t": (0, self.horizon)} if "t" in names else {}
        if "table_id" in names:
            ranges["table_id"] = (0, len(self.sampler.tables) - 1)
        if "age_band" in names:                 # the quasi-identifiers index label tables
            ranges.update(age_band=(0, len(AGE_BANDS) - 1), city=(0, len(CITIES) - 1))
        return ranges

    def _value_problems(self, state: Mapping[str, Any]) -> list[str]:
        problems = []
        pool = state.get("pool")
        for where, records in (("lanes", state.get("lanes")),
                               ("pool", pool.get("users") if isinstance(pool, Mapping)
                                else None)):
            if not isinstance(records, np.ndarray) or records.dtype != self.record:
                continue
            for name, (low, high) in self.lane_ranges().items():
                values = records[name]
                if values.size and (values.min() < low or values.max() > high):
                    problems.append(f"{where!r} field {name!r} holds {values.min()}.."
                                    f"{values.max()}; valid: {low}..{high}")
        return problems

    def lane_info(self, lane: int) -> dict[str, Any]:
        """``info()`` for one lane: Python scalars and copied vectors (the compiled
        backend reads them out of ``truth`` in a few calls)."""
        if self.backend == "numba":
            self.require_truth()
            self._fill_truth()
            return self.truth.lane(lane)
        return super().lane_info(lane)


class InfoTable(_OwnViews):
    """Per-lane ``info`` packed by type, so a compiled kernel fills it in one pass and the
    single env reads one lane out in a handful of calls.

    Scalars live in three arrays — ``floats`` ``(B, len(float_names))`` float64, ``ints``
    ``(B, len(int_names))`` int64, ``flags`` ``(B, len(flag_names))`` bool — and the vector
    keys side by side, in the given order, in ``block`` ``(B, Σ widths)`` float64
    (``vectors`` names each one's columns).
    """

    view_fields = ("vectors",)

    def __init__(self, num_lanes: int, float_names: Iterable[str], int_names: Iterable[str],
                 flag_names: Iterable[str], vectors: Mapping[str, int]) -> None:
        self.float_names, self.int_names = tuple(float_names), tuple(int_names)
        self.flag_names = tuple(flag_names)
        self.floats = np.zeros((num_lanes, len(self.float_names)))
        self.ints = np.zeros((num_lanes, len(self.int_names)), dtype=np.int64)
        self.flags = np.zeros((num_lanes, len(self.flag_names)), dtype=bool)
        self._slices = column_slices(vectors.items())
        self.block = np.zeros((num_lanes, sum(vectors.values())))
        self._scalar_names = self.float_names + self.int_names + self.flag_names
        self._views()

    def _views(self) -> None:
        """``vectors``: each vector key's columns of ``block``, a view."""
        self.vectors = {name: self.block[:, sl] for name, sl in self._slices.items()}

    def columns(self) -> dict[str, np.ndarray]:
        """Every key as an array over the lanes (views: the faces copy)."""
        out: dict[str, np.ndarray] = {}
        for names, table in ((self.float_names, self.floats), (self.int_names, self.ints),
                             (self.flag_names, self.flags)):
            out.update((name, table[:, j]) for j, name in enumerate(names))
        out.update(self.vectors)
        return out

    def lane(self, lane: int) -> dict[str, Any]:
        """One lane: Python ``float``/``int``/``bool`` scalars and copied vectors."""
        out = dict(zip(self._scalar_names, self.floats[lane].tolist()
                       + self.ints[lane].tolist() + self.flags[lane].tolist()))
        row = self.block[lane]
        for name, sl in self._slices.items():
            out[name] = row[sl].copy()
        return out


def _check_face_state(state: Any, keys: tuple[str, ...]) -> None:
    """A face's saved state is a mapping with exactly ``keys``."""
    if not isinstance(state, Mapping) or set(state) != set(keys):
        got = sorted(state) if isinstance(state, Mapping) else type(state).__name__
        raise ConfigError(f"not an env state: expected a mapping with keys {sorted(keys)}, "
                          f"got {got}")


class DiscreteActions:
    """``Discrete(k)`` actions with a name each: validation of one action and of a batch."""

    def __init__(self, k: int, names: Iterable[str]) -> None:
        self.k, self.names = k, tuple(names)
        if len(self.names) != k:
            raise ValueError(f"{k} actions need {k} names, got {self.names}")

    def space(self) -> spaces.Discrete:
        return spaces.Discrete(self.k)

    def one(self, action: Any) -> np.ndarray:
        """A batch of one from a single action (integers ``0..k-1``, NumPy ints included;
        not floats or bools, as in ``batch``)."""
        integer = (isinstance(action, (int, np.integer)) and not isinstance(action, bool)) or (
            isinstance(action, np.ndarray) and action.shape == () and action.dtype.kind in "iu")
        if not integer:
            raise InvalidActionError(f"action {action!r} is not an integer in [0, {self.k})")
        a = int(action)
        if not 0 <= a < self.k:
            raise InvalidActionError(f"action {action!r} is outside Discrete({self.k}): valid "
                                     f"are integers 0..{self.k - 1}")
        return np.array([a], dtype=np.int64)

    def batch(self, actions: Any, n: int) -> np.ndarray:
        actions = np.asarray(actions)
        if (actions.shape != (n,) or actions.dtype.kind not in "iu"
                or actions.min() < 0 or actions.max() >= self.k):
            raise InvalidActionError(
                f"actions must be {n} integers in [0, {self.k}); got shape {actions.shape}, "
                f"dtype {actions.dtype}, values {actions!r:.80}")
        return actions


class BoxActions:
    """Continuous actions in ``[0, 1]^dim``: finite values of the right shape are required;
    values outside the box are clipped into it (Gaussian policies sample outside it).
    ``names`` names each dimension."""

    def __init__(self, dim: int, names: Iterable[str]) -> None:
        self.dim, self.names = dim, tuple(names)
        if len(self.names) != dim:
            raise ValueError(f"{dim} action dimensions need {dim} names, got {self.names}")

    def space(self) -> spaces.Box:
        return spaces.Box(0.0, 1.0, shape=(self.dim,), dtype=np.float32)

    def one(self, action: Any) -> np.ndarray:
        return self.batch([action], 1)

    def batch(self, actions: Any, n: int) -> np.ndarray:
        if np.asarray(actions).dtype.kind not in "biuf":
            raise InvalidActionError(f"actions must be real numbers, got {actions!r:.80}")
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != (n, self.dim):
            raise InvalidActionError(f"actions must have shape {(n, self.dim)} (one "
                                     f"{self.dim}-vector per user); got {actions.shape}")
        if not np.isfinite(actions).all():
            raise InvalidActionError(f"actions must be finite; got {actions!r:.80}")
        return np.clip(actions, 0.0, 1.0)


class CoreEnv(gym.Env[np.ndarray, Any]):
    """The batch-of-one view of a core; returns Python ``float``/``bool`` as Gymnasium
    expects. Subclasses build the core and carry the env's docstring-spec."""

    metadata = {"render_modes": []}

    def __init__(self, core: BaseCore, info_level: str) -> None:
        super().__init__()
        self.info_level = check_info_level(info_level)
        self._core = core
        self.observation_space = core.observation_space()
        self.action_space = core.actions.space()
        self._done = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._done = True                 # until the reset has gone through
        try:
            self._core.reset_all(self.np_random, reseeded=seed is not None)
            info = self._info(stepped=False)
        except ConfigError as exc:        # e.g. an injected reward_fn failed
            raise ConfigError(f"{exc} (the reset was cut short)") from exc
        self._done = False
        return self._core.obs[0].copy(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._done:
            raise ResetNeededError("call reset() before step() (the episode has ended or "
                                   "never started)")
        action = self._core.actions.one(action)
        try:
            reward, terminated = self._core.step_paid(action)
            info = self._info(stepped=True)
        except ConfigError as exc:        # e.g. an injected reward_fn failed mid-step
            self._done = True
            raise ConfigError(f"{exc} (the step was cut short: call reset())") from exc
        self._done = bool(terminated[0])
        return self._core.obs[0].copy(), float(reward[0]), self._done, False, info

    def close(self) -> None:
        """Stop the core's step threads, if any (``num_threads``)."""
        if hasattr(self, "_core"):          # not when the constructor failed
            self._core.close()

    def labels(self) -> dict[str, Any]:
        """Observation column blocks and action names (``BaseCore.labels``)."""
        return self._core.labels()

    def get_state(self) -> dict[str, Any]:
        """The env's user, its generator and whether it needs a reset (``set_state``)."""
        return dict(core=self._core.get_state(), done=self._done,
                    np_random=generator_state(self._np_random),
                    np_random_seed=self._np_random_seed)

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Continue exactly from ``get_state()`` of an env built with the same arguments.

        Raises:
            ConfigError: the state is not one of this env's; the env is unchanged then.
        """
        _check_face_state(state, ("core", "done", "np_random", "np_random_seed"))
        rng = generator_from_state(state["np_random"])
        self._core.set_state(state["core"])
        self._np_random, self._np_random_seed = rng, state["np_random_seed"]
        self._done = bool(state["done"])

    def _info(self, stepped: bool) -> dict[str, Any]:
        if self.info_level == "none":
            return {}
        info = self._core.lane_info(0)          # the caller's own values already
        if stepped:
            info.update({key: value[0] for key, value in self._core.step_info.items()})
        return info


class CoreVectorEnv(VectorEnv):
    """``num_envs`` users of a core stepped together.

    ``autoreset_mode="next_step"`` (default, what RLlib expects): a lane that terminated
    restarts on the following ``step``, which ignores its action and returns reward 0.
    ``"same_step"`` (what SB3 expects): a terminated lane restarts within the same ``step``;
    the returned observation is the new user's and the last observation of the ended
    episode is in ``info["final_obs"]`` (a ``(B, D)`` array, valid where
    ``info["_final_obs"]``), whatever the ``info_level``; with ``info_level="full"`` the
    ended users' ground truth is in ``info["final_info"]``.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, core: BaseCore, info_level: str, autoreset_mode: str = "next_step"
                 ) -> None:
        self.info_level = check_info_level(info_level)
        modes = {"next_step": AutoresetMode.NEXT_STEP, "same_step": AutoresetMode.SAME_STEP}
        if autoreset_mode not in modes:
            raise ConfigError(f"autoreset_mode={autoreset_mode!r}; valid: {sorted(modes)}")
        self.metadata = {**self.metadata, "autoreset_mode": modes[autoreset_mode]}
        self._same_step = autoreset_mode == "same_step"
        self._core = core
        self.num_envs = core.B
        self.single_observation_space = core.observation_space()
        self.single_action_space = core.actions.space()
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._needs_reset = np.zeros(self.num_envs, dtype=bool)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        try:
            self._core.reset_all(self.np_random, reseeded=seed is not None)
            info = self._infos(None)
        except ConfigError as exc:        # e.g. an injected reward_fn failed
            self._core.started = False
            raise ConfigError(f"{exc} (the reset was cut short)") from exc
        self._needs_reset[:] = False
        return self._core.obs.copy(), info

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                          dict[str, Any]]:
        if not self._core.started:
            raise ResetNeededError("call reset() before step()")
        actions = self._core.actions.batch(actions, self.num_envs)
        try:
            return self._step_same(actions) if self._same_step else self._step_next(actions)
        except ConfigError as exc:        # e.g. an injected reward_fn failed mid-step
            self._core.started = False
            raise ConfigError(f"{exc} (the step was cut short: call reset())") from exc

    def _step_next(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                       np.ndarray, dict[str, Any]]:
        # lanes that ended last step restart instead of stepping (NEXT_STEP); parking makes
        # them safe to step, and reset_lanes overwrites whatever the step did to them
        restart = np.flatnonzero(self._needs_reset)
        if restart.size == self.num_envs:   # nothing to step (and nothing drawn for it: a
            reward = np.zeros(self.num_envs)  # batch of one draws what the single env does)
            terminated = np.zeros(self.num_envs, dtype=bool)
        else:
            self._core.park(restart)
            reward, terminated = (x.copy() for x in self._core.step_paid(actions))
        if restart.size:
            reward[restart] = 0.0
            terminated[restart] = False
            self._core.reset_lanes(restart, self.np_random)
        self._needs_reset = terminated.copy()
        return (self._core.obs.copy(), reward, terminated,
                np.zeros(self.num_envs, dtype=bool), self._infos(restart))

    def _step_same(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                       np.ndarray, dict[str, Any]]:
        reward, terminated = (x.copy() for x in self._core.step_paid(actions))
        ended = np.flatnonzero(terminated)
        final_obs = self._core.obs.copy()
        none = np.zeros(0, dtype=np.int64)
        final_info = self._infos(none) if ended.size and self.info_level == "full" else None
        if ended.size:
            self._core.park(ended)
            self._core.reset_lanes(ended, self.np_random)
        info = self._infos(none)              # the new users, and the step just taken
        info["final_obs"], info["_final_obs"] = final_obs, terminated.copy()
        if final_info is not None:
            info["final_info"], info["_final_info"] = final_info, terminated.copy()
        return (self._core.obs.copy(), reward, terminated,
                np.zeros(self.num_envs, dtype=bool), info)

    def close_extras(self, **kwargs: Any) -> None:
        """Stop the core's step threads, if any (``num_threads``)."""
        if hasattr(self, "_core"):          # not when the constructor failed
            self._core.close()

    def labels(self) -> dict[str, Any]:
        """Observation column blocks and action names (``BaseCore.labels``)."""
        return self._core.labels()

    @property
    def horizon(self) -> int:
        """The most decisions an episode can have."""
        return self._core.horizon

    def reseed_session(self, seed: int) -> None:
        """Draw the per-step noise from the stream of ``seed`` from now on: after a reset,
        the same users in another session (a pre-period of an online experiment). A core
        without a per-step stream draws everything with its users: nothing changes.

        Raises:
            ConfigError: ``seed`` is not a non-negative integer."""
        check_int("seed", seed, 0)
        if self._core.exo_rng is not None:
            self._core.exo_rng = np.random.Generator(np.random.PCG64(seed))

    def get_state(self) -> dict[str, Any]:
        """Every lane's user, the lanes due to restart and the generator (``set_state``)."""
        return dict(core=self._core.get_state(), needs_reset=self._needs_reset.copy(),
                    np_random=generator_state(self._np_random),
                    np_random_seed=self._np_random_seed)

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Continue exactly from ``get_state()`` of an env built with the same arguments:
        the same observations, rewards and users follow as would have followed the save.

        Raises:
            ConfigError: the state is not one of this env's (another env, lane count or
                version); the env is unchanged then.
        """
        _check_face_state(state, ("core", "needs_reset", "np_random", "np_random_seed"))
        needs_reset = np.asarray(state["needs_reset"])
        if needs_reset.shape != self._needs_reset.shape or needs_reset.dtype != bool:
            raise ConfigError(f"cannot restore {self.num_envs} lanes from a state whose "
                              f"needs_reset is {needs_reset.dtype} of shape "
                              f"{needs_reset.shape}")
        rng = generator_from_state(state["np_random"])
        self._core.set_state(state["core"])
        self._np_random, self._np_random_seed = rng, state["np_random_seed"]
        self._needs_reset = needs_reset.astype(bool, copy=True)

    def _infos(self, restart: np.ndarray | None) -> dict[str, Any]:
        if self.info_level == "none":
            return {}
        info = owned(self._core.info())
        masks = {k: np.ones(self.num_envs, dtype=bool) for k in info}
        if restart is not None:
            for key, value in self._core.step_info.items():
                value = value.astype(np.float64, copy=True)
                value[restart] = np.nan           # restarted lanes took no step: NaN, and
                info[key] = value                 # their mask is off (Gymnasium's rule)
                masks[key] = np.ones(self.num_envs, dtype=bool)
                masks[key][restart] = False
        info.update({f"_{k}": mask for k, mask in masks.items()})
        return info
