"""The policy-bundle format: what ``agents.learners.export`` writes and ``agents.serving.loader`` reads.

A bundle is a directory with three files and nothing that unpickles:

* ``model.onnx`` — one self-contained ONNX graph (no external data). Input ``obs``:
  ``(batch, obs_dim)`` float32, the env's raw flat observation. Outputs: ``logits``
  ``(batch, n_actions)`` for a discrete policy (a categorical distribution), or ``mean`` and
  ``log_std`` ``(batch, action_dim)`` for a continuous one (a diagonal Gaussian).
* ``policy.json`` — the spec (``FORMAT_VERSION``): ``env`` (id, version, config), the
  ``observation`` (dim, finite bounds, named column blocks), the ``action`` space (discrete:
  ``n`` and ``names``; continuous: ``dim``, finite ``low``, ``high``, ``names`` and
  ``postprocess: "clip"`` — actions are clipped to the bounds, as the env does), the
  ``distribution`` (``categorical`` or ``diag_gaussian``), the ``source`` (learner,
  checkpoint, config hash), ``training`` metrics and ``model_sha256``.
* ``manifest.json`` — ``{"format_version", "files": {name: {"sha256", "bytes"}}}`` for
  every other file of the bundle.

**What a bundle's checks protect against.** A bundle is read as a whole: the directory must
hold exactly the files its manifest lists (plus the manifest), each a regular file (no
symbolic links) of at most ``max_file_bytes`` (checked with ``stat`` before a byte is read),
whose size and SHA-256 match the manifest; the bytes that were hashed are the bytes that
are parsed and loaded. That gives *integrity*: corruption, truncation, a partial copy or an
edit of one file is refused. It does not give *authenticity*: whoever can rewrite a file
can rewrite the manifest too, and a bare bundle swapped together with a consistent manifest
is undetectable. Authenticity is the registry's job (``agents.serving.registry``): it records every
file's digest at ``register`` and serves a version only while every file still matches.

Standard library only: the serving loader and the registry import this module.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from personarl import jsonio
from personarl.files import write_atomic  # re-exported: the bundle's writers use it
from personarl.errors import ConfigError, PersonaRLError

__all__ = ["FORMAT_VERSION", "MODEL_FILE", "SPEC_FILE", "MANIFEST_FILE", "DISTRIBUTIONS",
           "DEFAULT_MAX_FILE_BYTES", "FLOAT32_MAX", "BundleError", "BundleFiles",
           "sha256_file", "write_atomic", "write_manifest", "read_bundle",
           "check_spec"]

#: bumped whenever a reader of the old format would misread the new one (2: the manifest)
FORMAT_VERSION = 2
MODEL_FILE = "model.onnx"
SPEC_FILE = "policy.json"
MANIFEST_FILE = "manifest.json"
DISTRIBUTIONS = ("categorical", "diag_gaussian")
#: the largest bundle file read (serve config ``max_bundle_file_bytes``)
DEFAULT_MAX_FILE_BYTES = 256 << 20


class BundleError(PersonaRLError, ValueError):
    """A bundle is missing, incomplete, tampered with, too large or of another format."""


@dataclass(frozen=True)
class BundleFiles:
    """A verified bundle: its parsed spec, the model's bytes (the bytes that were hashed)
    and the SHA-256 of every file, the manifest included (``{file name: hex digest}``)."""

    path: Path
    spec: dict[str, Any]
    model: bytes
    digests: dict[str, str]


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(bundle: Path) -> dict[str, Any]:
    """Write ``manifest.json`` over ``model.onnx`` and ``policy.json`` of directory
    ``bundle`` (the exporter's last step); returns it."""
    bundle = Path(bundle)
    files = {name: dict(sha256=sha256_file(bundle / name),
                        bytes=(bundle / name).stat().st_size)
             for name in (MODEL_FILE, SPEC_FILE)}
    manifest = dict(format_version=FORMAT_VERSION, files=files)
    write_atomic(bundle / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
    return manifest


def _read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of regular file ``path``, refused before reading if above ``limit``."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise BundleError(f"incomplete policy bundle {path.parent}: {path.name} is "
                          "missing") from None
    if not stat.S_ISREG(info.st_mode):
        raise BundleError(f"{path} is not a regular file (a bundle holds no links, folders or "
                          "devices)")
    if info.st_size > limit:
        raise BundleError(f"{path} has {info.st_size:,} bytes, above the limit of {limit:,} "
                          "(serve config max_bundle_file_bytes)")
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:                             # grew after the stat
        raise BundleError(f"{path} has more than {limit:,} bytes (serve config "
                          "max_bundle_file_bytes)")
    return data


def _json_object(data: bytes, path: Path) -> dict[str, Any]:
    try:
        value = jsonio.loads_strict(data)
    except ValueError as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BundleError(f"{path} must hold a JSON object, got {type(value).__name__}")
    return value


def _check_format(obj: Mapping[str, Any], path: Path) -> None:
    version = obj.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise BundleError(f"{path} has format_version {version!r}; this PersonaRL reads "
                          f"format_version {FORMAT_VERSION} (re-export the policy with "
                          "python -m experiments.export)")


def read_bundle(bundle: str | Path, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
                expected: Mapping[str, str] | None = None) -> BundleFiles:
    """Read and verify the bundle in directory ``bundle`` as a whole.

    Args:
        bundle: the bundle directory.
        max_file_bytes: the largest file read; a larger one is refused before reading.
        expected: ``{file name: hex SHA-256}`` every file must still have (the digests a
            registry recorded at registration); ``None`` checks against the manifest only.

    Raises:
        BundleError: naming the file and what is wrong — not a directory, a file missing,
            unlisted or not regular, a size above ``max_file_bytes``, a size or digest that
            differs from the manifest (or from ``expected``), a format version this code
            does not read, or a spec that fails ``check_spec``.
    """
    if isinstance(max_file_bytes, bool) or not isinstance(max_file_bytes, int) \
            or max_file_bytes < 1:
        raise ConfigError(f"max_file_bytes={max_file_bytes!r} must be an integer >= 1")
    if expected is not None and not isinstance(expected, Mapping):
        raise ConfigError(f"expected must map file names to SHA-256 digests, got "
                          f"{type(expected).__name__}")
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise BundleError(f"no policy bundle at {bundle}: not a directory (a bundle is a "
                          f"directory with {MODEL_FILE}, {SPEC_FILE} and {MANIFEST_FILE})")
    manifest_bytes = _read_bounded(bundle / MANIFEST_FILE, max_file_bytes)
    manifest = _json_object(manifest_bytes, bundle / MANIFEST_FILE)
    _check_format(manifest, bundle / MANIFEST_FILE)
    listed = manifest.get("files")
    if not isinstance(listed, dict) or set(listed) != {MODEL_FILE, SPEC_FILE}:
        raise BundleError(f"{bundle / MANIFEST_FILE} must list exactly {MODEL_FILE} and "
                          f"{SPEC_FILE} under 'files'; it lists "
                          f"{sorted(listed) if isinstance(listed, dict) else listed!r}")
    extra = sorted(p.name for p in bundle.iterdir()
                   if p.name not in listed and p.name != MANIFEST_FILE)
    if extra:
        raise BundleError(f"{bundle} holds files its manifest does not list: {extra} (a "
                          "bundle is exactly the files its manifest names; external model "
                          "data is not supported)")
    digests = {MANIFEST_FILE: hashlib.sha256(manifest_bytes).hexdigest()}
    contents = {}
    for name in (SPEC_FILE, MODEL_FILE):
        entry, path = listed[name], bundle / name
        data = _read_bounded(path, max_file_bytes)
        digests[name] = hashlib.sha256(data).hexdigest()
        if not isinstance(entry, dict) or entry.get("sha256") != digests[name] \
                or type(entry.get("bytes")) is not int or entry["bytes"] != len(data):
            raise BundleError(f"{path} does not match the manifest (it records "
                              f"{entry!r}; the file has {len(data)} bytes, sha256 "
                              f"{digests[name]}): the bundle was modified after export; "
                              "refusing it")
        contents[name] = data
    if expected is not None:
        for name, digest in digests.items():
            if expected.get(name) != digest:
                raise BundleError(f"{bundle / name} has sha256 {digest}, not the "
                                  f"{expected.get(name)} recorded when it was registered: "
                                  "the registered bundle was changed; refusing it")
    spec = _json_object(contents[SPEC_FILE], bundle / SPEC_FILE)
    _check_format(spec, bundle / SPEC_FILE)
    check_spec(spec, bundle / SPEC_FILE)
    if spec["model_sha256"] != digests[MODEL_FILE]:
        raise BundleError(f"{bundle / SPEC_FILE} records model_sha256 {spec['model_sha256']} "
                          f"but {MODEL_FILE} has {digests[MODEL_FILE]}; refusing the bundle")
    return BundleFiles(bundle, spec, contents[MODEL_FILE], digests)


#: the largest finite float32: observations and actions are float32, so a bound beyond it
#: would become infinite where it is used
FLOAT32_MAX = 3.4028234663852886e38


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        x = float(v)
    except OverflowError:                      # an integer beyond float64
        return None
    return x if math.isfinite(x) and abs(x) <= FLOAT32_MAX else None


def _numbers(value: Any, n: int, key: str, where: Path) -> list[float]:
    numbers = [_number(v) for v in value] if isinstance(value, list) else []
    if len(numbers) != n or None in numbers:
        raise BundleError(f"{where}: {key} must be a list of {n} finite float32 numbers "
                          f"(|x| <= {FLOAT32_MAX:.4g}), got {_short(value)}")
    return numbers


def _count(value: Any, key: str, where: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BundleError(f"{where}: {key} must be an integer >= 1, got {_short(value)}")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_spec(spec: Mapping[str, Any], where: Path = Path(SPEC_FILE)) -> None:
    """Refuse a spec the server could not serve safely: keys missing, an observation or
    action space whose bounds are not finite or not ordered, names that do not match the
    action count, or a distribution that does not match the action type.

    Raises:
        BundleError: naming the key and the value found.
    """
    for key in ("env", "observation", "action", "distribution", "model_sha256"):
        if key not in spec:
            raise BundleError(f"{where} lacks the key {key!r}")
    env, obs, act = spec["env"], spec["observation"], spec["action"]
    if not isinstance(env, dict) or not isinstance(env.get("id"), str) or not env["id"]:
        raise BundleError(f"{where}: env.id must be a non-empty string, got "
                          f"{_short(env.get('id') if isinstance(env, dict) else env)}")
    if spec["distribution"] not in DISTRIBUTIONS:
        raise BundleError(f"{where}: distribution {spec['distribution']!r}; valid: "
                          f"{list(DISTRIBUTIONS)}")
    if not isinstance(obs, dict) or not isinstance(act, dict):
        raise BundleError(f"{where}: observation and action must be objects")
    dim = _count(obs.get("dim"), "observation.dim", where)
    low = _numbers(obs.get("low"), dim, "observation.low", where)
    high = _numbers(obs.get("high"), dim, "observation.high", where)
    _ordered(low, high, "observation", where)
    columns = obs.get("columns", {})
    if not isinstance(columns, dict) or not all(
            isinstance(name, str) and isinstance(span, list) and len(span) == 2
            and all(type(i) is int for i in span) and 0 <= span[0] < span[1] <= dim
            for name, span in columns.items()):
        raise BundleError(f"{where}: observation.columns must map block names to [start, "
                          f"stop) column ranges within 0..{dim}, got {_short(columns)}")
    discrete = spec["distribution"] == "categorical"
    if discrete != (act.get("type") == "discrete"):
        raise BundleError(f"{where}: a {spec['distribution']} policy needs action.type "
                          f"{'discrete' if discrete else 'box'}, got {act.get('type')!r}")
    n = _count(act.get("n") if discrete else act.get("dim"),
               "action.n" if discrete else "action.dim", where)
    if not discrete:
        _ordered(_numbers(act.get("low"), n, "action.low", where),
                 _numbers(act.get("high"), n, "action.high", where), "action", where)
    names = act.get("names")
    if not isinstance(names, list) or len(names) != n or not all(
            isinstance(s, str) and s for s in names) or len(set(names)) != n:
        raise BundleError(f"{where}: action.names must be {n} distinct non-empty strings "
                          f"(one per {'action' if discrete else 'action dimension'}), got "
                          f"{_short(names)}")


def _ordered(low: list[float], high: list[float], space: str, where: Path) -> None:
    for i, (lo, hi) in enumerate(zip(low, high)):
        if lo > hi:
            raise BundleError(f"{where}: {space}.low[{i}] = {lo} is above {space}.high[{i}] "
                              f"= {hi}")


def env_spec(env: Any, env_id: str, env_config: Mapping[str, Any]) -> dict[str, Any]:
    """The env-derived part of ``policy.json`` — env, observation (with its column labels),
    action, distribution, output names — from an env built with ``env_config``."""
    obs_space, act_space = env.observation_space, env.action_space
    labels = env.unwrapped.labels()
    observation = dict(dim=int(obs_space.shape[0]), dtype="float32",
                       low=obs_space.low.tolist(), high=obs_space.high.tolist(),
                       columns=labels["observation_columns"], preprocessing="none")
    if hasattr(act_space, "n"):                          # Discrete (Box has a shape only)
        action = dict(type="discrete", n=int(act_space.n), names=labels["action_names"])
        distribution, outputs = "categorical", ["logits"]
    else:
        action = dict(type="box", dim=int(act_space.shape[0]), low=act_space.low.tolist(),
                      high=act_space.high.tolist(), names=labels["action_names"],
                      postprocess="clip")
        distribution, outputs = "diag_gaussian", ["mean", "log_std"]
    version = env_id.rsplit("-v", 1)[-1]
    return dict(env=dict(id=env_id, version=int(version) if version.isdigit() else version,
                         config=dict(env_config)),
                observation=observation, action=action, distribution=distribution,
                outputs=outputs)
