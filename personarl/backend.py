"""Which code steps a core: the NumPy reference or compiled Numba kernels.

Every core is written twice over the same state arrays: in NumPy (the reference, readable
and always available) and as Numba kernels that loop over the lanes in compiled code (the
``fast`` extra: ``pip install 'personarl[fast]'``). Both draw every random number from the
env's NumPy generators, in the same order, and hand it to the step as arrays — so the two
backends give the same trajectories for the same seed (``tests/test_env_backends.py``
holds them to it), and a kernel never carries random state of its own (Numba's own
``np.random`` functions keep a generator apart from NumPy's).

One draw is made in compiled code: standard normals in bulk. ``standard_normal`` fills a
large array in a kernel that takes the generator itself — Numba's ``np.random.Generator``
support runs NumPy's ziggurat on the generator's own bit generator — so it gives the
numbers NumPy would give and leaves the generator where NumPy would leave it, 3.3× faster
than NumPy's own sampler here (every core's normals, per step and per user, and the
population's trait offsets).

``backend="auto"`` (every env's default) is ``"numba"`` when Numba imports, else
``"numpy"``. Numba is imported only when an env is built, and kernels are compiled on
first use and cached beside their module (``cache=True``), so only the first process on
a machine pays the compilation.
"""

from __future__ import annotations

import functools
import sys
import threading
from typing import Any, Callable

import numpy as np

from personarl.errors import ConfigError, check_int

__all__ = ["BACKENDS", "resolve_backend", "numba_available", "check_threads", "MAX_THREADS",
           "kernel", "work_record", "standard_normal", "plain_float64",
           "COMPILED_NORMALS_MIN"]

BACKENDS = ("auto", "numpy", "numba")
#: ``standard_normal`` leaves smaller draws to NumPy: passing a generator into compiled
#: code costs ≈ 5 µs a call, so the two break even near 1,000 numbers here (measured);
#: at 2,048 the compiled fill is already 1.6x faster, a margin for slower machines
COMPILED_NORMALS_MIN = 2048
#: the most threads compiled kernels may be given (``check_threads``)
MAX_THREADS = 64

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


def check_threads(num_threads: Any, backend: str) -> int:
    """``num_threads`` checked for code that runs compiled kernels on threads: an int in
    ``1..MAX_THREADS``, and 1 unless ``backend`` (resolved) is ``"numba"`` — the kernels
    release the GIL, the NumPy reference holds it.

    Raises:
        ConfigError: ``num_threads`` is not an integer in range, or is above 1 on the
            NumPy backend (the message says to use ``backend='numba'`` or 1 thread).
    """
    num_threads = check_int("num_threads", num_threads, 1, MAX_THREADS)
    if num_threads > 1 and backend != "numba":
        raise ConfigError(f"num_threads={num_threads} needs backend='numba' (its compiled "
                          f"kernels release the GIL); the {backend!r} backend runs on one "
                          "thread: use num_threads=1")
    return num_threads


def kernel(function: Callable[..., Any] | None = None, *, refcounts: bool = True
           ) -> Any:
    """Mark ``function`` as a kernel of its module, compiled with ``numba.njit`` (cached,
    no fast-math: results must match the NumPy reference) when one of the module's kernels
    is first called: then every kernel of the module is compiled and put in the module's
    namespace in place of its marker, so kernels call each other compiled and callers
    reach the compiled function directly from then on. A private kernel (``_name``) is a
    helper, inlined where it is called (``inline="always"``): a call between compiled
    functions pays a reference-count update for every array it passes, which in a per-lane
    loop cost AgentRouting's step a fifth of its time.

    ``@kernel(refcounts=False)`` compiles a lane loop without Numba's reference counting
    (its ``_nrt=False`` compile flag). With it, every row view (``obs[i]``) and every
    array handed to an inlined helper costs a pair of atomic updates on the array's
    count, once per lane: ≈ 15 % of AgentRouting's batched step (``perf``, 2026-12-01).
    Such a kernel cannot allocate or return an array: its work arrays come in as an
    argument (``work_record``), and the arrays it is given are the caller's to keep."""
    def mark(source: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(source)
        def first_call(*args: Any) -> Any:
            return _compile_module(source.__module__)[source.__name__](*args)

        first_call.kernel_source = source          # type: ignore[attr-defined]
        first_call.kernel_refcounts = refcounts    # type: ignore[attr-defined]
        return first_call

    return mark if function is None else mark(function)


def work_record(**lengths: int) -> np.ndarray:
    """A kernel's work arrays as one record: a 1-element structured array with a float64
    field of ``lengths[name]`` numbers per name (``w = work[0]; w.traits[j]`` in the
    kernel; a record's fields are views that cost no reference count).

    Raises:
        ValueError: a length is not a positive int.
    """
    for name, length in lengths.items():
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) \
                or length < 1:
            raise ValueError(f"work array {name!r} has length {length!r}; valid: an int "
                             ">= 1")
    return np.zeros(1, np.dtype([(name, np.float64, (int(length),))
                                 for name, length in lengths.items()], align=True))


