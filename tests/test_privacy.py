"""Issue 21: the privacy ledger refuses (every path), agrees with independent accountants and
survives kill -9; quasi-identifiers; k-anonymity; erasure that leaves nothing."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dp_accounting import (GaussianDpEvent, LaplaceDpEvent, PoissonSampledDpEvent,
                           SelfComposedDpEvent)

from personarl.errors import ConfigError, DataError
from personarl.identifiers import Pseudonymiser
from synth.demographics import AGE_BANDS, AGE_SHARES, CITIES, CITY_SHARES, hierarchies
from synth.population import PopulationSampler
from synth.privacy.anonymity import class_sizes, k_anonymise, smallest_class
from synth.privacy.ledger import PrivacyBudgetExceeded, PrivacyLedger
from synth.privacy.mechanisms import release_count, release_histogram, release_sum

PSEUDONYMISE = Pseudonymiser("privacy-tests-key-" + "0" * 32)


def users_table(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """``n`` simulated users: pseudonym, quasi-identifiers (labels), consent, a number."""
    sampler = PopulationSampler()
    pop = sampler.sample(n, np.random.default_rng(seed))
    return pd.DataFrame(dict(
        user_id=[PSEUDONYMISE(f"user-{i}") for i in range(n)],
        age_band=np.array(AGE_BANDS)[pop.age_band], city=np.array(CITIES)[pop.city],
        group=np.array(sampler.group_names)[pop.group], consent=pop.consent,
        engagement=pop.traits[:, 2]))


@pytest.fixture
def spent_ledger(tmp_path):
    """A ledger of budget (1, 1e-5) after two ε = 0.5 releases: full."""
    ledger = PrivacyLedger.open(tmp_path / "users.parquet", epsilon=1.0, delta=1e-5)
    table = users_table()
    for _ in range(2):
        assert release_count(table, epsilon=0.5, ledger=ledger).epsilon <= 0.5
    assert ledger.report()["epsilon"] <= 1.0
    return ledger, table


def _unchanged(ledger, before: bytes) -> None:
    assert ledger.path.read_bytes() == before
    assert [e["status"] for e in ledger.entries] == ["committed", "committed"]


# ---------------------------------------------------------------- enforcement, per path
def test_a_third_release_is_refused_before_any_noise(spent_ledger, monkeypatch):
    ledger, table = spent_ledger
    before = ledger.path.read_bytes()
    import opendp.prelude as dp
    measured = []
    real = dp.binary_search_param
    monkeypatch.setattr(dp, "binary_search_param",
                        lambda *a, **k: measured.append(1) or real(*a, **k))
    for release in (lambda: release_count(table, 0.5, ledger),
                    lambda: release_count(table, 1e-3, ledger),
                    lambda: release_histogram(table, "group", ["group_a", "group_b",
                                                                "group_c"], 0.1, ledger),
                    lambda: release_sum(table, "engagement", (0.0, 1.0), 0.05, ledger)):
        with pytest.raises(PrivacyBudgetExceeded, match="nothing was run"):
            release()
    assert measured                      # the scale was searched, then the spend refused
    _unchanged(ledger, before)


def test_a_generator_fit_is_refused_before_it_runs(spent_ledger):
    ledger, _ = spent_ledger
    before = ledger.path.read_bytes()
    ran = []
    with pytest.raises(PrivacyBudgetExceeded, match="fit 'mixture'"):
        with ledger.spend(SelfComposedDpEvent(LaplaceDpEvent(20.0), 4), "fit", "mixture"):
            ran.append(True)
    assert not ran
    _unchanged(ledger, before)


def _private_regression(rows: int, noise_multiplier: float):
    """A tiny linear regression made private by Opacus (Poisson batches of 10 rows)."""
    import torch
    from opacus import PrivacyEngine

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(rows, 3), torch.randn(rows, 1))
    model = torch.nn.Linear(3, 1)
    return PrivacyEngine().make_private(
        module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
        data_loader=torch.utils.data.DataLoader(data, batch_size=10),
        noise_multiplier=noise_multiplier, max_grad_norm=1.0)


def test_a_dp_sgd_step_is_refused_before_the_parameters_change(spent_ledger):
    import torch

    from synth.privacy.dpsgd import LedgerSteps

    ledger, _ = spent_ledger
    before = ledger.path.read_bytes()
    model, optimizer, loader = _private_regression(rows=100, noise_multiplier=5.0)
    run = LedgerSteps(ledger, optimizer, loader.sample_rate, "regression")
    x, y = next(iter(loader))
    optimizer.zero_grad()
    ((model(x) - y) ** 2).mean().backward()
    weights = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(PrivacyBudgetExceeded, match="dp_sgd 'regression'"):
        optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))
    assert run.steps == 0
    _unchanged(ledger, before)


def test_dp_sgd_steps_are_spent_up_to_the_budget_and_cut_back_on_close(tmp_path):
    from synth.privacy.dpsgd import LedgerSteps

    ledger = PrivacyLedger.open(tmp_path / "d.parquet", epsilon=0.5, delta=1e-5)
    model, optimizer, loader = _private_regression(rows=200, noise_multiplier=3.0)
    run = LedgerSteps(ledger, optimizer, loader.sample_rate, "tiny")
    with pytest.raises(PrivacyBudgetExceeded):
        for _ in range(100):
            for x, y in loader:
                optimizer.zero_grad()
                ((model(x) - y) ** 2).mean().backward()
                optimizer.step()
    run.close()
    report = ledger.report()
    assert run.steps > 5 and report["epsilon"] <= 0.5
    one_more = SelfComposedDpEvent(PoissonSampledDpEvent(loader.sample_rate,
                                                         GaussianDpEvent(3.0)), run.steps + 1)
    assert ledger.project(one_more, replace=run.entry) > 0.5     # the step refused did not fit
    assert [e["status"] for e in ledger.entries] == ["committed"]
    assert run.reserved == run.steps == ledger.entries[0]["event"]["count"]


# ---------------------------------------------------------------- accounting
def test_the_ledger_agrees_with_opacus_accountants(tmp_path):
    from opacus.accountants import PRVAccountant, RDPAccountant

    ledger = PrivacyLedger.open(tmp_path / "d.parquet", epsilon=2.0, delta=1e-5)
    event = SelfComposedDpEvent(PoissonSampledDpEvent(0.01, GaussianDpEvent(1.1)), 1000)
    with ledger.spend(event, "dp_sgd", "q=0.01 sigma=1.1 T=1000"):
        pass
    report = ledger.report()
    rdp, prv = RDPAccountant(), PRVAccountant()
    for accountant in (rdp, prv):
        accountant.history = [(1.1, 0.01, 1000)]
    assert report["epsilon_rdp"] == pytest.approx(rdp.get_epsilon(1e-5), rel=0.01)
    assert report["epsilon"] == pytest.approx(prv.get_epsilon(1e-5), rel=0.01)
    assert report["epsilon_rdp"] == pytest.approx(1.712, abs=0.002)
    assert report["epsilon"] == pytest.approx(1.515, abs=0.002)
    assert report["epsilon_simple"] is None          # not pure: no simple composition


def test_fifty_laplace_releases_by_three_compositions(tmp_path):
    ledger = PrivacyLedger.open(tmp_path / "d.parquet", epsilon=10.0, delta=1e-6)
    for i in range(50):                          # the Laplace mechanism at ε = 0.1, 50 times
        with ledger.spend(LaplaceDpEvent(10.0), "release", f"mean {i}"):
            pass
    report = ledger.report()
    k, eps, delta = 50, 0.1, 1e-6
    assert report["epsilon_simple"] == pytest.approx(k * eps, rel=1e-9)
    # Dwork, Rothblum & Vadhan (2010), Thm III.3, computed here independently
    assert report["epsilon_advanced"] == pytest.approx(
        eps * math.sqrt(2 * k * math.log(1 / delta)) + k * eps * (math.exp(eps) - 1), rel=1e-6)
    assert report["epsilon"] == pytest.approx(3.12, abs=0.01)
    assert report["epsilon"] < report["epsilon_advanced"] < report["epsilon_simple"]
    # OpenDP's integer releases are accounted as discrete Laplace (privacy loss ±ε, the
    # worst case of ε-DP): the same 50 releases cost more by PLD, no more by the others
    opendp = PrivacyLedger.open(tmp_path / "users.parquet", epsilon=10.0, delta=1e-6)
    table = users_table(100)
    for _ in range(50):
        release_count(table, 0.1, opendp)
    worst = opendp.report()
    assert worst["epsilon_rdp"] is None                # RDP does not compose it: PLD decides
    assert worst["epsilon"] == pytest.approx(3.173, abs=0.01) and \
        worst["epsilon"] > report["epsilon"]
    assert worst["epsilon_simple"] == pytest.approx(5.0, rel=1e-9)


def test_kill_9_between_projecting_and_committing_leaves_a_consistent_ledger(tmp_path):
    data = tmp_path / "d.parquet"
    PrivacyLedger.open(data, epsilon=1.0, delta=1e-5)
    code = textwrap.dedent(f"""
        import os, signal
        from dp_accounting import LaplaceDpEvent
        from synth.privacy.ledger import PrivacyLedger
        ledger = PrivacyLedger.open({str(data)!r})
        with ledger.spend(LaplaceDpEvent(2.0), "release", "count"):
            os.kill(os.getpid(), signal.SIGKILL)      # after projecting, before committing
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -9
    ledger = PrivacyLedger.open(data)
    assert [e["status"] for e in ledger.entries] == ["pending"]
    assert ledger.spent() == pytest.approx(0.5, abs=1e-3)     # counted: never refunded
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(PrivacyBudgetExceeded):
        with ledger.spend(LaplaceDpEvent(1.0), "release", "mean"):
            pass


