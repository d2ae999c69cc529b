"""Serve a policy bundle (or a registry stage) over HTTP.

    export PERSONARL_PII_KEY=$(openssl rand -hex 32)     # identifiers are keyed-hashed
    python -m experiments.serve bundle=outputs/<date>/<time>/policy
    python -m experiments.serve bundle=... log.user_id=drop   # no key: ids never written
    python -m experiments.serve registry=registry model=routing            # production
    python -m experiments.serve registry=registry model=routing traffic.mode=canary \\
        traffic.candidate=staging traffic.share=0.1 exploration.mode=epsilon
    PERSONARL_API_KEY=secret python -m experiments.serve bundle=... port=8080

Decision, feedback and shadow logs go to ``log_dir`` (default: the Hydra run directory's
``decision_logs/``). Mistakes exit with status 2 and a message naming the key or the
variable, before the server starts: a bad setting, a bundle that fails its checks, a
missing ``PERSONARL_PII_KEY`` (unless ``log.user_id=drop``), an API key that is not
printable ASCII, or a ``log_dir`` another server writes to. Needs only the ``serve`` extra
(no Ray, no torch).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from experiments.cli import check_command_line, run_app
from experiments.schema import register_configs
from agents.serving.registry import Registry, version_label
from agents.serving.loader import load_policy
from agents.serving.exploration import Exploration
from agents.serving.traffic import TRAFFIC_MODES, Arm, Decider
from personarl.errors import ConfigError, check_api_key
from personarl.identifiers import PII_KEY_VARIABLE, Pseudonymiser
from personarl.seeds import stream_seed

__all__ = ["build_decider", "open_server", "settings_from", "main"]

log = logging.getLogger(__name__)
#: the server process's GIL switch interval (seconds); see main()
SWITCH_INTERVAL = 0.0005


register_configs()


class ServeConfigError(ConfigError):
    """A serve setting that cannot work, named with its key."""


def _arm(cfg: DictConfig, name: str, ref: Any, registry: Registry | None, seed: int) -> Arm:
    """Load one arm: ``ref`` is a bundle path, or (with a registry) a stage or version —
    served only while its files match the digests recorded at registration."""
    limit = cfg.max_bundle_file_bytes
    if registry is None:
        policy = load_policy(ref, seed=seed, max_file_bytes=limit)
        return Arm(name, f"sha256:{policy.spec['model_sha256'][:12]}", policy)
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        policy, entry = registry.load(cfg.model, version=int(ref), seed=seed,
                                      max_file_bytes=limit)
    else:
        policy, entry = registry.load(cfg.model, stage=ref, seed=seed, max_file_bytes=limit)
    return Arm(name, version_label(cfg.model, entry["version"]), policy)


def _registry_version(label: str) -> int:
    """The version number in an arm's label ``<model>:v<N>`` (``version_label``)."""
    return int(label.rsplit(":v", 1)[1])


def build_decider(cfg: DictConfig, start: int = 0) -> Decider:
    """The ``Decider`` a serve config describes; ``start``: how many times a server started
    on the same decision logs before (each start draws from its own stream, so a restart
    never replays the exploration of the one before).

    Raises:
        ServeConfigError, BundleError, RegistryError: naming the bad key/value, or a
            candidate built for another env or env config than the primary.
    """
    if (cfg.bundle is None) == (cfg.registry is None):
        raise ServeConfigError("give exactly one of bundle=<dir> or registry=<dir> "
                               f"(got bundle={cfg.bundle!r}, registry={cfg.registry!r})")
    registry = None
    if cfg.registry is not None:
        if cfg.model is None:
            raise ServeConfigError("registry= needs model=<name> (python -m "
                                   "experiments.registry action=list shows the names)")
        registry = Registry(cfg.registry)
    for key, low, high in (("port", 0, 65535), ("max_body_bytes", 1, None),
                           ("max_batch", 1, None), ("feedback_window", 1, None),
                           ("segment_rows", 1, None), ("max_bundle_file_bytes", 1, None)):
        if cfg[key] < low or (high is not None and cfg[key] > high):
            raise ServeConfigError(f"{key}={cfg[key]!r} is outside the valid range "
                                   f"[{low}, {high if high is not None else '∞'}]")
    primary_ref = cfg.bundle if registry is None else (
        cfg.version if cfg.version is not None else cfg.stage)
    primary = _arm(cfg, "primary", primary_ref, registry,
                   stream_seed(cfg.seed, "policy", 0, start))
    t = cfg.traffic
    if t.mode not in TRAFFIC_MODES:
        raise ServeConfigError(f"traffic.mode={t.mode!r}; valid: {list(TRAFFIC_MODES)}")
    if t.mode == "single" and t.candidate is not None:
        raise ServeConfigError(f"traffic.candidate={t.candidate!r} with traffic.mode=single "
                               "would be ignored; choose canary, ab or shadow, or drop it")
    candidate = None
    if t.mode != "single":
        if t.candidate is None:
            raise ServeConfigError(f"traffic.mode={t.mode} needs traffic.candidate (a bundle "
                                   "dir; with a registry, a stage or a version number)")
        candidate = _arm(cfg, "shadow" if t.mode == "shadow" else "candidate", t.candidate,
                         registry, stream_seed(cfg.seed, "policy", 1, start))
        _same_env(primary, candidate)
    try:
        exploration = Exploration.of(cfg.exploration)
        return Decider(primary, candidate, mode=t.mode, share=t.share,
                       exploration=exploration, salt=t.salt,
                       seed=stream_seed(cfg.seed, "serving", start))
    except ConfigError as exc:                          # names its key: exploration.<field>
        raise ServeConfigError(str(exc)) from None
    except ValueError as exc:
        raise ServeConfigError(f"traffic: {exc}") from None


