"""Preference pairs and replies as fine-tuning files: TRL's DPO formats and chat JSONL.

Three formats, one per file (JSON Lines, one record per line):

* ``dpo`` — TRL's *standard* preference format: ``{"prompt": str, "chosen": str,
  "rejected": str}``;
* ``dpo_conversational`` — TRL's *conversational* preference format: ``prompt`` a list of
  messages ending with the user's, ``chosen`` and ``rejected`` one assistant message each
  (``{"role": ..., "content": ...}``);
* ``chat`` — the chat fine-tuning form (OpenAI's JSONL, the write-up's first format):
  ``{"messages": [system?, user, assistant]}`` with the preferred reply.

``check_records`` is strict: one format per file, exactly its keys, no empty text, roles in
order, ``chosen != rejected``. ``write_jsonl`` checks before it writes and replaces the
file only whole.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from personarl.errors import ConfigError, DataError
from personarl.files import write_atomic

__all__ = ["FORMATS", "preference_records", "chat_records", "check_records", "record_format",
           "write_jsonl", "read_jsonl"]

FORMATS = ("dpo", "dpo_conversational", "chat")
ROLES = ("system", "user", "assistant")


def preference_records(prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str],
                       fmt: str = "dpo", system: str | None = None) -> list[dict[str, Any]]:
    """Records in ``fmt`` (``dpo`` or ``dpo_conversational``; ``system`` adds a system
    message to a conversational prompt)."""
    if fmt == "dpo":
        return [{"prompt": p, "chosen": c, "rejected": r}
                for p, c, r in zip(prompts, chosen, rejected, strict=True)]
    if fmt == "dpo_conversational":
        head = [] if system is None else [{"role": "system", "content": system}]
        return [{"prompt": [*head, {"role": "user", "content": p}],
                 "chosen": [{"role": "assistant", "content": c}],
                 "rejected": [{"role": "assistant", "content": r}]}
                for p, c, r in zip(prompts, chosen, rejected, strict=True)]
    raise ConfigError(f"format={fmt!r} is not a preference format; valid: dpo, "
                      "dpo_conversational")


def chat_records(prompts: Sequence[str], replies: Sequence[str], system: str | None = None
                 ) -> list[dict[str, Any]]:
    """``chat`` records: (system,) user, assistant."""
    head = [] if system is None else [{"role": "system", "content": system}]
    return [{"messages": [*head, {"role": "user", "content": p},
                          {"role": "assistant", "content": r}]}
            for p, r in zip(prompts, replies, strict=True)]


def record_format(record: Any) -> str | None:
    """The format a record's keys and types say it is, or None."""
    if not isinstance(record, Mapping):
        return None
    keys = set(record)
    if keys == {"messages"}:
        return "chat"
    if keys == {"prompt", "chosen", "rejected"}:
        if all(isinstance(record[k], str) for k in keys):
            return "dpo"
        if all(isinstance(record[k], list) for k in keys):
            return "dpo_conversational"
    return None


def _text(value: Any, where: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where} must be non-empty text; got {value!r:.60}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"{where} is not valid Unicode text (a lone surrogate?): "
                        f"{value!r:.60}") from None


def _messages(value: Any, where: str, last: str, first_roles: Iterable[str] = ROLES) -> None:
    """A list of messages: roles known, a system message only first, user and assistant
    turns alternating, ending with ``last`` and starting with one of ``first_roles``."""
    if not isinstance(value, list) or not value:
        raise DataError(f"{where} must be a non-empty list of messages; got {value!r:.60}")
    previous = None
    for j, m in enumerate(value):
        if not isinstance(m, Mapping) or set(m) != {"role", "content"}:
            raise DataError(f"{where}[{j}] must be {{'role', 'content'}}; got {m!r:.60}")
        if m["role"] not in ROLES:
            raise DataError(f"{where}[{j}] has role {m['role']!r}; valid: {', '.join(ROLES)}")
        if m["role"] == "system" and j:
            raise DataError(f"{where}[{j}]: a system message may only come first")
        if m["role"] == previous:
            raise DataError(f"{where}[{j}]: two {previous} messages in a row; user and "
                            "assistant turns alternate")
        previous = m["role"]
        _text(m["content"], f"{where}[{j}].content")
    if value[-1]["role"] != last:
        raise DataError(f"{where} must end with a {last} message; it ends with "
                        f"{value[-1]['role']!r}")
    if value[0]["role"] not in first_roles:
        raise DataError(f"{where} must start with a {' or '.join(first_roles)} message")


def check_records(records: Sequence[Any], fmt: str | None = None) -> str:
    """Refuse anything but well-formed records of one format; returns the format.

    Raises:
        ConfigError: ``fmt`` is not one of ``FORMATS``.
        DataError: no records; a record of no known format or of another format than the
            first (mixed formats); empty text; roles out of place; ``chosen == rejected``.
    """
    if fmt is not None and fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r}; valid: {', '.join(FORMATS)}")
    if not isinstance(records, Sequence) or isinstance(records, (str, bytes)):
        raise DataError(f"records must be a list of records; got {type(records).__name__}")
    if not records:
        raise DataError("no records to export")
    want = fmt or record_format(records[0])
    for i, rec in enumerate(records):
        got = record_format(rec)
        if got is None:
            raise DataError(f"record {i} is in no known format (keys "
                            f"{sorted(rec) if isinstance(rec, Mapping) else type(rec).__name__}); "
                            f"valid: {', '.join(FORMATS)}")
        if got != want:
            raise DataError(f"record {i} is {got} but the file is {want}: one format per "
                            "file (mixed formats)")
        if got == "dpo":
            for k in ("prompt", "chosen", "rejected"):
                _text(rec[k], f"record {i}: {k}")
            same = rec["chosen"].strip() == rec["rejected"].strip()
        elif got == "dpo_conversational":
            _messages(rec["prompt"], f"record {i}: prompt", "user", ("system", "user"))
            for k in ("chosen", "rejected"):
                _messages(rec[k], f"record {i}: {k}", "assistant", ("assistant",))
                if len(rec[k]) != 1:
                    raise DataError(f"record {i}: {k} must be one assistant message; got "
                                    f"{len(rec[k])}")
            same = rec["chosen"][0]["content"].strip() == rec["rejected"][0]["content"].strip()
        else:
            _messages(rec["messages"], f"record {i}: messages", "assistant",
                      ("system", "user"))
            if not any(m["role"] == "user" for m in rec["messages"]):
                raise DataError(f"record {i}: messages need a user message")
            same = False
        if same:
            raise DataError(f"record {i}: chosen == rejected; a preference needs two "
                            "different replies")
    return want


def write_jsonl(path: str | Path, records: Sequence[Mapping[str, Any]], fmt: str) -> Path:
    """Check ``records`` as ``fmt`` and write them, one JSON object per line; the file is
    replaced only when the whole of it is written."""
    check_records(records, fmt)
    path = Path(path)
    if not path.parent.is_dir() or path.is_dir():
        raise DataError(f"cannot write {path}: "
                        + ("it is a directory" if path.is_dir() else "no such directory"))
    write_atomic(path, "".join(json.dumps(rec, ensure_ascii=False) + "\n"
                               for rec in records))
    return path


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSON Lines file.

    Raises:
        DataError: a missing file, a directory, text that is not UTF-8, a line that is not
            JSON (named by its number).
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"no file at {path}") from None
    except (IsADirectoryError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not a UTF-8 JSON Lines file: {e}") from None
    out = []
    for i, line in enumerate(lines, 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{i} is not JSON: {e.msg}") from None
    return out
