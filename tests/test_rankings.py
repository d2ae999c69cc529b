"""Agent rankings per task type × persona (issue 20): the table, its truth, and the persona
router reading its routing weights from it."""

from __future__ import annotations

import numpy as np
import pytest

from agents.baselines.policies import PersonaRouter
from agents.baselines.rankings import (AgentRankings, kendall_tau, routing_weights,
                                       true_quality)
from envs.routing_core import ObsLayout
from personarl.errors import ConfigError, DataError
from personarl.stats import softmax


def test_a_small_log_by_hand():
    # one task, one persona, three agents: agent 2 best, agent 0 worst, agent 1 unseen
    r = AgentRankings.from_log(task=np.zeros(5, int), persona=np.zeros(5, int),
                               agent=np.array([0, 0, 2, 2, 2]),
                               reward=np.array([0.1, 0.3, 0.9, 0.7, 0.8]), shape=(1, 1, 3))
    assert r.count[0, 0].tolist() == [2, 0, 3]
    np.testing.assert_allclose(r.mean[0, 0, [0, 2]], [0.2, 0.8])
    assert np.isnan(r.mean[0, 0, 1]) and r.rank[0, 0].tolist() == [2, 3, 1]
    half = 12.706204736174707 * np.sqrt(0.02 / 2)        # t(0.975, 1) · s / √n
    np.testing.assert_allclose([r.low[0, 0, 0], r.high[0, 0, 0]], [0.2 - half, 0.2 + half])
    assert r.weight[0, 0].sum() == pytest.approx(1.0) and r.weight[0, 0, 1] == 0.0
    assert r.weight[0, 0, 2] == pytest.approx(1 / (1 + np.exp(-0.6 / 0.05)))
    # a prior of one optimistic reward: the unseen agent ranks first
    hopeful = AgentRankings.from_log(np.zeros(5, int), np.zeros(5, int),
                                     np.array([0, 0, 2, 2, 2]),
                                     np.array([0.1, 0.3, 0.9, 0.7, 0.8]), (1, 1, 3),
                                     prior_mean=1.0, prior_count=1.0)
    assert hopeful.rank[0, 0].tolist() == [3, 1, 2]


def test_true_quality_and_kendall_tau():
    expected = np.array([[0.1, 0.5, 0.9], [0.3, 0.5, 0.7], [0.9, 0.1, 0.5]])
    truth = true_quality(np.array([0, 0, 1]), np.array([1, 1, 0]), expected, (2, 2, 3))
    np.testing.assert_allclose(truth[0, 1], [0.2, 0.5, 0.8])
    np.testing.assert_allclose(truth[1, 0], [0.9, 0.1, 0.5])
    assert np.isnan(truth[0, 0]).all()
    tau = kendall_tau(truth[..., ::-1].copy(), truth)
    assert tau[0, 1] == pytest.approx(-1.0) and np.isnan(tau[0, 0])
    with pytest.raises(ConfigError, match="cannot be compared"):
        kendall_tau(truth[..., :2], truth)


@pytest.mark.parametrize("change, message", [
    (dict(agent=np.array([0, 3])), "'agent' row 1 is 3; valid: 0..2"),
    (dict(task=np.array([0.0, 1.0])), "'task' has dtype float64"),
    (dict(reward=np.array([0.5, np.inf])), "'reward' row 1 is inf"),
    (dict(persona=np.array([0])), "'persona' has shape \\(1,\\)"),
])
def test_bad_logs_name_the_column(change, message):
    log = dict(task=np.array([0, 1]), persona=np.array([0, 0]), agent=np.array([0, 1]),
               reward=np.array([0.5, 0.2]))
    with pytest.raises(DataError, match=message):
        AgentRankings.from_log(**{**log, **change}, shape=(2, 1, 3))


def test_the_persona_router_routes_by_the_rankings_weights():
    """The router's action probabilities are ``routing_weights`` of its means — the same
    numbers, bit for bit, as the softmax it used before — and its ``rankings()`` table
    holds its means and weights per task × persona."""
    layout = ObsLayout(num_agents=4, num_archetypes=6)
    router = PersonaRouter(layout, seed=3)
    rng = np.random.default_rng(0)
    obs = rng.random((500, layout.size)).astype(np.float32)
    for _ in range(5):
        router.update(obs, rng.integers(0, 4, 500), rng.random(500))
    probs = router.action_probs(obs)
    assert np.array_equal(probs, softmax(router.means(obs), router.temperature))
    assert np.array_equal(probs, routing_weights(router.means(obs), router.temperature))
    table = router.rankings()
    cols = layout.slices()
    task = obs[:, cols["task"]].argmax(axis=1)
    bucket = router.bucket(obs)
    persona = bucket - task * 7
    np.testing.assert_allclose(table.mean[task, persona], router.means(obs), rtol=1e-12)
    np.testing.assert_allclose(table.weight[task, persona], probs, rtol=1e-9)
    assert (table.rank[task, persona].min(axis=1) == 1).all()


def test_collect_and_rank_as_the_readme_says(tmp_path):
    """The README's two lines: a uniformly random router's log with the truth, then the
    agents ranked per task × latent archetype and scored against their true quality."""
    import pyarrow.parquet as pq
    from hydra import compose, initialize_config_dir

    from experiments.collect import collect_data
    from experiments.rank import rank_agents
    from tests.readme import ROOT, overrides

    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("collect", overrides=overrides(
            "behaviour=random exploration.mode=sample", extra=["episodes=600"]))
        log = collect_data(cfg, tmp_path / "logged.parquet")
        cfg = compose("rank", overrides=overrides(
            "experiments.rank data=", {"outputs/<date>/<time>/logged.parquet": log}))
    report = rank_agents(cfg, tmp_path)
    table = pq.read_table(tmp_path / "rankings.parquet").to_pandas()
    assert len(table) == 5 * 6 * 6 and table["count"].sum() > 1000
    assert {"mean", "low", "high", "rank", "weight", "true_mean"} <= set(table.columns)
    cell = table.groupby(["task", "persona"])["weight"].sum()
    np.testing.assert_allclose(cell, 1.0)
    assert "Mean Kendall τ over the cells with data" in report.read_text()
