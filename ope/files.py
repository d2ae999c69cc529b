"""Logged data on disk: the Parquet files ``experiments.collect`` writes, and the server's
decision logs.

* ``write_logged`` / ``read_logged`` — one ``LoggedData`` per Parquet file, with page
  checksums (verified on read) and ``meta`` in the schema's metadata;
* ``from_decision_logs`` — the server's decision and feedback logs
  (``agents.serving.decision_log``) as one-step ``LoggedData``;
* ``column_vector`` / ``column_matrix`` — one column of an Arrow table as a NumPy array,
  refusing what a file can hold that an array cannot: a null in any column, list columns
  whose rows have different lengths (``observation`` with 3, 1, 2 and 2 values must not be
  regrouped as 2 + 2 + 2 + 2), lists of non-numbers, booleans where numbers are meant.

Every refusal is a ``DataError`` naming the file (or log), the column and the first bad row.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ope.data import REQUIRED, DataError, LoggedData
from personarl import jsonio

__all__ = ["read_logged", "write_logged", "from_decision_logs", "column_vector",
           "column_matrix"]


def write_logged(data: LoggedData, path: str | Path) -> Path:
    """One Parquet file with page checksums (verified by ``read_logged``); ``meta`` (with
    ``n_actions``) in the schema's metadata. Written to a temporary sibling and renamed, so
    ``path`` is the old file or the new one, and nothing is left behind on failure.

    Raises:
        OSError: ``path`` cannot be written (e.g. it is a directory).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {"episode": data.episode, "step": data.step,
               "observation": pa.FixedSizeListArray.from_arrays(
                   pa.array(data.obs.reshape(-1)), data.obs.shape[1]),
               "action": data.action, "reward": data.reward, "propensity": data.propensity,
               "done": data.done}
    if data.action_probs is not None:
        columns["action_probs"] = pa.FixedSizeListArray.from_arrays(
            pa.array(data.action_probs.reshape(-1)), data.n_actions)
    for key, values in (data.context or {}).items():
        columns[f"context.{key}"] = values if values.ndim == 1 else \
            pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
    table = pa.table(columns)
    meta = {**data.meta, "n_actions": data.n_actions}
    table = table.replace_schema_metadata({b"personarl": jsonio.dumps(meta).encode()})
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(table, tmp, write_page_checksum=True)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_logged(path: str | Path) -> LoggedData:
    """A Parquet file written by ``write_logged`` (or by ``experiments.collect``).

    Raises:
        DataError: a missing column (naming it and the required ones), a null, a list
            column with rows of different lengths or non-numeric values (naming the column
            and the first bad row), or invalid values (``LoggedData.check``).
    """
    try:
        table = pq.read_table(path, page_checksum_verification=True)
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:    # a corrupt footer
        raise DataError(f"{path} is not a readable Parquet file: {exc}") from None
    names = set(table.column_names)
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise DataError(f"{path} lacks the column(s) {missing}; logged data needs "
                        f"{list(REQUIRED)} (+ optional 'action_probs')")
    raw = (table.schema.metadata or {}).get(b"personarl")
    try:
        meta = jsonio.loads_strict(raw) if raw else {}
    except ValueError as exc:
        raise DataError(f"{path}: its 'personarl' metadata is not JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: its 'personarl' metadata must be a JSON object; got "
                        f"{type(meta).__name__}")
    action = column_vector(table, "action", numbers_only=True)
    probs = column_matrix(table, "action_probs") if "action_probs" in names else None
    n_actions = meta.pop("n_actions", probs.shape[1] if probs is not None
                         else int(action.max()) + 1 if len(action) else 1)
    if isinstance(n_actions, bool) or not isinstance(n_actions, int) or n_actions < 1:
        raise DataError(f"{path}: metadata n_actions={n_actions!r} must be an integer >= 1")
    context = {c.split(".", 1)[1]: column_matrix(table, c, numbers_only=False)
               if _is_list(table, c) else column_vector(table, c)
               for c in table.column_names if c.startswith("context.")}
    return LoggedData(
        episode=column_vector(table, "episode", numbers_only=True),
        step=column_vector(table, "step", numbers_only=True),
        obs=column_matrix(table, "observation"), action=action,
        reward=column_vector(table, "reward", numbers_only=True),
        propensity=column_vector(table, "propensity", numbers_only=True),
        done=column_vector(table, "done"), n_actions=n_actions, action_probs=probs,
        meta=meta, context=context or None)


