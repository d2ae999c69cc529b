"""Every estimator on tiny datasets whose values are worked out by hand (in the comments),
and the checks that refuse bad logged data."""

from __future__ import annotations

import numpy as np
import pytest

from ope import estimators as E
from ope.data import DataError, LoggedData
from ope.files import read_logged, write_logged


def one_step() -> tuple[LoggedData, np.ndarray, np.ndarray]:
    # row: action, reward, behaviour propensity; π_e row; q̂ row
    # 0:   0, 1, 0.5;  π_e [1, 0];       q̂ [0.5, 0.2]   w = 1/0.5  = 2
    # 1:   1, 0, 0.5;  π_e [0.5, 0.5];   q̂ [0.1, 0.3]   w = 0.5/0.5 = 1
    # 2:   0, 0, 0.8;  π_e [0.25, 0.75]; q̂ [0.4, 0.4]   w = 0.25/0.8 = 0.3125
    # 3:   1, 1, 0.2;  π_e [0, 1];       q̂ [0.0, 0.6]   w = 1/0.2  = 5
    data = LoggedData(episode=np.arange(4), step=np.zeros(4), obs=np.zeros((4, 1)),
                      action=[0, 1, 0, 1], reward=[1, 0, 0, 1],
                      propensity=[0.5, 0.5, 0.8, 0.2], done=np.ones(4), n_actions=2,
                      action_probs=[[0.5, 0.5], [0.5, 0.5], [0.8, 0.2], [0.8, 0.2]])
    pi_e = np.array([[1, 0], [0.5, 0.5], [0.25, 0.75], [0, 1]])
    q_hat = np.array([[0.5, 0.2], [0.1, 0.3], [0.4, 0.4], [0.0, 0.6]])
    return data, pi_e, q_hat


def test_one_step_estimators_by_hand():
    data, pi_e, q = one_step()
    # IPS = (2·1 + 1·0 + 0.3125·0 + 5·1) / 4
    assert E.ips(data, pi_e).value() == pytest.approx(7 / 4)
    # SNIPS = 7 / (2 + 1 + 0.3125 + 5)
    assert E.snips(data, pi_e).value() == pytest.approx(7 / 8.3125)
    # v̂ = [0.5, 0.2, 0.4, 0.6] -> DM = 1.7 / 4
    assert E.dm(data, pi_e, q_hat=q).value() == pytest.approx(0.425)
    # r − q̂(a) = [0.5, −0.3, −0.4, 0.4]; w·(r − q̂) = [1, −0.3, −0.125, 2], sum 2.575
    assert E.dr(data, pi_e, q_hat=q).value() == pytest.approx(0.425 + 2.575 / 4)
    assert E.sndr(data, pi_e, q_hat=q).value() == pytest.approx(0.425 + 2.575 / 8.3125)
    # λ = 3 drops row 3's correction (w = 5 > 3): 0.425 + (1 − 0.3 − 0.125) / 4
    assert E.switch_dr(data, pi_e, q_hat=q, lam=3).value() == pytest.approx(0.56875)
    # λ = ∞ is DR, λ = 0 is DM
    assert E.switch_dr(data, pi_e, q_hat=q, lam=np.inf).value() == pytest.approx(1.06875)
    assert E.switch_dr(data, pi_e, q_hat=q, lam=0).value() == pytest.approx(0.425)


def sequential() -> tuple[LoggedData, np.ndarray, np.ndarray]:
    # episode 0: t0 a=0 p=.5 r=1 π_e [.5,.5] (w 1), q̂ [1,1];  t1 a=1 p=.25 r=2 π_e [.5,.5]
    #            (w 2), q̂ [2,0];  episode 1: t0 a=1 p=.5 r=4 π_e [0,1] (w 2), q̂ [3,3]
    # ρ: episode 0 [1, 2], episode 1 [2, 2 (frozen)];  v̂ = [1, 1, 3];  r − q̂(a) = [0, 2, 1]
    data = LoggedData(episode=[0, 0, 1], step=[0, 1, 0], obs=np.zeros((3, 1)),
                      action=[0, 1, 1], reward=[1, 2, 4], propensity=[0.5, 0.25, 0.5],
                      done=[False, True, True], n_actions=2)
    pi_e = np.array([[0.5, 0.5], [0.5, 0.5], [0.0, 1.0]])
    q_hat = np.array([[1.0, 1.0], [2.0, 0.0], [3.0, 3.0]])
    return data, pi_e, q_hat


