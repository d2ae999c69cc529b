"""Erasure of one user's rows from every dataset of a directory (the right to erasure, GDPR
Art. 17), proven before and after.

    >>> found = scan(run_dir, pseudonym)          # where the user is: must find something
    >>> report = erase(run_dir, pseudonym)        # rewrites those files; scans again

A user is named by their pseudonym — the keyed hash ``personarl.identifiers.Pseudonymiser``
wrote in place of their id — never by the raw id, which no dataset holds.

**What is read.** Every file under the directory, by what it is:

* Parquet (``*.parquet``): read with pyarrow — columns, not the bytes of a compressed
  file. A row is the user's if any text in it contains the pseudonym: string and binary
  columns, dictionary-encoded ones, and strings inside lists, structs and maps. A
  dictionary entry no row uses is removed by rewriting the file; the pseudonym in the
  file's metadata has no row to remove (``erase`` refuses, naming the file).
* JSON lines (``*.jsonl``: decision-log segments, rejected lines, metrics): a line is the
  user's if any string in it contains the pseudonym; a line that is not JSON (a torn or
  corrupt line) if its text does.
* Rows *linked* to the user's rows: those whose ``decision_id`` is the id of one of the
  user's decisions (a served decision's feedback and shadow rows carry no user id).
* Any other text file (JSON, Markdown, HTML, YAML, logs): searched as text. It has no rows
  to remove, so a hit there makes ``erase`` refuse before it changes anything, naming the
  file.
* Binary files of other formats (``.npz``, ``.onnx``, images, checkpoints) cannot be read
  as rows; they are listed in ``Scan.not_scanned``. PersonaRL writes no identifier into
  them.
* A symbolic link is read at its target when that is inside the directory; one that leads
  out of it makes ``erase`` refuse (its target is another directory's data).

**What erasing does.** ``erase`` scans first and refuses if the pseudonym is found nowhere
(a wrong key gives another pseudonym: erasing nothing must not look like success). Each
file holding the user's rows is rewritten without them — Parquet with its schema, metadata
and page checksums (dictionaries rebuilt from the rows kept), JSON lines byte for byte —
through a temporary sibling that replaces it (``personarl.files.write_atomic``), so a file
is the old one or the new one. The privacy ledgers to update are read first. Then the directory is scanned
again and every hit left is an error. The privacy ledger of each rewritten dataset
(``synth.privacy.ledger``; a file's own, or a directory's holding it) has its generator
fits marked stale; ε is never refunded. A
crash midway leaves some files erased and others not; running ``erase`` again finishes.

Locking writers out (a server appending to a decision log) is the caller's job:
``experiments.erase`` takes each decision log's lock, or refuses while a server holds it.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from personarl import jsonio
from personarl.errors import ConfigError, DataError
from personarl.files import write_atomic
from personarl.identifiers import PREFIX
from synth.privacy.ledger import SUFFIX, PrivacyLedger

__all__ = ["Scan", "Erasure", "scan", "erase", "LINK_COLUMNS", "TEXT_SUFFIXES"]

#: columns whose values tie other rows to a user's rows (feedback and shadow rows to a
#: decision)
LINK_COLUMNS = ("decision_id",)
#: files read as text (no rows to remove: a hit makes ``erase`` refuse)
TEXT_SUFFIXES = (".json", ".md", ".html", ".htm", ".txt", ".log", ".yaml", ".yml", ".csv",
                 ".lock", ".tsv")


def _check_pseudonym(pseudonym: str) -> str:
    if not isinstance(pseudonym, str) or not pseudonym.startswith(PREFIX) or \
            len(pseudonym) != len(PREFIX) + 64:
        raise ConfigError(f"user pseudonym {str(pseudonym)[:80]!r} is not a keyed hash "
                          f"({PREFIX}<64 hex digits>, personarl.identifiers)")
    return pseudonym


@dataclass
class Scan:
    """Where one user is in a directory.

    Attributes:
        rows: file (relative path) -> rows (Parquet) or lines (JSON lines) that are the
            user's or linked to them.
        traces: Parquet file -> where the pseudonym is outside its rows but removable by
            rewriting the file (a dictionary entry no row uses).
        text_hits: text files (or Parquet metadata) that contain the pseudonym (no rows to
            remove).
        not_scanned: files of formats that cannot be read as rows.
        unreadable: file -> why it could not be read (a corrupt Parquet file).
        outside: symbolic links that lead out of the directory (their targets are not read).
        links: how many linked ids (``LINK_COLUMNS`` values of the user's rows) were found.
    """

    rows: dict[str, int] = field(default_factory=dict)
    traces: dict[str, list[str]] = field(default_factory=dict)
    text_hits: list[str] = field(default_factory=list)
    not_scanned: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    outside: list[str] = field(default_factory=list)
    links: int = 0

    @property
    def total(self) -> int:
        """Rows and lines of the user's, over all files."""
        return sum(self.rows.values())

    @property
    def found(self) -> bool:
        """The pseudonym (or a row linked to it) is somewhere in the directory."""
        return bool(self.total or self.text_hits or self.traces)


@dataclass
class Erasure:
    """What ``erase`` did.

    Attributes:
        before: the scan that found the user.
        after: the scan after rewriting (``after.found`` is false).
        rewritten: the files rewritten, with the rows each lost.
        stale_fits: generator fits marked stale in the rewritten datasets' ledgers.
    """

    before: Scan
    after: Scan
    rewritten: dict[str, int]
    stale_fits: int

    def summary(self) -> dict[str, Any]:
        """A record of the erasure that names no user (for an audit log)."""
        return dict(time=time.strftime("%Y-%m-%dT%H:%M:%S%z"), rewritten=self.rewritten,
                    rows_removed=sum(self.rewritten.values()), stale_fits=self.stale_fits,
                    not_scanned=self.before.not_scanned)


# ---------------------------------------------------------------- matching
def _plain(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """A dictionary-encoded column decoded (its values, not its codes)."""
    return column.cast(column.type.value_type) if pa.types.is_dictionary(column.type) \
        else column


def _texty(kind: pa.DataType) -> bool:
    return (pa.types.is_string(kind) or pa.types.is_large_string(kind)
            or pa.types.is_binary(kind) or pa.types.is_large_binary(kind))


def _holds_text(kind: pa.DataType) -> bool:
    """``kind`` is or contains (in lists, structs, dictionaries) strings or bytes."""
    if pa.types.is_dictionary(kind):
        return _holds_text(kind.value_type)
    if _texty(kind):
        return True
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or \
            pa.types.is_fixed_size_list(kind):
        return _holds_text(kind.value_type)
    if pa.types.is_struct(kind):
        return any(_holds_text(kind.field(i).type) for i in range(kind.num_fields))
    if pa.types.is_map(kind):
        return _holds_text(kind.key_type) or _holds_text(kind.item_type)
    return False


def _array_mask(array: pa.Array, pseudonym: str) -> np.ndarray:
    """``(len(array),)`` bool: the values that contain ``pseudonym`` anywhere inside."""
    kind = array.type
    if pa.types.is_dictionary(kind):
        array = array.cast(kind.value_type)
        kind = array.type
    if _texty(kind):
        return pc.fill_null(pc.match_substring(array, pseudonym), False).to_numpy(
            zero_copy_only=False)
    out = np.zeros(len(array), dtype=bool)
    if pa.types.is_struct(kind):
        for i in range(kind.num_fields):
            if _holds_text(kind.field(i).type):
                out |= _array_mask(array.field(i), pseudonym)
        return out
    if pa.types.is_map(kind):
        array = pa.ListArray.from_arrays(array.offsets, pa.StructArray.from_arrays(
            [array.keys, array.items], ["key", "value"]))
        kind = array.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or \
            pa.types.is_fixed_size_list(kind):
        inner = _array_mask(array.flatten(), pseudonym)
        parents = pc.list_parent_indices(array).to_numpy(zero_copy_only=False)
        np.logical_or.at(out, parents[inner], True)
    return out


def _pseudonym_mask(table: pa.Table, pseudonym: str) -> np.ndarray:
    """``(rows,)`` bool: the rows of ``table`` with ``pseudonym`` in any text (nested
    included)."""
    mask = np.zeros(table.num_rows, dtype=bool)
    for name in table.column_names:
        column = table.column(name)
        if _holds_text(column.type):
            for start, chunk in _chunks(column):
                mask[start:start + len(chunk)] |= _array_mask(chunk, pseudonym)
    return mask


def _link_mask(table: pa.Table, links: set[str]) -> np.ndarray:
    """``(rows,)`` bool: the rows of ``table`` holding a linked id in a ``LINK_COLUMNS``
    column."""
    mask = np.zeros(table.num_rows, dtype=bool)
    link_values = pa.array(sorted(links), pa.string())
    for name in LINK_COLUMNS:
        if links and name in table.column_names and _texty(_plain(table.column(name)).type):
            hit = pc.is_in(_plain(table.column(name)).cast(pa.string()), value_set=link_values)
            mask |= pc.fill_null(hit, False).to_numpy(zero_copy_only=False)
    return mask


def _parquet_mask(table: pa.Table, pseudonym: str, links: set[str]) -> np.ndarray:
    """The rows of ``table`` that are the user's or linked to them."""
    return _pseudonym_mask(table, pseudonym) | _link_mask(table, links)


def _chunks(column: pa.ChunkedArray) -> Iterable[tuple[int, pa.Array]]:
    start = 0
    for chunk in column.chunks:
        yield start, chunk
        start += len(chunk)


def _hidden_traces(table: pa.Table, pseudonym: str) -> list[str]:
    """Where ``pseudonym`` is in a Parquet file outside its rows: the schema's metadata (no
    row to remove), or a dictionary entry no row uses (removed by rewriting the file)."""
    out = []
    metadata = [table.schema.metadata or {}] + [f.metadata or {} for f in table.schema]
    if any(pseudonym.encode() in k or pseudonym.encode() in v for m in metadata
           for k, v in m.items()):
        out.append("metadata")
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_dictionary(column.type) and any(
                _array_mask(chunk.dictionary, pseudonym).any() for chunk in column.chunks):
            out.append(f"dictionary of {name!r}")
    return out


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _parse(line: bytes) -> Any:
    """A JSON line's value, or ``None`` if it is not JSON (torn, corrupt, too deep)."""
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        return None


def _line_is_users(line: bytes, pseudonym: str, links: set[str]) -> bool:
    row = _parse(line)
    if row is None:                              # not JSON: its text
        return pseudonym.encode() in line
    if any(pseudonym in s for s in _strings(row)):
        return True
    return isinstance(row, dict) and any(row.get(c) in links for c in LINK_COLUMNS
                                         if isinstance(row.get(c), str))


def _link_ids(table: pa.Table, mask: np.ndarray) -> set[str]:
    out: set[str] = set()
    for c in LINK_COLUMNS:
        if c in table.column_names and _texty(_plain(table.column(c)).type):
            values = _plain(table.column(c)).filter(pa.array(mask)).to_pylist()
            out.update(v if isinstance(v, str) else v.decode("utf-8", "replace")
                       for v in values if v is not None)
    return out


# ---------------------------------------------------------------- scanning
def _files(root: Path) -> tuple[list[Path], list[str]]:
    """The regular files under ``root`` and the symbolic links that lead out of it (those
    that stay inside are read at their targets)."""
    files, outside = [], []
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            if not p.resolve().is_relative_to(root.resolve()):
                outside.append(str(p.relative_to(root)))
        elif p.is_file():
            files.append(p)
    return files, outside


def _kind(path: Path) -> str:
    if path.name.endswith(SUFFIX):
        return "ledger"
    if path.suffix == ".parquet":
        return "parquet"
    if path.suffix == ".jsonl":
        return "jsonl"
    if path.suffix.lower() in TEXT_SUFFIXES:
        return "text"
    return "binary"


def _read_parquet(path: Path) -> pa.Table:
    return pq.read_table(path, page_checksum_verification=True)


def scan(root: str | Path, pseudonym: str) -> Scan:
    """Where the user ``pseudonym`` is under ``root`` (module doc), reading every file.

    Raises:
        ConfigError: ``pseudonym`` is not a keyed hash; ``root`` is not a directory.
    """
    pseudonym = _check_pseudonym(pseudonym)
    root = _check_root(root)
    return _scan(root, pseudonym)[0]


def _check_root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{str(root)!r} is not a directory")
    return root


def _scan(root: Path, pseudonym: str) -> tuple[Scan, list[Path], set[str]]:
    """The scan, the files to rewrite, and the linked ids; two passes so that a linked
    row in a file read before its decision counts."""
    files, outside = _files(root)
    result = Scan(outside=outside)
    tables: dict[Path, tuple[pa.Table, np.ndarray]] = {}     # with the user's own rows
    lines: dict[Path, list[bytes]] = {}
    links: set[str] = set()
    for path in files:                              # pass 1: the pseudonym, and its links
        kind, rel = _kind(path), str(path.relative_to(root))
        try:
            if kind == "parquet":
                table = _read_parquet(path)
                own = _pseudonym_mask(table, pseudonym)
                tables[path] = table, own
                links |= _link_ids(table, own)
                traces = _hidden_traces(table, pseudonym)
                if "metadata" in traces:
                    result.text_hits.append(f"{rel} (Parquet metadata)")
                if any(t.startswith("dictionary") for t in traces):
                    result.traces[rel] = [t for t in traces if t != "metadata"]
            elif kind == "jsonl":
                lines[path] = jsonio.split_lines(path.read_bytes())
                for line in lines[path]:
                    row = _parse(line) if pseudonym.encode() in line else None
                    if isinstance(row, dict) and _line_is_users(line, pseudonym, set()):
                        links.update(row[c] for c in LINK_COLUMNS
                                     if isinstance(row.get(c), str))
            elif kind in ("text", "ledger"):
                if pseudonym.encode() in path.read_bytes():
                    result.text_hits.append(rel)
            else:
                result.not_scanned.append(rel)
        except (pa.ArrowException, OSError) as exc:
            result.unreadable[rel] = f"{type(exc).__name__}: {exc}"
    rewrite: list[Path] = []
    for path in files:                              # pass 2: rows, links included
        kind, rel = _kind(path), str(path.relative_to(root))
        if path in tables:
            table, own = tables[path]
            n = int((own | _link_mask(table, links)).sum())
            if n:
                result.rows[rel] = n
        elif path in lines:
            n = sum(_line_is_users(line, pseudonym, links) for line in lines[path]
                    if line.strip())
            if n:
                result.rows[rel] = n
        if rel in result.rows or rel in result.traces:
            rewrite.append(path)
    result.links = len(links)
    return result, rewrite, links


# ---------------------------------------------------------------- erasing
def _rewrite_parquet(path: Path, pseudonym: str, links: set[str]) -> int:
    """Rewrite ``path`` without the user's rows (dictionaries rebuilt from the rows kept);
    returns the rows removed."""
    table = _read_parquet(path)
    mask = _parquet_mask(table, pseudonym, links)
    kept = table.filter(pa.array(~mask))
    columns = [pc.dictionary_encode(_plain(kept.column(i)).combine_chunks())
               if pa.types.is_dictionary(f.type) else kept.column(i)
               for i, f in enumerate(kept.schema)]
    kept = pa.table(columns, schema=kept.schema)
    buffer = io.BytesIO()
    pq.write_table(kept, buffer, write_page_checksum=True)
    write_atomic(path, buffer.getvalue())
    return int(mask.sum())


def _rewrite_jsonl(path: Path, pseudonym: str, links: set[str]) -> int:
    """Rewrite ``path`` without the user's lines (read again: what is there now), every
    other byte as it was; returns the lines removed."""
    data = path.read_bytes()
    lines = jsonio.split_lines(data)
    hit = [bool(line.strip()) and _line_is_users(line, pseudonym, links) for line in lines]
    kept = [line for line, h in zip(lines, hit) if not h]
    out = b"\n".join(kept) + (b"\n" if kept and data.endswith(b"\n") else b"")
    write_atomic(path, out)
    return sum(hit)


def _ledgers(root: Path, path: Path) -> list[Path]:
    """The privacy ledgers of ``path`` and of every directory holding it, up to ``root``
    (a dataset may be a file or a directory)."""
    out, here = [], path
    while True:
        ledger = PrivacyLedger.path_for(here)
        if ledger.exists():
            out.append(ledger)
        if here == root:
            return out
        here = here.parent


def erase(root: str | Path, pseudonym: str) -> Erasure:
    """Remove every row of the user ``pseudonym`` (and the rows linked to them) from every
    Parquet and JSON-lines file under ``root``; prove it by scanning before and after.

    Raises:
        ConfigError: ``pseudonym`` is not a keyed hash, or ``root`` is not a directory.
        DataError: before anything is changed — the user is in no file (wrong key or id?),
            a file or a ledger to update cannot be read, the pseudonym is in a text file
            or Parquet metadata with no rows to remove, or a symbolic link leads out of
            ``root`` (naming them); while rewriting — a write failed (naming what was done:
            running ``erase`` again finishes); after — rows are left (naming the files).
    """
    pseudonym = _check_pseudonym(pseudonym)
    root = _check_root(root)
    before, rewrite, links = _scan(root, pseudonym)
    if before.unreadable:
        name, why = next(iter(before.unreadable.items()))
        raise DataError(f"cannot erase: {name} could not be read ({why}); nothing was "
                        "changed")
    if before.outside:
        raise DataError(f"cannot erase: {before.outside} are symbolic links out of {root}; "
                        "erase their targets as well (or remove the links) — nothing was "
                        "changed")
    if before.text_hits:
        raise DataError(f"cannot erase: the user's pseudonym is in {before.text_hits}, which "
                        "hold no rows to remove; remove it there by hand — nothing was "
                        "changed")
    if not before.found:
        raise DataError(f"the user {pseudonym[:len(PREFIX) + 8]}… is in no dataset under "
                        f"{root} (is PERSONARL_PII_KEY the key the data was written with?); "
                        "nothing was changed")
    ledgers = {p for path in rewrite for p in _ledgers(root, path)}
    for ledger in ledgers:
        PrivacyLedger(ledger)                     # readable, before anything changes
    rewritten: dict[str, int] = {}
    try:
        for path in rewrite:
            rel = str(path.relative_to(root))
            rewritten[rel] = (_rewrite_parquet if _kind(path) == "parquet"
                              else _rewrite_jsonl)(path, pseudonym, links)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"erasure stopped: rewriting {rel} failed ({exc}); "
                        f"{sorted(rewritten) or 'no file'} rewritten so far — run the erasure "
                        "again to finish") from None
    reason = f"rows erased on {time.strftime('%Y-%m-%d')}"
    stale = sum(PrivacyLedger(p).mark_stale(reason) for p in sorted(ledgers))
    after = scan(root, pseudonym)
    if after.found or after.traces:
        raise DataError(f"erasure incomplete: the user is still in "
                        f"{sorted({*after.rows, *after.traces})}{after.text_hits or ''}")
    return Erasure(before=before, after=after, rewritten=rewritten, stale_fits=stale)
