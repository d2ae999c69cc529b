"""Simulated annotators, preference pairs, the Bradley–Terry reward model (issue 23)."""

from __future__ import annotations

import numpy as np
import pytest

from envs.turns import turn_contexts
from personarl.errors import ConfigError, DataError
from rewards.preferences import (Annotators, PreferencePairs, annotate, check_pairs,
                                 label_ceiling, load_pairs, sigmoid)
from rewards.reward_model import RewardModel, pair_metrics

ADAPT = "personarl/PersonalityAdaptation-v0"
ROUTE = "personarl/AgentRouting-v0"


def _pool(m: int = 40, **kw) -> Annotators:
    return Annotators.from_traits(np.random.default_rng(7).random((m, 10)), **kw)


def _style_pairs(n: int, seed: int, *, context: str = "profile", sd: float = 0.3,
                 bias: str | None = None, strength: float = 0.0):
    ctx = turn_contexts(ADAPT, n, seed, context=context,
                        env_kwargs={"action_mode": "continuous"})
    rng = np.random.default_rng(seed + 1)
    a = np.clip(0.5 + sd * rng.standard_normal((n, 10)), 0, 1)
    b = np.clip(0.5 + sd * rng.standard_normal((n, 10)), 0, 1)
    pool = _pool(bias=strength)
    return ctx, annotate(ctx.observation, a, b, ctx.true_reward(a), ctx.true_reward(b), pool,
                         rng, bias_a=ctx.taste(bias, a), bias_b=ctx.taste(bias, b))


def test_labels_follow_the_annotator_model():
    # one margin for all: the share of a-wins must be f + (1 - 2f) sigmoid(margin / tau)
    n, margin = 200_000, 0.03
    pool = Annotators(tau=np.array([0.02]), flip=np.array([0.1]), bias=np.array([0.0]))
    rng = np.random.default_rng(0)
    x = np.zeros((n, 1))
    pairs = annotate(x, np.zeros(n, np.int64), np.ones(n, np.int64), np.full(n, margin),
                     np.zeros(n), pool, rng, num_actions=2)
    expected = 0.1 + 0.8 * sigmoid(margin / 0.02)
    share = np.mean(pairs.chosen == 0)
    assert abs(share - expected) < 4 * np.sqrt(expected * (1 - expected) / n)
    assert label_ceiling(pairs) == pytest.approx(expected)
    assert np.allclose(pairs.true_margin[pairs.chosen == 0], margin)
    assert np.allclose(pairs.true_margin[pairs.chosen == 1], -margin)


def test_the_bias_moves_labels_the_truth_does_not_share():
    _, clean = _style_pairs(20_000, 3)
    _, biased = _style_pairs(20_000, 3, bias="flattery", strength=0.4)
    from rewards.preferences import STYLE_BIASES
    flat = STYLE_BIASES["flattery"]
    gain = lambda p: np.mean(flat(p.chosen) - flat(p.rejected))   # noqa: E731
    assert gain(biased) > gain(clean) + 0.03                 # measured 0.057 vs 0.012
    assert np.mean(biased.true_margin > 0) < np.mean(clean.true_margin > 0) - 0.015


@pytest.mark.slow
def test_reward_model_reaches_the_annotators_ceiling(tmp_path):
    from agents.learners.bradley_terry import fit_reward_model

    _, pairs = _style_pairs(110_000, 11)
    train, held = pairs.split(10_000 / 110_000, np.random.default_rng(0))
    model = fit_reward_model(train, seed=0)
    m = pair_metrics(model, held)
    assert m["pairs"] >= 10_000
    assert m["ceiling"] - 0.02 <= m["accuracy"] <= m["ceiling"] + 0.01, m
    assert m["ece"] < 0.05, m
    # the file scores what the trained model scores, in NumPy
    again = RewardModel.load(model.save(tmp_path / "rm.npz"))
    assert np.array_equal(again.reward(held.context, held.chosen),
                          model.reward(held.context, held.chosen))


