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

    reg = Registry("registry")
    reg.register("outputs/…/policy", "routing")        # -> version 1, stage none
    reg.promote("routing", 1)
    reg.resolve("routing", stage="production")         # -> Path of the bundle

Imports the standard library, ``filelock`` and ``agents.bundle`` only.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

from filelock import FileLock

from agents.bundle import MODEL_FILE, SPEC_FILE, read_spec, write_atomic
from personarl import jsonio

__all__ = ["Registry", "RegistryError", "STAGES"]

STAGES = ("none", "staging", "production", "archived")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_INDEX_FORMAT = 1


class RegistryError(ValueError):
    """A registry command that cannot be carried out (unknown model/version/stage, …)."""


class Registry:
    """The registry in directory ``root`` (created on first registration)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self._index = self.root / "index.json"
        self._lock = FileLock(str(self.root / ".lock"), timeout=30)

    # ------------------------------------------------------------------ reading
    def _read(self) -> dict[str, Any]:
        if not self._index.exists():
            return {"format": _INDEX_FORMAT, "models": {}}
        index = json.loads(self._index.read_text())
        if index.get("format") != _INDEX_FORMAT:
            raise RegistryError(f"{self._index} has format {index.get('format')!r}; this "
                                f"PersonaRL reads format {_INDEX_FORMAT}")
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
        production version, or the newest version in ``staging``)."""
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
        return self.root / entry["path"], dict(entry, name=name)

    # ------------------------------------------------------------------ changing
    def register(self, bundle: str | Path, name: str, note: str = "") -> dict[str, Any]:
        """Copy the bundle in ``bundle`` into the registry as the next version of ``name``.

        Raises:
            BundleError: the bundle is incomplete, tampered with or of another format.
            RegistryError: an invalid name.
        """
        if not isinstance(name, str) or not _NAME.match(name):
            raise RegistryError(f"model name {name!r} is invalid: use 1–64 characters from "
                                "a-z, 0-9, '_', '.', '-', starting with a letter or digit")
        bundle = Path(bundle)
        spec = read_spec(bundle)                   # refuses tampered or foreign bundles
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock:
            index = self._read()
            model = index["models"].setdefault(name, {"versions": [], "production_history": []})
            number = max((v["version"] for v in model["versions"]), default=0) + 1
            rel = Path(name, f"v{number}")
            tmp = self.root / name / f".tmp-v{number}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            for f in (MODEL_FILE, SPEC_FILE):
                shutil.copy2(bundle / f, tmp / f)
            read_spec(tmp)                         # the copy is intact too
            shutil.rmtree(self.root / rel, ignore_errors=True)   # a crashed earlier attempt
            tmp.rename(self.root / rel)
            entry = dict(version=number, stage="none", path=str(rel),
                         registered_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                         source=str(bundle.resolve()), env_id=spec["env"]["id"],
                         config_hash=spec.get("config_hash"),
                         model_sha256=spec["model_sha256"], note=note)
            model["versions"].append(entry)
            self._write(index)
        return dict(entry, name=name)

    def set_stage(self, name: str, version: int, stage: str) -> dict[str, Any]:
        """Move a version to ``none``, ``staging`` or ``archived`` (``promote`` and
        ``rollback`` are the only ways into and out of ``production``)."""
        self._check_stage(stage)
        if stage == "production":
            raise RegistryError(f"use promote to put {name} v{version} into production (it "
                                "archives the current production version)")
        with self._lock:
            index = self._read()
            entry = self._version(index["models"], name, version)
            if entry["stage"] == "production":
                raise RegistryError(f"{name} v{version} is in production; promote another "
                                    "version or roll back instead of moving it out")
            entry["stage"] = stage
            self._write(index)
        return dict(entry, name=name)

    def promote(self, name: str, version: int) -> dict[str, Any]:
        """Make ``version`` the production version; the previous one is archived."""
        with self._lock:
            index = self._read()
            model = self._model(index["models"], name)
            entry = self._version(index["models"], name, version)
            if entry["stage"] == "production":
                raise RegistryError(f"{name} v{version} is already in production")
            for v in model["versions"]:
                if v["stage"] == "production":
                    v["stage"] = "archived"
            entry["stage"] = "production"
            model["production_history"].append(version)
            self._write(index)
        return dict(entry, name=name)

    def rollback(self, name: str) -> dict[str, Any]:
        """Archive the production version and put the previous production version back."""
        with self._lock:
            index = self._read()
            model = self._model(index["models"], name)
            history = model["production_history"]
            if len(history) < 2:
                raise RegistryError(f"model {name!r} has no earlier production version to "
                                    f"roll back to (production history: {history})")
            current, previous = history[-1], history[-2]
            self._version(index["models"], name, current)["stage"] = "archived"
            self._version(index["models"], name, previous)["stage"] = "production"
            history.pop()
            self._write(index)
            entry = self._version(index["models"], name, previous)
        return dict(entry, name=name)

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

    def _version(self, models: dict[str, Any], name: Any, version: Any) -> dict[str, Any]:
        versions = self._model(models, name)["versions"]
        for v in versions:
            if v["version"] == version and not isinstance(version, bool):
                return v
        raise RegistryError(f"model {name!r} has no version {version!r}; versions: "
                            f"{[v['version'] for v in versions]}")

    @staticmethod
    def _stages(model: dict[str, Any]) -> dict[int, str]:
        return {v["version"]: v["stage"] for v in model["versions"]}
