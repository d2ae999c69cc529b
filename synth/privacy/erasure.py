"""Erasure of one user's rows from every dataset of a directory (the right to erasure, GDPR
Art. 17), proven before and after.

    >>> found = scan(run_dir, pseudonym)          # where the user is: must find something
    >>> report = erase(run_dir, pseudonym)        # rewrites those files; scans again

A user is named by their pseudonym — the keyed hash ``personarl.identifiers.Pseudonymiser``
wrote in place of their id — never by the raw id, which no dataset holds.

**What is read.** Every file under the directory, by what it is:

* Parquet (``*.parquet``): read with pyarrow — columns, not the bytes of a compressed
  file. A row is the user's if any string column contains the pseudonym.
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

**What erasing does.** ``erase`` scans first and refuses if the pseudonym is found nowhere
(a wrong key gives another pseudonym: erasing nothing must not look like success). Each
file holding the user's rows is rewritten without them — Parquet with its schema, metadata
and page checksums, JSON lines byte for byte — to a temporary sibling that replaces it
(``os.replace``), so a file is the old one or the new one. Then the directory is scanned
again and every hit left is an error. The privacy ledger of each rewritten dataset
(``synth.privacy.ledger``) has its generator fits marked stale; ε is never refunded. A
crash midway leaves some files erased and others not; running ``erase`` again finishes.

Locking writers out (a server appending to a decision log) is the caller's job:
``experiments.erase`` takes each decision log's lock, or refuses while a server holds it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from personarl.errors import ConfigError, DataError
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
        text_hits: text files that contain the pseudonym (no rows to remove).
        not_scanned: files of formats that cannot be read as rows.
        unreadable: file -> why it could not be read (a corrupt Parquet file).
        links: how many linked ids (``LINK_COLUMNS`` values of the user's rows) were found.
    """

    rows: dict[str, int] = field(default_factory=dict)
    text_hits: list[str] = field(default_factory=list)
    not_scanned: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    links: int = 0

    @property
    def total(self) -> int:
        """Rows and lines of the user's, over all files."""
        return sum(self.rows.values())

    @property
    def found(self) -> bool:
        """The pseudonym (or a row linked to it) is somewhere in the directory."""
        return bool(self.total or self.text_hits)


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
def _string_columns(table: pa.Table) -> list[str]:
    out = []
    for f in table.schema:
        t = f.type.value_type if pa.types.is_dictionary(f.type) else f.type
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            out.append(f.name)
    return out


def _parquet_mask(table: pa.Table, pseudonym: str, links: set[str]) -> pa.Array:
    """Rows of ``table`` that contain ``pseudonym`` in a string column, or hold a linked id."""
    mask = pa.array([False] * table.num_rows, pa.bool_())
    link_values = pa.array(sorted(links), pa.string())
    for name in _string_columns(table):
        column = table.column(name)
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        hit = pc.fill_null(pc.match_substring(column, pseudonym), False)
        if name in LINK_COLUMNS and links:
            hit = pc.or_(hit, pc.fill_null(pc.is_in(column, value_set=link_values), False))
        mask = pc.or_(mask, hit)
    return mask


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


def _line_is_users(line: bytes, pseudonym: str, links: set[str]) -> bool:
    try:
        row = json.loads(line)
    except ValueError:                            # a torn or corrupt line: its text
        return pseudonym.encode() in line
    if any(pseudonym in s for s in _strings(row)):
        return True
    return isinstance(row, dict) and any(row.get(c) in links for c in LINK_COLUMNS
                                         if isinstance(row.get(c), str))


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _link_ids(table: pa.Table, mask: pa.Array) -> set[str]:
    out: set[str] = set()
    for c in LINK_COLUMNS:
        if c in table.column_names and pa.types.is_string(table.schema.field(c).type):
            out.update(v for v in table.filter(mask).column(c).to_pylist() if v is not None)
    return out


# ---------------------------------------------------------------- scanning
def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


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
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{str(root)!r} is not a directory")
    return _scan(root, _files(root), pseudonym)[0]