def test_sequential_estimators_by_hand():
    data, pi_e, q = sequential()
    g = 0.5
    # PDIS: episode 0: 1·1 + .5·2·2 = 3; episode 1: 2·4 = 8 -> 5.5
    assert E.pdis(data, pi_e, gamma=g).value() == pytest.approx(5.5)
    # WPDIS: t0 (1·1 + 2·4)/(1 + 2) = 3; t1 .5·(2·2 + 2·0)/(2 + 2) = .5 -> 3.5
    assert E.wpdis(data, pi_e, gamma=g).value() == pytest.approx(3.5)
    # DR: episode 0: (1·0 + 1·1) + .5·(2·2 + 1·1) = 3.5; episode 1: 2·1 + 1·3 = 5 -> 4.25
    assert E.dr_seq(data, pi_e, q_hat=q, gamma=g).value() == pytest.approx(4.25)
    # WDR: Σ_t γ^t [Σ ρ_t(r−q̂)/Σ ρ_t + Σ ρ_{t−1} v̂_t / Σ ρ_{t−1}]
    #    = (0 + 2)/3 + .5·(4 + 0)/4 + (1 + 3)/2 + .5·(1 + 0)/(1 + 2)
    assert E.wdr(data, pi_e, q_hat=q, gamma=g).value() == pytest.approx(2 / 3 + 0.5 + 2 + 1 / 6)
    # FQE/DM: mean of v̂ at the first decisions: (1 + 3)/2
    assert E.dm_seq(data, pi_e, q_hat=q).value() == pytest.approx(2.0)


def test_sequential_estimators_reduce_to_one_step_ones_at_horizon_one():
    data, pi_e, q = one_step()
    assert E.pdis(data, pi_e).value() == pytest.approx(E.ips(data, pi_e).value())
    assert E.wpdis(data, pi_e).value() == pytest.approx(E.snips(data, pi_e).value())
    assert E.dr_seq(data, pi_e, q_hat=q).value() == pytest.approx(E.dr(data, pi_e,
                                                                        q_hat=q).value())
    assert E.dm_seq(data, pi_e, q_hat=q).value() == pytest.approx(E.dm(data, pi_e,
                                                                        q_hat=q).value())


def test_estimators_refuse_what_they_cannot_use():
    data, pi_e, q = one_step()
    seq, seq_pi, _ = sequential()
    with pytest.raises(DataError, match="one decision per episode"):
        E.ips(seq, seq_pi)
    with pytest.raises(DataError, match="needs a reward model"):
        E.dr(data, pi_e)
    with pytest.raises(DataError, match=r"must be \(4, 2\)"):
        E.ips(data, pi_e[:3])
    with pytest.raises(DataError, match="must be distributions"):
        E.ips(data, pi_e * 2)
    with pytest.raises(DataError, match="gamma=1.5"):
        E.pdis(seq, seq_pi, gamma=1.5)


@pytest.mark.parametrize("change, message", [
    (dict(propensity=[0.5, 0.0, 0.8, 0.2]), r"outside \(0, 1\].*row 1"),
    (dict(propensity=[0.5, 1.5, 0.8, 0.2]), r"outside \(0, 1\]"),
    (dict(propensity=[0.5, np.nan, 0.8, 0.2]), r"outside \(0, 1\]"),
    (dict(action=[0, 2, 0, 1]), r"outside 0..1"),
    (dict(reward=[1, np.inf, 0, 1]), "non-finite rewards"),
    (dict(episode=[0, 2, 1, 3]), "contiguous"),
    (dict(step=[0, 1, 0, 0]), "steps must count"),
    (dict(propensity=[0.5, 0.5, 0.8, 0.3]), "disagrees with 'action_probs' at row 3"),
    (dict(action_probs=[[0.5, 0.6]] * 4), "not a distribution"),
])
def test_bad_logged_data_is_refused(change, message):
    data, _, _ = one_step()
    fields = dict(episode=data.episode, step=data.step, obs=data.obs, action=data.action,
                  reward=data.reward, propensity=data.propensity, done=data.done,
                  n_actions=2, action_probs=data.action_probs)
    fields.update(change)
    with pytest.raises(DataError, match=message):
        LoggedData(**fields)


