"""A local registry of policy bundles: versions, stages, promotion and rollback.

A registry is a directory::

    <root>/index.json             what is registered (written atomically)
    <root>/.lock                  the lock every change holds
    <root>/<name>/v<N>/           a copy of each registered bundle

Each model ``name`` has versions ``1, 2, …`` (a new registration always gets the next
number) and each version one stage: ``none`` (just registered), ``staging``, ``production``
(at most one per model) or ``archived``. ``promote`` makes a version the production one and
archives the previous; ``rollback`` archives the current production version and restores
the one before it. Every change reads the index, edits it and writes it back under a file
lock, so concurrent commands never lose each other's changes.

**Authenticity.** ``register`` refuses a bundle that cannot be served (it is loaded as the
server would load it) and records the SHA-256 of every file of the copy it keeps. A version
is served (``load``), promoted or rolled back to only while every file still has those
digests: a model swapped together with a rewritten manifest is refused. (A running server
keeps serving the bytes it verified when it started.) The index is the trust anchor — whoever can
rewrite ``index.json`` can register anything; protect the registry directory accordingly.
Entries name their folder as ``<name>/v<N>``; any other path (``..``, an absolute path)
is refused rather than followed.

    reg = Registry("registry")
    reg.register("outputs/…/policy", "routing")        # -> version 1, stage none
    reg.promote("routing", 1)
    reg.resolve("routing", stage="production")         # -> (Path of the bundle, entry)
    policy, entry = reg.load("routing", stage="production")   # verified, ready to serve
    reg.record_serving("routing", [1], "decision_logs")      # what experiments.serve does
    reg.log_dirs("routing", 1)                           # -> the decision-log directories

Imports the standard library, ``filelock`` and the serving loader only.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

from filelock import FileLock

from agents.serving.bundle import (DEFAULT_MAX_FILE_BYTES, MANIFEST_FILE, MODEL_FILE, SPEC_FILE,
                           read_bundle, write_atomic)
from personarl import jsonio
from personarl.errors import PersonaRLError

__all__ = ["Registry", "RegistryError", "STAGES", "version_label"]

STAGES = ("none", "staging", "production", "archived")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_INDEX_FORMAT = 1


def version_label(name: str, version: int) -> str:
    """How a served registry version is named in the decision logs: ``<name>:v<N>``."""
    return f"{name}:v{version}"


class RegistryError(PersonaRLError, ValueError):
    """A registry command that cannot be carried out (unknown model/version/stage, …)."""


def _check_model(index: Path, name: str, model: Any) -> None:
    """Refuse a model entry of the index that is not what ``register`` writes."""
    where = f"{index}: model {name!r}"
    if not isinstance(name, str) or not _NAME.match(name):
        raise RegistryError(f"{index}: model name {name!r} is invalid")
    if not isinstance(model, dict) or not isinstance(model.get("versions"), list) \
            or not isinstance(model.get("production_history"), list):
        raise RegistryError(f"{where} must be an object with 'versions' and "
                            "'production_history' lists")
    for entry in model["versions"]:
        if not isinstance(entry, dict) or type(entry.get("version")) is not int \
                or entry.get("stage") not in STAGES or not isinstance(entry.get("path"), str):
            raise RegistryError(f"{where} has a version entry {str(entry)[:120]} without an "
                                f"integer 'version', a 'stage' in {list(STAGES)} and a "
                                "'path'")
    for entry in model["versions"]:
        served = entry.get("served_in", [])
        if not isinstance(served, list) or not all(isinstance(d, str) for d in served):
            raise RegistryError(f"{where} v{entry['version']}: 'served_in' must list "
                                "decision-log directories")
    if not all(type(v) is int for v in model["production_history"]):
        raise RegistryError(f"{where}: production_history must list version numbers")
    history = model.get("history", [])
    if not isinstance(history, list) or not all(isinstance(e, dict) for e in history):
        raise RegistryError(f"{where}: history must list change records")


def _record(model: dict[str, Any], action: str, version: int, stage: str, reason: str
            ) -> None:
    """Append a stage change to a model's ``history`` (in the index being written)."""
    if not isinstance(reason, str):
        raise RegistryError(f"reason={reason!r} must be text")
    model.setdefault("history", []).append(
        {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "action": action, "version": version,
         "stage": stage, "reason": reason})


