"""Exclusive locks held for a process's lifetime: one writer per directory.

    >>> from personarl.locks import exclusive_lock
    >>> lock = exclusive_lock(run_dir / "run.lock", "{path} is used by {holder}")
    >>> ...                                    # the directory is ours
    >>> lock.close()                           # or the process ends, however it ends

A lock is an ``flock`` on a lock file. The kernel frees it when the holding file is closed or
the process dies — ``kill -9`` included — so a lock is never left behind by a crash, and a
stale lock file needs no clean-up. The holder's pid, host and start time are written into
the file for the message a refused caller gets. ``flock`` locks an open file description:
a second ``open`` in the same process is refused too. On network file systems that do not
support ``flock`` the lock is not reliable.

Standard library only.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path
from typing import TextIO

from personarl.errors import PersonaRLError

__all__ = ["InUseError", "exclusive_lock"]


class InUseError(PersonaRLError, RuntimeError):
    """Another process (or another open file of this one) holds the lock."""


def exclusive_lock(path: str | Path, refusal: str, wait: float = 0.0) -> TextIO:
    """Take the exclusive lock on ``path`` (created) and return the open file that holds it.

    Args:
        path: the lock file.
        refusal: the message when the lock is held, with ``{path}`` (the lock file's
            folder) and ``{holder}`` (e.g. "pid 4242 on host since 2026-11-30T01:00:00+0000").
        wait: seconds to keep trying while another holder has it (0: refuse at once) — for
            locks held only for a short read-modify-write, such as a privacy ledger's.

    Raises:
        InUseError: the lock is (still) held (the message is ``refusal`` filled in).
    """
    path = Path(path)
    f = open(path, "a+")
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.01)
                continue
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise InUseError(refusal.format(path=path.parent, holder=holder)) from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()} since "
            f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
    f.flush()
    return f
