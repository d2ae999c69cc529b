"""Persona discovery (issue 20): shifted events, windows of persisting users, behaviour
features from logs, and k-means++ clusters scored against the latent truth."""

from __future__ import annotations

import numpy as np
import pytest

from ope.features import behaviour_features
from personarl.errors import ConfigError, DataError
from synth.archetypes import BEHAVIOURS, TASK_TYPES
from synth.discovery import adjusted_rand, archetype_centroids, discover
from synth.features import BEHAVIOUR_FEATURES
from synth.population import PopulationConfig, PopulationSampler
from synth.windows import PersistentPopulation


# ---------------------------------------------------------------- events with shifts
def test_split_and_new_events_shift_behaviour_and_tasks():
    sampler = PopulationSampler(PopulationConfig(events=[
        dict(kind="split", at=1, source="explorer", name="tinkerer", strength=0.5,
             behaviour_shift={"exploration": -0.5}, task_shift={"analysis": 0.35}),
        dict(kind="new", at=2, source="learner", name="scholar", strength=0.2,
             behaviour_shift={"response_timing": 0.5})]))
    before, split, new = sampler.tables[0], sampler.tables[1], sampler.tables[2]
    explore, timing = BEHAVIOURS.index("exploration"), BEHAVIOURS.index("response_timing")
    assert split.behaviour[6, explore] == pytest.approx(before.behaviour[0, explore] - 0.5)
    tasks = before.task_preferences[0].copy()
    tasks[TASK_TYPES.index("analysis")] += 0.35
    np.testing.assert_allclose(split.task_preferences[6], tasks / tasks.sum())
    np.testing.assert_allclose(split.traits[6], before.traits[0])     # no trait shift
    assert new.behaviour[7, timing] == pytest.approx(before.behaviour[5, timing] + 0.5)
    assert sampler.proportions[2, 7] == pytest.approx(0.2)


@pytest.mark.parametrize("event, message", [
    (dict(kind="split", at=1, source="explorer", name="x", behaviour_shift={"exploration": 0.5}),
     "moves exploration to 1.25, outside"),
    (dict(kind="split", at=1, source="explorer", name="x", task_shift={"support": -0.2}),
     "moves support to -0.1"),
    (dict(kind="split", at=1, source="explorer", name="x", trait_shift={"openness": 0.3}),
     "moves openness to 1.15, outside \\[0, 1\\] \\(it was 0.85\\)"),
    (dict(kind="split", at=1, source="explorer", name="x", behaviour_shift={"speed": 0.1}),
     "unknown 'speed'; valid: \\['engagement_depth'"),
    (dict(kind="merge", at=1, source="explorer", target="helper",
          behaviour_shift={"sharing": 0.1}), "merge event takes no"),
    (dict(kind="new", at=1, source="explorer", name="x"), "needs a trait, behaviour or task"),
    (dict(kind="new", at=1, name="x"), "needs a 'spec'"),
    (dict(kind="split", at=1, source="explorer", name="x",
          behaviour_shift={"exploration": "lots"}), "\\['exploration'\\]='lots' must be a finite"),
])
def test_bad_shifts_name_the_value(event, message):
    with pytest.raises(ConfigError, match=message):
        PopulationSampler(PopulationConfig(events=[event]))


# ---------------------------------------------------------------- features
def test_features_of_a_small_log_by_hand():
    f = behaviour_features(user=np.array(["b", "a", "b", "a"]), task=np.array([0, 1, 0, 4]),
                           latency=np.array([1.0, np.e, np.e ** 3, np.e]),
                           explore=np.array([True, False, False, False]))
    assert f.users.tolist() == ["a", "b"] and f.interactions.tolist() == [2, 2]
    assert f.names == BEHAVIOUR_FEATURES
    np.testing.assert_allclose(f.values, [[0, .5, 0, 0, .5, 1, 0, 0],
                                          [1, 0, 0, 0, 0, 1.5, 1.5, .5]])