def test_bad_budgets_and_events_are_refused_by_name(tmp_path):
    data = tmp_path / "d.parquet"
    for eps, delta, name in ((0, 1e-5, "epsilon"), (-1, 1e-5, "epsilon"),
                             (math.inf, 1e-5, "epsilon"), (math.nan, 1e-5, "epsilon"),
                             (1, 0, "delta"), (1, 1, "delta"), (1, -0.1, "delta"),
                             (1, 1.5, "delta")):
        with pytest.raises(ConfigError, match=f"{name}="):
            PrivacyLedger.open(data, epsilon=eps, delta=delta)
    assert not PrivacyLedger.path_for(data).exists()
    with pytest.raises(ConfigError, match="no privacy ledger yet"):
        PrivacyLedger.open(data)
    ledger = PrivacyLedger.open(data, epsilon=1.0, delta=1e-5)
    with pytest.raises(ConfigError, match="budget is fixed"):
        PrivacyLedger.open(data, epsilon=2.0, delta=1e-5)
    table = users_table(50)
    with pytest.raises(ConfigError, match="epsilon=0"):
        release_count(table, 0, ledger)
    with pytest.raises(ConfigError, match="noise_multiplier"):
        with ledger.spend(LaplaceDpEvent(0.0), "release", "x"):
            pass
    with pytest.raises(ConfigError, match="kind='publish'"):
        with ledger.spend(LaplaceDpEvent(1.0), "publish", "x"):
            pass
    with pytest.raises(ConfigError, match="'nope' is not in the table"):
        release_sum(table, "nope", (0, 1), 0.1, ledger)
    with pytest.raises(ConfigError, match="bounds"):
        release_sum(table, "engagement", (1, 0), 0.1, ledger)
    with pytest.raises(ConfigError, match="not one of the categories"):
        release_histogram(table, "group", ["group_a"], 0.1, ledger)
    assert ledger.entries == []


