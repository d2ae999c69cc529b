"""Population sampling: who the simulated users are.

A user is a mixture of archetypes. Sampling is two-stage and vectorised over a batch:

1. the primary archetype ``k`` from the configured ``proportions``;
2. mixture weights ``w ~ Dirichlet(concentration · m_k)`` with ``m_k`` putting ``anchor`` of
   the mass on ``k`` and the rest evenly on the other existing archetypes. If another weight
   comes out larger than ``w_k`` the two are swapped, so the primary is always the largest
   weight and primary frequencies equal ``proportions`` exactly in expectation.

Traits are ``sigmoid(logit(w @ trait_means) + δ)`` with a per-user offset
``δ ~ N(0, trait_noise²)``; since they are a function of ``w``, traits move when the mixture
drifts. Behaviour, task and device preferences are the ``w``-mixture of the archetype priors.
Users also get a demographic group, a consent flag and, for ``bot_fraction`` of them, a bot
flag (some bots are "slow": regular timing rather than rapid fire). Metadata (device/browser)
is missing for most bots and a few humans. Two more quasi-identifiers, an age band and a city
(``synth.demographics``: distributions and generalisation hierarchies), are drawn
independently of the persona.

Drift within a session is a random walk on log-weights:
``log w_{t+1} = log w_t + drift_rate · ε_t`` (renormalised), ``ε_t ~ N(0, I)``.

Population events (``PopulationEvent``) are scheduled on *population time*: the index of
the session a user is sampled for. Users sampled at time ``τ`` see every event with
``at <= τ``. Events never renumber archetypes: ``split`` and ``new`` append a row, ``merge``
pulls two profiles together, ``drift`` moves proportion from one archetype to another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from synth.archetypes import ArchetypeSpec, ArchetypeTable, TRAITS, default_table
from synth.demographics import CITIES, PROFILE_CDF, PROFILE_GUIDE
from synth.events import PopulationEvent, apply_events
from personarl.backend import check_threads, resolve_backend, standard_normal
from personarl.errors import ConfigError, check_int, check_range

__all__ = ["PopulationConfig", "PopulationEvent", "Population", "PopulationSampler",
           "drift_trajectory", "drift_step", "categorical", "categorical_from_cdf",
           "HYBRID_THRESHOLD", "GENERATOR_REPLACES"]

HYBRID_THRESHOLD = 0.2
#: the settings a persona generator replaces (``PopulationConfig.generator``)
GENERATOR_REPLACES = ("proportions", "concentration", "anchor", "trait_noise", "groups",
                      "bot_fraction", "slow_bot_fraction")
_EPS = 1e-6
_BLOCK = 16_384       # users evaluated at a time where temporaries would leave the cache
#: the age band and the city of each (age band, city) cell of ``PROFILE_CDF``
_CELL_AGE, _CELL_CITY = np.divmod(np.arange(len(PROFILE_CDF)), len(CITIES))


def categorical(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF categorical draws: row-wise ``probs`` (..., K), uniforms ``u`` (...)."""
    return categorical_from_cdf(np.cumsum(probs, axis=-1), u)


