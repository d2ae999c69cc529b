"""One ``.npz`` with a JSON ``meta``: how pair sets and reward models are saved.

Written whole or not at all (``personarl.files.write_atomic``); read with
``allow_pickle=False``; a damaged, truncated or foreign file is a ``DataError`` naming the
file and what it should have been, never a library's exception.
"""

from __future__ import annotations

import io
import json
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from personarl.errors import DataError
from personarl.files import write_atomic

__all__ = ["write_npz", "read_npz"]


def write_npz(path: str | Path, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
              ) -> Path:
    """``arrays`` and ``meta`` (JSON) into one ``.npz`` at ``path``, atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array(json.dumps(dict(meta))), **arrays)
    write_atomic(path, buffer.getvalue())
    return Path(path)


@contextmanager
def read_npz(path: str | Path, fmt: str, kind: str) -> Iterator[tuple[dict, Any]]:
    """``(meta, arrays)`` of a file ``write_npz`` wrote with ``meta["format"] == fmt``; any
    failure inside the ``with`` block to read what the file should hold is a ``DataError``
    ("<path> is not a <kind> file: ...")."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if not isinstance(meta, dict) or meta.get("format") != fmt:
                found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
                raise DataError(f"{path} is not a {kind} file (format {found!r}, expected "
                                f"{fmt!r})")
            yield meta, z
    except DataError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile, ValueError, KeyError, TypeError,
            AttributeError, IndexError) as e:
        what = f"missing {e}" if isinstance(e, KeyError) else (
            "pickled data or not an .npz" if "allow_pickle" in str(e) else str(e))
        raise DataError(f"{path} is not a {kind} file: {what}") from None
