"""The model registry from the command line (``agents.serving.registry``).

    python -m experiments.registry action=register bundle=outputs/<date>/<time>/policy name=routing
    python -m experiments.registry action=list [name=routing]
    python -m experiments.registry action=stage name=routing version=2 stage=staging
    python -m experiments.registry action=promote name=routing version=2
    python -m experiments.registry action=rollback name=routing

``registry=<dir>`` picks the registry (default ``outputs/registry``, git-ignored). Every
change is made under the registry's file lock and the index is rewritten atomically.
Mistakes exit with status 2 and a message; the registry is left as it was.
"""

from __future__ import annotations

import logging
from typing import Any

import hydra
from omegaconf import DictConfig

from experiments.cli import check_command_line, run_app
from experiments.schema import register_configs
from agents.serving.registry import Registry, RegistryError

__all__ = ["run", "main", "ACTIONS"]

log = logging.getLogger(__name__)
ACTIONS = ("register", "list", "stage", "promote", "rollback")
_ROW = "{:<20} {:<7} {:<11} {:<24} {:<34} {:<19} {}"


register_configs()


def _need(cfg: DictConfig, *keys: str) -> None:
    missing = [k for k in keys if cfg[k] is None]
    if missing:
        raise RegistryError(f"action={cfg.action} needs {', '.join(f'{k}=' for k in missing)}")


def run(cfg: DictConfig) -> list[dict[str, Any]]:
    """Carry out ``cfg.action``; the entries it touched (or listed)."""
    reg = Registry(cfg.registry)
    if cfg.action not in ACTIONS:
        raise RegistryError(f"action={cfg.action!r}; valid: {list(ACTIONS)}")
    if cfg.action == "list":
        return reg.versions(cfg.name) if reg.models() or cfg.name else []
    _need(cfg, "name")
    if cfg.action == "register":
        _need(cfg, "bundle")
        return [reg.register(cfg.bundle, cfg.name, cfg.note)]
    if cfg.action == "stage":
        _need(cfg, "version", "stage")
        return [reg.set_stage(cfg.name, cfg.version, cfg.stage)]
    if cfg.action == "promote":
        _need(cfg, "version")
        return [reg.promote(cfg.name, cfg.version)]
    return [reg.rollback(cfg.name)]


@hydra.main(version_base="1.3", config_path="../configs", config_name="registry")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: one action, then the touched versions as a table."""
    entries = run_app(f"{cfg.action} in the registry", cfg, lambda: run(cfg))
    if not entries:
        print(f"registry {cfg.registry}: no models registered")
        return
    if entries[0].get("already_registered"):
        e = entries[0]
        print(f"{e['name']} v{e['version']} already holds these files (model "
              f"sha256:{str(e['model_sha256'])[:12]}); nothing registered")
        return
    print(_ROW.format("model", "version", "stage", "registered", "env", "model file",
                      "note").rstrip())
    for e in entries:
        print(_ROW.format(e["name"], f"v{e['version']}", e["stage"],
                          e.get("registered_at", "?"), e.get("env_id", "?"),
                          f"sha256:{str(e.get('model_sha256', '?'))[:12]}",
                          e.get("note", "")).rstrip())


if __name__ == "__main__":
    check_command_line("registry", "use the registry")
    main()