def categorical_from_cdf(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``categorical`` from cumulative (unnormalised) probabilities ``cdf`` (..., K).

    One distribution for every draw (``cdf`` of shape ``(K,)``) is a binary search;
    row-wise distributions count the CDF entries below ``u``."""
    if cdf.ndim == 1:
        idx = np.searchsorted(cdf, u * cdf[-1], side="right")
    else:
        # one pass per category over the draws (a sum over a short last axis is slow)
        target = u * cdf[..., -1]
        idx = np.zeros(target.shape, dtype=np.int64)
        for k in range(cdf.shape[-1]):
            idx += target >= cdf[..., k]
    return np.minimum(idx, cdf.shape[-1] - 1)


@dataclass(frozen=True)
class PopulationConfig:
    """Everything that shapes a population; validated by ``PopulationSampler``.

    Args:
        proportions: archetype name -> probability of being the primary archetype (must
            sum to 1; unnamed archetypes get 0). ``None`` means uniform.
        concentration: total Dirichlet concentration of the mixture weights (> 0); low
            values give near-pure users, high values even mixtures.
        anchor: share of the concentration on the primary archetype, in (0, 1).
        trait_noise: std of the per-user trait offset in logit space (>= 0).
        drift_rate: std of the per-interaction log-weight random walk (>= 0).
        bot_fraction: fraction of users that are bots, in [0, 1].
        slow_bot_fraction: fraction of bots with regular but not rapid timing, in [0, 1].
        consent_rate: fraction of users who consent to personalisation, in [0, 1].
        groups: demographic group name -> proportion (sums to 1).
        human_missing_metadata: chance a human's device/browser metadata is missing.
        bot_missing_metadata: chance a bot's metadata is missing.
        archetypes: custom archetype specs (``None``: the six defaults).
        events: scheduled population events.
        generator: a fitted persona generator's file (``experiments.synthesize
            table=persona``): users are sampled from it instead of the Dirichlet model —
            mixture weights, trait offsets, group, device, age band, region, bot status
            (``synth.generators.persona``). It replaces ``GENERATOR_REPLACES`` (their
            values have no effect, except that ``groups`` names the generator's groups);
            the archetype table, drift and the consent and metadata rates still come from
            this config; events are refused. ``None``: the simulator's own model.
    """

    proportions: Mapping[str, float] | None = None
    concentration: float = 4.0
    anchor: float = 0.5
    trait_noise: float = 0.35
    drift_rate: float = 0.03
    bot_fraction: float = 0.05
    slow_bot_fraction: float = 0.3
    consent_rate: float = 0.9
    groups: Mapping[str, float] = field(
        default_factory=lambda: {"group_a": 0.5, "group_b": 0.3, "group_c": 0.2})
    human_missing_metadata: float = 0.02
    bot_missing_metadata: float = 0.7
    archetypes: Sequence[ArchetypeSpec | Mapping[str, Any]] | None = None
    events: Sequence[PopulationEvent | Mapping[str, Any]] = ()
    generator: str | None = None


@dataclass
class Population:
    """A batch of ``n`` users (all arrays have ``n`` rows).

    Attributes:
        weights: ``(n, A)`` archetype mixture weights over the latent table's rows.
        primary: ``(n,)`` index of the largest weight.
        trait_offset: ``(n, 10)`` per-user logit-space trait offset.
        traits: ``(n, 10)`` traits at sampling time.
        group: ``(n,)`` demographic group index.
        consent: ``(n,)`` consent flag.
        is_bot: ``(n,)`` bot flag.
        slow_bot: ``(n,)`` bot with regular, slower timing.
        device: ``(n,)`` device index.
        metadata_missing: ``(n,)`` device/browser metadata missing.
        time: ``(n,)`` population time each user was sampled at.
        age_band: ``(n,)`` index into ``synth.demographics.AGE_BANDS``.
        city: ``(n,)`` index into ``synth.demographics.CITIES``.
        table_id: ``(n,)`` index into ``PopulationSampler.tables`` (the archetype table in
            force at the user's time).
    """

    weights: np.ndarray
    primary: np.ndarray
    trait_offset: np.ndarray
    traits: np.ndarray
    group: np.ndarray
    consent: np.ndarray
    is_bot: np.ndarray
    slow_bot: np.ndarray
    device: np.ndarray
    metadata_missing: np.ndarray
    time: np.ndarray
    table_id: np.ndarray
    age_band: np.ndarray
    city: np.ndarray

    def __len__(self) -> int:
        return len(self.primary)

    def hybrid(self, threshold: float = HYBRID_THRESHOLD) -> np.ndarray:
        """``(n, A)`` mask of hybrid personas: archetypes whose weight exceeds ``threshold``."""
        return self.weights > threshold

    def margin(self) -> np.ndarray:
        """``(n,)`` gap between the largest and second-largest weight."""
        top2 = np.sort(self.weights, axis=1)[:, -2:]
        return top2[:, 1] - top2[:, 0]


def _primary_largest(gammas: np.ndarray, primary: np.ndarray) -> np.ndarray:
    """Dirichlet weights ``(n, A)`` from gamma draws (normalised in place), with each row's
    largest weight swapped onto its ``primary`` archetype."""
    w = gammas
    w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-300)
    top = w.argmax(axis=1)
    swap = np.flatnonzero(top != primary)
    t, p = top[swap], primary[swap]
    w_top, w_pri = w[swap, t], w[swap, p]
    w[swap, t], w[swap, p] = w_pri, w_top
    return w


def _scale_offsets(z: np.ndarray, trait_noise: float) -> np.ndarray:
    """Standard normals ``z`` to offsets ``δ ~ N(0, trait_noise²)``, in place:
    ``rng.normal(0, trait_noise)`` is ``0 + s·z``, bit for bit (the sign of a zero too)."""
    z *= trait_noise
    z += 0.0
    return z


class _Stages:
    """Calls run in order: at once on one thread; on ``num_threads - 1`` worker threads
    otherwise (``run`` returns at once), started afresh for each ``with`` block, which
    waits for every call at its end and raises the first failed call's error. A call
    given ``after`` (an earlier call's handle) starts when that one has ended; calls are
    taken in the order given, so that one is running or done by then, never waiting."""

    def __init__(self, num_threads: int) -> None:
        self._pool = (ThreadPoolExecutor(num_threads - 1, "personarl-population")
                      if num_threads > 1 else None)
        self._calls: list[Future] = []

    def run(self, function: Callable[..., None], *args: Any,
            after: Future | None = None) -> Future | None:
        if self._pool is None:
            function(*args)
            return None

        def call() -> None:
            if after is not None:
                after.result()             # its error, if it failed, fails this call too
            function(*args)

        self._calls.append(self._pool.submit(call))
        return self._calls[-1]

    def __enter__(self) -> "_Stages":
        return self

    def __exit__(self, error_type: Any, *_: Any) -> None:
        if self._pool is None:
            return
        self._pool.shutdown(wait=True)
        if error_type is None:
            for call in self._calls:
                call.result()


class PopulationSampler:
    """Samples batches of users from a ``PopulationConfig``.

    Args:
        config: the population's shape; every value is range-checked here.

    Attributes:
        base: the archetype table before any event (what the platform knows).
        tables: the latent tables in force between events (``tables[0]`` at time 0), each
            with the same number of rows; archetypes that do not exist yet have proportion 0.
        proportions: ``(len(tables), A)`` primary-archetype probabilities per epoch.
        boundaries: event times at which the epoch changes.
    """

    def __init__(self, config: PopulationConfig | None = None) -> None:
        self.config = cfg = config or PopulationConfig()
        self.concentration = check_range("concentration", cfg.concentration, 0, np.inf,
                                         low_open=True, high_open=True)
        self.anchor = check_range("anchor", cfg.anchor, 0, 1, low_open=True, high_open=True)
        self.trait_noise = check_range("trait_noise", cfg.trait_noise, 0, 10)
        self.drift_rate = check_range("drift_rate", cfg.drift_rate, 0, 10)
        for name in ("bot_fraction", "slow_bot_fraction", "consent_rate",
                     "human_missing_metadata", "bot_missing_metadata"):
            check_range(name, getattr(cfg, name), 0, 1)
        self.base = (ArchetypeTable.from_specs(cfg.archetypes) if cfg.archetypes is not None
                     else default_table())
        self.group_names = tuple(cfg.groups)
        self.group_probs = _probabilities("groups", cfg.groups, self.group_names)
        base_props = (np.full(self.base.size, 1.0 / self.base.size) if cfg.proportions is None
                      else _probabilities("proportions", cfg.proportions, self.base.names))
        #: the scheduled events, parsed and in time order
        self.events = tuple(sorted((PopulationEvent.from_mapping(e) for e in cfg.events),
                                   key=lambda e: e.at))
        self.tables, self.proportions, self._exists, self.boundaries = apply_events(
            self.base, base_props, self.events)
        self._traits = np.stack([t.traits for t in self.tables])
        #: ``(epochs, A, 5)`` archetype behaviour in force in each epoch
        self.behaviour_by_epoch = np.stack([t.behaviour for t in self.tables])
        self._tasks = np.stack([t.task_preferences for t in self.tables])
        self._device = np.stack([t.device_preferences for t in self.tables])
        #: the fitted persona generator users are drawn from (``config.generator``)
        self.generator = None
        if cfg.generator is not None:
            from synth.generators.persona import load_population_generator
            self.generator = load_population_generator(cfg.generator, self)

    @property
    def trait_table(self) -> np.ndarray:
        """``(epochs, A, 10)`` archetype trait means in force in each epoch (read-only use:
        compiled env kernels evaluate ``traits_of`` from it)."""
        return self._traits

    @property
    def num_archetypes(self) -> int:
        """Rows of the latent tables (base archetypes plus any added by events)."""
        return self.tables[0].size

    def epoch(self, time: np.ndarray | int) -> np.ndarray:
        """Index of the table in force at population ``time``."""
        if not len(self.boundaries):
            return np.zeros(np.shape(time), dtype=np.int64)
        return np.searchsorted(np.asarray(self.boundaries), time, side="right")

    def sample(self, n: int, rng: np.random.Generator, start_time: int = 0,
               backend: str = "auto", cohort: bool = False,
               num_threads: int = 1) -> Population:
        """Sample ``n`` users for population times ``start_time, ..., start_time + n - 1``
        (``cohort``: all of them at ``start_time``, a cohort that arrives together).

        ``backend`` (``personarl.backend``: ``"auto"``, ``"numpy"``, ``"numba"``) chooses
        the code that turns the draws into users; the draws are NumPy's numbers on both,
        in the same order (``numba`` draws the trait offsets' normals in compiled code:
        ``personarl.backend.standard_normal``), so both give the same users (to rounding).
        With a ``generator`` the users are its samples (``synth.generators.persona``).

        ``num_threads`` (``numba`` only) lets the compiled arithmetic of a block of users
        run on ``num_threads - 1`` worker threads while this thread draws the next blocks;
        the users are the same bits whatever the thread count. The draws stay sequential
        in ``rng``, so two threads are all it uses well (BENCHMARKS.md: population).

        Raises:
            ConfigError: ``n`` is not a non-negative integer, ``backend`` is unknown or
                unavailable, or ``num_threads`` is not in ``1..MAX_THREADS`` or above 1
                without ``backend='numba'`` (``personarl.backend.check_threads``).
        """
        n = check_int("n", n, 0)
        backend = resolve_backend(backend)
        num_threads = check_threads(num_threads, backend)
        cfg = self.config
        time = np.full(n, start_time) if cohort else start_time + np.arange(n)
        if self.generator is not None:
            from synth.generators.persona import population_from_rows
            return population_from_rows(self.generator.sample(n, rng), self, rng, time)
        table_id = self.epoch(time)
        one_epoch = len(self.tables) == 1
        primary = categorical(self.proportions[0] if one_epoch else self.proportions[table_id],
                              rng.random(n))
        if backend == "numba":
            return self._sample_compiled(rng, primary, time, table_id, num_threads)
        w = rng.standard_gamma(self._concentration_table()[table_id, primary])
        offset = rng.standard_normal((n, len(TRAITS)))
        _scale_offsets(offset, self.trait_noise)
        u = rng.random((n, 7))
        # the quasi-identifiers: one draw of the (age band, city) pair
        cell = categorical_from_cdf(PROFILE_CDF, u[:, 6])
        age_band, city = _CELL_AGE[cell], _CELL_CITY[cell]
        w = _primary_largest(w, primary)
        device_probs = (w @ self._device[0] if one_epoch
                        else np.einsum("na,nad->nd", w, self._device[table_id]))
        is_bot = u[:, 2] < cfg.bot_fraction
        missing_rate = np.where(is_bot, cfg.bot_missing_metadata, cfg.human_missing_metadata)
        return Population(
            weights=w, primary=primary, trait_offset=offset,
            traits=self.traits_of(w, np.exp(offset), table_id),
            group=categorical(self.group_probs, u[:, 0]),
            consent=u[:, 1] < cfg.consent_rate,
            is_bot=is_bot,
            slow_bot=is_bot & (u[:, 3] < cfg.slow_bot_fraction),
            device=categorical(device_probs, u[:, 4]),
            metadata_missing=u[:, 5] < missing_rate,
            time=time, table_id=table_id, age_band=age_band, city=city,
        )

    def _concentration_table(self) -> np.ndarray:
        """``(epochs, A, A)`` anchored Dirichlet concentrations: row ``[e, k]`` is those of
        a user of epoch ``e`` whose primary archetype is ``k``."""
        exists = self._exists                                          # (epochs, A)
        others = exists.sum(axis=1, keepdims=True) - 1
        rest = np.where(exists, self.concentration * (1 - self.anchor)
                        / np.maximum(others, 1), 0.0)                  # (epochs, A)
        table = np.repeat(rest[:, None, :], exists.shape[1], axis=1)   # (epochs, k, A)
        diagonal = np.arange(exists.shape[1])
        table[:, diagonal, diagonal] = self.concentration * self.anchor
        return table

    def _sample_compiled(self, rng: np.random.Generator, primary: np.ndarray,
                         time: np.ndarray, table_id: np.ndarray,
                         num_threads: int) -> Population:
        """``sample`` after the primaries on the ``numba`` backend: the reference's draws,
        in its order (every user's gamma variates, then every user's offset normals, then
        every user's uniforms), each made a block of ``_BLOCK`` users at a time — NumPy
        fills block after block with the numbers one call would give — and each block
        finished by ``synth.population_kernels``' stages as soon as the draws it needs are
        made: here, or on the workers of ``_Stages`` while this thread draws on."""
        from synth.population_kernels import mixture_means, offset_traits, user_flags
        cfg, n = self.config, len(primary)
        shapes = self._concentration_table()
        table_id = np.ascontiguousarray(table_id, np.int64)
        w, offset = np.empty((n, self.num_archetypes)), np.empty((n, len(TRAITS)))
        traits = np.empty_like(offset)
        group, device = np.empty(n, np.int64), np.empty(n, np.int64)
        consent, is_bot, slow_bot, missing = (np.empty(n, bool) for _ in range(4))
        age_band, city = np.empty(n, np.int64), np.empty(n, np.int64)
        rates = np.array([cfg.consent_rate, cfg.bot_fraction, cfg.slow_bot_fraction,
                          cfg.human_missing_metadata, cfg.bot_missing_metadata], float)
        blocks = [slice(lo, min(lo + _BLOCK, n)) for lo in range(0, n, _BLOCK)]

        def finish_traits(rows: slice) -> None:
            _scale_offsets(offset[rows], self.trait_noise)
            # exp in NumPy: vectorised it is ~4x cheaper than one call per value, and its
            # bits are the reference's
            offset_traits(traits[rows], np.exp(offset[rows]))

        def finish_flags(rows: slice, u: np.ndarray) -> None:
            user_flags(w[rows], table_id[rows], u, self._device, self.group_probs, rates,
                       PROFILE_CDF, PROFILE_GUIDE, _CELL_AGE, _CELL_CITY, group[rows],
                       consent[rows], is_bot[rows], slow_bot[rows], device[rows],
                       missing[rows], age_band[rows], city[rows])

        with _Stages(num_threads) as stages:
            mixtures = []                  # each block's mixture_means call
            for rows in blocks:
                rng.standard_gamma(shapes[table_id[rows], primary[rows]], out=w[rows])
                mixtures.append(stages.run(mixture_means, w[rows], primary[rows],
                                           table_id[rows], self._traits, traits[rows]))
            for rows, mixture in zip(blocks, mixtures):
                standard_normal(rng, out=offset[rows], backend="numba")
                stages.run(finish_traits, rows, after=mixture)
            for rows, mixture in zip(blocks, mixtures):
                stages.run(finish_flags, rows, rng.random((rows.stop - rows.start, 7)),
                           after=mixture)
        return Population(weights=w, primary=primary, trait_offset=offset, traits=traits,
                          group=group, consent=consent, is_bot=is_bot, slow_bot=slow_bot,
                          device=device, metadata_missing=missing, time=time,
                          table_id=table_id, age_band=age_band, city=city)

    def sample_weights(self, primary: np.ndarray, table_id: np.ndarray,
                       rng: np.random.Generator) -> np.ndarray:
        """Mixture weights given the primary archetype: anchored Dirichlet, then the swap
        that makes ``primary`` the largest weight."""
        shapes = self._concentration_table()[table_id, primary]
        return _primary_largest(rng.standard_gamma(shapes), primary)

    def traits_of(self, weights: np.ndarray, offset_exp: np.ndarray,
                  table_id: np.ndarray) -> np.ndarray:
        """Traits ``sigmoid(logit(w @ trait_means) + δ)`` for mixture ``weights`` (..., A).

        Args:
            weights: ``(..., A)`` mixture weights.
            offset_exp: ``exp(δ)`` of the users' logit offsets, broadcastable to ``(..., 10)``.
            table_id: epoch of each user, broadcastable to ``weights.shape[:-1]``.
        """
        n = len(weights) if weights.ndim == 2 else 0
        if n <= _BLOCK:
            return self._traits_block(weights, offset_exp, table_id)
        # a block of users at a time: the temporaries stay in cache (2-3x faster at 10^6)
        out = np.empty((n, len(TRAITS)))
        offset_exp = np.broadcast_to(offset_exp, out.shape)
        table_id = np.broadcast_to(table_id, (n,))
        for lo in range(0, n, _BLOCK):
            rows = slice(lo, lo + _BLOCK)
            out[rows] = self._traits_block(weights[rows], offset_exp[rows], table_id[rows])
        return out

    def _traits_block(self, weights: np.ndarray, offset_exp: np.ndarray,
                      table_id: np.ndarray) -> np.ndarray:
        if len(self.tables) == 1:
            means = weights @ self._traits[0]
        else:
            means = np.einsum("...a,...at->...t", weights, self._traits[table_id])
        np.clip(means, _EPS, 1.0 - _EPS, out=means)
        scaled = means * offset_exp          # = sigmoid(logit(means) + δ), without logs
        denominator = scaled + 1.0
        denominator -= means
        return np.divide(scaled, denominator, out=scaled)

    def mixture_tasks(self, weights: np.ndarray, table_id: np.ndarray) -> np.ndarray:
        """``(n, T)`` task-type distribution of users with mixture ``weights (n, A)``."""
        return np.einsum("na,nat->nt", weights, self._tasks[table_id])

    @property
    def task_table(self) -> np.ndarray:
        """``(epochs, A, T)`` archetype task preferences in force in each epoch (read-only)."""
        return self._tasks


def _probabilities(label: str, mapping: Mapping[str, float],
                   names: Sequence[str]) -> np.ndarray:
    unknown = [k for k in mapping if k not in names]
    if unknown:
        raise ConfigError(f"{label} names unknown entries {unknown}; valid: {list(names)}")
    p = np.array([float(mapping.get(k, 0.0)) for k in names])
    if np.any(~np.isfinite(p)) or np.any(p < 0):
        raise ConfigError(f"{label}={dict(mapping)} must be non-negative numbers")
    if not np.isclose(p.sum(), 1.0, atol=1e-6):
        raise ConfigError(f"{label}={dict(mapping)} sum to {p.sum():.6g}; they must sum to 1")
    return p / p.sum()


def drift_trajectory(weights: np.ndarray, noise: np.ndarray, rate: float) -> np.ndarray:
    """Mixture weights along a session under the log-weight random walk.

    Args:
        weights: ``(n, A)`` weights at the first interaction.
        noise: ``(n, H - 1, A)`` standard normal draws.
        rate: drift rate (std per interaction).

    Returns:
        ``(n, H, A)`` weights; zero weights (archetypes a user does not have) stay zero.
    """
    n, A = weights.shape
    H = noise.shape[1] + 1
    # time-major so the cumulative sum runs over contiguous rows
    logits = np.empty((H, n, A))
    logits[0] = np.log(np.maximum(weights, 1e-300))
    np.cumsum(rate * noise.transpose(1, 0, 2), axis=0, out=logits[1:])
    logits[1:] += logits[0]
    # log-weights are <= 0 and the walk's steps are small: exp cannot overflow
    w = np.exp(logits)
    w *= weights > 0
    w /= w.sum(axis=2, keepdims=True)
    return w.transpose(1, 0, 2)


def drift_step(weights: np.ndarray, noise: np.ndarray, rate: float) -> np.ndarray:
    """One step of the log-weight random walk (``drift_trajectory``, one interaction at a
    time): ``w · exp(rate · ε)``, renormalised; zero weights stay zero.

    Args:
        weights: ``(n, A)`` weights now.
        noise: ``(n, A)`` standard normal draws.
        rate: drift rate (std per interaction).

    Returns:
        ``(n, A)`` weights at the next interaction (a new array).
    """
    w = np.exp(rate * noise)
    w *= weights
    w /= w.sum(axis=1, keepdims=True)
    return w
