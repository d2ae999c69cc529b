"""The policy-bundle format: what ``agents.export`` writes and ``agents.serving`` reads.

A bundle is a directory with two files and nothing that unpickles:

* ``model.onnx`` — one self-contained ONNX graph (no external data). Input ``obs``:
  ``(batch, obs_dim)`` float32, the env's raw flat observation. Outputs: ``logits``
  ``(batch, n_actions)`` for a discrete policy (a categorical distribution), or ``mean`` and
  ``log_std`` ``(batch, action_dim)`` for a continuous one (a diagonal Gaussian).
* ``policy.json`` — the spec (``FORMAT_VERSION``): ``env`` (id, version, config), the
  ``observation`` (dim, bounds, named column blocks), the ``action`` space (discrete: ``n``
  and ``names``; continuous: ``dim``, ``low``, ``high``, ``names`` and ``postprocess:
  "clip"`` — actions are clipped to the bounds, as the env does), the ``distribution``
  (``categorical`` or ``diag_gaussian``), the ``source`` (learner, checkpoint, config hash),
  ``training`` metrics and ``model_sha256``, the SHA-256 of ``model.onnx``.

Standard library only: the serving loader imports this module.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["FORMAT_VERSION", "MODEL_FILE", "SPEC_FILE", "DISTRIBUTIONS", "BundleError",
           "sha256_file", "write_atomic", "read_spec", "check_model_bytes"]

#: bumped whenever a reader of the old format would misread the new one
FORMAT_VERSION = 1
MODEL_FILE = "model.onnx"
SPEC_FILE = "policy.json"
DISTRIBUTIONS = ("categorical", "diag_gaussian")


class BundleError(ValueError):
    """A bundle is missing, incomplete, tampered with or of an incompatible format."""


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, an fsync and a rename, so a
    reader sees the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_spec(bundle: Path, *, verify: bool = True) -> dict[str, Any]:
    """``policy.json`` of the bundle in directory ``bundle``, checked.

    Checks that both files exist, that the format version is the one this code reads and,
    with ``verify``, that ``model.onnx`` has the SHA-256 the spec records.

    Raises:
        BundleError: naming the file, the versions or the checksums that disagree.
    """
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise BundleError(f"no policy bundle at {bundle}: not a directory (a bundle is a "
                          f"directory with {MODEL_FILE} and {SPEC_FILE})")
    spec_path, model_path = bundle / SPEC_FILE, bundle / MODEL_FILE
    for p in (spec_path, model_path):
        if not p.is_file():
            raise BundleError(f"incomplete policy bundle {bundle}: {p.name} is missing")
    try:
        spec = json.loads(spec_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{spec_path} is not valid JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise BundleError(f"{spec_path} must hold a JSON object, got {type(spec).__name__}")
    version = spec.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"{spec_path} has format_version {version!r}; this PersonaRL reads "
                          f"format_version {FORMAT_VERSION} (re-export the policy with "
                          "python -m experiments.export)")
    for key in ("env", "observation", "action", "distribution", "model_sha256"):
        if key not in spec:
            raise BundleError(f"{spec_path} lacks the key {key!r}")
    if spec["distribution"] not in DISTRIBUTIONS:
        raise BundleError(f"{spec_path}: distribution {spec['distribution']!r}; valid: "
                          f"{list(DISTRIBUTIONS)}")
    if verify:
        check_model_bytes(spec, model_path.read_bytes(), model_path)
    return spec


def check_model_bytes(spec: dict[str, Any], data: bytes, path: Path) -> None:
    """Refuse model bytes whose SHA-256 differs from the one ``spec`` records."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != spec["model_sha256"]:
        raise BundleError(f"{path} does not match its checksum (policy.json records sha256 "
                          f"{spec['model_sha256']}, the file has {actual}): the bundle was "
                          "modified after export; refusing it")
