"""Decision logs of a served policy, written so a crash loses at most a torn last line.

Three logs live side by side under a root directory, one folder each:

* ``decisions/`` — every served decision: ``decision_id``, ``time`` (Unix seconds),
  ``user_id`` and ``episode_id`` (keyed hashes, ``personarl.identifiers``, or null — never
  the raw ids a client sent), ``step``, ``observation``, the ``action`` (discrete:
  ``action``; continuous: ``action_vector``), ``propensity`` — the probability (discrete) or
  density (continuous, of the unclipped draw) of that action under everything that chose it,
  exploration and traffic split included; null for a greedy continuous action —,
  ``arm_propensity`` (the same under the arm that served it alone), ``action_probs`` (the
  full behaviour distribution the action was drawn from, discrete), ``arm``, ``version``,
  ``exploration``, ``epsilon``, ``temperature`` (``agents.serving.exploration``; a log
  written before issue 17 has no ``temperature``: null), ``env_id``, ``model_sha256`` and
  the user's demographic ``group`` as the client gave it (null if not; a part written
  before issue 24 reads as null);
* ``feedback/`` — ``decision_id``, ``time``, ``reward``, ``done`` and ``signals`` (a JSON
  object as text), joined to decisions by ``decision_id``;
* ``shadow/`` — what a shadow policy would have done for a served decision (same
  ``decision_id``): never shown, so it has no outcome.

Beside them, ``servings.jsonl`` gets one line each time a server starts on the directory:
its time, traffic mode, exploration, and per arm the name, version label, share of traffic,
``model_sha256`` and the env (id and config) from the bundle. It is what an offline
evaluation of the logs needs and the rows do not repeat (``ope.served``).

Each log has one writer (an exclusive lock, ``DecisionLog``). It appends JSON lines to a
*segment* (``segment-NNNNNN.jsonl``, flushed after every write) and rolls it into a Parquet
*part* with the same number (``part-NNNNNN.parquet``, written to a temporary file and
renamed) in a background thread once it holds ``segment_rows`` rows, and on close.
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
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from agents.serving.bundle import FLOAT32_MAX
from personarl import jsonio
from personarl.errors import DataError
from personarl.locks import InUseError, exclusive_lock

__all__ = ["DecisionLog", "LogInUseError", "read_log", "DataWarning", "SCHEMAS", "LOG_KINDS",
           "SERVINGS", "record_serving", "read_servings"]

#: the file under a log root that records every server start (see the module doc)
SERVINGS = "servings.jsonl"


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
        ("epsilon", pa.float64()), ("temperature", pa.float64()), ("env_id", pa.string()),
        ("model_sha256", pa.string()), ("group", pa.string())]),
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


def _fits(value: Any, kind: pa.DataType) -> bool:
    """``value`` (from JSON) is a ``kind`` as it is — nothing converted: an ``action`` of
    1.5, a ``propensity`` of ``true``, an observation of 1e300 (beyond float32) or a string
    that is not valid Unicode does not fit. Null fits every column."""
    if value is None:
        return True
    if pa.types.is_list(kind):
        if not isinstance(value, list):
            return False
        item = kind.value_type
        if pa.types.is_floating(item) and all(type(v) is float for v in value):
            # the common case, a list of plain floats, in C: a NaN or inf makes the sum
            # non-finite (and the slow path below decides)
            if math.isfinite(sum(value)):
                limit = FLOAT32_MAX if item == pa.float32() else float("inf")
                return not value or (max(value) <= limit and min(value) >= -limit)
        return all(_fits(v, item) for v in value)
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
    limit = FLOAT32_MAX if kind == pa.float32() else float("inf")
    return pa.types.is_floating(kind) and math.isfinite(value) and abs(value) <= limit


def _read_segment(path: Path, schema: pa.Schema) -> tuple[pa.Table, list[tuple[int, bytes]]]:
    """The rows of a segment that fit ``schema``, and the ``(line number, bytes)`` of every
    other line (not JSON, not an object, or a value that is not its column's type)."""
    return _read_segment_bytes(path.read_bytes(), schema)


def _read_segment_bytes(data: bytes, schema: pa.Schema
                        ) -> tuple[pa.Table, list[tuple[int, bytes]]]:
    lines = jsonio.read_jsonl_bytes(data)
    fit = [all(_fits(row.get(f.name), f.type) for f in schema) for row in lines.rows]
    good = [(n, r) for n, r, ok in zip(lines.numbers, lines.rows, fit) if ok]
    try:
        table = _table([r for _, r in good], schema)
    except (pa.ArrowException, ValueError, TypeError, OverflowError):   # Arrow has the
        good = [(n, r) for n, r in good if _storable(r, schema)]         # last word
        table = _table([r for _, r in good], schema)
    misfits = sorted(set(lines.numbers) - {n for n, _ in good})
    if misfits:
        raw = jsonio.split_lines(data)
        lines.skipped += [(n, raw[n - 1]) for n in misfits]
    return table, sorted(lines.skipped)


def _storable(row: Mapping[str, Any], schema: pa.Schema) -> bool:
    try:
        _table([row], schema)
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        return False
    return True


#: rows converted per Arrow call: a call holds the GIL throughout (≈ 50 µs a decision row),
#: so a roll in the background thread never blocks the server's event loop for long
_CHUNK_ROWS = 128


def _table(rows: list[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    names = schema.names
    chunks = [pa.Table.from_pylist([{k: r.get(k) for k in names}
                                    for r in rows[i:i + _CHUNK_ROWS]], schema=schema)
              for i in range(0, len(rows), _CHUNK_ROWS)]
    return pa.concat_tables(chunks) if chunks else schema.empty_table()


def _warn_skipped(path: Path, skipped: list[tuple[int, bytes]], rows: int) -> None:
    if skipped:
        warnings.warn(jsonio.skipped_message(path, skipped, rows), DataWarning, stacklevel=3)


class LogInUseError(InUseError):
    """Another writer (a server in this or another process) holds the log's lock."""


class DecisionLog:
    """One append-only log (``kind`` in ``LOG_KINDS``) under ``root/kind``; thread-safe.

    **One writer.** The log holds an exclusive ``flock`` on ``root/kind/writer.lock`` for
    its lifetime (the OS frees it when the process dies, even by ``kill -9``), so a second
    writer on the same directory — another server with the same ``log_dir`` — is refused
    with ``LogInUseError`` naming the holder, instead of rolling the first one's live
    segment away.

    **Rolls off the caller's path.** ``append`` writes a line and flushes it; when a segment
    is full it is closed (fsync) and handed to a background thread that writes its Parquet
    part from the bytes of the still-open file — so a segment removed from the directory
    meanwhile still reaches its part — and then deletes it. ``close`` waits for pending
    rolls and rolls the last segment.

    **Failures are visible.** A write that fails raises, the segment is cut back to where
    the write began (no row of a failed call stays), ``error`` names the failure, and the
    next ``append`` starts a fresh segment; a failed roll leaves its segment on disk (read
    by ``read_log``, rolled at the next open) and is retried with the next roll; ``error``
    stays set until the failure is resolved.

    Args:
        root: the logs' directory (created).
        kind: ``decisions``, ``feedback`` or ``shadow`` (the Parquet schema).
        segment_rows: rows per segment before it is rolled into a Parquet part.
        on_roll: called with each roll's duration in seconds (from the rolling thread).

    Raises:
        LogInUseError: another writer holds the lock.
    """

    def __init__(self, root: str | Path, kind: str, segment_rows: int = 10_000,
                 on_roll: Callable[[float], None] | None = None) -> None:
        if kind not in SCHEMAS:
            raise ValueError(f"log kind {kind!r}; valid: {list(LOG_KINDS)}")
        if segment_rows < 1:
            raise ValueError(f"segment_rows={segment_rows!r} must be >= 1")
        self.kind, self.dir = kind, Path(root) / kind
        self.dir.mkdir(parents=True, exist_ok=True)
        self.schema, self.segment_rows = SCHEMAS[kind], segment_rows
        try:
            self._lock_file = exclusive_lock(
                self.dir / "writer.lock", "{path} is being written by {holder}; one writer per "
                "log directory (give this server another log_dir)")
        except InUseError as exc:
            raise LogInUseError(str(exc)) from None
        self._lock = threading.Lock()
        self._file: Any = None
        self._rows = 0
        self._append_error: str | None = None
        self._roll_errors: dict[Path, str] = {}
        self._unrolled: list[tuple[Path, Any]] = []          # (segment, its open file)
        self._rolling = threading.Lock()                      # one roll at a time
        self._roller: threading.Thread | None = None
        self.on_roll = on_roll
        try:
            for stale in sorted(self.dir.glob("segment-*.jsonl"), key=_number):
                self._roll(stale)                  # left by a crash (or an unclean stop)
        except BaseException:
            self._lock_file.close()
            raise
        numbers = [_number(p) for pattern in ("part-*.parquet", "rejected-*.jsonl",
                                              "segment-*.jsonl")
                   for p in self.dir.glob(pattern)]
        self._next = max(numbers, default=0) + 1

    @property
    def error(self) -> str | None:
        """What is wrong with this log now (a failed write or roll), or ``None``."""
        problems = ([self._append_error] if self._append_error else []) + [
            f"rolling {p.name} failed ({e}); its rows are kept in the segment and the roll is "
            "retried" for p, e in list(self._roll_errors.items())]
        return "; ".join(problems) or None

    @property
    def rolling(self) -> bool:
        """A roll is in progress (in the background thread)."""
        return self._rolling.locked()

    def append(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append rows (dicts with the schema's keys; missing keys are null).

        Raises:
            OSError: the write failed (recorded in ``error``; the next call starts a new
                segment).
        """
        lines = "".join(jsonio.dumps(dict(r), separators=(",", ":")) + "\n" for r in rows)
        if not lines:
            return
        data = memoryview(lines.encode("utf-8", "surrogatepass"))
        with self._lock:
            start = None
            try:
                if self._file is None:          # unbuffered: a write is in the OS at once
                    self._file = open(self.dir / f"segment-{self._next:06d}.jsonl", "a+b",
                                      buffering=0)
                start = self._file.seek(0, os.SEEK_END)
                while data:                     # survives the process dying once written
                    data = data[self._file.write(data):]
            except (OSError, ValueError) as exc:
                self._take_back(start)
                self._append_error = (f"writing {self.dir.name} segment-{self._next:06d} "
                                      f"failed: {exc}")
                self._close_segment()            # rolled later; the next append opens anew
                raise OSError(f"decision log {self.dir}: {self._append_error}") from exc
            self._append_error = None
            self._rows += lines.count("\n")
            full = self._rows >= self.segment_rows
            if full:
                self._close_segment()
        if full and (self._roller is None or not self._roller.is_alive()):
            self._roller = threading.Thread(target=self._roll_pending, daemon=True,
                                            name=f"decision-log-roll-{self.kind}")
            self._roller.start()

    def roll(self) -> None:
        """Roll the open segment into a Parquet part now, and wait for every pending roll
        (``close`` does this too)."""
        with self._lock:
            self._close_segment()
        if self._roller is not None:
            self._roller.join()
        self._roll_pending()

    def close(self) -> None:
        """Roll everything, then release the writer's lock."""
        try:
            self.roll()
        finally:
            with self._lock:
                for _, handle in self._unrolled:     # failed rolls: rolled at next open
                    try:
                        handle.close()
                    except OSError:
                        pass
                self._unrolled.clear()
            self._lock_file.close()

    def _take_back(self, start: int | None) -> None:
        """After a failed write: cut the segment back to where the write began, so no row of
        a call that failed stays in the log (if even that fails, a torn last line is a
        rejected line at the roll)."""
        if self._file is not None and start is not None:
            try:
                os.ftruncate(self._file.fileno(), start)
            except (OSError, ValueError):
                pass

    def _close_segment(self) -> None:
        """Queue the open segment for rolling (under ``self._lock``)."""
        if self._file is None:
            return
        try:
            os.fsync(self._file.fileno())
        except (OSError, ValueError):
            pass                                 # the roll reads the bytes either way
        self._unrolled.append((Path(self._file.name), self._file))
        self._file, self._rows = None, 0
        self._next += 1

    def _roll_pending(self) -> None:
        """Roll queued segments, oldest first; stop at the first failure, which is queued
        again for the next roll."""
        with self._rolling:
            while True:
                with self._lock:
                    if not self._unrolled:
                        return
                    segment, handle = self._unrolled.pop(0)
                start = time.perf_counter()
                try:
                    self._roll(segment, handle)
                except Exception as exc:          # noqa: BLE001 — reported in ``error``
                    self._roll_errors[segment] = f"{type(exc).__name__}: {exc}"
                    with self._lock:
                        self._unrolled.insert(0, (segment, handle))
                    return
                self._roll_errors.pop(segment, None)
                if self.on_roll is not None:
                    self.on_roll(time.perf_counter() - start)

    def _roll(self, segment: Path, handle: Any = None) -> None:
        """Segment -> Parquet part (+ rejected lines), then delete the segment. ``handle``:
        the segment's open file, read instead of the path (which may be gone)."""
        number = _number(segment)
        part = self.dir / f"part-{number:06d}.parquet"
        if not part.exists():
            if handle is not None and not handle.closed:
                handle.seek(0)
                data = handle.read()
            else:
                data = segment.read_bytes()
            table, skipped = _read_segment_bytes(data, self.schema)
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
        segment.unlink(missing_ok=True)
        if handle is not None:
            try:
                handle.close()
            except OSError:
                pass


def read_log(root: str | Path, kind: str, columns: list[str] | None = None) -> pa.Table:
    """Everything a log holds, in the order it was written: its Parquet parts, then rows of
    segments not yet rolled (lines that are not rows are skipped with a ``DataWarning``);
    only ``columns`` if given. Safe while a writer appends (a segment rolled meanwhile is
    read from its part)."""
    if kind not in SCHEMAS:
        raise ValueError(f"log kind {kind!r}; valid: {list(LOG_KINDS)}")
    folder = Path(root) / kind
    schema = SCHEMAS[kind]
    if columns is not None:
        unknown = sorted(set(columns) - set(schema.names))
        if unknown:
            raise ValueError(f"{kind} log has no columns {unknown}; columns: {schema.names}")
        schema = pa.schema([schema.field(c) for c in columns])
    numbers = sorted({_number(p) for pattern in ("part-*.parquet", "segment-*.jsonl")
                      for p in folder.glob(pattern)})
    tables = []
    for number in numbers:
        part = folder / f"part-{number:06d}.parquet"
        segment = folder / f"segment-{number:06d}.jsonl"
        if not part.exists():
            try:
                table, skipped = _read_segment(segment, SCHEMAS[kind])
            except FileNotFoundError:          # rolled while we looked: read the part
                table = None
            if table is not None:
                _warn_skipped(segment, skipped, table.num_rows)
                tables.append(table.select(schema.names))
                continue
        tables.append(_read_part(part, schema))
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _read_part(path: Path, schema: pa.Schema) -> pa.Table:
    """A rolled Parquet part (the columns of ``schema``), its page checksums verified.

    Raises:
        DataError: the part is unreadable or corrupt (naming it).
    """
    try:
        have = set(pq.read_schema(path).names)
        present = pa.schema([f for f in schema if f.name in have])
        table = pq.read_table(path, schema=present, columns=present.names,
                              page_checksum_verification=True)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path} is not a readable decision-log part: {exc}") from None
    for i, f in enumerate(schema):        # a column added since the part was written: null
        if f.name not in have:
            table = table.add_column(i, f, pa.nulls(len(table), f.type))
    return table


def record_serving(root: str | Path, serving: Mapping[str, Any]) -> None:
    """Append ``serving`` (a JSON object: what a starting server serves) to the root's
    ``servings.jsonl``, flushed to disk before the server answers anything."""
    path = Path(root) / SERVINGS
    with path.open("a+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell():                 # after a torn last line (a crash), start a new line
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
            f.seek(0, os.SEEK_END)
            if torn:
                f.write(b"\n")
        f.write((jsonio.dumps(dict(serving), sort_keys=True) + "\n").encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def read_servings(root: str | Path) -> list[dict[str, Any]]:
    """Every server start recorded under ``root``, oldest first (``[]`` if none: logs
    written before servings were recorded). A line that is not a JSON object (a torn last
    line from a crash) is skipped with a ``DataWarning``.

    Raises:
        DataError: ``servings.jsonl`` exists but cannot be read.
    """
    path = Path(root) / SERVINGS
    try:
        lines = jsonio.read_jsonl(path)
    except OSError as exc:
        raise DataError(f"{path} cannot be read: {exc}") from None
    if lines.skipped:
        warnings.warn(jsonio.skipped_message(path, lines.skipped, len(lines.rows)),
                      DataWarning, stacklevel=2)
    return sorted(lines.rows, key=lambda e: e["time"] if isinstance(
        e.get("time"), (int, float)) else 0.0)
