"""The typed errors of PersonaRL (the ground floor: every package may raise them).

Every user mistake raises one of these with a message that names the bad value and what
would be valid. ``ConfigError`` is also a ``ValueError`` so callers that only know the
standard library still catch it.
"""

from __future__ import annotations

import operator
from typing import Any, Sequence

__all__ = [
    "PersonaRLError", "ConfigError", "ResetNeededError", "InvalidActionError", "DataError",
    "check_range", "check_int", "check_flag", "check_api_key", "check_matrix", "check_widths",
]


class PersonaRLError(Exception):
    """Base class of every error PersonaRL raises on purpose."""


class ConfigError(PersonaRLError, ValueError):
    """A constructor argument or config value is outside its valid range."""


class ResetNeededError(PersonaRLError, RuntimeError):
    """``step`` was called before ``reset``."""


class InvalidActionError(PersonaRLError, ValueError):
    """An action is not in the action space."""


class DataError(PersonaRLError, ValueError):
    """Data (a logged dataset, a decision log) that must not be used as it is: the message
    names the column, the first bad row and what would be valid."""


def check_range(name: str, value: float, low: float, high: float, *,
                low_open: bool = False, high_open: bool = False) -> float:
    """Return ``value`` as a float if it lies in the interval, else raise ``ConfigError``.

    Args:
        name: the parameter's name, used in the message.
        value: the value to check.
        low: lower bound.
        high: upper bound.
        low_open: exclude ``low`` itself.
        high_open: exclude ``high`` itself.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{name}={value!r} is not a number")
    try:
        v = float(value)
    except OverflowError:                     # an int beyond float's range (~1.8e308)
        raise ConfigError(f"{name}={value!r} is outside the valid range: too large for a "
                          "float") from None
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r} is not a number") from None
    too_low = v <= low if low_open else v < low
    too_high = v >= high if high_open else v > high
    if too_low or too_high or v != v:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ConfigError(f"{name}={value!r} is outside the valid range {interval}")
    return v


def check_flag(name: str, value: bool) -> bool:
    """Return ``value`` if it is ``True`` or ``False``, else raise ``ConfigError`` (a string
    such as ``"maybe"`` is not read as true)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name}={value!r} must be true or false")
    return value


def check_int(name: str, value: int, low: int, high: int | None = None) -> int:
    """Return ``value`` as an ``int`` if it is an integer (a Python or NumPy integer, or a
    0-d integer array; not a bool) in ``[low, high]``, else raise ``ConfigError`` naming
    the value and the valid range."""
    bound = f"[{low}, {high}]" if high is not None else f">= {low}"
    try:
        v = None if isinstance(value, bool) else operator.index(value)
    except TypeError:                 # a float, a string, an array of more than one value
        v = None
    if v is None:
        valid = f"in {bound}" if high is not None else bound
        raise ConfigError(f"{name}={value!r} must be an integer {valid}")
    if v < low or (high is not None and v > high):
        raise ConfigError(f"{name}={value!r} is outside the valid range {bound}")
    return v


def check_widths(name: str, widths: Any, high: int = 4096) -> tuple[int, ...]:
    """A network's hidden-layer widths: one or more integers in ``[1, high]``, as a tuple.

    Raises:
        ConfigError: naming ``name``, the widths given and what is valid.
    """
    ws = list(widths) if isinstance(widths, (list, tuple)) else None
    if not ws or any(isinstance(w, bool) or not hasattr(w, "__index__") or not 1 <= w <= high
                     for w in ws):
        raise ConfigError(f"{name}={ws if ws is not None else widths!r}: give one or more "
                          f"layer widths, integers in [1, {high}]")
    return tuple(int(w) for w in ws)


def check_api_key(key: str | None, name: str = "PERSONARL_API_KEY") -> None:
    """Refuse an API key (the server's, from ``name``, or a client's) that an HTTP header
    cannot carry as it is — printable ASCII without spaces — without echoing it.

    Raises:
        ConfigError: naming the first bad character's position, or an empty key.
    """
    if key is None:
        return
    for i, ch in enumerate(key):
        if not (ch.isascii() and ch.isprintable() and ch != " "):
            raise ConfigError(f"{name} has a character at position {i} that is not "
                              "printable ASCII (HTTP header values are ASCII; use e.g. "
                              "$(openssl rand -hex 32))")
    if not key:
        raise ConfigError(f"{name} is empty; leave it unset to go without a key")


def check_matrix(name: str, value: Any, columns: int | Sequence[str] | None = None, *,
                 rows: str = "rows", row: str = "row", column: str = "feature",
                 empty: str | None = None) -> Any:
    """``value`` as a finite ``(n, d)`` float64 NumPy array with ``n >= 1``.

    Args:
        name: what the table is, for the message ("real", "the feature table").
        columns: the expected column count, or the column names (named in messages).
        rows, row, column: what the rows, one row and a column are called ("users",
            "user row", "feature").
        empty: the message for a table without rows (default: names the shape).

    Raises:
        DataError: values that are not numbers; not two-dimensional; no rows; another
            column count than ``columns``; or a value that is not finite, naming its row
            and column.
    """
    import numpy as np

    try:
        x = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name} holds values that are not numbers") from None
    names = None if columns is None or isinstance(columns, int) else list(columns)
    want = len(names) if names is not None else columns
    listed = f" with columns {names}" if names is not None else ""
    if x.ndim != 2 or (x.shape[0] == 0 and empty is None):
        raise DataError(f"{name} must be a ({rows}, {column}s) table with at least one row"
                        f"{listed}; got shape {x.shape}")
    if want is not None and x.shape[1] != want:
        raise DataError(f"{name} has {x.shape[1]} {column}s: shape {x.shape}; expected "
                        f"({rows}, {want}){listed}")
    if x.shape[0] == 0:
        raise DataError(empty)
    bad = np.argwhere(~np.isfinite(x))
    if bad.size:
        i, j = bad[0]
        where = (f"{column} {names[j]!r} of {row} {i}" if names is not None
                 else f"{row} {i} {column} {j}")
        raise DataError(f"{name}: {where} is {float(x[i, j])!r}; every value must be a "
                        "finite number")
    return x
