"""Logged data on disk: the Parquet files ``experiments.collect`` writes (the server's
decision logs are read by ``ope.served``).

* ``write_logged`` / ``read_logged`` — one ``LoggedData`` per Parquet file, with page
  checksums (verified on read) and ``meta`` in the schema's metadata; episode ids that
  increase with gaps (a user's rows erased, ``synth.privacy.erasure``) are read as
  ``0..E-1``;
* ``column_vector`` / ``column_matrix`` — one column of an Arrow table as a NumPy array,
  refusing what a file can hold that an array cannot: a null in any column, list columns
  whose rows have different lengths (``observation`` with 3, 1, 2 and 2 values must not be
  regrouped as 2 + 2 + 2 + 2), lists of non-numbers, booleans where numbers are meant.

Every refusal is a ``DataError`` naming the file (or log), the column and the first bad row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ope.data import REQUIRED, USER_COLUMNS, DataError, LoggedData
from personarl import jsonio

__all__ = ["read_logged", "write_logged", "column_vector", "column_matrix"]


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
    for key, values in (data.users or {}).items():
        columns[key] = pa.array(values, pa.bool_() if key == "consent" else pa.string())
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
    users = {c: table.column(c).to_numpy(zero_copy_only=False) for c in USER_COLUMNS
             if c in names}
    episode = column_vector(table, "episode", numbers_only=True)
    gaps = np.diff(episode)
    if len(episode) and (gaps >= 0).all():
        # ids with gaps (an erased user's episodes are gone): numbered 0..E-1 again
        episode = np.r_[0, np.cumsum(gaps != 0)]
    return LoggedData(
        episode=episode,
        step=column_vector(table, "step", numbers_only=True),
        obs=column_matrix(table, "observation"), action=action,
        reward=column_vector(table, "reward", numbers_only=True),
        propensity=column_vector(table, "propensity", numbers_only=True),
        done=column_vector(table, "done"), n_actions=n_actions, action_probs=probs,
        meta=meta, context=context or None, users=users or None)


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
