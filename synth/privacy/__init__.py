"""Privacy primitives: a differential-privacy budget ledger that refuses, noise mechanisms,
DP-SGD under the ledger, k-anonymity over quasi-identifiers and erasure of one user's rows.

* ``synth.privacy.ledger`` — ``PrivacyLedger``: one per dataset, the single source of truth
  for ε; composition by Google's ``dp-accounting`` (PLD for reported figures, RDP for quick
  checks); refuses the release, generator fit or DP-SGD step that would cross the budget.
* ``synth.privacy.mechanisms`` — counts, histograms and bounded sums released with
  OpenDP's Laplace mechanisms, spending from a ledger; only consenting users enter them.
* ``synth.privacy.consent`` — ``consenting``: the rows a release or a fit may use (users
  who consented, one row each).
* ``synth.privacy.dpsgd`` — the ledger as the step hook of an Opacus ``DPOptimizer``.
* ``synth.privacy.anonymity`` — k-anonymity: check, and generalise quasi-identifiers over
  their hierarchies (``synth.demographics``) until every group has at least k rows.
* ``synth.privacy.erasure`` — find, then remove, one user's rows (by keyed hash) from every
  Parquet and JSON-lines file of a directory.

The libraries behind them (dp-accounting, OpenDP, Opacus/torch, pandas, pyarrow) are the
optional extra ``privacy``; ``import synth`` imports none of them, and neither does this
package: import the submodule you need.
"""

__all__: list[str] = []