def _digests(name: str, entry: dict[str, Any]) -> dict[str, str]:
    """The file digests ``register`` recorded for a version.

    Raises:
        RegistryError: the entry has none (registered by an older PersonaRL).
    """
    if not isinstance(entry.get("files"), dict):
        raise RegistryError(f"{name} v{entry['version']} was registered without file digests "
                            "(an older registry format); register the bundle again")
    return entry["files"]


class Registry:
    """The registry in directory ``root`` (created on first registration)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self._index = self.root / "index.json"
        self._lock = FileLock(str(self.root / ".lock"), timeout=30)

    # ------------------------------------------------------------------ reading
    def _require_index(self) -> None:
        """Refuse to change a registry that does not exist (nothing is created)."""
        if not self._index.is_file():
            raise RegistryError(f"no registry at {str(self.root)!r} (no index.json); "
                                "register a bundle there first")

    def _read(self) -> dict[str, Any]:
        """The index, checked (a hand-edited or corrupt one is a ``RegistryError`` naming
        what is wrong, never a ``KeyError`` later)."""
        if self.root.exists() and not self.root.is_dir():
            raise RegistryError(f"registry={str(self.root)!r} is a file, not a registry "
                                "directory")
        try:
            if not self._index.exists():
                return {"format": _INDEX_FORMAT, "models": {}}
            data = self._index.read_bytes()
        except OSError as exc:
            raise RegistryError(f"cannot read the registry index {self._index}: {exc}") from None
        try:
            index = jsonio.loads_strict(data)
        except ValueError as exc:
            raise RegistryError(f"{self._index} is not valid JSON ({exc}); restore it from a "
                                "backup") from None
        if not isinstance(index, dict) or not isinstance(index.get("models"), dict):
            raise RegistryError(f"{self._index} is not a registry index (no 'models' object)")
        if index.get("format") != _INDEX_FORMAT or type(index.get("format")) is not int:
            raise RegistryError(f"{self._index} has format {index.get('format')!r}; this "
                                f"PersonaRL reads format {_INDEX_FORMAT}")
        for name, model in index["models"].items():
            _check_model(self._index, name, model)
        return index

    def models(self) -> list[str]:
        """Registered model names."""
        return sorted(self._read()["models"])

    def versions(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every version (of ``name``, or of all models), oldest first."""
        models = self._read()["models"]
        names = [self._known(models, name)] if name is not None else sorted(models)
        return [dict(v, name=n) for n in names for v in models[n]["versions"]]

    def get(self, name: str, version: int) -> dict[str, Any]:
        """One version's entry."""
        return dict(self._version(self._read()["models"], name, version), name=name)

    def resolve(self, name: str, *, stage: str | None = None, version: int | None = None
                ) -> tuple[Path, dict[str, Any]]:
        """``(bundle directory, entry)`` of a version given by number, or by stage (the
        production version, or the newest version in ``staging``).

        Raises:
            RegistryError: no registry at ``root``; an unknown model, version or stage.
        """
        self._require_index()
        models = self._read()["models"]
        if (stage is None) == (version is None):
            raise RegistryError("give exactly one of stage= or version=")
        if version is not None:
            entry = self._version(models, name, version)
        else:
            self._check_stage(stage)
            found = [v for v in self._model(models, name)["versions"] if v["stage"] == stage]
            if not found:
                raise RegistryError(f"model {name!r} has no version in stage {stage!r} "
                                    f"(stages now: {self._stages(models[name])})")
            entry = found[-1]
        return self._folder(name, entry), dict(entry, name=name)

    def load(self, name: str, *, stage: str | None = None, version: int | None = None,
             seed: int | None = None, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
             ) -> tuple[Any, dict[str, Any]]:
        """``(ServedPolicy, entry)`` of a version (as ``resolve``), loaded only if every file
        still has the SHA-256 recorded at registration.

        Raises:
            RegistryError: as ``resolve``, or an entry without recorded digests.
            BundleError: a file changed since registration, or the bundle cannot load.
        """
        from agents.serving.loader import load_policy

        path, entry = self.resolve(name, stage=stage, version=version)
        return load_policy(path, seed=seed, max_file_bytes=max_file_bytes,
                           expected=_digests(name, entry)), entry

    def _verify(self, name: str, entry: dict[str, Any]) -> None:
        """Refuse to put a version into production whose files changed since ``register``."""
        read_bundle(self._folder(name, entry), expected=_digests(name, entry))

    def _folder(self, name: str, entry: dict[str, Any]) -> Path:
        """The version's folder, refusing an entry whose path is not ``<name>/v<N>``."""
        want = f"{name}/v{entry.get('version')}"
        if entry.get("path") != want:
            raise RegistryError(f"{self._index}: {name} v{entry.get('version')} has path "
                                f"{entry.get('path')!r}; a registered version lives in "
                                f"{want!r} inside the registry (refusing to follow it)")
        folder = self.root / want
        if folder.is_symlink() or not folder.resolve().is_relative_to(self.root):
            raise RegistryError(f"{folder} leads outside the registry {self.root}; refusing it")
        return folder

    # ------------------------------------------------------------------ changing
    def register(self, bundle: str | Path, name: str, note: str = "", *,
                 max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> dict[str, Any]:
        """Copy the bundle in ``bundle`` into the registry as the next version of ``name``,
        recording the SHA-256 of every file. A bundle whose files equal an existing
        version's is that version: it is returned (with ``already_registered=True``) and
        nothing is written.

        Raises:
            BundleError: the bundle cannot be served — incomplete, tampered with, of another
                format, too large, or a model that does not load (``load_policy``).
            RegistryError: an invalid name, or ``name``'s versions are of another env (a
                model's versions replace one another in production: they must take the same
                observations and give the same actions).
        """
        from agents.serving.loader import load_policy

        if not isinstance(name, str) or not _NAME.match(name):
            raise RegistryError(f"model name {name!r} is invalid: use 1–64 characters from "
                                "a-z, 0-9, '_', '.', '-', starting with a letter or digit")
        bundle = Path(bundle)
        policy = load_policy(bundle, max_file_bytes=max_file_bytes)   # refuses what cannot
        spec = policy.spec                                            # be served
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RegistryError(f"registry={str(self.root)!r} cannot be a registry "
                                f"directory: {exc}") from None
        with self._lock:
            index = self._read()
            model = index["models"].setdefault(name, {"versions": [], "production_history": []})
            envs = {v["env_id"] for v in model["versions"]}
            if envs and envs != {spec["env"]["id"]}:
                raise RegistryError(f"bundle={str(bundle)!r} is a policy for "
                                    f"{spec['env']['id']}, but {name!r} holds policies for "
                                    f"{sorted(envs)[0]}; register it under another name")
            for existing in model["versions"]:     # the same files again: that version
                if existing.get("files") == policy.digests:
                    return dict(existing, name=name, already_registered=True)
            number = max((v["version"] for v in model["versions"]), default=0) + 1
            rel = Path(name, f"v{number}")
            tmp = self.root / name / f".tmp-v{number}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            for f in (MODEL_FILE, SPEC_FILE, MANIFEST_FILE):
                shutil.copy2(bundle / f, tmp / f)
            # the copy must be the bytes that were loaded (a bundle changed meanwhile is
            # refused here)
            read_bundle(tmp, max_file_bytes=max_file_bytes, expected=policy.digests)
            shutil.rmtree(self.root / rel, ignore_errors=True)   # a crashed earlier attempt
            tmp.rename(self.root / rel)
            entry = dict(version=number, stage="none", path=str(rel),
                         registered_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                         source=str(bundle.resolve()), env_id=spec["env"]["id"],
                         config_hash=spec.get("config_hash"),
                         model_sha256=spec["model_sha256"], files=policy.digests,
                         note=note)
            model["versions"].append(entry)
            self._write(index)
        return dict(entry, name=name)

    def set_stage(self, name: str, version: int, stage: str, reason: str = ""
                  ) -> dict[str, Any]:
        """Move a version to ``none``, ``staging`` or ``archived`` (``promote`` and
        ``rollback`` are the only ways into and out of ``production``); ``reason`` goes into
        the model's ``history``."""
        self._check_version(version)
        self._check_stage(stage)
        if stage == "production":
            raise RegistryError(f"use promote to put {name} v{version} into production (it "
                                "archives the current production version)")
        self._require_index()           # a lock would create the folder
        with self._lock:
            index = self._read()
            entry = self._version(index["models"], name, version)
            if entry["stage"] == "production":
                raise RegistryError(f"{name} v{version} is in production; promote another "
                                    "version or roll back instead of moving it out")
            entry["stage"] = stage
            _record(self._model(index["models"], name), "stage", version, stage, reason)
            self._write(index)
        return dict(entry, name=name)

    def history(self, name: str) -> list[dict[str, Any]]:
        """Every stage change of ``name`` since the registry recorded them, oldest first:
        ``time``, ``action`` (promote, rollback, stage), ``version``, ``stage``, ``reason``."""
        return list(self._model(self._read()["models"], name).get("history", []))

    def promote(self, name: str, version: int, reason: str = "") -> dict[str, Any]:
        """Make ``version`` the production version; the previous one is archived.

        Raises:
            RegistryError: an unknown model or version, or one already in production.
            BundleError: the version's files no longer match their registered digests.
        """
        self._check_version(version)
        self._require_index()           # a lock would create the folder
        with self._lock:
            index = self._read()
            entry = self._version(index["models"], name, version)
            model = self._model(index["models"], name)
            self._verify(name, entry)
            if entry["stage"] == "production":
                raise RegistryError(f"{name} v{version} is already in production")
            for v in model["versions"]:
                if v["stage"] == "production":
                    v["stage"] = "archived"
            entry["stage"] = "production"
            model["production_history"].append(version)
            _record(model, "promote", version, "production", reason)
            self._write(index)
        return dict(entry, name=name)

    def rollback(self, name: str, reason: str = "") -> dict[str, Any]:
        """Archive the production version and put the previous production version back;
        ``reason`` goes into the model's ``history``.

        Raises:
            RegistryError: no earlier production version.
            BundleError: its files no longer match their registered digests.
        """
        self._require_index()           # a lock would create the folder
        with self._lock:
            index = self._read()
            model = self._model(index["models"], name)
            history = model["production_history"]
            if len(history) < 2:
                raise RegistryError(f"model {name!r} has no earlier production version to "
                                    f"roll back to (production history: {history})")
            current, previous = history[-1], history[-2]
            self._verify(name, self._version(index["models"], name, previous))
            self._version(index["models"], name, current)["stage"] = "archived"
            self._version(index["models"], name, previous)["stage"] = "production"
            history.pop()
            _record(model, "rollback", current, "archived",
                    reason or f"v{previous} restored to production")
            self._write(index)
            entry = self._version(index["models"], name, previous)
        return dict(entry, name=name)

    def record_serving(self, name: str, versions: list[int], log_dir: str | Path) -> None:
        """Record that a server writes the decisions of ``versions`` into ``log_dir``: each
        version's entry lists the log directories it was served into (``served_in``,
        absolute paths, each once) — what ``experiments.evaluate registry=…`` reads.

        Raises:
            RegistryError: an unknown model or version.
        """
        folder = str(Path(log_dir).resolve())
        self._require_index()
        with self._lock:
            index = self._read()
            for version in versions:
                entry = self._version(index["models"], name, version)
                served = entry.setdefault("served_in", [])
                if folder not in served:
                    served.append(folder)
            self._write(index)

    def log_dirs(self, name: str, version: int) -> list[Path]:
        """The decision-log directories servers wrote ``version``'s decisions into (as
        ``record_serving`` recorded them; some may since have been moved or deleted)."""
        return [Path(d) for d in self.get(name, version).get("served_in", [])]

    # ------------------------------------------------------------------ helpers
    def _write(self, index: dict[str, Any]) -> None:
        write_atomic(self._index, jsonio.dumps(index, indent=2) + "\n")

    @staticmethod
    def _check_stage(stage: Any) -> None:
        if stage not in STAGES:
            raise RegistryError(f"stage {stage!r} is invalid; valid: {list(STAGES)}")

    @staticmethod
    def _known(models: dict[str, Any], name: Any) -> str:
        if name not in models:
            raise RegistryError(f"no model {name!r} in the registry; registered: "
                                f"{sorted(models)}")
        return name

    def _model(self, models: dict[str, Any], name: Any) -> dict[str, Any]:
        return models[self._known(models, name)]

    @staticmethod
    def _check_version(version: Any) -> None:
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise RegistryError(f"version={version!r}: versions are integers >= 1")

    def _version(self, models: dict[str, Any], name: Any, version: Any) -> dict[str, Any]:
        self._check_version(version)
        versions = self._model(models, name)["versions"]
        for v in versions:
            if v["version"] == version and not isinstance(version, bool):
                return v
        raise RegistryError(f"model {name!r} has no version {version!r}; versions: "
                            f"{[v['version'] for v in versions]}")

    @staticmethod
    def _stages(model: dict[str, Any]) -> dict[int, str]:
        return {v["version"]: v["stage"] for v in model["versions"]}