def _scan(root: Path, files: list[Path], pseudonym: str
          ) -> tuple[Scan, dict[Path, Any], set[str]]:
    """The scan, each matching file's mask (Parquet) or line flags (JSON lines), and the
    linked ids; two passes so that a linked row in a file read before its decision counts."""
    result = Scan()
    tables: dict[Path, pa.Table] = {}
    links: set[str] = set()
    for path in files:                              # pass 1: the pseudonym, and its links
        kind, rel = _kind(path), str(path.relative_to(root))
        try:
            if kind == "parquet":
                tables[path] = table = _read_parquet(path)
                links |= _link_ids(table, _parquet_mask(table, pseudonym, set()))
            elif kind == "jsonl":
                for line in _lines(path.read_bytes()):
                    if line.strip() and _line_is_users(line, pseudonym, set()):
                        try:
                            row = json.loads(line)
                        except ValueError:
                            continue
                        if isinstance(row, dict):
                            links.update(row[c] for c in LINK_COLUMNS
                                         if isinstance(row.get(c), str))
            elif kind in ("text", "ledger"):
                if pseudonym.encode() in path.read_bytes():
                    result.text_hits.append(rel)
            else:
                result.not_scanned.append(rel)
        except (pa.ArrowException, OSError) as exc:
            result.unreadable[rel] = f"{type(exc).__name__}: {exc}"
    hits: dict[Path, Any] = {}
    for path in files:                              # pass 2: rows, links included
        kind, rel = _kind(path), str(path.relative_to(root))
        if kind == "parquet" and path in tables:
            mask = _parquet_mask(tables[path], pseudonym, links)
            n = pc.sum(mask).as_py() or 0
            if n:
                hits[path], result.rows[rel] = mask, n
        elif kind == "jsonl" and rel not in result.unreadable:
            flags = [bool(line.strip()) and _line_is_users(line, pseudonym, links)
                     for line in _lines(path.read_bytes())]
            if any(flags):
                hits[path], result.rows[rel] = flags, sum(flags)
    result.links = len(links)
    return result, hits, links


# ---------------------------------------------------------------- erasing
def _replace(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.erasing")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _rewrite_parquet(path: Path, mask: pa.Array) -> None:
    table = _read_parquet(path)
    kept = table.filter(pc.invert(mask))
    _replace(path, lambda tmp: pq.write_table(kept, tmp, write_page_checksum=True))


def _rewrite_jsonl(path: Path, flags: list[bool]) -> None:
    lines = _lines(path.read_bytes())
    kept = b"\n".join(line for line, hit in zip(lines, flags) if not hit)
    _replace(path, lambda tmp: tmp.write_bytes(kept))


def erase(root: str | Path, pseudonym: str) -> Erasure:
    """Remove every row of the user ``pseudonym`` (and the rows linked to them) from every
    Parquet and JSON-lines file under ``root``; prove it by scanning before and after.

    Raises:
        ConfigError: ``pseudonym`` is not a keyed hash, or ``root`` is not a directory.
        DataError: the user is in no file (wrong key or id?); a file could not be read; the
            pseudonym is in a text file with no rows to remove (naming it) — all before
            anything is changed; or rows are left after rewriting (naming the files).
    """
    pseudonym = _check_pseudonym(pseudonym)
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{str(root)!r} is not a directory")
    files = _files(root)
    before, hits, _ = _scan(root, files, pseudonym)
    if before.unreadable:
        name, why = next(iter(before.unreadable.items()))
        raise DataError(f"cannot erase: {name} could not be read ({why}); nothing was "
                        "changed")
    if before.text_hits:
        raise DataError(f"cannot erase: the user's pseudonym is in {before.text_hits}, which "
                        "hold no rows to remove; remove it there by hand — nothing was "
                        "changed")
    if not before.found:
        raise DataError(f"the user {pseudonym[:len(PREFIX) + 8]}… is in no dataset under "
                        f"{root} (is PERSONARL_PII_KEY the key the data was written with?); "
                        "nothing was changed")
    rewritten: dict[str, int] = {}
    stale = 0
    for path, hit in hits.items():
        rel = str(path.relative_to(root))
        if _kind(path) == "parquet":
            _rewrite_parquet(path, hit)
        else:
            _rewrite_jsonl(path, hit)
        rewritten[rel] = before.rows[rel]
        ledger = PrivacyLedger.path_for(path)
        if ledger.exists():
            stale += PrivacyLedger(ledger).mark_stale(
                f"rows erased from {path.name} on {time.strftime('%Y-%m-%d')}")
    after = scan(root, pseudonym)
    if after.found:
        raise DataError(f"erasure incomplete: the user is still in {sorted(after.rows)}"
                        f"{after.text_hits or ''}")
    return Erasure(before=before, after=after, rewritten=rewritten, stale_fits=stale)
