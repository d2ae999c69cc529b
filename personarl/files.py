"""Files replaced whole: a reader sees the old file or the new one, never half of one.

Standard library only.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling, an fsync and a rename
    (``os.replace``, atomic on POSIX), so a reader — or a process killed mid-write — sees the
    old file or the new one. The temporary file is removed if the write fails."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb" if isinstance(data, bytes) else "w", encoding=None if isinstance(
                data, bytes) else "utf-8") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
