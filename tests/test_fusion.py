"""Persona fusion (online) and the exact Bayes reference."""

from __future__ import annotations

import numpy as np
import pytest

from synth import PopulationConfig, PopulationSampler
from synth.behaviour import interaction_loglik, sample_session
from synth.fusion import BayesPersonaFilter, PersonaFusion


@pytest.fixture(scope="module")
def data():
    sampler = PopulationSampler(PopulationConfig(drift_rate=0.0, bot_fraction=0.0))
    rng = np.random.default_rng(0)
    pop = sampler.sample(1500, rng)
    ses = sample_session(pop, sampler, 30, rng)
    ll = interaction_loglik(sampler.base, ses.task, ses.latency, ses.explore)
    return sampler, pop, ll


def test_batched_run_equals_step_by_step_updates(data):
    sampler, _, ll = data
    fusion = PersonaFusion(sampler.proportions[0])
    weight = np.random.default_rng(1).random(ll.shape[:2])
    traj = fusion.run(ll[:50], weight[:50])
    state = fusion.init(50)
    for t in range(ll.shape[1] + 1):
        scores, conf, stab = fusion.readout(state)
        np.testing.assert_allclose(traj.scores[:, t], scores, rtol=1e-10)
        np.testing.assert_allclose(traj.confidence[:, t], conf, rtol=1e-10)
        np.testing.assert_allclose(traj.stability[:, t], stab, rtol=1e-10)
        if t < ll.shape[1]:
            fusion.update(state, ll[:50, t], weight[:50, t])


def test_zero_quality_interactions_change_nothing(data):
    sampler, _, ll = data
    traj = PersonaFusion(sampler.proportions[0]).run(ll[:20], np.zeros(ll[:20].shape[:2]))
    np.testing.assert_allclose(traj.scores[:, -1], traj.scores[:, 0])


def test_accuracy_and_confidence_grow_with_interactions(data):
    sampler, pop, ll = data
    traj = PersonaFusion(sampler.proportions[0]).run(ll, np.ones(ll.shape[:2]))
    acc = (traj.primary == pop.primary[:, None]).mean(axis=0)
    assert acc[0] < 0.25 < 0.4 < acc[10] < acc[30]        # chance is 1/6
    assert traj.confidence[:, 30].mean() > traj.confidence[:, 1].mean()
    assert ((traj.scores.sum(axis=2) - 1) ** 2).max() < 1e-20
    assert np.array_equal(traj.hybrid(), traj.scores > 0.2)


def test_bayes_filter_is_at_least_as_accurate_as_fusion(data):
    sampler, pop, ll = data
    post, ess = BayesPersonaFilter(sampler, 400, np.random.default_rng(2)).posterior(ll)
    np.testing.assert_allclose(post.sum(axis=2), 1.0)
    np.testing.assert_allclose(post[:, 0], np.broadcast_to(sampler.proportions[0], (len(pop), 6)))
    bayes = (post.argmax(axis=2) == pop.primary[:, None]).mean(axis=0)
    ours = (PersonaFusion(sampler.proportions[0]).run(ll, np.ones(ll.shape[:2])).primary
            == pop.primary[:, None]).mean(axis=0)
    # the Bayes posterior is optimal for this model; allow Monte Carlo + sampling slack
    assert bayes[30] >= ours[30] - 0.02
    assert bayes[30] > 0.55 and (ess > 1).all()


def test_uninformative_interactions_leave_the_bayes_posterior_at_the_prior():
    sampler = PopulationSampler()
    flat = np.zeros((3, 5, 6))
    post, _ = BayesPersonaFilter(sampler, 50, np.random.default_rng(0)).posterior(flat)
    np.testing.assert_allclose(post, np.broadcast_to(sampler.proportions[0], post.shape),
                               atol=1e-12)
