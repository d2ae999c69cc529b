"""Which code steps a core: the NumPy reference or compiled Numba kernels.

Every core is written twice over the same state arrays: in NumPy (the reference, readable
and always available) and as Numba kernels that loop over the lanes in compiled code (the
``fast`` extra: ``pip install 'personarl[fast]'``). Both draw every random number from the
env's NumPy generators, in the same order, outside the kernels — so the two backends give
the same trajectories for the same seed (``tests/test_env_backends.py`` holds them to it),
and a kernel never carries random state of its own (Numba's generator is separate from
NumPy's and was measured slower at the batch sizes that matter).

``backend="auto"`` (every env's default) is ``"numba"`` when Numba imports, else
``"numpy"``. Numba is imported only when an env is built, and kernels are compiled on
first use and cached beside their module (``cache=True``), so only the first process on
a machine pays the compilation.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable

from personarl.errors import ConfigError

__all__ = ["BACKENDS", "resolve_backend", "numba_available", "kernel"]

BACKENDS = ("auto", "numpy", "numba")

@functools.cache
def _load_numba() -> Any:
    """Numba, imported on first need (``import envs`` stays light), or ``None``."""
    try:                                  # the optional ``fast`` extra
        import numba
    except ImportError:                   # pragma: no cover - depends on the install
        return None
    return numba


def numba_available() -> bool:
    """Whether the ``fast`` extra (Numba) is installed and imports."""
    return _load_numba() is not None


def resolve_backend(backend: str) -> str:
    """``"numpy"`` or ``"numba"`` for a requested ``backend``.

    Raises:
        ConfigError: ``backend`` is not one of ``BACKENDS``, or ``"numba"`` was asked for
            without Numba installed (the message says how to install it).
    """
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ConfigError(f"backend={backend!r}; valid: {list(BACKENDS)}")
    if backend == "auto":
        return "numba" if numba_available() else "numpy"
    if backend == "numba" and not numba_available():
        raise ConfigError("backend='numba' needs Numba: pip install 'personarl[fast]' "
                          "(or use backend='numpy', the reference)")
    return backend


def kernel(function: Callable[..., Any]) -> Callable[..., Any]:
    """Mark ``function`` as a kernel of its module, compiled with ``numba.njit`` (cached,
    no fast-math: results must match the NumPy reference) when one of the module's kernels
    is first called: then every kernel of the module is compiled and put in the module's
    namespace in place of its marker, so kernels call each other compiled and callers
    reach the compiled function directly from then on. A private kernel (``_name``) is a
    helper, inlined where it is called (``inline="always"``): a call between compiled
    functions pays a reference-count update for every array it passes, which in a per-lane
    loop cost AgentRouting's step a fifth of its time."""
    @functools.wraps(function)
    def first_call(*args: Any) -> Any:
        return _compile_module(function.__module__)[function.__name__](*args)

    first_call.kernel_source = function   # type: ignore[attr-defined]
    return first_call


def _compile_module(name: str) -> dict[str, Any]:
    numba = _load_numba()
    if numba is None:                     # pragma: no cover - resolve_backend refuses first
        raise ConfigError("compiled kernels need Numba: pip install 'personarl[fast]'")
    namespace = vars(sys.modules[name])
    for key, value in list(namespace.items()):
        source = getattr(value, "kernel_source", None)
        if source is not None:
            namespace[key] = numba.njit(
                cache=True, nogil=True, error_model="numpy",
                inline="always" if key.startswith("_") else "never")(source)
    return namespace
