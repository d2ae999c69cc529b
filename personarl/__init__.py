"""The ground floor of PersonaRL: primitives every other package may use.

* ``personarl.seeds`` — random streams derived from a run's seed by purpose, so that two
  purposes (the users a log is collected on, the users its true value is simulated on, the
  bootstrap, …) can never draw the same numbers;
* ``personarl.jsonio`` — strict JSON (no bare ``NaN``/``Infinity``) for every file we write,
  and a JSON-lines reader that keeps every readable row and reports the rest;
* ``personarl.errors`` — the error family (``PersonaRLError`` and its subclasses) and the
  argument checks that raise it;
* ``personarl.identifiers`` — keyed hashing (HMAC-SHA256) of user and episode ids before
  anything that holds them is written;
* ``personarl.locks`` — exclusive locks held for a process's lifetime (one writer per run
  directory or decision log; the kernel frees them on ``kill -9``);
* ``personarl.files`` — files replaced whole (temporary sibling, fsync, rename);
* ``personarl.statefile`` — saved state (an env's users, a sampler's episodes in flight,
  generator states) as arrays and strict JSON in one ``.npz``, read back without pickle.
* ``personarl.backend`` — which code runs a simulation: the NumPy reference or kernels
  compiled with Numba (the optional ``fast`` extra, imported only when asked for).

Standard library and NumPy only (Numba when ``personarl.backend`` compiles a kernel);
imports nothing else of ours.
"""

__all__: list[str] = []
