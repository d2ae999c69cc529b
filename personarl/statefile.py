"""Saved state without pickle: nested mappings of arrays and scalars in one ``.npz`` file.

What a resumable run keeps beside its checkpoints (an env's lanes, a sampler's episodes in
flight, generator states) is a tree of mappings, lists, NumPy arrays and scalars. Pickle
would store any such tree, and would also run any code a crafted file names on load; this
format stores only data:

* every array (and every NumPy scalar, and every non-finite ``float``) is an entry of the
  ``.npz`` archive, read back with ``allow_pickle=False`` (object arrays are refused when
  written);
* the tree around them is strict JSON in the entry ``tree.json``, an array leaf being
  ``{"__ndarray__": "<entry>"}``.

A round trip returns equal values of the same types, except that tuples come back as lists
and a non-finite ``float`` as a ``np.float64`` (a ``float`` subclass). Mapping keys must be
strings; ``__ndarray__`` is reserved.

    write_state(path, {"rng": rng.bit_generator.state, "obs": obs, "t": 3})
    state = read_state(path)
"""

from __future__ import annotations

import io
import math
import os
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from personarl import jsonio
from personarl.errors import DataError

__all__ = ["write_state", "read_state", "read_format"]

_ARRAY = "__ndarray__"
_TREE = "tree.json"


def write_state(path: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``path`` (an ``.npz`` file, replaced atomically); returns the path.

    Raises:
        TypeError: a leaf that is not ``None``, ``bool``, ``int``, ``float``, ``str``, a
            NumPy scalar or a non-object array, or a mapping key that is not a string (the
            message names the leaf's position in the tree).
    """
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}

    def encode(value: Any, where: str) -> Any:
        if isinstance(value, Mapping):
            bad = [k for k in value if not isinstance(k, str) or k == _ARRAY]
            if bad:
                raise TypeError(f"{where}: key {bad[0]!r} is not allowed in a state file "
                                f"(keys are strings other than {_ARRAY!r})")
            return {k: encode(v, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, float) and not math.isfinite(value):
            value = np.float64(value)          # JSON has no NaN or infinity
        if isinstance(value, (np.ndarray, np.generic)):
            array = np.asarray(value)
            if array.dtype.hasobject:
                raise TypeError(f"{where}: an object array cannot be stored without pickle")
            name = f"a{len(arrays)}"
            arrays[name] = array
            return {_ARRAY: name, "scalar": isinstance(value, (np.generic, float))}
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(f"{where}: {type(value).__name__} cannot be stored in a state file "
                        "(valid: mappings, lists, arrays, NumPy scalars, None, bool, int, "
                        "float, str)")

    tree = encode(state, "state")
    arrays[_TREE] = np.frombuffer(jsonio.dumps(tree).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(buffer.getvalue())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The tree ``write_state`` wrote to ``path``.

    Raises:
        DataError: the file is missing, not an ``.npz`` archive, has no readable
            ``tree.json``, or names an entry it does not hold (the message names the file).
    """
    path = Path(path)
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("an .npy array, not an .npz archive")
        with archive:
            entries = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        # (np.load's message for a pickled file invites loading it unsafely: not repeated)
        why = "not an .npz archive" if "pickle" in str(exc) else str(exc)
        raise DataError(f"{path} is not a readable state file (damaged, or not one): "
                        f"{why}") from None
    odd = sorted(name for name, v in entries.items() if not isinstance(v, np.ndarray))
    if odd:                                     # members that are not .npy arrays
        raise DataError(f"{path} is not a state file: {odd[0]!r} is not an array")
    if _TREE not in entries or entries[_TREE].dtype != np.uint8:
        raise DataError(f"{path} is not a state file (no {_TREE} entry of bytes)")
    try:
        tree = jsonio.loads_strict(entries.pop(_TREE).tobytes())
    except ValueError as exc:
        raise DataError(f"{path}: {_TREE} is not strict JSON: {exc}") from None

    def decode(value: Any) -> Any:
        if isinstance(value, dict):
            if _ARRAY in value:
                name, scalar = value[_ARRAY], value.get("scalar", False)
                if not isinstance(name, str) or name not in entries or not isinstance(
                        scalar, bool):
                    raise DataError(f"{path}: the tree names an array {name!r} the file "
                                    "does not hold")
                array = entries[name]
                if scalar and array.ndim:
                    raise DataError(f"{path}: entry {name!r} is no scalar (shape "
                                    f"{array.shape})")
                return array[()] if scalar else array
            return {k: decode(v) for k, v in value.items()}
        if isinstance(value, list):
            return [decode(v) for v in value]
        return value

    out = decode(tree)
    if not isinstance(out, dict):
        raise DataError(f"{path}: the saved state is not a mapping")
    return out


def read_format(path: str | os.PathLike[str], fmt: str, kind: str) -> dict[str, Any]:
    """``read_state`` of a file whose tree says ``"format": fmt`` (a saved object: a reward
    model, a pair set).

    Raises:
        DataError: ``"<path> is not a <kind> file: …"`` — unreadable, damaged, or another
            format.
    """
    try:
        state = read_state(path)
    except DataError as exc:
        raise DataError(f"{path} is not a {kind} file: {exc}") from None
    if state.get("format") != fmt:
        raise DataError(f"{path} is not a {kind} file (format {state.get('format')!r}, "
                        f"expected {fmt!r})")
    return state