@pytest.mark.parametrize("change, message", [
    (dict(user=np.array([], int), task=np.array([], int), latency=np.array([]),
          explore=np.array([], bool)), "empty window"),
    (dict(task=np.array([0, 5])), "'task' row 1 is 5; valid: 0..4"),
    (dict(latency=np.array([1.0, np.nan])), "'latency' row 1 is nan"),
    (dict(latency=np.array([0.0, 1.0])), "'latency' row 0 is 0.0"),
    (dict(explore=np.array([0, 2])), "'explore' row 1 is 2"),
    (dict(task=np.array([0])), "'task' has shape \\(1,\\)"),
])
def test_bad_logs_name_the_column_and_row(change, message):
    log = dict(user=np.array([0, 1]), task=np.array([0, 1]), latency=np.array([1.0, 2.0]),
               explore=np.array([False, True]))
    with pytest.raises(DataError, match=message):
        behaviour_features(**{**log, **change})


def test_features_converge_to_their_expectation():
    """Many interactions per user give the expected features (``synth.features``): the
    shares, the mean and — the mixture's spread included — the SD of log latency."""
    sampler = PopulationSampler(PopulationConfig(drift_rate=0.0, bot_fraction=0.2))
    window = PersistentPopulation(sampler, 60, np.random.default_rng(3)).window(20_000)
    f = behaviour_features(*window.flat())
    np.testing.assert_allclose(f.values, window.expected_features, atol=0.03)
    assert window.is_bot.any() and (f.values[window.is_bot, -1] == 0).all()


# ---------------------------------------------------------------- windows
def test_windows_are_seeded_and_users_persist():
    sampler = PopulationSampler(PopulationConfig())
    a, b = (PersistentPopulation(sampler, 50, np.random.default_rng(7)) for _ in range(2))
    first_a, first_b = a.window(5), b.window(5)
    assert np.array_equal(first_a.latency, first_b.latency)
    second = a.window(5)
    assert second.index == 1 and np.array_equal(second.is_bot, first_a.is_bot)
    # the mixture drifts on from where it was: close, not equal, to the last window's
    assert 0 < np.abs(second.mean_weights - first_a.mean_weights).max() < 0.3


def test_events_move_the_users_who_are_there():
    sampler = PopulationSampler(PopulationConfig(drift_rate=0.0, events=[
        dict(kind="split", at=1, source="explorer", name="tinkerer", strength=0.5,
             behaviour_shift={"exploration": -0.5}),
        dict(kind="drift", at=2, source="helper", target="learner", strength=1.0)]))
    users = PersistentPopulation(sampler, 4000, np.random.default_rng(0))
    w0, w1, w2 = (users.window(3) for _ in range(3))
    assert (w0.mean_weights[:, 6] == 0).all() and w1.table_id == 1 and w2.table_id == 2
    explorers = w0.primary == 0
    moved = w1.mean_weights[explorers, 6] > 0
    assert moved.mean() == pytest.approx(0.5, abs=0.05)
    np.testing.assert_allclose(w1.mean_weights[explorers][moved, 0], 0.0)
    assert (w2.mean_weights[:, 4] == 0).all() and not (w2.primary == 4).any()


# ---------------------------------------------------------------- discovery
def _blobs(rng, centres, n, sd=0.05):
    labels = np.repeat(np.arange(len(centres)), n)
    return centres[labels] + sd * rng.standard_normal((len(labels), centres.shape[1])), labels


def test_discovery_finds_separated_clusters_chooses_k_and_flags_new_ones():
    rng = np.random.default_rng(0)
    centres = rng.random((4, 8))
    x, truth = _blobs(rng, centres, 300)
    d = discover(x, k_range=range(2, 8), reference=centres[:3], seed=1)
    assert d.k == 4 and max(d.silhouette, key=d.silhouette.get) == 4
    assert adjusted_rand(d.labels, truth) == pytest.approx(1.0)
    assert sorted(d.sizes.tolist()) == [300] * 4 and (d.cohesion > 0.5).all()
    found = d.archetype[d.predict(centres)]   # each true centre's cluster, and its archetype
    assert found.tolist() == [0, 1, 2, -1]
    again = discover(x, k_range=range(2, 8), reference=centres[:3], seed=1)
    assert np.array_equal(again.labels, d.labels)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(k=1), ConfigError, "k=1 is outside the valid range \\[2, 9\\]"),
    (dict(k=10), ConfigError, "k=10 is outside"),
    (dict(k_range=[2, 12]), ConfigError, "k_range entry=12"),
])
def test_bad_k_names_the_value(kwargs, error, message):
    x = np.random.default_rng(0).random((10, 8))
    with pytest.raises(error, match=message):
        discover(x, **kwargs)


