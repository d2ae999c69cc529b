"""Which code steps a core: the NumPy reference or compiled Numba kernels.

Every core is written twice over the same state arrays: in NumPy (the reference, readable
and always available) and as Numba kernels that loop over the lanes in compiled code (the
``fast`` extra: ``pip install 'personarl[fast]'``). Both draw every random number from the
env's NumPy generators, in the same order, outside the kernels — so the two backends give
the same trajectories for the same seed (``tests/test_env_backends.py`` holds them to it),
and a kernel never carries random state of its own (Numba's generator is separate from
NumPy's and was measured slower at the batch sizes that matter).

``backend="auto"`` (every env's default) is ``"numba"`` when Numba imports, else
``"numpy"``. Kernels are compiled on first use and cached beside their module
(``cache=True``), so only the first process on a machine pays the compilation.
"""

from __future__ import annotations

from typing import Any, Callable

from personarl.errors import ConfigError

__all__ = ["BACKENDS", "resolve_backend", "numba_available", "kernel"]

BACKENDS = ("auto", "numpy", "numba")

try:                                     # the optional ``fast`` extra
    import numba as _numba
except ImportError:                      # pragma: no cover - depends on the install
    _numba = None


def numba_available() -> bool:
    """Whether the ``fast`` extra (Numba) is installed."""
    return _numba is not None


def resolve_backend(backend: str) -> str:
    """``"numpy"`` or ``"numba"`` for a requested ``backend``.

    Raises:
        ConfigError: ``backend`` is not one of ``BACKENDS``, or ``"numba"`` was asked for
            without Numba installed (the message says how to install it).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend={backend!r}; valid: {list(BACKENDS)}")
    if backend == "auto":
        return "numba" if numba_available() else "numpy"
    if backend == "numba" and not numba_available():
        raise ConfigError("backend='numba' needs Numba: pip install 'personarl[fast]' "
                          "(or use backend='numpy', the reference)")
    return backend


def kernel(function: Callable[..., Any]) -> Callable[..., Any]:
    """Compile ``function`` with ``numba.njit`` (cached, no fast-math: results must match
    the NumPy reference); without Numba, return it unchanged (it is then never called —
    ``resolve_backend`` picks NumPy)."""
    if _numba is None:                   # pragma: no cover - depends on the install
        return function
    return _numba.njit(cache=True, nogil=True, error_model="numpy")(function)
