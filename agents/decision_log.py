"""Decision logs of a served policy, written so a crash loses at most a torn last line.

Three logs live side by side under a root directory, one folder each:

* ``decisions/`` — every served decision: ``decision_id``, ``time`` (Unix seconds),
  ``user_id``, ``episode_id``, ``step``, ``observation``, the ``action`` (discrete:
  ``action``; continuous: ``action_vector``), ``propensity`` — the probability (discrete) or
  density (continuous, of the unclipped draw) of that action under everything that chose it,
  exploration and traffic split included; null for a greedy continuous action —,
  ``arm_propensity`` (the same under the arm that served it alone), ``action_probs`` (the
  full behaviour distribution the action was drawn from, discrete), ``arm``, ``version``,
  ``exploration``, ``epsilon``, ``env_id`` and ``model_sha256``;
* ``feedback/`` — ``decision_id``, ``time``, ``reward``, ``done`` and ``signals`` (a JSON
  object as text), joined to decisions by ``decision_id``;
* ``shadow/`` — what a shadow policy would have done for a served decision (same
  ``decision_id``): never shown, so it has no outcome.

Each log appends JSON lines to a *segment* (``segment-NNNNNN.jsonl``, flushed after every
write) and rolls it into a Parquet *part* with the same number (``part-NNNNNN.parquet``,
written to a temporary file and renamed) once it holds ``segment_rows`` rows, and on close.
A segment left by a crash is rolled when the log is next opened; a segment whose part
already exists (a crash between the rename and the delete) is deleted, never rolled twice.
``read_log`` reads the parts and any segments not yet rolled. A line of a segment that is
not a row — a torn last line from a crash, a corrupt line in the middle, a row with a value
that is not its column's type (nothing is converted: an ``action`` of 1.5 is not 1) — costs
that line only: every other row is read, the skipped lines are reported (a ``DataWarning``
naming the file and line numbers), and a roll appends them, byte for byte, to
``rejected-NNNNNN.jsonl`` beside the parts instead of deleting them. Parts are written with
Parquet page checksums and verified when read (a corrupt part is a ``DataError``).
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from personarl import jsonio
from synth.errors import DataError

__all__ = ["DecisionLog", "read_log", "DataWarning", "SCHEMAS", "LOG_KINDS"]


class DataWarning(UserWarning):
    """Lines of a log that could not be read as rows (the rest was read)."""


_F32 = pa.list_(pa.float32())
SCHEMAS: dict[str, pa.Schema] = {
    "decisions": pa.schema([
        ("decision_id", pa.string()), ("time", pa.float64()), ("user_id", pa.string()),
        ("episode_id", pa.string()), ("step", pa.int64()), ("observation", _F32),
        ("action", pa.int64()), ("action_vector", _F32), ("propensity", pa.float64()),
        ("arm_propensity", pa.float64()), ("action_probs", pa.list_(pa.float64())),
        ("arm", pa.string()), ("version", pa.string()), ("exploration", pa.string()),
        ("epsilon", pa.float64()), ("env_id", pa.string()), ("model_sha256", pa.string())]),
    "feedback": pa.schema([
        ("decision_id", pa.string()), ("time", pa.float64()), ("reward", pa.float64()),
        ("done", pa.bool_()), ("signals", pa.string())]),
    "shadow": pa.schema([
        ("decision_id", pa.string()), ("time", pa.float64()), ("arm", pa.string()),
        ("version", pa.string()), ("action", pa.int64()), ("action_vector", _F32),
        ("propensity", pa.float64()), ("action_probs", pa.list_(pa.float64())),
        ("model_sha256", pa.string())]),
}
LOG_KINDS = tuple(SCHEMAS)


def _number(path: Path) -> int:
    return int(path.stem.split("-")[1])


_FLOAT32_MAX = 3.4028234663852886e38


def _fits(value: Any, kind: pa.DataType) -> bool:
    """``value`` (from JSON) is a ``kind`` as it is — nothing converted: an ``action`` of
    1.5, a ``propensity`` of ``true``, an observation of 1e300 (beyond float32) or a string
    that is not valid Unicode does not fit. Null fits every column."""
    if value is None:
        return True
    if pa.types.is_list(kind):
        return isinstance(value, list) and all(_fits(v, kind.value_type) for v in value)
    if pa.types.is_string(kind):
        if not isinstance(value, str):
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:                    # a lone surrogate such as "\ud800"
            return False
        return True
    if pa.types.is_boolean(kind):
        return isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, int):
        return -2**63 <= value < 2**63
    limit = _FLOAT32_MAX if kind == pa.float32() else float("inf")
    return pa.types.is_floating(kind) and math.isfinite(value) and abs(value) <= limit


def _read_segment(path: Path, schema: pa.Schema) -> tuple[pa.Table, list[tuple[int, bytes]]]:
    """The rows of a segment that fit ``schema``, and the ``(line number, bytes)`` of every
    other line (not JSON, not an object, or a value that is not its column's type)."""
    lines = jsonio.read_jsonl(path)
    fit = [all(_fits(row.get(f.name), f.type) for f in schema) for row in lines.rows]
    good = [(n, r) for n, r, ok in zip(lines.numbers, lines.rows, fit) if ok]
    try:
        table = _table([r for _, r in good], schema)
    except (pa.ArrowException, ValueError, TypeError, OverflowError):   # Arrow has the
        good = [(n, r) for n, r in good if _storable(r, schema)]         # last word
        table = _table([r for _, r in good], schema)
    misfits = sorted(set(lines.numbers) - {n for n, _ in good})
    if misfits:
        raw = jsonio.raw_lines(path)
        lines.skipped += [(n, raw[n - 1]) for n in misfits]
    return table, sorted(lines.skipped)


def _storable(row: Mapping[str, Any], schema: pa.Schema) -> bool:
    try:
        _table([row], schema)
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        return False
    return True


def _table(rows: list[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows],
                                schema=schema)


def _warn_skipped(path: Path, skipped: list[tuple[int, bytes]], rows: int) -> None:
    if skipped:
        warnings.warn(jsonio.skipped_message(path, skipped, rows), DataWarning, stacklevel=3)


class DecisionLog:
    """One append-only log (``kind`` in ``LOG_KINDS``) under ``root/kind``; thread-safe.

    Args:
        root: the logs' directory (created).
        kind: ``decisions``, ``feedback`` or ``shadow`` (the Parquet schema).
        segment_rows: rows per segment before it is rolled into a Parquet part.
    """

    def __init__(self, root: str | Path, kind: str, segment_rows: int = 10_000) -> None:
        if kind not in SCHEMAS:
            raise ValueError(f"log kind {kind!r}; valid: {list(LOG_KINDS)}")
        if segment_rows < 1:
            raise ValueError(f"segment_rows={segment_rows!r} must be >= 1")
        self.dir = Path(root) / kind
        self.dir.mkdir(parents=True, exist_ok=True)
        self.schema, self.segment_rows = SCHEMAS[kind], segment_rows
        self._lock = threading.Lock()
        for stale in sorted(self.dir.glob("segment-*.jsonl")):
            self._roll(stale)                  # left by a crash (or an unclean stop)
        numbers = [_number(p) for pattern in ("part-*.parquet", "rejected-*.jsonl")
                   for p in self.dir.glob(pattern)]
        self._next = max(numbers, default=0) + 1
        self._file: Any = None
        self._rows = 0

    def append(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append rows (dicts with the schema's keys; missing keys are null)."""
        lines = "".join(jsonio.dumps(dict(r), separators=(",", ":")) + "\n" for r in rows)
        if not lines:
            return
        with self._lock:
            if self._file is None:
                self._file = open(self.dir / f"segment-{self._next:06d}.jsonl", "a")
            self._file.write(lines)
            self._file.flush()                  # in the OS: survives the process dying
            self._rows += lines.count("\n")
            if self._rows >= self.segment_rows:
                self._close_segment()

    def roll(self) -> None:
        """Roll the open segment into a Parquet part now (also done by ``close``)."""
        with self._lock:
            self._close_segment()

    def close(self) -> None:
        self.roll()

    def _close_segment(self) -> None:
        if self._file is None:
            return
        os.fsync(self._file.fileno())
        self._file.close()
        self._roll(Path(self._file.name))
        self._file, self._rows = None, 0
        self._next += 1

    def _roll(self, segment: Path) -> None:
        number = _number(segment)
        part = self.dir / f"part-{number:06d}.parquet"
        if not part.exists():
            table, skipped = _read_segment(segment, self.schema)
            if skipped:                       # kept as they were, never deleted
                _warn_skipped(segment, skipped, table.num_rows)
                with open(self.dir / f"rejected-{number:06d}.jsonl", "ab") as f:
                    f.write(b"".join(line + b"\n" for _, line in skipped))
                    f.flush()
                    os.fsync(f.fileno())
            if table.num_rows:
                tmp = part.with_name(f".{part.name}.tmp")
                pq.write_table(table, tmp, write_page_checksum=True)
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
                os.replace(tmp, part)
        segment.unlink()


def read_log(root: str | Path, kind: str) -> pa.Table:
    """Everything a log holds: its Parquet parts, then rows of segments not yet rolled
    (lines that are not rows are skipped with a ``DataWarning``)."""
    if kind not in SCHEMAS:
        raise ValueError(f"log kind {kind!r}; valid: {list(LOG_KINDS)}")
    folder = Path(root) / kind
    schema = SCHEMAS[kind]
    tables = [_read_part(p, schema)
              for p in sorted(folder.glob("part-*.parquet"), key=_number)]
    for segment in sorted(folder.glob("segment-*.jsonl"), key=_number):
        if not (folder / f"part-{_number(segment):06d}.parquet").exists():
            table, skipped = _read_segment(segment, schema)
            _warn_skipped(segment, skipped, table.num_rows)
            tables.append(table)
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _read_part(path: Path, schema: pa.Schema) -> pa.Table:
    """A rolled Parquet part, its page checksums verified.

    Raises:
        DataError: the part is unreadable or corrupt (naming it).
    """
    try:
        return pq.read_table(path, schema=schema, page_checksum_verification=True)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path} is not a readable decision-log part: {exc}") from None