_COMPILE_LOCK = threading.Lock()


def _compile_module(name: str) -> dict[str, Any]:
    numba = _load_numba()
    if numba is None:                     # pragma: no cover - resolve_backend refuses first
        raise ConfigError("compiled kernels need Numba: pip install 'personarl[fast]'")
    namespace = vars(sys.modules[name])
    with _COMPILE_LOCK:                   # kernels first called on two threads at once
        for key, value in list(namespace.items()):
            source = getattr(value, "kernel_source", None)
            if source is not None:
                flags = {} if value.kernel_refcounts else {"_nrt": False}
                namespace[key] = numba.njit(
                    cache=True, nogil=True, error_model="numpy",
                    inline="always" if key.startswith("_") else "never", **flags)(source)
    return namespace


def plain_float64(out: Any) -> bool:
    """Whether ``out`` is a plain ``np.ndarray`` (no subclass) of float64, writable,
    aligned and C-contiguous: an array a compiled fill, or NumPy's ``Generator`` fills with
    ``out=``, can write in place."""
    return (type(out) is np.ndarray and out.dtype == np.float64 and out.flags.writeable
            and out.flags.aligned and out.flags.c_contiguous)


def standard_normal(rng: np.random.Generator, size: int | tuple[int, ...] | None = None, *,
                    out: np.ndarray | None = None, backend: str = "numpy") -> np.ndarray:
    """``rng.standard_normal(size, out=out)`` as an array: the same numbers, and ``rng``
    left in the same state, on either backend.

    On the ``numba`` backend a plain writable, aligned, C-contiguous float64 array of at
    least ``COMPILED_NORMALS_MIN`` numbers (given as ``out`` or made for ``size``, not
    both) is filled in compiled code that draws from ``rng`` itself: Numba's port of
    NumPy's ziggurat (Marsaglia & Tsang 2000, "The Ziggurat Method for Generating Random
    Variables", with NumPy's 256-layer tables) on the same bit generator, measured 3.3×
    faster than ``Generator.standard_normal`` on 10⁴–10⁷ numbers here. It holds the bit
    generator's lock while it draws, as NumPy's call does, so threads sharing a generator
    each get a whole block of its sequence. Everything else — NumPy's backend, small
    arrays, any other ``out``, ``size`` and ``out`` together — is NumPy's own call, with
    NumPy's checks. ``tests/test_ground_floor.py`` holds the two to the same numbers and
    state.

    Args:
        rng: a ``numpy.random.Generator`` (any bit generator).
        size: the shape to draw (``None``: one number, as a 0-d array).
        out: an array to fill instead (its shape is the draw's).
        backend: one of ``BACKENDS`` (a core passes its resolved backend).

    Raises:
        ConfigError: ``backend`` is not one of ``BACKENDS``, or ``"numba"`` without Numba.
        ValueError, TypeError: NumPy's, for an ``out`` it cannot fill (strided, read-only,
            another dtype) or a ``size`` that disagrees with ``out``'s shape.
    """
    backend = resolve_backend(backend)
    if out is None:
        out, size = np.empty(() if size is None else size), None
    compiled = (backend == "numba" and size is None and plain_float64(out)
                and out.size >= COMPILED_NORMALS_MIN)
    if not compiled:
        rng.standard_normal(size, out=out)
        return out
    with rng.bit_generator.lock:             # as NumPy's own call holds it
        fill_standard_normal(rng, out.reshape(-1))
    return out


@kernel
def fill_standard_normal(rng: np.random.Generator, out: np.ndarray) -> None:
    """``out`` ``(n,)`` filled with ``rng``'s next standard normals: ``standard_normal``'s
    compiled path, which holds the bit generator's lock around it (this kernel releases
    the GIL and does not take the lock: call ``standard_normal``)."""
    for i in range(out.shape[0]):
        out[i] = rng.standard_normal()