def test_parquet_round_trip_and_missing_columns(tmp_path):
    import pyarrow.parquet as pq

    data, _, _ = sequential()
    data.meta = {"env_id": "personarl/InterventionTiming-v0", "seed": 3}
    back = read_logged(write_logged(data, tmp_path / "log.parquet"))
    for name in ("episode", "step", "obs", "action", "reward", "propensity", "done"):
        assert np.array_equal(getattr(back, name), getattr(data, name)), name
    assert back.meta == data.meta and back.n_actions == 2 and back.action_probs is None
    table = pq.read_table(tmp_path / "log.parquet").drop_columns(["propensity"])
    pq.write_table(table, tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"lacks the column\(s\) \['propensity'\]"):
        read_logged(tmp_path / "bad.parquet")


# ---------------------------------------------------------------------- uncertainty
def test_bootstrap_matches_explicit_resampling():
    from ope.uncertainty import bootstrap, resample_counts
    from personarl.seeds import generator

    data, pi_e, q = one_step()
    terms = {"ips": E.ips(data, pi_e), "snips": E.snips(data, pi_e),
             "sndr": E.sndr(data, pi_e, q_hat=q)}
    result = bootstrap(terms, n_resamples=50, seed=4)
    counts = next(resample_counts(4, 50, generator(4, "bootstrap")))
    w = E.weights(data, pi_e)
    v = (pi_e * q).sum(axis=1)
    res = data.reward - q[np.arange(4), data.action]
    for b in range(5):                           # the same resamples, summed by hand
        c = counts[b]
        assert result["ips"]["samples"][b] == pytest.approx((c * w * data.reward).sum()
                                                            / c.sum())
        assert result["snips"]["samples"][b] == pytest.approx(
            (c * w * data.reward).sum() / (c * w).sum())
        assert result["sndr"]["samples"][b] == pytest.approx(
            (c * v).sum() / c.sum() + (c * w * res).sum() / (c * w).sum())
    assert counts.sum(axis=1).tolist() == [4.0] * 50            # whole episodes, n each


def test_bootstrap_interval_width_and_poisson_counts():
    from ope.uncertainty import _POISSON, bootstrap

    table = _POISSON.astype(float)
    assert table.mean() == pytest.approx(1.0, abs=1e-3)
    assert table.var() == pytest.approx(1.0, abs=1e-3)
    assert (table == 0).mean() == pytest.approx(np.exp(-1), abs=1e-4)
    rng = np.random.default_rng(0)
    for n in (2_000, 30_000):                   # multinomial, then Poisson counts
        x = rng.normal(1.0, 2.0, size=n)
        ci = bootstrap({"mean": E.Terms(plain=x)}, n_resamples=2000, seed=1)["mean"]
        half = 1.96 * x.std(ddof=1) / np.sqrt(n)
        assert ci["high"] - ci["low"] == pytest.approx(2 * half, rel=0.1)
        assert ci["low"] < x.mean() < ci["high"]


def test_bernstein_lower_bound_holds_and_is_below_the_mean():
    from ope.uncertainty import bernstein_lower

    rng = np.random.default_rng(0)
    bounds = [bernstein_lower(rng.binomial(1, 0.3, size=500).astype(float), delta=0.05)
              for _ in range(200)]
    assert max(bounds) < 0.3                    # never above the true mean here
    assert min(bounds) > 0.1                    # and not vacuous
    assert bernstein_lower(np.array([1.0])) == -np.inf


