"""The over-optimisation measures and laws (rewards.overoptimisation, issue 23)."""

from __future__ import annotations

import numpy as np
import pytest

from personarl.errors import DataError
from rewards.overoptimisation import (best_of_n_curve, best_of_n_kl, fit_scaling_law,
                                      gaussian_kl)


def test_kl_of_best_of_n_and_of_gaussians():
    assert best_of_n_kl(1) == 0
    assert best_of_n_kl(np.array([2, 1024])) == pytest.approx(
        [np.log(2) - 0.5, np.log(1024) - 1023 / 1024])
    # KL(N(1, 1) || N(0, 1)) = 1/2 per dimension; KL(N(0, e^2) || N(0, 1)) = (e^2 - 1)/2 - 1
    kl = gaussian_kl(np.ones((3, 2)), np.zeros(2), np.zeros((3, 2)), np.zeros(2))
    assert kl == pytest.approx([1.0, 1.0, 1.0])
    assert gaussian_kl(np.zeros((1, 1)), np.ones(1), np.zeros((1, 1)), np.zeros(1)) == \
        pytest.approx([(np.e ** 2 - 1) / 2 - 1])
    for bad in ((np.full((2, 2), np.nan), np.zeros(2)), (np.zeros(2), np.zeros(2)),
                (np.zeros((2, 2)), np.zeros(3))):
        with pytest.raises(DataError, match="gaussian_kl"):
            gaussian_kl(bad[0], bad[1], np.zeros((2, 2)), np.zeros(2))
    with pytest.raises(DataError, match="whole numbers n >= 1"):
        best_of_n_kl(2.5)


@pytest.mark.parametrize("form, second", [("bon", lambda d: d * d),
                                          ("rl", lambda d: d * np.log(d))])
def test_the_laws_are_recovered_with_their_peaks(form, second):
    d = np.linspace(0.1, 6, 30)
    fit = fit_scaling_law(d, 0.3 * d - 0.1 * second(d), form)
    assert (fit.alpha, fit.beta, fit.r2) == pytest.approx((0.3, 0.1, 1.0))
    peak = 1.5 if form == "bon" else np.exp(3 - 1)
    assert fit.peak_d == pytest.approx(peak)
    grid = np.linspace(0.05, 3 * peak, 2001)
    assert fit.peak_value == pytest.approx(fit.predict(grid).max(), rel=1e-4)
    # a law that only rises has no peak; a degenerate or foreign curve is refused
    assert fit_scaling_law(d, 0.3 * d + 0.01 * second(d), form).peak_d is None
    with pytest.raises(DataError, match="at least two points with d > 0"):
        fit_scaling_law(np.zeros(5), np.zeros(5), form)
    with pytest.raises(DataError, match="finite rewards and distances d >= 0"):
        fit_scaling_law(-d, d, form)


def test_best_of_n_picks_the_proxy_best_of_disjoint_groups():
    proxy = np.array([[0.0, 3.0, 1.0, 2.0]])
    true = np.array([[10.0, 0.0, 30.0, 20.0]])
    p, t = best_of_n_curve(proxy, true, np.array([1, 2, 4]))
    assert p.tolist() == [1.5, 2.5, 3.0]
    assert t.tolist() == [15.0, 10.0, 0.0]       # the proxy's best is the truth's worst
    with pytest.raises(DataError, match="n=3 must be >= 1 and divide the 4 samples"):
        best_of_n_curve(proxy, true, np.array([3]))
    with pytest.raises(DataError, match="must be finite"):
        best_of_n_curve(proxy * np.nan, true, np.array([1]))


def test_the_labs_ppo_schema_is_context_ppo_config_but_base_sd():
    """experiments.schema writes ContextPPOConfig's fields out (the serving wing imports the
    schema and must not import agents.learners): the two keep the same fields and defaults,
    but base_sd, which the lab sets from its own."""
    import dataclasses

    from agents.learners.context_ppo import ContextPPOConfig
    from experiments.schema import ContextPPOSchema

    def defaults(cls):
        return {f.name: list(f.default_factory()) if f.default_factory is not dataclasses.MISSING
                else list(f.default) if isinstance(f.default, tuple) else f.default
                for f in dataclasses.fields(cls)}

    config = defaults(ContextPPOConfig)
    assert config.pop("base_sd") and defaults(ContextPPOSchema) == config