def test_ensemble_objectives_and_discrete_actions():
    from agents.learners.bradley_terry import fit_reward_model
    from rewards.reward_model import BradleyTerryConfig

    ctx = turn_contexts(ROUTE, 4_000, 5, context="profile")
    rng = np.random.default_rng(2)
    a = ctx.random_actions(len(ctx), rng)
    b = (a + rng.integers(1, ctx.num_actions, len(ctx))) % ctx.num_actions
    pairs = annotate(ctx.observation, a, b, ctx.true_reward(a), ctx.true_reward(b), _pool(),
                     rng, num_actions=ctx.num_actions)
    model = fit_reward_model(pairs, BradleyTerryConfig(members=3, hidden=(16,), epochs=5),
                             seed=1)
    r = model.member_scores(pairs.context, pairs.chosen)
    assert r.shape == (3, len(pairs)) and not np.allclose(r[0], r[1])
    assert np.allclose(model.reward(pairs.context, pairs.chosen, objective="worst_case"),
                       r.min(axis=0))
    assert np.allclose(model.reward(pairs.context, pairs.chosen,
                                    objective="uncertainty_weighted", penalty=2.0),
                       r.mean(axis=0) - 2.0 * r.var(axis=0))
    with pytest.raises(DataError, match=r"unknown action 6; valid actions are 0..5"):
        model.reward(pairs.context, np.full(len(pairs), 6))
    with pytest.raises(ConfigError, match="objective='max'; valid: mean, worst_case"):
        model.reward(pairs.context, pairs.chosen, objective="max")


def _discrete_pairs(**change) -> PreferencePairs:
    n = 4
    fields = dict(context=np.zeros((n, 2), np.float32), chosen=np.array([0, 1, 2, 0]),
                  rejected=np.array([1, 2, 0, 2]), strength=np.full(n, 0.5),
                  annotator=np.zeros(n, np.int64), true_margin=np.zeros(n),
                  utility_margin=np.zeros(n), flip=np.zeros(n), tau=np.ones(n),
                  num_actions=3)
    fields.update(change)
    return PreferencePairs(**fields)


@pytest.mark.parametrize("change, message", [
    ({"chosen": np.array([0, 1, 7, 0])}, r"unknown action 7 in chosen of pair 2; valid "
                                         r"actions are 0..2"),
    ({"strength": np.array([0.5, np.nan, 0.5, 0.5])}, r"strength is not finite in pair 1"),
    ({"strength": np.array([0.5, 1.5, 0.5, 0.5])}, r"strength 1.5 in pair 1 is outside"),
    ({"rejected": np.array([0, 2, 0, 2])}, r"chosen == rejected in pair 0"),
    ({"context": np.full((4, 2), np.inf, np.float32)}, r"context is not finite in pair 0"),
    ({"context": np.zeros(4, np.float32)}, r"context must be a NumPy array of \(n, d\)"),
    ({"tau": np.zeros(4)}, r"every tau must be > 0 and every flip in \[0, 0.45\]"),
    ({"flip": np.full(4, 0.9)}, r"every tau must be > 0 and every flip"),
    ({"annotator": np.zeros(4)}, r"annotator ids must be integers"),
    ({"strength": 0.5}, r"strength must be a NumPy array of one value per pair"),
])
def test_bad_pairs_are_refused_by_name(change, message):
    with pytest.raises(DataError, match=message):
        check_pairs(_discrete_pairs(**change))


def test_annotate_refuses_comparisons_of_unequal_length():
    with pytest.raises(DataError, match=r"reward_b must have one row per comparison \(3\)"):
        annotate(np.zeros((3, 2)), np.zeros(3, np.int64), np.ones(3, np.int64), np.zeros(3),
                 np.zeros(2), _pool(), np.random.default_rng(0), num_actions=2)