def test_only_consenting_users_enter_a_release(tmp_path):
    ledger = PrivacyLedger.open(tmp_path / "d.parquet", epsilon=1e4, delta=1e-5)
    table = users_table(300)
    assert 0 < (~table["consent"]).sum() < 300
    release = release_count(table, 1e3, ledger)       # noise scale 1e-3: the count itself
    assert release.value == int(table["consent"].sum()) < len(table)
    assert not hasattr(release, "rows")             # the exact count is never handed out
    with pytest.raises(DataError, match="no 'consent' column"):
        release_count(table.drop(columns="consent"), 0.1, ledger)
    with pytest.raises(DataError, match="more than one row"):
        release_count(pd.concat([table, table.iloc[:1]]), 0.1, ledger)


def test_a_damaged_ledger_or_a_wrong_call_is_a_clear_error(tmp_path):
    data = tmp_path / "d.parquet"
    ledger = PrivacyLedger.open(data, epsilon=1.0, delta=1e-5)
    with ledger.spend(LaplaceDpEvent(4.0), "release", "count"):
        pass
    good = ledger.path.read_text()
    state = json.loads(good)
    for damage in ({"epsilon": "abc"}, {"delta": 2}, {"epsilon": -1}, {"dataset": None},
                   {"entries": [{"id": 1}]}, {"entries": [7]},
                   {"entries": [dict(state["entries"][0], event="x")]},
                   {"entries": [dict(state["entries"][0], event={
                       "type": "LaplaceDpEvent", "noise_multiplier": 0})]}):
        ledger.path.write_text(json.dumps({**state, **damage}))
        with pytest.raises(DataError, match=str(ledger.path)):
            PrivacyLedger.open(data)
    ledger.path.write_text(good)
    with pytest.raises(ConfigError, match="give both epsilon and delta"):
        PrivacyLedger.open(data, delta=1e-5)
    with pytest.raises(ConfigError, match="does not exist"):
        PrivacyLedger.open(tmp_path / "missing" / "d.parquet", epsilon=1.0, delta=1e-5)
    with pytest.raises(ConfigError, match="no entry 42"):
        ledger.extend(42, LaplaceDpEvent(4.0), "x")
    with pytest.raises(ConfigError, match="committed already"):
        ledger.extend(1, LaplaceDpEvent(8.0), "x")
    for event, name in ((LaplaceDpEvent("2"), "must be a number"),
                        (LaplaceDpEvent(5e-324), "noise_multiplier"),
                        (GaussianDpEvent(1e300), "noise_multiplier")):
        with pytest.raises(ConfigError, match=name):
            ledger.project(event)
    assert ledger.path.read_text() == good


