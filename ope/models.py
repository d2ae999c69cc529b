"""Reward and Q models for the model-based estimators (scikit-learn regressors).

* ``reward_model`` — ``q̂(x, a)`` for one-step data with *cross-fitting*: the rows are split
  into folds and each fold's predictions come from models fitted on the other folds, so no
  row's own reward is used to predict it (Chernozhukov et al. 2018; for off-policy
  evaluation, Narita, Yasui & Yata 2021). One regressor per action, fitted on the rows where
  that action was logged, predicting from the observation.
* ``fitted_q`` — fitted-Q evaluation (Le, Voloshin & Yue 2019): ``Q_0 = 0``, then ``Q_k`` is a
  regressor fitted on ``(s, a) → r + γ Σ_a' π_e(a'|s') Q_{k−1}(s', a')`` (no bootstrap term
  after an episode's last decision), using the evaluation policy's *distribution* at
  ``s'`` — not its greedy action — for ``max_episode_length`` iterations (exact for finite-horizon
  episodes whose observation tells the time step, as ours do). Also one regressor per action.

``make_regressor`` builds a fresh scikit-learn regressor (default: histogram gradient
boosting). Both functions return ``(N, K)`` predictions for every logged row and action.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor

from ope.data import DataError, LoggedData
from personarl.seeds import generator

__all__ = ["reward_model", "fitted_q", "default_regressor", "out_of_fold_r2"]

Regressor = Callable[[], Any]


def default_regressor() -> Any:
    """Gradient-boosted trees (interactions between observation features come for free),
    regularised and stopped early on a held-out tenth so that small or noisy data are not
    memorised."""
    return HistGradientBoostingRegressor(max_iter=200, learning_rate=0.1, max_leaf_nodes=15,
                                         min_samples_leaf=40, l2_regularization=1.0,
                                         early_stopping=True, validation_fraction=0.1,
                                         n_iter_no_change=10, random_state=0)


def _fit_predict(x_fit: np.ndarray, y_fit: np.ndarray, a_fit: np.ndarray,
                 x_pred: np.ndarray, n_actions: int, make_regressor: Regressor,
                 w_fit: np.ndarray | None = None) -> np.ndarray:
    """Per-action regressors fitted on ``(x_fit, y_fit)`` rows with action ``a`` (weighted
    by ``w_fit`` if given; rows of weight 0 are left out); predictions
    ``(len(x_pred), n_actions)``. An action with fewer than 2 rows, or a constant target,
    predicts the (weighted) mean; with no rows at all every prediction is NaN (nothing to
    fit — never a made-up 0)."""
    if w_fit is not None:
        keep = w_fit > 0
        x_fit, y_fit, a_fit, w_fit = x_fit[keep], y_fit[keep], a_fit[keep], w_fit[keep]
    out = np.empty((len(x_pred), n_actions))
    fallback = float(np.average(y_fit, weights=w_fit)) if len(y_fit) else np.nan
    for a in range(n_actions):
        rows = a_fit == a
        if rows.sum() < 2 or np.ptp(y_fit[rows]) == 0:
            out[:, a] = y_fit[rows][0] if rows.sum() >= 1 else fallback
            continue
        weight = None if w_fit is None else {"sample_weight": w_fit[rows]}
        model = make_regressor().fit(x_fit[rows], y_fit[rows], **(weight or {}))
        out[:, a] = model.predict(x_pred)
    return out


def reward_model(data: LoggedData, n_folds: int = 2, make_regressor: Regressor | None = None,
                 seed: int = 0, sample_weight: np.ndarray | None = None) -> np.ndarray:
    """Cross-fitted ``q̂(x_i, a)`` for every logged row ``i`` and action ``a``.

    Args:
        data: one-step logged data.
        n_folds: cross-fitting folds (episodes are assigned at random, from the
            ``cross_fit`` stream of ``seed``).
        make_regressor: builds a fresh regressor (default ``default_regressor``); with
            ``sample_weight`` its ``fit`` must accept ``sample_weight``.
        seed: the run's seed.
        sample_weight: ``(N,)`` non-negative row weights (a bootstrap resample's counts).

    Returns:
        ``(N, K)`` predictions.

    Raises:
        ValueError: ``n_folds < 2``.
        DataError: fewer episodes than folds (a fold would have nothing to fit on).
    """
    if n_folds < 2:
        raise ValueError(f"n_folds={n_folds!r}: cross-fitting needs at least 2 folds")
    if data.n_episodes < n_folds:
        raise DataError(f"cross-fitting with {n_folds} folds needs at least {n_folds} "
                        f"episodes; the log has {data.n_episodes}")
    make = make_regressor or default_regressor
    fold = generator(seed, "cross_fit").permutation(data.n_episodes)[data.episode] % n_folds
    q_hat = np.empty((data.n, data.n_actions))
    for k in range(n_folds):
        held, fit = fold == k, fold != k
        q_hat[held] = _fit_predict(data.obs[fit], data.reward[fit], data.action[fit],
                                   data.obs[held], data.n_actions, make,
                                   None if sample_weight is None else sample_weight[fit])
    return q_hat


def fitted_q(data: LoggedData, pi_e: np.ndarray, gamma: float = 1.0,
             iterations: int | None = None, make_regressor: Regressor | None = None,
             sample_weight: np.ndarray | None = None) -> np.ndarray:
    """``Q̂(s_i, a)`` for every logged row and action after ``iterations`` FQE steps
    (default: the longest episode's number of decisions), each regression weighted by
    ``sample_weight`` ``(N,)`` if given (a bootstrap resample's counts)."""
    make = make_regressor or default_regressor
    nxt = data.next_rows()
    has_next = nxt >= 0
    q = np.zeros((data.n, data.n_actions))
    for _ in range(iterations or data.max_episode_length):
        value_next = np.zeros(data.n)
        value_next[has_next] = (pi_e[nxt[has_next]] * q[nxt[has_next]]).sum(axis=1)
        target = data.reward + gamma * value_next
        q = _fit_predict(data.obs, target, data.action, data.obs, data.n_actions, make,
                         sample_weight)
    return q


def out_of_fold_r2(data: LoggedData, q_hat: np.ndarray) -> float:
    """R² of cross-fitted predictions ``q_hat`` ``(N, K)`` on the logged actions' rewards
    (out of fold: no row's own reward fitted its prediction); 0 for constant rewards."""
    pred = q_hat[np.arange(data.n), data.action]
    total = ((data.reward - data.reward.mean()) ** 2).sum()
    return float(1.0 - ((data.reward - pred) ** 2).sum() / total) if total > 0 else 0.0
