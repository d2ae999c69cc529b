"""k-anonymity: check a table, and generalise its quasi-identifiers until every group of
rows that share them has at least k rows (Samarati 2001; Sweeney 2002).

    >>> smallest_class(users, ["age_band", "city", "group"])       # a naive release
    1
    >>> result = k_anonymise(users, k=5, hierarchies=hierarchies(groups))
    >>> result.levels, result.suppressed, result.loss["precision"]

**Full-domain generalisation.** Each quasi-identifier is recoded to one level of its
hierarchy (``synth.demographics.Hierarchy``: e.g. city → region → country → ``*``) for the
whole column. Every combination of levels (the generalisation lattice) is tried; rows left
in classes smaller than k may be *suppressed* (removed), up to ``max_suppression`` of the
table. Among the combinations that reach k, the one chosen loses least information by the
discernibility metric (Bayardo & Agrawal 2005): ``Σ_E |E|²`` over the equivalence classes
``E`` kept, plus ``N`` for each suppressed row — it charges coarse classes and suppression
alike. Ties go to the lower total level. The lattice has ``Π (height_j + 1)`` nodes (24
for age band, city and group), each one pandas ``groupby``.

**What is lost is reported** (``Anonymised.loss``): the levels, the rows suppressed, the
discernibility, the normalised average class size ``C_avg = (N_kept / classes) / k``
(LeFevre, DeWitt & Ramakrishnan 2006; 1 is ideal) and Sweeney's precision loss, the mean
over quasi-identifiers of ``level / height`` (Sweeney 2002; 0: nothing generalised).

k-anonymity limits re-identification by linking on the quasi-identifiers; it does not stop
attribute disclosure within a class (homogeneous classes: l-diversity, Machanavajjhala et
al. 2007) and gives no differential-privacy guarantee.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from personarl.errors import ConfigError, check_int, check_range
from synth.demographics import Hierarchy
from synth.privacy.consent import consenting

__all__ = ["Anonymised", "class_sizes", "smallest_class", "k_anonymise"]


def _check_columns(table: pd.DataFrame, columns: Sequence[str],
                   known: Sequence[str] | None = None) -> list[str]:
    columns = list(columns)
    if not columns:
        raise ConfigError("quasi_identifiers is empty; name at least one column")
    for c in columns:
        if known is not None and c not in known:
            raise ConfigError(f"unknown quasi-identifier {c!r}: hierarchies exist for "
                              f"{list(known)}")
        if c not in table.columns:
            raise ConfigError(f"unknown quasi-identifier {c!r}: the table's columns are "
                              f"{list(table.columns)}")
    return columns


def class_sizes(table: pd.DataFrame, quasi_identifiers: Sequence[str]) -> pd.Series:
    """The size of every equivalence class (rows sharing all ``quasi_identifiers``).

    Raises:
        ConfigError: a quasi-identifier that is not a column of ``table``.
    """
    columns = _check_columns(table, quasi_identifiers)
    return table.groupby(columns, observed=True, dropna=False).size()


def smallest_class(table: pd.DataFrame, quasi_identifiers: Sequence[str]) -> int:
    """The smallest equivalence class: the table is k-anonymous for every k up to it
    (0 for an empty table)."""
    sizes = class_sizes(table, quasi_identifiers)
    return int(sizes.min()) if len(sizes) else 0


@dataclass(frozen=True)
class Anonymised:
    """A k-anonymous table and what it cost.

    Attributes:
        table: the rows kept, quasi-identifiers generalised (other columns unchanged).
        k: the k reached: every class has at least ``k`` rows.
        levels: quasi-identifier -> the level index chosen (0: as it was).
        level_names: quasi-identifier -> that level's name (e.g. ``"region"``).
        suppressed: rows removed.
        smallest_class: the smallest class kept (≥ k).
        classes: the number of classes kept.
        loss: ``suppressed_fraction``, ``discernibility``, ``c_avg``, ``precision``
            (module doc), and ``distinct_before`` / ``distinct_after`` per quasi-identifier.
    """

    table: pd.DataFrame
    k: int
    levels: dict[str, int]
    level_names: dict[str, str]
    suppressed: int
    smallest_class: int
    classes: int
    loss: dict[str, object]


def k_anonymise(table: pd.DataFrame, k: int, hierarchies: Mapping[str, Hierarchy],
                quasi_identifiers: Sequence[str] | None = None,
                max_suppression: float = 0.05) -> Anonymised:
    """Generalise ``quasi_identifiers`` (default: every column with a hierarchy that the
    table has) until every class has at least ``k`` rows, suppressing at most
    ``max_suppression`` of the rows (module doc). Its output is for release, so only
    consenting users enter it (``synth.privacy.consent.consenting``: one row per user —
    k rows of one user would hide nobody).

    Args:
        table: one row per user with a ``consent`` column; quasi-identifier columns hold
            their hierarchy's finest labels. ``N`` below is its consenting rows.
        k: at least 2.
        hierarchies: column -> its ``Hierarchy`` (``synth.demographics.hierarchies``).
        quasi_identifiers: the columns to protect.
        max_suppression: the largest fraction of rows that may be removed, in [0, 1).

    Raises:
        ConfigError: ``k < 2`` or above ``N``, ``max_suppression`` outside [0, 1), an
            unknown quasi-identifier (not a column, or without a hierarchy), or a value
            that is not a finest label of its hierarchy (naming it).
        DataError: no ``consent`` column, or a ``user_id`` with several rows.
    """
    k = check_int("k", k, 2)
    table = consenting(table)
    max_suppression = check_range("max_suppression", max_suppression, 0.0, 1.0,
                                  high_open=True)
    if quasi_identifiers is None:
        quasi_identifiers = [c for c in hierarchies if c in table.columns]
    columns = _check_columns(table, quasi_identifiers, known=list(hierarchies))
    n = len(table)
    if k > n:
        raise ConfigError(f"k={k} is more than the table's {n} rows; no generalisation can "
                          "reach it")
    # each quasi-identifier coded once; codes[c][level] is (N,) int, equal where the labels
    # at that level are
    finest = {c: hierarchies[c].codes(table[c].to_numpy()) for c in columns}
    codes = {c: [hierarchies[c].level_codes(level)[finest[c]]
                 for level in range(hierarchies[c].height + 1)] for c in columns}
    allowed = int(np.floor(max_suppression * n))
    best: tuple | None = None
    for levels in itertools.product(*(range(hierarchies[c].height + 1) for c in columns)):
        keys = pd.DataFrame({c: codes[c][lvl] for c, lvl in zip(columns, levels)})
        size = keys.groupby(columns, sort=False)[columns[0]].transform("size").to_numpy()
        small = size < k
        suppressed = int(small.sum())
        if suppressed > allowed:
            continue
        kept = size[~small]
        # Σ_E |E|² over kept classes = Σ over kept rows of their class size
        discernibility = float(kept.sum()) + float(suppressed) * n
        score = (discernibility, sum(levels))
        if best is None or score < best[0]:
            best = (score, levels, ~small, suppressed)
    assert best is not None, "the all-suppressed node always reaches k <= N"
    (discernibility, _), levels, keep, suppressed = best
    out = table[keep].copy()
    for c, level in zip(columns, levels):
        out[c] = np.asarray(hierarchies[c].labels[level], dtype=object)[finest[c][keep]]
    sizes = class_sizes(out, columns)
    precision = float(np.mean([lvl / hierarchies[c].height for c, lvl in zip(columns, levels)]))
    loss = dict(
        suppressed_fraction=suppressed / n if n else 0.0,
        discernibility=discernibility,
        c_avg=float(len(out) / len(sizes) / k) if len(sizes) else 0.0,
        precision=precision,
        distinct_before={c: int(table[c].nunique()) for c in columns},
        distinct_after={c: int(out[c].nunique()) for c in columns},
    )
    return Anonymised(table=out, k=k, levels=dict(zip(columns, levels)),
                      level_names={c: hierarchies[c].levels[lvl]
                                   for c, lvl in zip(columns, levels)},
                      suppressed=suppressed, smallest_class=int(sizes.min()) if len(sizes)
                      else 0, classes=len(sizes), loss=loss)