def _same_env(primary: Arm, candidate: Arm) -> None:
    """Refuse a candidate that acts in another env than the primary: both decide on the
    same observations, and the logs are evaluated against one env."""
    from envs.registration import env_differences

    a, b = primary.policy.spec["env"], candidate.policy.spec["env"]
    differ = env_differences(a["id"], a.get("config") or {}, b["id"], b.get("config") or {})
    if differ:
        raise ServeConfigError(
            f"traffic.candidate ({candidate.version}) is a policy for {b['id']} with env config "
            f"{b.get('config') or {}}, the primary ({primary.version}) for {a['id']} with "
            f"{a.get('config') or {}} ({', '.join(differ)} differ); both arms decide on the "
            "same users, so they must be built for the same env")


def settings_from(cfg: DictConfig, run_dir: Path) -> Any:
    """``ServerSettings`` from the config and the environment: the API key from
    ``PERSONARL_API_KEY``, the identifier-hashing key from ``PERSONARL_PII_KEY``.

    Raises:
        ConfigError: ``log.user_id`` invalid; a ``PERSONARL_PII_KEY`` that is too short; an
            API key that is empty or not printable ASCII.
    """
    from agents.serving.server import USER_ID_MODES, ServerSettings

    mode = cfg.log.user_id
    if mode not in USER_ID_MODES:
        raise ConfigError(f"log.user_id={mode!r}; valid: {list(USER_ID_MODES)}")
    # with log.user_id=hash and no key, create_app refuses, naming the variable
    pseudonymiser = Pseudonymiser.from_env() if os.environ.get(PII_KEY_VARIABLE) else None
    if pseudonymiser is None and mode == "drop":
        log.warning("log.user_id=drop without %s: user ids are never written, and sticky "
                    "traffic assignment holds only until this server restarts",
                    PII_KEY_VARIABLE)
    api_key = os.environ.get("PERSONARL_API_KEY")
    check_api_key(api_key)
    return ServerSettings(log_dir=Path(cfg.log_dir) if cfg.log_dir else run_dir / "decision_logs",
                          max_body_bytes=cfg.max_body_bytes, max_batch=cfg.max_batch,
                          feedback_window=cfg.feedback_window, segment_rows=cfg.segment_rows,
                          api_key=api_key, user_ids=mode, pseudonymiser=pseudonymiser)


def check_address(host: str, port: int) -> None:
    """Refuse an address the server could not listen on (in use, not a local address),
    before the decision logs are made; uvicorn binds the same way (``SO_REUSEADDR``).
    ``port`` is already in [0, 65535] (``build_decider``; 0: the system picks one).

    Raises:
        ConfigError: naming the address and the system's reason.
    """
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        raise ConfigError(f"host={host!r} port={port}: cannot listen there "
                          f"({exc.strerror or exc})") from None


def open_server(cfg: DictConfig, run_dir: Path) -> tuple[Any, Decider, Any]:
    """``(settings, decider, app)`` for a serve config: the bundles loaded, the address
    checked, the decision logs opened (``create_app`` takes their locks and records this
    start in ``servings.jsonl``) and, when serving from a registry, the log directory
    recorded for each version that decides (``Registry.record_serving``).

    Raises:
        ConfigError, BundleError, RegistryError: as ``build_decider`` and ``settings_from``.
    """
    from agents.serving.decision_log import read_servings
    from agents.serving.server import create_app

    settings = settings_from(cfg, run_dir)
    decider = build_decider(cfg, start=len(read_servings(settings.log_dir)))
    check_address(cfg.host, cfg.port)       # before create_app writes anything
    app = create_app(decider, settings)     # takes the logs' locks
    if cfg.registry is not None:            # evaluate registry=… finds the logs there
        served = [_registry_version(a.version) for a in decider.arms
                  if a.name != "shadow"]  # a shadow's choices are not decisions
        Registry(cfg.registry).record_serving(cfg.model, served, settings.log_dir)
    return settings, decider, app


@hydra.main(version_base="1.3", config_path="../configs", config_name="serve")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: check the config, load the bundles, run uvicorn."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)

    settings, decider, app = run_app("serve", cfg, lambda: open_server(cfg, run_dir), run_dir,
                                     user_errors=(ValueError,))
    import gc

    import uvicorn

    # what start-up allocated (modules, models, the decision ids read back) is never
    # garbage: keep it out of the collector's full passes, which would otherwise stall the
    # event loop for as long as they walk it
    gc.collect()
    gc.freeze()
    # a decision-log roll runs in a background thread; every time the event loop comes back
    # from I/O it waits for the GIL up to the switch interval (default 5 ms), several times
    # per request, so a roll would add tens of milliseconds to every request it overlaps
    sys.setswitchinterval(SWITCH_INTERVAL)

    arms = ", ".join(f"{a.name}={a.version}" for a in decider.arms)
    print(f"serving {decider.primary.policy.env_id} ({arms}; traffic {decider.mode}, "
          f"exploration {decider.exploration.mode}) on http://{cfg.host}:{cfg.port}; decision "
          f"logs in {settings.log_dir}", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    check_command_line("serve", "serve")
    main()