def test_empty_pairs_and_files(tmp_path):
    empty = _discrete_pairs().take(np.zeros(0, np.int64))
    with pytest.raises(DataError, match="the pair set is empty"):
        check_pairs(empty)
    from agents.learners.bradley_terry import fit_reward_model
    with pytest.raises(DataError, match="the pair set is empty"):
        fit_reward_model(empty)
    good = _discrete_pairs()
    assert np.array_equal(load_pairs(good.save(tmp_path / "p.npz")).chosen, good.chosen)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    data = (tmp_path / "p.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[:len(data) // 2])
    (tmp_path / "empty.npz").write_bytes(b"")
    for name in ("junk.npz", "cut.npz", "empty.npz"):
        with pytest.raises(DataError, match=f"{name} is not a preference-pair file"):
            load_pairs(tmp_path / name)
    with pytest.raises(DataError, match="no reward model at .*train one first"):
        RewardModel.load(tmp_path / "missing.npz")
    with pytest.raises(ConfigError, match=r"bias='flattery' is a taste over assistant "
                                          r"styles; .*AgentRouting-v0 has none"):
        turn_contexts(ROUTE, 8, 0).taste("flattery", np.zeros(8, np.int64))
    with pytest.raises(ConfigError, match=r"flip=0.6 .*\[0, 0.3\]|flip"):
        _pool(flip=0.6)


def test_preferences_and_the_lab_run_as_the_readme_says(tmp_path):
    import json
    import subprocess

    from tests.readme import ROOT, command

    small_model = ["model.epochs=2", "model.hidden=[16]"]
    done = subprocess.run(command("bias.taste=flattery bias.strength=0.4 export=true", extra=[
        "pairs=800", "holdout=200", *small_model, f"hydra.run.dir={tmp_path / 'p'}"]),
        capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "p" / "export.json").read_text())
    assert manifest["rows"] > 700 and len(manifest["files"]) == 3
    assert load_pairs(tmp_path / "p" / "pairs.npz").num_actions is None

    done = subprocess.run(command("experiments.overoptimisation", extra=[
        "contexts=600", "eval_contexts=20", "max_n=8", "samples=4", *small_model,
        "ensemble.members=2", "ppo.timesteps=1024", "ppo.snapshots=2", "ppo.lanes=64",
        "ppo.batch_size=64", f"hydra.run.dir={tmp_path / 'lab'}"]),
        capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    out = json.loads((tmp_path / "lab" / "overoptimisation.json").read_text())
    assert [r["seed"] for r in out["seeds"]] == [0, 1, 2]
    for r in out["seeds"]:
        bon = r["variants"]["biased"]["best_of_n"]
        n = np.array(r["variants"]["biased"]["n"])
        assert np.allclose(np.square(bon["d"]), np.log(n) - (n - 1) / n)
        rl = r["variants"]["ensemble"]["rl"]
        assert rl["d"][0] == 0 and rl["timesteps"] == [0, 256, 1024]     # (i / 2)² spacing
    assert set(out["summary"]["rl"]) == {"biased", "control", "ensemble", "drop_difference"}
    assert (tmp_path / "lab" / "overoptimisation.png").stat().st_size > 10_000

    bad = subprocess.run(command("experiments.overoptimisation", extra=[
        "bias.taste=sarcasm", f"hydra.run.dir={tmp_path / 'bad'}"]),
        capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2
    assert "bias.taste='sarcasm'; valid: flattery, verbosity" in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_discrete_styles_run_through_the_app_and_a_run_dir_is_not_reused(tmp_path):
    from hydra import compose, initialize_config_dir

    from experiments.preferences import preferences
    from experiments.schema import register_configs
    from tests.readme import ROOT

    register_configs()
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("preferences", overrides=[
            "action_mode=discrete", "context=observation", "export=true", "pairs=600",
            "holdout=100", "model.epochs=2", "model.hidden=[8]"])
    preferences(cfg, tmp_path)
    model = RewardModel.load(tmp_path / "reward_model.npz")
    assert model.num_actions == 9 and load_pairs(tmp_path / "pairs.npz").num_actions == 9
    assert (tmp_path / "preferences.dpo.jsonl").stat().st_size > 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match=r"already holds export.json, pairs.npz, "
                                          r"preferences.\*.jsonl, reward_model.npz"):
        preferences(cfg, tmp_path)
    assert before == {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