def _is_list(table: pa.Table, name: str) -> bool:
    kind = table.schema.field(name).type
    return pa.types.is_list(kind) or pa.types.is_large_list(kind) or \
        pa.types.is_fixed_size_list(kind)


def _numeric(kind: pa.DataType, numbers_only: bool) -> bool:
    """Integers or floats; booleans too unless ``numbers_only``."""
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or \
        (pa.types.is_boolean(kind) and not numbers_only)


def _first_null(column: pa.Array) -> int:
    return int(np.argmax(column.is_null().to_numpy(zero_copy_only=False)))


def _label(name: str, where: str | None) -> str:
    return f"{where}: column {name!r}" if where else f"column {name!r}"


def column_vector(table: pa.Table, name: str, where: str | None = None,
                  numbers_only: bool = False) -> np.ndarray:
    """One value per row from column ``name`` of ``table`` (``where`` names the table in
    messages): numbers, or also booleans unless ``numbers_only``.

    Raises:
        DataError: the column holds lists, non-numbers (or booleans where numbers are
            needed) or a null (naming the first null row).
    """
    column, label = table.column(name).combine_chunks(), _label(name, where)
    if _is_list(table, name):
        raise DataError(f"{label} holds lists; it needs one value per row")
    if not _numeric(column.type, numbers_only):
        raise DataError(f"{label} must hold numbers; it holds {column.type}")
    if column.null_count:
        raise DataError(f"{label} is null at row {_first_null(column)} ({column.null_count} "
                        "null row(s)); every row needs a value")
    return column.to_numpy(zero_copy_only=False)


def column_matrix(table: pa.Table, name: str, where: str | None = None,
                  width: int | None = None, numbers_only: bool = True) -> np.ndarray:
    """A list column of ``table`` as an ``(N, width)`` array (``width``: row 0's length if
    not given; ``where`` names the table in messages); lists of numbers, or also of
    booleans unless ``numbers_only``.

    Raises:
        DataError: the column is not a list of numbers, a row is null, holds a null value, or
            has a different number of values (naming the first such row).
    """
    column, label = table.column(name).combine_chunks(), _label(name, where)
    if not _is_list(table, name) or not _numeric(column.type.value_type, numbers_only):
        raise DataError(f"{label} must hold a list of numbers per row; it holds "
                        f"{column.type}")
    if column.null_count:
        raise DataError(f"{label} is null at row {_first_null(column)} ({column.null_count} "
                        "null row(s)); every row needs a list")
    n = len(column)
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    expected = width if width is not None else (int(lengths[0]) if n else 0)
    bad = np.flatnonzero(lengths != expected)
    if bad.size:
        raise DataError(f"{label} row {bad[0]} has {lengths[bad[0]]} values, expected "
                        f"{expected} ({'as row 0' if width is None else 'its width'}); "
                        f"{bad.size} row(s) differ")
    values = column.flatten()
    if values.null_count:
        row = int(pc.list_parent_indices(column).to_numpy()[_first_null(values)])
        raise DataError(f"{label} row {row} holds a null value")
    return values.to_numpy(zero_copy_only=False).reshape(n, expected)


