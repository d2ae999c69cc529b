"""Consent: users without it never enter a dataset that is released or used to fit a
generator.

Every table that is released (``synth.privacy.mechanisms``, ``synth.privacy.anonymity``)
or fitted on passes ``consenting`` first: it keeps the rows of users whose ``consent`` is
true and checks that the table has one row per user — the privacy unit of the ledger and
of k-anonymity.
"""

from __future__ import annotations

import pandas as pd

from personarl.errors import DataError

__all__ = ["consenting"]


def consenting(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of consenting users, checked to be one per user.

    Raises:
        DataError: no ``consent`` column, a ``consent`` value that is not true/false, or a
            ``user_id`` that repeats (naming the first).
    """
    if "consent" not in table.columns:
        raise DataError("the table has no 'consent' column; a dataset that is released or "
                        "fitted on needs each user's consent (true/false)")
    consent = table["consent"]
    if consent.dtype != bool:
        bad = consent[~consent.isin([True, False])]
        if len(bad) or consent.isna().any():
            first = bad.iloc[0] if len(bad) else None
            raise DataError(f"column 'consent' holds {first!r}; every row needs true/false")
    if "user_id" in table.columns:
        repeated = table["user_id"][table["user_id"].duplicated()]
        if len(repeated):
            raise DataError(f"user_id {repeated.iloc[0]!r} has more than one row; a released "
                            "table has one row per user (the privacy unit): aggregate first")
    return table[consent.astype(bool).to_numpy()]
