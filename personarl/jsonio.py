"""Strict JSON for every file PersonaRL writes, and a forgiving JSON-lines reader.

JSON (RFC 8259) has no ``NaN`` or ``Infinity``; Python's ``json`` writes them as bare
tokens that strict readers (browsers, ``jq``, most languages) reject. ``dumps`` writes a
non-finite float as ``null`` — read it back as "undefined" — and NumPy scalars and arrays as
plain numbers and lists, and raises on anything else it cannot represent.

``read_jsonl`` reads a JSON-lines file (``metrics.jsonl``, decision-log segments) keeping
every line that is a UTF-8 JSON object: a corrupt line in the middle no longer hides the rows
after it. The lines it could not read come back with their numbers and their exact bytes,
for the caller to report (and keep, where the file is about to be rewritten or deleted).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["to_strict", "dumps", "loads_strict", "read_jsonl", "read_jsonl_bytes", "raw_lines",
           "split_lines", "JsonLines", "skipped_message"]


def to_strict(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None``, NumPy scalars and arrays
    turned into Python numbers and lists, and tuples into lists (dict keys unchanged)."""
    if isinstance(value, dict):
        return {k.item() if isinstance(k, np.generic) else k: to_strict(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_strict(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_strict(value.tolist())
    if isinstance(value, np.generic):
        return to_strict(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of ``to_strict(value)`` that refuses bare ``NaN``/``Infinity``
    (``allow_nan=False``); other keyword arguments pass through (``indent``,
    ``sort_keys``, ``separators``, ``default``)."""
    return json.dumps(to_strict(value), allow_nan=False, **kwargs)


@dataclass
class JsonLines:
    """What ``read_jsonl`` read: ``rows`` (every line that is a JSON object, in order),
    ``numbers`` (the line number of each row, from 1) and ``skipped`` (``(line number,
    bytes)`` of every other non-blank line, exactly as it was in the file)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)
    skipped: list[tuple[int, bytes]] = field(default_factory=list)


def loads_strict(data: bytes) -> Any:
    """``data`` parsed as strict JSON: UTF-8, no ``NaN``/``Infinity``, no duplicate keys in
    an object, no string that is not valid Unicode (a lone surrogate escape such as
    ``"\\ud800"``), not nested beyond what the parser can take.

    Raises:
        ValueError: naming the first problem.
    """
    def no_constant(token: str) -> Any:
        raise ValueError(f"{token} is not JSON")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError(f"duplicate key {next(k for k in keys if keys.count(k) > 1)!r}")
        return dict(pairs)

    try:
        value = json.loads(data.decode("utf-8"), parse_constant=no_constant,
                           object_pairs_hook=no_duplicates)
        json.dumps(value, ensure_ascii=False).encode("utf-8")     # every string is Unicode
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except UnicodeError as exc:
        raise ValueError(f"not valid Unicode ({exc})") from None
    return value


def skipped_message(path: str | Path, skipped: list[tuple[int, bytes]], rows: int) -> str:
    """One line naming the lines of ``path`` that were skipped, for a warning."""
    numbers = [n for n, _ in skipped]
    shown = ", ".join(map(str, numbers[:10])) + (" …" if len(numbers) > 10 else "")
    return (f"{path}: skipped {len(numbers)} line(s) that are not valid rows (line "
            f"{shown}); read {rows} row(s)")


def raw_lines(path: str | Path) -> list[bytes]:
    """The lines of ``path`` as bytes, split on ``\\n`` only (JSON lines end there; a stray
    carriage return is part of its line), without the line end (line ``n`` is item
    ``n - 1``)."""
    return split_lines(Path(path).read_bytes())


def split_lines(data: bytes) -> list[bytes]:
    """``data`` split into lines as ``raw_lines`` does."""
    lines = data.split(b"\n")
    return lines[:-1] if lines and lines[-1] == b"" else lines


def read_jsonl(path: str | Path) -> JsonLines:
    """Every JSON-object line of ``path`` (a missing file reads as empty). A line that is
    not UTF-8, not JSON (including a torn last line), nested too deeply to parse, or not an
    object is skipped and returned in ``skipped``."""
    if not Path(path).exists():
        return JsonLines()
    return read_jsonl_bytes(Path(path).read_bytes())


def read_jsonl_bytes(data: bytes) -> JsonLines:
    """``read_jsonl`` of a file's bytes."""
    out = JsonLines()
    for number, line in enumerate(split_lines(data), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            row = None                        # JSONDecodeError is a ValueError
        if isinstance(row, dict):
            out.rows.append(row)
            out.numbers.append(number)
        else:
            out.skipped.append((number, line))
    return out
