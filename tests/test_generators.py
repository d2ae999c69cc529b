"""Synthetic-data generators (issue 22): what they learn, what DP costs them, the ledger's
guard, the persona generator as a population, bad input, and ``experiments.synthesize``."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from personarl.errors import ConfigError, DataError
from personarl.statefile import read_state, write_state
from synth.generators import Column, TableSpec, check_table, fit_gmm, fit_vae, load_generator
from synth.generators.persona import persona_spec, persona_table
from synth.population import PopulationConfig, PopulationSampler
from synth.privacy.ledger import PrivacyBudgetExceeded, PrivacyLedger, calibrate, event_epsilon

warnings.filterwarnings("ignore", message="Secure RNG turned off")
warnings.filterwarnings("ignore", message="Full backward hook is firing")

SPEC = TableSpec((Column("x", "continuous", (-6, 6)), Column("y", "continuous", (-6, 10)),
                  Column("c", "categorical", categories=("a", "b"))))


def toy(n: int, seed: int = 0) -> pd.DataFrame:
    """x ~ N(0, 1), y = 2 + x + N(0, ½²) (correlation ≈ 0.89), c = "a" iff x > 0."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    return pd.DataFrame({"x": x, "y": 2 + x + 0.5 * rng.standard_normal(n),
                         "c": np.where(x > 0, "a", "b"), "consent": True})


def ledger_for(tmp_path, epsilon: float = 10.0) -> PrivacyLedger:
    data = tmp_path / "users.parquet"
    data.touch()
    return PrivacyLedger.open(data, epsilon, 1e-5)


def test_gmm_learns_the_joint_table_and_round_trips(tmp_path):
    gen = fit_gmm(toy(4000), SPEC, 4)
    rows = gen.sample(4000, np.random.default_rng(1))
    assert list(rows.columns) == ["x", "y", "c", "source"]
    assert set(rows["source"]) == {"generated"}
    assert abs(rows["x"].mean()) < 0.1 and abs(rows["y"].mean() - 2) < 0.1
    assert np.corrcoef(rows["x"], rows["y"])[0, 1] > 0.8            # the dependence
    assert ((rows["c"] == "a") == (rows["x"] > 0)).mean() > 0.85     # across column types
    loaded = load_generator(gen.save(tmp_path / "g"))
    again = loaded.sample(50, np.random.default_rng(2))
    pd.testing.assert_frame_equal(again, gen.sample(50, np.random.default_rng(2)))
    mixed = gen.augment(toy(10), 5, np.random.default_rng(0))
    assert mixed["source"].tolist() == ["real"] * 10 + ["augmented"] * 5


def test_vae_learns_the_marginals():
    gen = fit_vae(toy(2000), SPEC, epochs=15)
    rows = gen.sample(4000, np.random.default_rng(1))
    assert abs(rows["x"].mean()) < 0.2 and abs(rows["x"].std() - 1) < 0.2
    assert abs((rows["c"] == "a").mean() - 0.5) < 0.1
    assert np.corrcoef(rows["x"], rows["y"])[0, 1] > 0.6


def test_calibrate_meets_epsilon_tightly():
    from dp_accounting import GaussianDpEvent

    sigma = calibrate(GaussianDpEvent, 1.0, 1e-5)
    assert event_epsilon(GaussianDpEvent(sigma), 1e-5) <= 1.0
    assert event_epsilon(GaussianDpEvent(sigma * 0.99), 1e-5) > 1.0
    with pytest.raises(ConfigError, match="epsilon"):
        calibrate(GaussianDpEvent, 0.0, 1e-5)


def test_dp_gmm_spends_exactly_its_epsilon_and_is_refused_beyond_the_budget(tmp_path):
    ledger = ledger_for(tmp_path, epsilon=1.2)
    gen = fit_gmm(toy(4000), SPEC, 4, epsilon=1.0, ledger=ledger)
    spent = ledger.spent()
    assert 0.99 < spent <= 1.0
    assert gen.privacy["epsilon"] == 1.0 and gen.privacy["entry"] == 1
    assert abs(gen.rows - 4000) < 200                  # the released count is a noisy one
    rows = gen.sample(4000, np.random.default_rng(1))
    assert abs(rows["x"].mean()) < 0.25 and np.corrcoef(rows["x"], rows["y"])[0, 1] > 0.6
    before = ledger.path.read_text()
    with pytest.raises(PrivacyBudgetExceeded):
        fit_gmm(toy(4000), SPEC, 4, epsilon=1.0, ledger=ledger)
    assert ledger.path.read_text() == before          # refused: nothing written
    loaded = load_generator(gen.save(tmp_path / "dp"))
    assert loaded.privacy["entry"] == 1