def test_weight_diagnostics():
    from ope.uncertainty import diagnostics

    data, pi_e, _ = one_step()
    d = diagnostics(data, pi_e)
    w = np.array([2, 1, 0.3125, 5])
    assert d["ess"] == pytest.approx(w.sum() ** 2 / (w ** 2).sum())
    assert d["max_weight"] == 5 and d["unsupported_mass"] == 0.0
    data.action_probs = np.array([[1.0, 0.0], [0.5, 0.5], [0.8, 0.2], [0.8, 0.2]])
    data.propensity = np.array([1.0, 0.5, 0.8, 0.2])
    # row 0: π_e puts 0 on the unsupported action 1; nothing else is unsupported
    assert diagnostics(data, pi_e)["unsupported_mass"] == 0.0
    pi_e2 = pi_e.copy()
    pi_e2[0] = [0.5, 0.5]
    assert diagnostics(data, pi_e2)["unsupported_mass"] == pytest.approx(0.5 / 4)


# ---------------------------------------------------------------------- models
def test_cross_fitted_reward_model_learns_signal_not_noise():
    from ope.models import reward_model

    rng = np.random.default_rng(0)
    n = 4000
    x = rng.random((n, 2)).astype(np.float32)
    a = rng.integers(0, 2, size=n)
    truth = np.stack([x[:, 0], 1.0 - x[:, 1]], axis=1)          # q(x, a)
    noise = rng.normal(0, 0.3, size=n)
    data = LoggedData(episode=np.arange(n), step=np.zeros(n), obs=x, action=a,
                      reward=truth[np.arange(n), a] + noise, propensity=np.full(n, 0.5),
                      done=np.ones(n), n_actions=2)
    q = reward_model(data, n_folds=2)
    assert np.sqrt(((q - truth) ** 2).mean()) < 0.1             # noise sd 0.3: the signal
    assert min(np.corrcoef(q[:, k], truth[:, k])[0, 1] for k in range(2)) > 0.95
    residual = q[np.arange(n), a] - truth[np.arange(n), a]
    assert abs(np.corrcoef(residual, noise)[0, 1]) < 0.1        # not the row's own noise
    with pytest.raises(ValueError, match="at least 2 folds"):
        reward_model(data, n_folds=1)


def test_fitted_q_on_a_two_step_chain():
    from sklearn.tree import DecisionTreeRegressor

    from ope.models import fitted_q

    # obs = [t]; reward a at t=0 and 2a at t=1; π_e always takes action 1; γ = 0.5:
    # Q(1, a) = 2a; Q(0, a) = a + γ·Q(1, 1) = a + 1; value from the start = Q(0, 1) = 2
    rng = np.random.default_rng(0)
    episodes = 200
    a = rng.integers(0, 2, size=(episodes, 2))
    data = LoggedData(episode=np.repeat(np.arange(episodes), 2),
                      step=np.tile([0, 1], episodes),
                      obs=np.tile([[0.0], [1.0]], (episodes, 1)), action=a.reshape(-1),
                      reward=(a * [1, 2]).reshape(-1), propensity=np.full(2 * episodes, 0.5),
                      done=np.tile([False, True], episodes), n_actions=2)
    pi_e = np.tile([0.0, 1.0], (2 * episodes, 1))
    q = fitted_q(data, pi_e, gamma=0.5, make_regressor=DecisionTreeRegressor)
    assert np.allclose(q[0], [1.0, 2.0]) and np.allclose(q[1], [0.0, 2.0])
    assert E.dm_seq(data, pi_e, q_hat=q).value() == pytest.approx(2.0)
    assert E.dr_seq(data, pi_e, q_hat=q, gamma=0.5).value() == pytest.approx(2.0)


# ---------------------------------------------------------------------- undefined estimates
def rare_action_log() -> tuple[LoggedData, np.ndarray]:
    """100 one-step rows, every reward 1; the evaluation policy always takes action 1, which
    was logged in 2 of the rows (propensity 0.02)."""
    n = 100
    action = np.zeros(n, dtype=np.int64)
    action[[17, 63]] = 1
    data = LoggedData(episode=np.arange(n), step=np.zeros(n), obs=np.zeros((n, 1)),
                      action=action, reward=np.ones(n),
                      propensity=np.where(action == 1, 0.02, 0.98), done=np.ones(n),
                      n_actions=2, action_probs=np.tile([0.98, 0.02], (n, 1)))
    return data, np.tile([0.0, 1.0], (n, 1))


