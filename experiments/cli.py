"""The one exit path of every ``python -m experiments.<app>`` entry point.

    @hydra.main(version_base="1.3", config_path="../configs", config_name="export")
    def main(cfg: DictConfig) -> None:
        path = run_app("export", cfg, lambda: export_checkpoint(...))

``run_app`` checks the config's required arguments (``???`` in the YAML, ``MISSING`` in a
schema) before the app runs, then runs it: a user's mistake — a missing argument or any
``PersonaRLError`` (bad values, files, bundles, checkpoints) — is logged as one line naming
it and the process exits with status 2; an internal fault keeps its traceback. When the app
failed on its input, the run directory Hydra made for this invocation is removed if it
holds nothing but Hydra's own files (``.hydra/`` and the app's log), so a failed command
leaves no directory behind; a directory holding anything else (a run being resumed) is
kept.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Callable, TypeVar

from omegaconf import DictConfig, OmegaConf

from personarl.errors import PersonaRLError

__all__ = ["run_app", "EXIT_USAGE"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: the exit status of a user's mistake (a bad argument, file or value)
EXIT_USAGE = 2


def run_app(action: str, cfg: DictConfig, body: Callable[[], T],
            run_dir: Path | None = None,
            user_errors: tuple[type[BaseException], ...] = ()) -> T:
    """``body()``, or exit 2 with one line ``cannot <action>: <what is wrong>``.

    Args:
        action: what the app does, for the message ("export", "evaluate", …).
        cfg: the app's composed config (its required arguments are checked first).
        body: the app's work.
        run_dir: Hydra's output directory of this invocation, removed on a failure if it
            holds only Hydra's files.
        user_errors: exceptions outside the family that are a user's mistake in this app
            (third-party readers of the user's files raise ``ValueError``).
    """
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        _fail(action, "missing required argument(s): " + ", ".join(
            f"{k}=<value>" for k in missing), run_dir)
    try:
        return body()
    except (PersonaRLError, *user_errors) as exc:
        _fail(action, str(exc), run_dir)
    raise AssertionError("unreachable")                  # _fail exits


def _fail(action: str, message: str, run_dir: Path | None) -> None:
    log.error("cannot %s: %s", action, message)
    if run_dir is not None and _only_hydra_files(run_dir):
        logging.shutdown()                              # the log file is closed first
        shutil.rmtree(run_dir, ignore_errors=True)
    sys.exit(EXIT_USAGE)


def _only_hydra_files(run_dir: Path) -> bool:
    """Whether ``run_dir`` is a Hydra run directory (it has ``.hydra/``; never the working
    directory or above it) holding nothing but what Hydra wrote when it started the app."""
    run_dir = Path(run_dir).resolve()
    if run_dir == Path.cwd().resolve() or run_dir in Path.cwd().resolve().parents:
        return False
    try:
        entries = list(run_dir.iterdir())
    except OSError:
        return False
    return (run_dir / ".hydra").is_dir() and all(
        (p.name == ".hydra" and p.is_dir()) or (p.suffix == ".log" and p.is_file())
        for p in entries)