def test_dp_vae_is_stopped_by_the_ledger_guard(tmp_path):
    ledger = ledger_for(tmp_path)
    gen = fit_vae(toy(400), SPEC, epochs=2, batch_size=100, epsilon=2.0, ledger=ledger)
    p = gen.privacy
    # the noise is calibrated for 2 epochs at q = 0.25: 8 steps; the loop would run 4x
    # that, the guard stops it at the run's own cap
    assert p["planned_steps"] == 8 and p["steps"] == 8
    assert ledger.spent() <= 2.0 + 1e-9
    (entry,) = ledger.entries
    assert entry["kind"] == "dp_sgd" and entry["status"] == "committed"
    assert gen.rows is None                            # no exact count released
    assert p["epsilon_spent"] == pytest.approx(ledger.spent(), rel=1e-6)
    (tmp_path / "nearly").mkdir()
    nearly = ledger_for(tmp_path / "nearly", epsilon=0.5)
    fit_gmm(toy(400), SPEC, 2, epsilon=0.45, ledger=nearly)
    before = nearly.path.read_text()
    with pytest.raises(PrivacyBudgetExceeded, match="planned steps.*nothing was trained"):
        fit_vae(toy(400), SPEC, epochs=2, batch_size=100, epsilon=0.2, ledger=nearly)
    assert nearly.path.read_text() == before             # refused whole, before a step


def test_bad_input_is_named(tmp_path):
    with pytest.raises(DataError, match="empty"):
        fit_gmm(toy(0), SPEC)
    with pytest.raises(DataError, match="empty"):
        fit_vae(toy(0), SPEC)
    wrong = toy(10).assign(x=["high"] * 10)
    with pytest.raises(DataError, match=r"'x' is continuous but holds .* \(first: 'high'\)"):
        fit_gmm(wrong, SPEC, 2)
    with pytest.raises(DataError, match="'c' holds 'z'.*'a', 'b'"):
        check_table(toy(10).assign(c="z"), SPEC)
    with pytest.raises(DataError, match=r"row 3 is nan"):
        check_table(toy(10).assign(y=[0, 1, 2, np.nan, 4, 5, 6, 7, 8, 9]), SPEC)
    with pytest.raises(DataError, match="no column"):
        fit_gmm(toy(10).drop(columns="y"), SPEC, 2)
    with pytest.raises(ConfigError, match="spends from a privacy ledger"):
        fit_gmm(toy(100), SPEC, 2, epsilon=1.0)
    with pytest.raises(ConfigError, match="spends from a privacy ledger"):
        fit_vae(toy(100), SPEC, epsilon=1.0)
    with pytest.raises(ConfigError, match="no epsilon"):
        fit_gmm(toy(100), SPEC, 2, ledger=ledger_for(tmp_path))
    with pytest.raises(DataError, match="consent"):
        fit_gmm(toy(100).drop(columns="consent"), SPEC, 2, epsilon=1.0,
                ledger=ledger_for(tmp_path))
    with pytest.raises(DataError, match="cannot fit n_components=5"):
        fit_gmm(toy(3), SPEC, 5)
    with pytest.raises(ConfigError, match="bounds"):
        Column("x", "continuous", (1, 1))
    with pytest.raises(ConfigError, match="kind='text'"):
        Column("x", "text")
    (tmp_path / "junk.npz").write_bytes(b"not a generator")
    with pytest.raises(DataError, match="not a generator file"):
        load_generator(tmp_path / "junk.npz")