def test_an_estimate_undefined_in_some_resamples_is_nan_there_never_zero():
    from ope.evaluate import estimate

    data, pi_e = rare_action_log()
    res = estimate(data, pi_e, None, names=["snips", "ips"], n_resamples=2000, seed=0)
    snips = res["estimates"]["snips"]
    # SNIPS is exactly 1 whenever it is defined: its interval is [1, 1], not [0, 1]
    assert snips["estimate"] == 1.0 and snips["ci_low"] == snips["ci_high"] == 1.0
    # undefined when a resample draws neither row: 0.98^100 = 13.3% of resamples
    assert snips["undefined_share"] == pytest.approx(0.98 ** 100, abs=0.025)
    assert res["estimates"]["ips"]["undefined_share"] == 0.0     # a plain mean: always defined
    assert any("snips is undefined in 1" in w for w in res["warnings"])


def test_with_no_weight_anywhere_snips_and_wpdis_are_undefined():
    from ope.evaluate import estimate

    data, pi_e = rare_action_log()
    data.action = np.zeros(data.n, dtype=np.int64)                # action 1 never logged
    data.propensity = np.full(data.n, 0.98)
    assert np.isnan(E.snips(data, pi_e).value())
    res = estimate(data, pi_e, None, names=["snips"], n_resamples=100, seed=0)
    snips = res["estimates"]["snips"]
    assert snips["estimate"] is None and snips["ci_low"] is None
    assert snips["undefined_share"] == 1.0
    assert any("snips is undefined on this log" in w for w in res["warnings"])
    seq, _, _ = sequential()
    never = np.tile([1.0, 0.0], (seq.n, 1))
    never[0] = [0.0, 1.0]                 # the first decision of each episode disagrees
    never[2] = [1.0, 0.0]
    assert np.isnan(E.wpdis(seq, never).value())


def test_a_one_episode_log_gets_a_warning_not_a_zero_width_interval():
    from ope.evaluate import estimate

    seq, pi_e, q = sequential()
    one = LoggedData(episode=seq.episode[:2], step=seq.step[:2], obs=seq.obs[:2],
                     action=seq.action[:2], reward=seq.reward[:2],
                     propensity=seq.propensity[:2], done=seq.done[:2], n_actions=2)
    res = estimate(one, pi_e[:2], q[:2], n_resamples=50, seed=0)
    assert any("one episode" in w for w in res["warnings"])
    for r in res["estimates"].values():
        assert r["estimate"] is not None
        assert r["ci_low"] is None and r["ci_high"] is None and r["interval"] == "none"