def test_bad_features_name_the_column():
    x = np.random.default_rng(0).random((10, 8))
    x[3, 6] = np.inf
    with pytest.raises(DataError, match="'log_latency_sd' of user row 3 is inf"):
        discover(x, k=2)
    with pytest.raises(DataError, match="shape \\(10, 7\\); expected \\(users, 8\\)"):
        discover(x[:, :7], k=2)
    with pytest.raises(DataError, match="empty window"):
        discover(np.zeros((0, 8)), k=2)


def test_discovery_on_a_separated_population_nears_its_noiseless_reference():
    """200 interactions per user: k-means++ on the observed features scores (adjusted Rand
    index against the latent primary) at least 0.9 of the same pipeline on the expected
    features, and its clusters pair with the known archetypes."""
    sampler = PopulationSampler(PopulationConfig(concentration=0.5, bot_fraction=0.0))
    window = PersistentPopulation(sampler, 3000, np.random.default_rng(11)).window(200)
    observed = behaviour_features(*window.flat()).values
    reference = archetype_centroids(sampler, np.random.default_rng(1), 2000)
    found = discover(observed, k=6, reference=reference)
    noiseless = discover(window.expected_features, k=6, reference=reference)
    ari = adjusted_rand(found.labels, window.primary)
    assert ari >= 0.9 * adjusted_rand(noiseless.labels, window.primary) and ari > 0.5
    assert (found.archetype >= 0).sum() >= 4


def test_session_features_of_a_routing_log_read_latency_exploring_and_signals():
    """Per logged AgentRouting session: bots answer in under a second and never explore,
    humans take seconds (log-latency near the behaviour model's medians) — the latency
    column decoded back to seconds; the signal means are in [0, 1]."""
    import envs
    from agents.baselines.policies import RandomPolicy
    from agents.serving.exploration import Exploration
    from envs.creator import vector_maker
    from ope.collect import collect
    from ope.features import session_features

    env_id = "personarl/AgentRouting-v0"
    layout = envs.record(env_id).observation_layout({})
    data = collect(RandomPolicy(6), vector_maker(env_id, {"population": {
        "bot_fraction": 0.3}}), 400, seed=1, exploration=Exploration("sample"),
        record_truth=True)
    f = session_features(data, layout)
    assert f.names[-4:] == ("signal_scroll_depth", "signal_dwell", "signal_conversion",
                            "signal_share") and f.values.shape == (len(f.users), 12)
    first = data.step == 0
    bot = dict(zip(data.episode[first], data.context["is_bot"][first].astype(bool)))
    is_bot = np.array([bot[u] for u in f.users])
    latency = f.values[:, f.names.index("log_latency_mean")]
    assert is_bot.any() and (latency[is_bot] < 1.2).all()          # log(0.4 s), log(3 s)
    assert 0.8 < np.median(latency[~is_bot]) < 2.6                  # log(30 s) − 3·timing
    assert (f.values[is_bot, f.names.index("explore_rate")] == 0).all()
    assert ((f.values[:, -4:] >= 0) & (f.values[:, -4:] <= 1)).all()
    np.testing.assert_allclose(f.values[:, :5].sum(axis=1), 1.0)
    with pytest.raises(DataError, match="unknown signals \\['likes'\\]"):
        session_features(data, layout, signals=("likes",))
    with pytest.raises(DataError, match="no \\['latency', 'explore', 'signals'\\] columns"):
        session_features(data, {"task": layout["task"]})