def test_persona_generator_serves_as_a_population(tmp_path):
    import gymnasium as gym
    import envs  # noqa: F401  (registers the envs)

    sampler = PopulationSampler()
    table = persona_table(sampler.sample(3000, np.random.default_rng(0)), sampler)
    assert table["consent"].mean() < 1                 # consent is the sampler's own
    path = fit_gmm(table, persona_spec(sampler), 4).save(tmp_path / "persona")
    generated = PopulationSampler(PopulationConfig(generator=str(path)))
    pop = generated.sample(2000, np.random.default_rng(1))
    assert np.allclose(pop.weights.sum(axis=1), 1) and (pop.weights >= 0).all()
    assert (pop.primary == pop.weights.argmax(axis=1)).all()
    assert 0.02 < pop.is_bot.mean() < 0.09            # the real share is 0.05
    # cities lie in the generated region
    from synth.demographics import CITY_REGION, REGIONS
    rows = generated.generator.sample(5, np.random.default_rng(1))
    again = generated.sample(5, np.random.default_rng(1))
    assert [REGIONS[r] for r in CITY_REGION[again.city]] == rows["region"].tolist()
    env = gym.make("personarl/PersonalityAdaptation-v0",
                   population={"generator": str(path)})
    env.reset(seed=0)
    env.step(env.action_space.sample())
    with pytest.raises(ConfigError, match="does not model this population"):
        PopulationSampler(PopulationConfig(generator=str(path),
                                           groups={"g1": 0.5, "g2": 0.5}))
    with pytest.raises(ConfigError, match="no scheduled events"):
        PopulationSampler(PopulationConfig(generator=str(path), events=[
            {"kind": "drift", "at": 5, "source": "explorer", "target": "optimizer",
             "strength": 0.1}]))
    with pytest.raises(ConfigError, match="none.npz' is not a file"):
        PopulationSampler(PopulationConfig(generator=str(tmp_path / "none.npz")))


