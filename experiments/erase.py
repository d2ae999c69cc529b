"""Erase one user from every dataset of a run directory.

    python -m experiments.erase run_dir=<run dir> user_id=<raw id>       # hashed under PERSONARL_PII_KEY
    python -m experiments.erase run_dir=<run dir> user_hash=hmac-sha256:<64 hex digits>
    python -m experiments.erase run_dir=<run dir> user_id=<raw id> dry_run=true

The user is named by the raw id — hashed here with ``$PERSONARL_PII_KEY``, the key the
datasets were written with (``personarl.identifiers``) — or by the pseudonym itself.
``synth.privacy.erasure`` finds the user's rows in every Parquet and JSON-lines file under
``run_dir`` (logged data, decision logs with their feedback and shadow rows, features,
synthetic outputs), refuses if it finds none, removes them, and scans again to prove none
is left; generator fits on the rewritten datasets are marked stale in their privacy ledgers
(ε is not refunded).

Writers are locked out first: every decision log under ``run_dir`` (its ``writer.lock``)
and a running job (``run.lock``). While a server or a job holds one, the command refuses,
naming the holder, and changes nothing. A line recording the erasure — the files and the
rows each lost, never the user — is appended to ``run_dir/erasures.jsonl``.

Nothing else of this command reaches the disk: Hydra keeps no run directory, config or log
for it (they would hold the user's id). Mistakes exit with status 2.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import hydra
from omegaconf import DictConfig

from experiments.cli import check_command_line, run_app
from experiments.schema import register_configs
from personarl import jsonio
from personarl.errors import ConfigError, check_flag
from personarl.identifiers import Pseudonymiser
from personarl.locks import exclusive_lock

__all__ = ["erase_user", "main", "AUDIT_FILE"]

register_configs()

#: the record of every erasure in a run directory (no user named)
AUDIT_FILE = "erasures.jsonl"
#: the locks of the writers an erasure must keep out: a decision log's, a running job's
WRITER_LOCKS = ("writer.lock", "run.lock")


@contextlib.contextmanager
def writers_locked(run_dir: Path) -> Iterator[list[Path]]:
    """Hold every writer's lock under ``run_dir`` (``WRITER_LOCKS``) for the block.

    Raises:
        InUseError: a server or job holds one (naming it); the locks taken so far are
            released.
    """
    held = []
    try:
        for name in WRITER_LOCKS:
            for path in sorted(run_dir.rglob(name)):
                held.append(exclusive_lock(
                    path, "cannot erase while {path} is being written by {holder}; stop the "
                    "server (or wait for the job) first — nothing was changed"))
        yield [Path(f.name) for f in held]
    finally:
        for f in held:
            f.close()


def _pseudonym(cfg: DictConfig) -> str:
    if (cfg.user_id is None) == (cfg.user_hash is None):
        raise ConfigError("give the user as exactly one of user_id=<raw id> (hashed with "
                          "PERSONARL_PII_KEY) or user_hash=hmac-sha256:<64 hex digits>")
    if cfg.user_hash is not None:
        return str(cfg.user_hash)
    return Pseudonymiser.from_env()(str(cfg.user_id))


def erase_user(cfg: DictConfig) -> dict:
    """Scan (``dry_run``) or erase per ``cfg``; returns what was found or done."""
    from synth.privacy.erasure import erase, scan

    run_dir = Path(cfg.run_dir).expanduser()
    if not run_dir.is_dir():
        raise ConfigError(f"run_dir={str(cfg.run_dir)!r} is not a directory")
    dry_run = check_flag("dry_run", cfg.dry_run)
    pseudonym = _pseudonym(cfg)
    with writers_locked(run_dir):
        if dry_run:
            found = scan(run_dir, pseudonym)
            return dict(dry_run=True, rows=found.rows, traces=found.traces,
                        text_hits=found.text_hits, outside=found.outside,
                        not_scanned=found.not_scanned, unreadable=found.unreadable)
        done = erase(run_dir, pseudonym)
        summary = done.summary()
        with open(run_dir / AUDIT_FILE, "a", encoding="utf-8") as f:
            f.write(jsonio.dumps(summary) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return summary


@hydra.main(version_base="1.3", config_path="../configs", config_name="erase")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    out = run_app("erase", cfg, lambda: erase_user(cfg))
    if out.get("dry_run"):
        for name, rows in sorted(out["rows"].items()):
            print(f"{name}: {rows} row(s)")
        for name, where in sorted(out["traces"].items()):
            print(f"{name}: in the {', '.join(where)} (removed by rewriting the file)")
        for name in out["text_hits"]:
            print(f"{name}: in the text (no rows to remove; erase refuses)")
        for name in out["outside"]:
            print(f"{name}: a link out of run_dir (erase refuses)")
        if out["unreadable"]:
            print(f"unreadable: {out['unreadable']}")
        if out["not_scanned"]:
            print(f"not scanned (not row data): {', '.join(out['not_scanned'])}")
        print(f"found in {len(out['rows'])} file(s) ({sum(out['rows'].values())} rows); "
              f"{len(out['not_scanned'])} file(s) of other formats not scanned; dry run: "
              "nothing was changed")
        return
    for name, rows in sorted(out["rewritten"].items()):
        print(f"{name}: {rows} row(s) removed")
    print(f"erased {out['rows_removed']} row(s) from {len(out['rewritten'])} file(s); none "
          f"left (scanned again); {out['stale_fits']} generator fit(s) marked stale; "
          f"recorded in {Path(cfg.run_dir) / AUDIT_FILE}")


if __name__ == "__main__":
    check_command_line("erase", "erase")
    main()