# ---------------------------------------------------------------- quasi-identifiers
def test_age_band_and_city_follow_their_documented_distributions():
    pop = PopulationSampler().sample(200_000, np.random.default_rng(3))
    for codes, shares in ((pop.age_band, AGE_SHARES), (pop.city, CITY_SHARES)):
        observed = np.bincount(codes, minlength=len(shares)) / len(codes)
        se = np.sqrt(shares * (1 - shares) / len(codes))
        assert np.all(np.abs(observed - shares) < 5 * se)
    assert len(CITIES) == 27 and np.isclose(CITY_SHARES.sum(), 1.0)


def test_envs_carry_quasi_identifiers_into_logged_data(tmp_path):
    from envs.creator import vector_maker
    from ope.collect import collect, simulated_user_id
    from ope.files import read_logged, write_logged

    class Uniform:
        privileged = False

        def action_probs(self, obs):
            return np.full((len(obs), 4), 0.25)

    data = collect(Uniform(), vector_maker("personarl/AgentRouting-v0", {}), 40, seed=2,
                   exploration="sample", pseudonymise=PSEUDONYMISE,
                   group_names=["group_a", "group_b", "group_c"])
    back = read_logged(write_logged(data, tmp_path / "logged.parquet"))
    users = back.users
    assert set(users) == {"user_id", "age_band", "city", "group", "consent"}
    first = back.starts
    assert users["user_id"][first[7]] == PSEUDONYMISE(simulated_user_id(2, 7))
    assert set(users["age_band"]) <= set(AGE_BANDS) and set(users["city"]) <= set(CITIES)
    for key in ("age_band", "city", "group", "consent"):     # constant within an episode
        assert all(len(set(users[key][back.episode == e])) == 1 for e in range(5))
    from ope.features import user_table
    table = user_table(back)
    assert len(table) == 40 and table["decisions"].sum() == back.n
    assert table["user_id"].iloc[7] == PSEUDONYMISE(simulated_user_id(2, 7))
    long = int(np.flatnonzero(np.diff(np.r_[first, back.n]) > 1)[0])   # an episode of 2+ rows
    row = first[long] + 1
    users["city"][row] = "Caldor Valley 3" if users["city"][row] != "Caldor Valley 3" \
        else "North Avaria 1"
    with pytest.raises(DataError, match="more than one 'city'"):
        user_table(back)
    back.users = None
    with pytest.raises(DataError, match="no \\['age_band'"):
        user_table(back)


