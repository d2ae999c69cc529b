"""Offline policy evaluation: logged data, estimators, uncertainty.

* ``ope.data`` — ``LoggedData`` (episodes of observation, action, reward, behaviour
  propensity, done) and its checks;
* ``ope.files`` — Parquet reading and writing, and the server's decision logs as
  ``LoggedData``;
* ``ope.estimators`` — one-step IPS, SNIPS, DM, DR, SNDR, Switch-DR and sequential
  per-decision IS, weighted IS, DR, weighted DR, each as per-episode *terms* so that point
  estimates and bootstrap resamples are the same vectorised sums;
* ``ope.uncertainty`` — percentile bootstrap over whole episodes, the empirical-Bernstein
  lower bound, effective sample size and support diagnostics;
* ``ope.models`` — cross-fitted reward models and fitted-Q evaluation;
* ``ope.collect`` — logging a behaviour policy in the simulator, evaluation policies'
  distributions, and the on-policy Monte-Carlo truth;
* ``ope.evaluate`` — every estimator for one policy with intervals, bounds, diagnostics;
  rankings against the truth; which estimator to trust.

``python -m experiments.collect`` and ``python -m experiments.evaluate`` are the commands.

NumPy, pyarrow, scikit-learn and SciPy; no Ray, no torch.
"""