# ---------------------------------------------------------------------- recommendations
def bandit_log(n: int = 400, propensity_of_target: float = 0.5, seed: int = 0
               ) -> tuple[LoggedData, np.ndarray, np.ndarray]:
    """One-step log: reward ≈ x·(1 + a) + noise; behaviour takes action 1 with the given
    probability; the evaluation policy always takes action 1."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1)).astype(np.float32)
    p1 = propensity_of_target
    a = (rng.random(n) < p1).astype(np.int64)
    a[:2] = 1                                             # the target action is logged
    r = x[:, 0] * (1 + a) + rng.normal(0, 0.5, n)
    data = LoggedData(episode=np.arange(n), step=np.zeros(n), obs=x, action=a, reward=r,
                      propensity=np.where(a == 1, p1, 1 - p1), done=np.ones(n), n_actions=2,
                      action_probs=np.tile([1 - p1, p1], (n, 1)))
    q = np.stack([x[:, 0], 2 * x[:, 0]], axis=1).astype(np.float64)
    return data, np.tile([0.0, 1.0], (n, 1)), q


def linear_refit(data: LoggedData):
    """``fit(row_weights, pi_e)`` for ``refit_bootstrap``: a cross-fitted linear reward
    model (fast, and with a fitting error to resample)."""
    from sklearn.linear_model import LinearRegression

    from ope.models import reward_model

    return lambda w, _: reward_model(data, make_regressor=LinearRegression, sample_weight=w)


def test_only_computed_estimators_are_recommended():
    from ope.evaluate import estimate, recommend

    data, pi_e, q = bandit_log()
    res = estimate(data, pi_e, q, n_resamples=200, seed=0)
    assert recommend(data, res["diagnostics"], 0.3, res["estimates"])[0] == "sndr"
    res = estimate(data, pi_e, q, names=["ips", "dm"], n_resamples=200, seed=0)
    choice, reason = recommend(data, res["diagnostics"], 0.3, res["estimates"])
    assert choice == "ips" and reason.endswith(
        ": importance sampling (sndr, preferred here, was not computed with a usable interval)")
    assert res["estimates"]["dm"]["model_error"] == "not included"
    assert res["estimates"]["dm"]["lower_bound"] is None          # it would hold q̂ fixed too
    assert res["estimates"]["ips"]["lower_bound"] is not None
    assert any("dm's interval holds the fitted model fixed" in w for w in res["warnings"])
    res = estimate(data, pi_e, q, names=["dm"], n_resamples=200, seed=0)
    assert recommend(data, res["diagnostics"], 0.3, res["estimates"])[0] is None
    with pytest.raises(ValueError, match=r"estimators \['dm'\] need a reward/Q model"):
        estimate(data, pi_e, None, names=["ips", "dm"])
    with pytest.raises(DataError, match="predictions are not finite"):
        estimate(data, pi_e, np.where(np.arange(len(q))[:, None] == 3, np.nan, q))


def test_degenerate_weights_recommend_dm_only_with_a_refitted_interval():
    from ope.evaluate import estimate, recommend
    from ope.uncertainty import refit_bootstrap

    data, pi_e, q = bandit_log(n=2000, propensity_of_target=0.001)   # ESS < 1%
    res = estimate(data, pi_e, q, n_resamples=200, seed=0)
    choice, reason = recommend(data, res["diagnostics"], 0.3, res["estimates"])
    assert choice is None and "ci.refit=true" in reason
    few, pi_few, q_few = bandit_log(n=2000, propensity_of_target=0.03)  # 3%, but ~60 episodes
    res_few = estimate(few, pi_few, q_few, n_resamples=200, seed=0)
    assert res_few["diagnostics"]["ess_fraction"] > 0.01                # above the share
    assert res_few["diagnostics"]["ess"] < 100
    choice, reason = recommend(few, res_few["diagnostics"], 0.3, res_few["estimates"])
    assert choice is None and "weights carry an estimate from 100" in reason

    fit = linear_refit(data)
    refit = refit_bootstrap(data, {"p": pi_e}, {"dm": E.dm}, fit, n_resamples=50, seed=0)
    res = estimate(data, pi_e, q, n_resamples=200, seed=0, refit=refit["p"])
    assert res["estimates"]["dm"]["model_error"] == "included"
    assert recommend(data, res["diagnostics"], 0.3, res["estimates"])[0] == "dm"
    # actions the behaviour never takes: every estimator extrapolates; nothing, even refitted
    diag = dict(res["diagnostics"], unsupported_mass=0.4)
    choice, reason = recommend(data, diag, 0.3, res["estimates"])
    assert choice is None and "40.0% of the evaluation policy's mass" in reason


def test_refitting_puts_the_models_error_into_dms_interval():
    from ope.uncertainty import bootstrap, refit_bootstrap

    # DM's value is the mean of q̂(x, 1): with the model fixed its bootstrap sees only the
    # spread of x (SE ≈ 0.033 here); refitting adds the fit's own error (noise 0.5 over ~150
    # rows: ≈ 0.041), so the standard error should grow by about 1.6x
    data, pi_e, _ = bandit_log(n=300, seed=1)
    fit = linear_refit(data)
    q = fit(None, None)
    fixed = bootstrap({"dm": E.dm(data, pi_e, q_hat=q)}, n_resamples=400, seed=0)["dm"]
    refit = refit_bootstrap(data, {"p": pi_e}, {"dm": E.dm}, fit, n_resamples=200,
                            seed=0)["p"]["dm"]
    assert np.std(refit["samples"]) > 1.3 * np.std(fixed["samples"])
    assert refit["high"] - refit["low"] > fixed["high"] - fixed["low"]
    assert refit["undefined"] == 0.0


def test_tiny_cumulative_weights_do_not_underflow_into_undefined_resamples():
    from ope.uncertainty import bootstrap

    seq, _, _ = sequential()
    pi_e = np.tile([0.5, 0.5], (seq.n, 1))
    pi_e[np.arange(seq.n), seq.action] = 1e-25        # ρ after two steps ≈ 1e-49 < float32
    pi_e[np.arange(seq.n), 1 - seq.action] = 1 - 1e-25
    assert np.isfinite(E.wpdis(seq, pi_e).value())
    ci = bootstrap({"wpdis": E.wpdis(seq, pi_e)}, n_resamples=200, seed=0)["wpdis"]
    assert ci["undefined"] == 0.0 and np.isfinite(ci["low"])


def test_a_one_step_weight_below_float32_is_still_a_weight():
    from ope.uncertainty import EXACT_MAX_EPISODES, bootstrap

    n = EXACT_MAX_EPISODES + 1                              # the float32 (Poisson) regime
    data = LoggedData(episode=np.arange(n), step=np.zeros(n), obs=np.zeros((n, 1)),
                      action=np.ones(n), reward=np.ones(n), propensity=np.full(n, 0.5),
                      done=np.ones(n), n_actions=2)
    pi_e = np.tile([1 - 1e-60, 1e-60], (n, 1))              # weights 2e-60 ...
    pi_e[0] = [0.0, 1.0]                                    # ... except row 0's 2
    ci = bootstrap({"snips": E.snips(data, pi_e)}, n_resamples=300, seed=0)["snips"]
    assert ci["undefined"] == 0.0                           # tiny is not 0: never undefined
    assert ci["low"] == ci["high"] == 1.0


def test_cross_fitting_needs_as_many_episodes_as_folds():
    from ope.models import reward_model

    data, _ = rare_action_log()
    one = LoggedData(episode=[0], step=[0], obs=[[0.0]], action=[1], reward=[1.0],
                     propensity=[0.02], done=[True], n_actions=2)
    with pytest.raises(DataError, match="2 folds needs at least 2 episodes; the log has 1"):
        reward_model(one)
    assert np.isfinite(reward_model(data)).all()


def test_no_recommendation_on_too_few_episodes_or_mostly_undefined_intervals():
    from ope.evaluate import FEW_EPISODES, estimate, recommend

    data, pi_e, q = bandit_log(n=FEW_EPISODES - 1)
    res = estimate(data, pi_e, q, n_resamples=100, seed=0)
    choice, reason = recommend(data, res["diagnostics"], 0.3, res["estimates"])
    assert choice is None and f"the log holds {FEW_EPISODES - 1} episodes" in reason
    data, pi_e, q = bandit_log(n=400)
    res = estimate(data, pi_e, q, names=["snips"], n_resamples=100, seed=0)
    res["estimates"]["snips"]["undefined_share"] = 0.05        # as if 5% of resamples had none
    choice, reason = recommend(data, res["diagnostics"], 0.3, res["estimates"])
    assert choice is None and "defined in at least 99% of the resamples" in reason


def test_without_the_full_distribution_a_mean_weight_below_one_blocks_a_recommendation():
    from ope.evaluate import combine_diagnostics, estimate, recommend

    data, pi_e, q = bandit_log(n=4000)
    data.action_probs = None                                  # support unknown
    pi_off = np.tile([0.0, 0.5], (data.n, 1))                 # and 50% on a third action
    pi_off = np.concatenate([pi_off, np.full((data.n, 1), 0.5)], axis=1)
    three = LoggedData(episode=data.episode, step=data.step, obs=data.obs, action=data.action,
                       reward=data.reward, propensity=data.propensity, done=data.done,
                       n_actions=3)
    res = estimate(three, pi_off, None, names=["snips", "ips"], n_resamples=100, seed=0)
    assert res["diagnostics"]["unsupported_mass"] is None
    assert res["diagnostics"]["mean_weight_ci"][1] < 1.0
    choice, reason = recommend(three, res["diagnostics"], None, res["estimates"])
    assert choice is None and "the importance weights average 0.49" in reason
    ok = estimate(*bandit_log(n=4000), n_resamples=100, seed=0)["diagnostics"]
    both = combine_diagnostics([ok, dict(ok, unsupported_mass=0.5, ess=20.0)])
    assert both["unsupported_mass"] == 0.5 and both["ess"] == 20.0
    assert combine_diagnostics([ok, res["diagnostics"]])["unsupported_mass"] is None