# ---------------------------------------------------------------- k-anonymity
def test_generalisation_reaches_k_where_a_naive_release_does_not():
    table = users_table(400)
    quasi = ["age_band", "city", "group"]
    assert smallest_class(table, quasi) < 5                   # the naive release violates k
    result = k_anonymise(table, k=5, hierarchies=hierarchies(["group_a", "group_b",
                                                              "group_c"]))
    assert result.smallest_class >= 5
    assert class_sizes(result.table, quasi).min() >= 5
    consented = table[table["consent"]]                # only consenting users are released
    assert result.suppressed == len(consented) - len(result.table) <= 0.05 * len(consented)
    assert result.table["consent"].all()
    assert sum(result.levels.values()) > 0 and 0 < result.loss["precision"] <= 1
    assert result.loss["distinct_after"]["city"] < result.loss["distinct_before"]["city"]
    # nothing else changed
    kept = table.loc[result.table.index]
    assert kept["user_id"].tolist() == result.table["user_id"].tolist()
    # no suppression allowed: generalised further, nothing removed
    strict = k_anonymise(table, k=5, hierarchies=hierarchies(["group_a", "group_b",
                                                              "group_c"]), max_suppression=0)
    assert strict.suppressed == 0 and strict.smallest_class >= 5
    # the optimum over fewer candidates (no suppression) cannot lose less
    assert strict.loss["discernibility"] >= result.loss["discernibility"]


def test_k_anonymity_bad_input_is_named():
    table = users_table(50)
    h = hierarchies(["group_a", "group_b", "group_c"])
    with pytest.raises(ConfigError, match="k=1"):
        k_anonymise(table, k=1, hierarchies=h)
    with pytest.raises(ConfigError, match="unknown quasi-identifier 'zip'"):
        k_anonymise(table, k=2, hierarchies=h, quasi_identifiers=["zip"])
    with pytest.raises(ConfigError, match="unknown quasi-identifier 'engagement'"):
        k_anonymise(table, k=2, hierarchies=h, quasi_identifiers=["engagement"])
    with pytest.raises(ConfigError, match="unknown quasi-identifier 'zip'"):
        smallest_class(table, ["zip"])
    with pytest.raises(ConfigError, match="k=51"):
        k_anonymise(table, k=51, hierarchies=h)
    odd = table.assign(city="Atlantis")
    with pytest.raises(ConfigError, match="'Atlantis'"):
        k_anonymise(odd, k=2, hierarchies=h)


# ---------------------------------------------------------------- erasure
def _run_dir(tmp_path):
    """A run directory holding one user (``target``) in every kind of dataset."""
    from agents.serving.decision_log import DecisionLog
    from ope.collect import collect, simulated_user_id
    from envs.creator import vector_maker
    from ope.files import write_logged

    class Uniform:
        privileged = False

        def action_probs(self, obs):
            return np.full((len(obs), 4), 0.25)

    run = tmp_path / "run"
    data = collect(Uniform(), vector_maker("personarl/AgentRouting-v0", {}), 30, seed=0,
                   exploration="sample", pseudonymise=PSEUDONYMISE)
    write_logged(data, run / "logged.parquet")
    target = PSEUDONYMISE(simulated_user_id(0, 3))
    other = PSEUDONYMISE(simulated_user_id(0, 4))
    logs = run / "decision_logs"
    decisions, feedback = DecisionLog(logs, "decisions", segment_rows=4), \
        DecisionLog(logs, "feedback", segment_rows=4)
    rows = [dict(decision_id=f"d{i}", user_id=target if i % 3 == 0 else other, action=0,
                 step=i) for i in range(12)]
    decisions.append(rows)
    feedback.append([dict(decision_id=f"d{i}", reward=1.0, done=False) for i in range(12)])
    decisions.close()
    feedback.close()
    # a segment a crash left unrolled, with a torn line holding the user
    (logs / "decisions" / "segment-000099.jsonl").write_bytes(
        json.dumps(dict(decision_id="d99", user_id=target)).encode() + b"\n"
        + b'{"decision_id": "d100", "user_id": "' + target.encode() + b'", "act')
    # per-user features, compressed: the pseudonym is not in the file's bytes (column
    # statistics off: their min/max would keep a plain copy)
    features = pa.table({"user_id": [target, other] * 50, "x": np.arange(100.0)})
    pq.write_table(features, run / "features.parquet", compression="zstd",
                   write_statistics=False)
    (run / "synthetic.jsonl").write_text(
        "".join(json.dumps(dict(source=u, x=i)) + "\n" for i, u in enumerate([target, other])))
    with PrivacyLedger.open(run / "features.parquet", epsilon=1.0, delta=1e-5).spend(
            LaplaceDpEvent(10.0), "fit", "mixture"):            # a fit on the features
        pass
    return run, target, other