def from_decision_logs(root: str | Path, meta: Mapping[str, Any] | None = None
                       ) -> LoggedData:
    """The server's decision logs (``agents.serving.decision_log``) as one-step ``LoggedData``:
    every served decision with feedback becomes a one-decision episode whose reward is its
    first feedback's — the server's rule (``agents.serving.server``: one feedback per decision, the
    first kept), so a client's retry in a log written before that rule never counts twice.
    Later feedback rows for a decision are dropped and counted in
    ``meta['repeated_feedback']`` (a ``DataWarning`` names one whose reward differs);
    decisions without feedback are left out and counted in ``meta['without_feedback']``
    (feedback for decisions not in the log, in ``meta['feedback_without_decision']``).
    Needs a discrete policy (``action_probs`` logged).

    Raises:
        DataError: no decisions or no feedback, a continuous-action log, a decision logged
            twice, or a null / ragged / non-finite value in a column used here (naming the
            log, the column and the first bad row).
    """
    from agents.serving.decision_log import DataWarning, read_log

    decisions, feedback = read_log(root, "decisions"), read_log(root, "feedback")
    if decisions.num_rows == 0:
        raise DataError(f"no decisions logged under {root}")
    if decisions.column("action").null_count == decisions.num_rows:
        raise DataError("the decision log holds continuous actions; the estimators here are "
                        "for discrete actions")
    d, f = f"{root} decisions", f"{root} feedback"
    ids = _strings(decisions, "decision_id", d)
    fb_ids = _strings(feedback, "decision_id", f)
    if len(fb_ids) == 0:
        raise DataError(f"none of the {len(ids)} decisions under {root} has feedback")
    unique, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = unique[np.argmax(counts > 1)]
        raise DataError(f"{d}: decision_id {dup!r} is logged {int(counts.max())} times (first "
                        f"at row {int(first[np.argmax(counts > 1)])}); each decision is "
                        "logged once")
    rewards = column_vector(feedback, "reward", f, numbers_only=True)
    _finite(rewards, "reward", f, fb_ids)
    known, first_row, which = np.unique(fb_ids, return_index=True, return_inverse=True)
    first_reward = rewards[first_row]                  # np.unique: the first occurrence
    repeated = len(fb_ids) - len(known)
    differs = rewards != first_reward[which]
    if differs.any():
        row = int(np.argmax(differs))
        warnings.warn(f"{f}: decision_id {fb_ids[row]!r} has feedback rows with different "
                      f"rewards ({first_reward[which[row]]!r} first, then {rewards[row]!r} "
                      f"at row {row}); the first is used, as the server keeps it",
                      DataWarning, stacklevel=2)
    pos = np.minimum(np.searchsorted(known, ids), len(known) - 1)
    has = known[pos] == ids
    if not has.any():
        raise DataError(f"none of the {len(ids)} decisions under {root} has feedback")
    rows = np.flatnonzero(has)
    n = len(rows)
    obs = column_matrix(decisions, "observation", d)
    _finite(obs, "observation", d, ids)
    probs = column_matrix(decisions, "action_probs", d)[rows]
    env_ids = decisions.column("env_id").take(rows).unique().to_pylist()
    versions = decisions.column("version").take(rows).unique().to_pylist()
    info = dict(meta or {}, source=str(root), env_id=env_ids[0] if len(env_ids) == 1
                else env_ids, without_feedback=int(len(ids) - n),
                feedback_without_decision=int((~np.isin(fb_ids, ids)).sum()),
                repeated_feedback=int(repeated),
                versions=sorted(str(v) for v in versions))
    return LoggedData(episode=np.arange(n), step=np.zeros(n, dtype=np.int64), obs=obs[rows],
                      action=column_vector(decisions, "action", d, numbers_only=True)[rows],
                      reward=first_reward[pos[rows]],
                      propensity=column_vector(decisions, "propensity", d,
                                               numbers_only=True)[rows],
                      done=np.ones(n, dtype=bool), n_actions=probs.shape[1],
                      action_probs=probs, meta=info,
                      row_labels=ids[rows])


def _finite(values: np.ndarray, name: str, where: str, ids: np.ndarray) -> None:
    bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(f"{where}: column {name!r} is not finite at row {row} (decision_id "
                        f"{ids[row]!r})")


def _strings(table: pa.Table, name: str, where: str) -> np.ndarray:
    column = table.column(name).combine_chunks()
    if column.null_count:
        raise DataError(f"{_label(name, where)} is null at row {_first_null(column)}")
    return column.to_numpy(zero_copy_only=False)