def test_the_readme_synthesizes_behind_the_gate_and_names_mistakes(tmp_path):
    """The README's lines: a DP behaviour table released, a DP persona generator with its
    utility (smaller: 4,000 users, 200 evaluation users)."""
    from tests.readme import command

    run = tmp_path / "run"
    done = subprocess.run(command("table=behaviour epsilon=1.0", extra=[
        f"hydra.run.dir={run}"]), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = (run / "report.md").read_text()
    assert "Memorisation gate **passed**" in report and "ε spent 1 of 1" in report
    released = pd.read_parquet(run / "synthetic.parquet")
    assert len(released) == 5000 and set(released["source"]) == {"generated"}
    gen = load_generator(run / "generator.npz")
    assert gen.kind == "gmm" and gen.privacy["epsilon"] == 1.0
    persona = tmp_path / "persona"
    done = subprocess.run(command("table=persona epsilon=1.0 utility=true", extra=[
        "users=4000", "episodes=200", "warmup_steps=100", f"hydra.run.dir={persona}"]),
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = (persona / "report.md").read_text()
    ratio = float(report.split("(R_real − R_random) = **")[1].split("**")[0])
    assert ratio > 0.8
    bad = subprocess.run([sys.executable, "-m", "experiments.synthesize", "generator=gan",
                          f"hydra.run.dir={tmp_path / 'b'}"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert "generator='gan'; valid: ['gmm', 'vae']" in bad.stdout + bad.stderr


def test_fidelity_bench_smoke_and_the_planted_leak():
    from experiments.bench.synthetic import fidelity_study

    out = fidelity_study(seeds=1, epsilons=(1.0,), users=800, components=2,
                         generators=("gmm",))
    assert set(out["rows"]) == {"gmm, no DP", "gmm, ε = 1"}
    assert out["rows"]["gmm, no DP"]["mmd2"]["median"] < 0.02
    assert out["rows"]["gmm, ε = 1"]["runs"][0]["steps"] is None       # not DP-SGD
    assert out["gate"]["planted leak (half copied)"]["passes"] is False
    assert out["gate"]["planted leak (half copied)"]["dcr_share"] > 0.7


def _compose(*overrides: str):
    from hydra import compose, initialize_config_dir

    from experiments.schema import register_configs
    from tests.readme import ROOT

    register_configs()
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return compose("synthesize", overrides=list(overrides))


def test_synthesize_checks_everything_before_it_spends(tmp_path):
    from experiments.synthesize import synthesize

    data = tmp_path / "users.parquet"
    toy_users = persona_table(PopulationSampler().sample(400, np.random.default_rng(0)),
                              PopulationSampler())
    toy_users.to_parquet(data)
    ledger_file = PrivacyLedger.path_for(data)
    for bad, message in [
            (["samples=1"], "samples=1"), (["gate_tolerance=0.6"], "gate_tolerance=0.6"),
            (["seed=-1"], "seed=-1"), (["components=0"], "components=0"),
            (["epsilon=1e9"], r"outside the valid range \[0.001, 100.0\]"),
            (["budget=0.5"], "budget=0.5 is below"),
            (["utility=true", "table=behaviour"], "needs table=persona"),
            (["persona=custom_example"], "must have no events"),
            (["utility=true", "persona=custom_example", "persona.events=[]"], "archetype"),
            (["users=4", "data=null"], "users=4")]:
        with pytest.raises(ConfigError, match=message):
            synthesize(_compose(f"data={data}", "table=persona", "epsilon=1", *bad),
                       tmp_path)
        assert not ledger_file.exists(), bad             # nothing was spent or created
    # a budget is given once, when the ledger is created; later fits just open it
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    synthesize(_compose(f"data={data}", "table=persona", "epsilon=1", "budget=3",
                        "components=2"), tmp_path / "a")
    synthesize(_compose(f"data={data}", "table=persona", "epsilon=1", "components=2"),
               tmp_path / "b")
    ledger = PrivacyLedger(ledger_file)
    assert ledger.epsilon == 3 and len(ledger.entries) == 2
    few = tmp_path / "few.parquet"
    toy_users.iloc[:12].to_parquet(few)
    with pytest.raises(ConfigError, match="needs at least 16: half to fit"):
        synthesize(_compose(f"data={few}", "table=persona", "epsilon=1"), tmp_path)
    assert not PrivacyLedger.path_for(few).exists()


def test_api_mistakes_are_named(tmp_path):
    gen = fit_gmm(toy(50), SPEC, 2)
    with pytest.raises(ConfigError, match="numpy Generator"):
        gen.sample(3, None)
    with pytest.raises(ConfigError, match="does not exist"):
        gen.save(tmp_path / "missing" / "g")
    with pytest.raises(ConfigError, match="spec must be a TableSpec"):
        fit_gmm(toy(50), "behaviour")
    with pytest.raises(ConfigError, match="list of Column"):
        TableSpec("x")
    with pytest.raises(ConfigError, match="Column objects or mappings"):
        TableSpec(("x",))
    with pytest.raises(ConfigError, match="list of strings"):
        Column("c", "categorical", categories="abc")
    (tmp_path / "users.txt").write_text("user,consent\n")
    np.save(tmp_path / "array.npy", np.arange(3))
    np.savez(tmp_path / "other.npz", x=np.arange(3))
    for junk in ("users.txt", "array.npy", "other.npz"):
        with pytest.raises(DataError, match="is not a generator file") as info:
            load_generator(tmp_path / junk)
        assert "pickle" not in str(info.value)
    with pytest.raises(ConfigError, match="is not a file"):
        load_generator(tmp_path)
    good = gen.save(tmp_path / "good")
    (tmp_path / "cut.npz").write_bytes(good.read_bytes()[:300])
    with pytest.raises(DataError, match="damaged"):
        load_generator(tmp_path / "cut.npz")
    state = read_state(good)
    arrays = state["arrays"]
    write_state(tmp_path / "short.npz",
                {**state, "arrays": {k: v for k, v in arrays.items() if k != "weights"}})
    with pytest.raises(DataError, match="has no 'weights' array"):
        load_generator(tmp_path / "short.npz")
    write_state(tmp_path / "odd.npz",
                {**state, "arrays": {**arrays, "means": arrays["means"][:, :2]}})
    with pytest.raises(DataError, match=r"'means' has shape \(2, 2\); its table needs "
                                        r"\(2, 4\)"):
        load_generator(tmp_path / "odd.npz")
    behaviour = fit_gmm(toy(50), SPEC, 2).save(tmp_path / "behaviour")
    with pytest.raises(ConfigError, match="generates another table"):
        PopulationSampler(PopulationConfig(generator=str(behaviour)))
    with pytest.raises(ConfigError, match="persona.generator=.*not a generator file"):
        PopulationSampler(PopulationConfig(generator=str(tmp_path / "other.npz")))


def test_training_on_a_generator_refuses_a_shift_it_would_ignore(tmp_path):
    from hydra import compose, initialize_config_dir

    from experiments.wiring import validate
    from tests.readme import ROOT

    sampler = PopulationSampler()
    path = fit_gmm(persona_table(sampler.sample(500, np.random.default_rng(0)), sampler),
                   persona_spec(sampler), 2).save(tmp_path / "persona")
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[f"persona.generator={path}"])
        with pytest.raises(ConfigError, match="eval.populations.shifted overrides "
                                              r"\['proportions'\]"):
            validate(cfg)
        validate(compose("train", overrides=[f"persona.generator={path}",
                                             "~eval.populations.shifted"]))