def test_erasure_finds_then_removes_every_row_of_the_user(tmp_path):
    from synth.privacy.erasure import erase, scan

    run, target, other = _run_dir(tmp_path)
    assert target.encode() not in (run / "features.parquet").read_bytes()
    found = scan(run, target)                     # first: it finds the user everywhere
    assert found.rows["logged.parquet"] == int((read_rows(run / "logged.parquet", target)))
    assert found.rows["features.parquet"] == 50
    assert found.rows["synthetic.jsonl"] == 1
    decision_rows = sum(v for k, v in found.rows.items() if k.startswith(
        "decision_logs/decisions/"))
    feedback_rows = sum(v for k, v in found.rows.items() if k.startswith(
        "decision_logs/feedback/"))
    assert decision_rows == 4 + 2 and feedback_rows == 4     # 4 parts' rows + the segment's
    others_before = scan(run, other).total

    done = erase(run, target)
    assert done.after.total == 0 and not done.after.found
    assert done.stale_fits == 1
    # independently: no file of the directory holds the user
    for path in run.rglob("*"):
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            for name in table.column_names:
                if pa.types.is_string(table.schema.field(name).type):
                    assert target not in table.column(name).to_pylist(), (path, name)
        elif path.is_file():
            assert target.encode() not in path.read_bytes(), path
    from agents.serving.decision_log import read_log
    remaining = read_log(run / "decision_logs", "feedback").column("decision_id")
    assert not {f"d{i}" for i in range(0, 12, 3)} & set(remaining.to_pylist())
    assert scan(run, other).total == others_before          # nobody else lost a row
    from ope.files import read_logged
    assert read_logged(run / "logged.parquet").n_episodes == 29
    fits = [e for e in PrivacyLedger.open(run / "features.parquet").entries]
    assert fits[0]["stale"] and fits[0]["status"] == "committed"   # stale, still counted
    with pytest.raises(DataError, match="is in no dataset"):
        erase(run, target)                                   # a second time: nothing found


def test_erasure_reads_every_text_a_parquet_file_can_hold(tmp_path):
    from synth.privacy.erasure import erase, scan

    user, other = PSEUDONYMISE("u1"), PSEUDONYMISE("u2")
    run = tmp_path / "run"
    run.mkdir()
    ids = pa.array([user, other, other]).dictionary_encode()
    pq.write_table(pa.table({"user_id": ids, "x": [1, 2, 3]}), run / "dict.parquet")
    pq.write_table(pa.table({"users": pa.array([[other, user], [other], []]),
                             "blob": pa.array([b"", b"", user.encode()], pa.binary()),
                             "meta": pa.array([{"who": other}, {"who": user}, {"who": ""}])}),
                   run / "nested.parquet")
    pq.write_table(pa.table({"decision_id": pa.array(["d1", "d2"]).dictionary_encode(),
                             "user_id": [user, other]}), run / "decisions.parquet")
    pq.write_table(pa.table({"decision_id": pa.array(["d1", "d2"], pa.large_string()),
                             "reward": [1.0, 0.0]}), run / "feedback.parquet")
    (run / "deep.jsonl").write_bytes(b"[" * 100_000 + b"\n" + json.dumps(
        {"user_id": user}).encode() + b"\n")
    found = scan(run, user)
    assert found.rows == {"dict.parquet": 1, "nested.parquet": 3, "decisions.parquet": 1,
                          "feedback.parquet": 1, "deep.jsonl": 1}
    erase(run, user)
    for path in run.iterdir():
        assert user.encode() not in path.read_bytes(), path     # dictionaries rebuilt
    assert pq.read_table(run / "dict.parquet").column("x").to_pylist() == [2, 3]
    assert pq.read_table(run / "feedback.parquet").column("decision_id").to_pylist() == ["d2"]
    assert (run / "deep.jsonl").read_bytes() == b"[" * 100_000 + b"\n"
    maps = tmp_path / "maps"                     # map columns: keys and values are read
    maps.mkdir()
    pq.write_table(pa.table({"tags": pa.array([[("by", other)], [("by", user)], []],
                                              pa.map_(pa.string(), pa.string()))}),
                   maps / "tags.parquet")
    assert scan(maps, user).rows == {"tags.parquet": 1}
    # the pseudonym in a file's metadata, or behind a link out of the directory: refused
    pq.write_table(pa.table({"x": [1]}).replace_schema_metadata({"by": other}),
                   run / "meta.parquet")
    with pytest.raises(DataError, match="meta.parquet"):
        erase(run, other)
    (run / "meta.parquet").unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run / "shared").symlink_to(elsewhere)
    with pytest.raises(DataError, match="symbolic links out of"):
        erase(run, other)


