"""Population sampling: proportions, primary/hybrid definitions, bots, drift, events."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import stats

from synth import (ARCHETYPE_NAMES, ConfigError, PopulationConfig, PopulationEvent,
                   PopulationSampler)
from personarl.backend import numba_available
from synth.population import drift_trajectory

PROPS = {"explorer": 0.05, "optimizer": 0.30, "socializer": 0.10, "achiever": 0.25,
         "helper": 0.20, "learner": 0.10}


def test_primary_frequencies_match_configured_proportions(rng):
    sampler = PopulationSampler(PopulationConfig(proportions=PROPS))
    pop = sampler.sample(100_000, rng)
    observed = np.bincount(pop.primary, minlength=6)
    expected = np.array([PROPS[a] for a in ARCHETYPE_NAMES]) * len(pop)
    # chi-square goodness of fit: a correct sampler fails this 1 time in 1000
    assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_primary_is_the_largest_weight_and_hybrids_exceed_threshold(rng):
    pop = PopulationSampler().sample(20_000, rng)
    assert np.array_equal(pop.primary, pop.weights.argmax(axis=1))
    np.testing.assert_allclose(pop.weights.sum(axis=1), 1.0)
    hybrid = pop.hybrid()
    assert np.array_equal(hybrid, pop.weights > 0.2)
    # the primary is a hybrid component whenever its weight exceeds the threshold
    assert hybrid[np.arange(len(pop)), pop.primary][pop.weights.max(axis=1) > 0.2].all()
    assert 0.0 < pop.margin().min() and pop.margin().max() <= 1.0


def test_anchor_and_concentration_shape_the_mixture(rng):
    pure = PopulationSampler(PopulationConfig(concentration=0.5)).sample(5000, rng)
    even = PopulationSampler(PopulationConfig(concentration=50.0)).sample(5000, rng)
    assert pure.weights.max(axis=1).mean() > even.weights.max(axis=1).mean() + 0.2


def test_bots_consent_and_groups_follow_their_rates(rng):
    cfg = PopulationConfig(bot_fraction=0.2, consent_rate=0.7,
                           groups={"a": 0.6, "b": 0.4})
    pop = PopulationSampler(cfg).sample(50_000, rng)
    for flag, p in ((pop.is_bot, 0.2), (pop.consent, 0.7), (pop.group == 0, 0.6)):
        assert stats.binomtest(int(flag.sum()), len(pop), p).pvalue > 1e-3
    assert not pop.slow_bot[~pop.is_bot].any()


def test_traits_follow_the_mixture_and_stay_in_unit_interval(rng):
    sampler = PopulationSampler(PopulationConfig(trait_noise=0.0, concentration=0.05))
    pop = sampler.sample(2000, rng)
    assert ((pop.traits >= 0) & (pop.traits <= 1)).all()
    pure = pop.weights.max(axis=1) > 0.999
    np.testing.assert_allclose(pop.traits[pure], sampler.base.traits[pop.primary[pure]],
                               atol=1e-3)


def test_same_seed_same_bytes():
    a = PopulationSampler().sample(1000, np.random.default_rng(7))
    b = PopulationSampler().sample(1000, np.random.default_rng(7))
    for field in ("weights", "traits", "is_bot", "device", "group"):
        assert getattr(a, field).tobytes() == getattr(b, field).tobytes()


def test_drift_moves_weights_on_the_simplex(rng):
    w = PopulationSampler().sample(500, rng).weights
    still = drift_trajectory(w, rng.standard_normal((500, 9, 6)), 0.0)
    np.testing.assert_allclose(still, np.repeat(w[:, None], 10, axis=1), atol=1e-12)
    moved = drift_trajectory(w, rng.standard_normal((500, 9, 6)), 0.3)
    np.testing.assert_allclose(moved.sum(axis=2), 1.0)
    assert np.abs(moved[:, -1] - w).mean() > 0.02


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(bot_fraction=1.5), "bot_fraction=1.5"),
    (dict(bot_fraction=-0.1), "bot_fraction=-0.1"),
    (dict(proportions={"explorer": 0.5, "optimizer": 0.2}), "sum to 0.7"),
    (dict(proportions={"explorer": 0.5, "wizard": 0.5}), "'wizard'"),
    (dict(concentration=0.0), "concentration=0.0"),
    (dict(anchor=1.0), "anchor=1.0"),
    (dict(groups={"a": 0.5}), "groups"),
])
def test_invalid_config_names_the_parameter(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(")) as err:
        PopulationSampler(PopulationConfig(**kwargs))
    assert isinstance(err.value, ConfigError)


def test_custom_archetypes_from_config(rng):
    custom = [dict(name="night_owl", traits=[0.5] * 10, behaviour=[0.5, 0.1, 0.2, 0.3, 0.4],
                   task_preferences=[0.2] * 5),
              dict(name="speedrunner", traits={t: 0.9 for t in
                                               ("openness", "conscientiousness",
                                                "extraversion", "agreeableness", "neuroticism",
                                                "humor", "empathy", "formality", "directness",
                                                "enthusiasm")},
                   behaviour=[0.2, 0.95, 0.6, 0.1, 0.1], task_preferences=[0, 0.5, 0, 0, 0.5])]
    sampler = PopulationSampler(PopulationConfig(archetypes=custom,
                                                 proportions={"night_owl": 0.25,
                                                              "speedrunner": 0.75}))
    assert sampler.base.names == ("night_owl", "speedrunner")
    pop = sampler.sample(4000, rng)
    assert abs((pop.primary == 1).mean() - 0.75) < 0.03
    with pytest.raises(ConfigError, match="night_owl.*behaviour.response_timing=1.5"):
        PopulationSampler(PopulationConfig(archetypes=[
            dict(custom[0], behaviour=[0.5, 1.5, 0.2, 0.3, 0.4]), custom[1]]))


def test_scheduled_events_change_the_population_at_their_time(rng):
    events = [
        PopulationEvent(kind="split", at=1000, source="explorer", name="tinkerer",
                        strength=0.5, trait_shift={"humor": -0.4}),
        dict(kind="drift", at=2000, source="helper", target="learner", strength=1.0),
        dict(kind="merge", at=3000, source="optimizer", target="achiever", strength=1.0),
    ]
    sampler = PopulationSampler(PopulationConfig(events=events))
    assert sampler.num_archetypes == 7 and sampler.boundaries == [1000, 2000, 3000]
    before, split, drifted, merged = (sampler.proportions[i] for i in range(4))
    assert before[6] == 0 and split[6] == pytest.approx(before[0] / 2)
    assert drifted[4] == 0 and drifted[5] == pytest.approx(before[4] + before[5])
    tables = sampler.tables
    np.testing.assert_allclose(tables[1].traits[6, 5], tables[0].traits[0, 5] - 0.4)
    np.testing.assert_allclose(tables[3].traits[1], tables[3].traits[3])
    pop = sampler.sample(4000, rng, start_time=0)
    assert not (pop.weights[:1000, 6] > 0).any()          # not born yet
    assert (pop.primary[1000:] == 6).mean() == pytest.approx(split[6], abs=0.03)
    assert not (pop.primary[2000:] == 4).any()            # helpers drifted away


def test_invalid_events_name_the_problem():
    with pytest.raises(ConfigError, match="source='wizard'"):
        PopulationSampler(PopulationConfig(events=[dict(kind="drift", at=0, source="wizard",
                                                        target="helper")]))
    with pytest.raises(ConfigError, match="kind 'explode'"):
        PopulationSampler(PopulationConfig(events=[dict(kind="explode", at=0)]))
    with pytest.raises(ConfigError, match="unknown event keys"):
        PopulationSampler(PopulationConfig(events=[dict(kind="drift", at=0, when=3)]))


def test_a_new_archetype_appears_at_its_time(rng):
    spec = dict(name="night_owl", traits=[0.5] * 10, behaviour=[0.7, 0.2, 0.3, 0.2, 0.5],
                task_preferences=[0.2] * 5)
    sampler = PopulationSampler(PopulationConfig(
        events=[dict(kind="new", at=500, strength=0.25, spec=spec)]))
    assert sampler.tables[1].names[6] == "night_owl"
    np.testing.assert_allclose(sampler.proportions[1, :6], sampler.proportions[0, :6] * 0.75)
    pop = sampler.sample(8000, rng)
    assert not (pop.weights[:500, 6] > 0).any()
    assert (pop.primary[500:] == 6).mean() == pytest.approx(0.25, abs=0.03)


@pytest.mark.parametrize("concentration", [0.5, 4.0, 50.0])
def test_mixture_weights_follow_the_anchored_dirichlet(concentration):
    """The weights are NumPy's own Dirichlet after the swap that makes the primary the
    largest (the per-epoch concentration table, the normalisation and the swap)."""
    n = 40_000
    sampler = PopulationSampler(PopulationConfig(concentration=concentration, anchor=0.5))
    zeros = np.zeros(n, dtype=np.int64)
    ours = sampler.sample_weights(zeros, zeros, np.random.default_rng(5))
    reference = np.random.default_rng(6).dirichlet(concentration * np.array([0.5] + [0.1] * 5),
                                                   n)
    rows, top = np.arange(n), reference.argmax(axis=1)
    largest, first = reference[rows, top], reference[:, 0].copy()
    reference[rows, top], reference[:, 0] = first, largest
    for j in range(6):          # each weight's distribution; a correct sampler fails 1 in 1000
        assert stats.ks_2samp(ours[:, j], reference[:, j]).pvalue > 1e-3 / 6, j


@pytest.mark.skipif(not numba_available(), reason="the compiled backend needs the fast extra")
def test_both_backends_sample_the_same_users():
    """The compiled backend turns the same draws into the same users as the reference,
    across epochs (a split and a drift), with bots, groups and missing metadata."""
    sampler = PopulationSampler(PopulationConfig(
        proportions=PROPS, concentration=0.7, bot_fraction=0.3, events=[
            dict(kind="split", at=300, source="explorer", name="tinkerer", strength=0.5),
            dict(kind="drift", at=700, source="helper", target="learner", strength=1.0)]))
    ref, fast = (sampler.sample(1000, np.random.default_rng(5), start_time=100, backend=b)
                 for b in ("numpy", "numba"))
    assert len(set(ref.table_id)) == 3 and ref.is_bot.any() and ref.metadata_missing.any()
    for name, value in vars(ref).items():
        other = getattr(fast, name)
        assert other.dtype == value.dtype, name
        np.testing.assert_allclose(other, value, rtol=0, atol=1e-12, err_msg=name)
    with pytest.raises(ConfigError, match="backend='fortran'"):
        sampler.sample(3, np.random.default_rng(0), backend="fortran")


@pytest.mark.skipif(not numba_available(), reason="the compiled backend needs the fast extra")
def test_compiled_blocks_and_threads_sample_the_reference_users(monkeypatch):
    """The compiled backend draws a block of users at a time (``_BLOCK``) and may finish
    blocks on worker threads while it draws on: over several blocks, two epochs and a
    short last block, every thread count gives the same users bit for bit, those are the
    reference's users, and the generator ends where the reference's does. A worker that
    started a block's traits before that block's weights (``after`` ignored) would read
    unwritten means: the slowed first stage makes that visible."""
    import synth.population_kernels as kernels
    from synth.population import _BLOCK

    sampler = PopulationSampler(PopulationConfig(
        proportions=PROPS, bot_fraction=0.3, trait_noise=0.4, events=[
            dict(kind="split", at=_BLOCK, source="explorer", name="tinkerer", strength=0.5)]))
    n = 2 * _BLOCK + 5
    reference_rng = np.random.default_rng(9)
    ref = sampler.sample(n, reference_rng, backend="numpy")
    mixture_means = kernels.mixture_means
    mixture_means(np.ones((1, 7)), np.zeros(1, np.int64), np.zeros(1, np.int64),
                  sampler.trait_table, np.empty((1, 10)))          # compiled before the clock

    def slow_mixture_means(*args):
        time.sleep(0.02)
        mixture_means(*args)

    monkeypatch.setattr(kernels, "mixture_means", slow_mixture_means)
    first = None
    for threads in (1, 2, 3):
        rng = np.random.default_rng(9)
        pop = sampler.sample(n, rng, backend="numba", num_threads=threads)
        assert rng.bit_generator.state == reference_rng.bit_generator.state, threads
        first = pop if first is None else first
        for name, value in vars(ref).items():
            assert np.array_equal(getattr(pop, name), getattr(first, name)), (threads, name)
            np.testing.assert_allclose(getattr(pop, name), value, rtol=0, atol=1e-12,
                                       err_msg=f"{threads} threads: {name}")


@pytest.mark.skipif(not numba_available(), reason="the compiled backend needs the fast extra")
def test_a_failing_block_fails_the_sample(monkeypatch):
    """An error in a block finished on a worker thread reaches the caller, after every
    block has ended (none is left running on the population's arrays)."""
    import synth.population_kernels as kernels
    from synth.population import _BLOCK

    finished = []

    def flags_then_fail(*args):
        finished.append(len(args[0]))
        if len(finished) == 1:
            raise RuntimeError("block 0 failed")

    monkeypatch.setattr(kernels, "user_flags", flags_then_fail)
    with pytest.raises(RuntimeError, match="block 0 failed"):
        PopulationSampler().sample(3 * _BLOCK, np.random.default_rng(0), backend="numba",
                                   num_threads=2)
    assert finished == [_BLOCK] * 3


@pytest.mark.parametrize("threads, backend, message", [
    (0, "numba", r"num_threads=0 is outside the valid range \[1, 64\]"),
    (65, "numba", r"num_threads=65 is outside the valid range \[1, 64\]"),
    ("2", "numba", r"num_threads='2' must be an integer in \[1, 64\]"),
    (2, "numpy", r"num_threads=2 needs backend='numba'.*use num_threads=1")])
def test_sample_names_a_bad_thread_count(threads, backend, message):
    if backend == "numba" and not numba_available():
        pytest.skip("the compiled backend needs the fast extra")
    with pytest.raises(ConfigError, match=message):
        PopulationSampler().sample(10, np.random.default_rng(0), backend=backend,
                                   num_threads=threads)