def read_rows(path, pseudonym):
    return sum(v == pseudonym for v in pq.read_table(path).column("user_id").to_pylist())


def test_erasure_refuses_while_a_server_holds_the_log_and_changes_nothing(tmp_path):
    from omegaconf import OmegaConf

    from agents.serving.decision_log import DecisionLog
    from experiments.erase import erase_user
    from personarl.locks import InUseError

    run, target, _ = _run_dir(tmp_path)
    snapshot = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    cfg = OmegaConf.create(dict(run_dir=str(run), user_id=None, user_hash=target,
                                dry_run=False, verbose=False))
    server = DecisionLog(run / "decision_logs", "decisions")         # a server writing
    try:
        with pytest.raises(InUseError, match="cannot erase while .* is being written"):
            erase_user(cfg)
    finally:
        server.close()
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()
            and p.name != "writer.lock" and p.parent.name != "decisions"} == {
        p: b for p, b in snapshot.items() if p.name != "writer.lock"
        and p.parent.name != "decisions"}
    (run / "notes.md").write_text(f"user {target} complained\n")
    with pytest.raises(DataError, match="notes.md"):
        erase_user(cfg)                                  # text with no rows: refused
    assert (run / "logged.parquet").read_bytes() == snapshot[run / "logged.parquet"]
    (run / "notes.md").unlink()
    out = erase_user(cfg)
    assert out["rows_removed"] > 0
    audit = (run / "erasures.jsonl").read_text()
    assert target not in audit and json.loads(audit)["rows_removed"] == out["rows_removed"]


@pytest.mark.slow
def test_the_readme_collects_then_erases_one_user(tmp_path):
    """The README's lines as written: collect with hashed user ids, find the user, erase
    them; Hydra writes nothing for the erase commands (no directory beside the run)."""
    from tests.readme import command

    run = tmp_path / "run"
    collected = subprocess.run(command("collect episodes=2000", extra=[
        "episodes=40", f"hydra.run.dir={run}"]), capture_output=True, text=True, cwd=tmp_path)
    assert collected.returncode == 0, collected.stderr
    fill = {"outputs/<date>/<time>": run}
    anonymised = subprocess.run(command("experiments.anonymise", fill, extra=[
        f"hydra.run.dir={tmp_path / 'released'}"]), capture_output=True, text=True,
        cwd=tmp_path)
    assert anonymised.returncode == 0, anonymised.stderr
    table = pd.read_parquet(tmp_path / "released" / "users_k5.parquet")
    assert "user_id" not in table and len(table) > 0
    assert class_sizes(table, ["age_band", "city", "group"]).min() >= 5
    shutil.rmtree(tmp_path / "released")
    dry = subprocess.run(command("user_id=sim:0:7 dry_run=true", fill), capture_output=True,
                         text=True, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "logged.parquet: " in dry.stdout and "found in 1 file(s)" in dry.stdout
    erase = command("user_id=sim:0:7$", fill)
    done = subprocess.run(erase, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "none left (scanned again)" in done.stdout
    again = subprocess.run(erase, capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == 2 and "is in no dataset" in again.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
