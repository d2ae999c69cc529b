"""The one exit path of every ``python -m experiments.<app>`` entry point.

    @hydra.main(version_base="1.3", config_path="../configs", config_name="export")
    def main(cfg: DictConfig) -> None:
        path = run_app("export", cfg, lambda: export_checkpoint(...))

``run_app`` checks the config's required arguments (``???`` in the YAML, ``MISSING`` in a
schema) before the app runs, then runs it: a user's mistake — a missing argument or any
``PersonaRLError`` (bad values, files, bundles, checkpoints) — is logged as one line naming
it and the process exits with status 2; an internal fault keeps its traceback. When the app
failed on its input, what this invocation wrote into its run directory (Hydra's ``.hydra/``
and the job's log, the run's lock, an empty ``checkpoints/``) is removed — and the directory
itself when it did not exist before the command — provided the directory holds nothing
else: a directory with any other file (a run being resumed, the user's own files) is kept
as it is.

``check_command_line`` runs first, from each module's ``__main__`` block: it composes the
config from the command line once, before Hydra starts the app, so that what Hydra reports
at composition — an unknown key, a value of the wrong type, an option that does not exist
— is also one line and exit 2 (Hydra's own report is several lines and exit 1).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Callable, Iterable, NoReturn, TypeVar

from omegaconf import DictConfig, OmegaConf

from personarl.errors import ConfigError, PersonaRLError

__all__ = ["run_app", "check_command_line", "configure_console", "check_fresh", "EXIT_USAGE"]

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

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
    configure_console(bool(cfg.get("verbose", False)))
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        _fail(action, "missing required argument(s): " + ", ".join(
            f"{k}=<value>" for k in missing), run_dir)
    try:
        return body()
    except (PersonaRLError, *user_errors) as exc:
        _fail(action, str(exc), run_dir)


#: libraries whose logging reaches the console only with ``verbose=true``
CHATTY = ("ray", "ray.tune", "ray.rllib", "ray.data", "optuna", "httpx", "numba", "urllib3",
          "filelock", "matplotlib", "torch", "onnxscript", "absl")


def configure_console(verbose: bool) -> None:
    """Quiet by default: the console shows our warnings and errors and the apps' own
    progress bars and result lines. Our INFO lines go to the job's log file only; the
    ``CHATTY`` libraries' logging below ERROR and every deprecation or future warning are
    dropped. ``verbose=true`` shows everything. A warning shown is one line."""
    warnings.formatwarning = _one_line_warning
    if verbose:
        return
    for handler in logging.getLogger().handlers:      # the console's, not a file's or a
        if getattr(handler, "stream", None) in (sys.stdout, sys.stderr):   # test's capture
            handler.setLevel(logging.WARNING)
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.ERROR)
    for category in (DeprecationWarning, FutureWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")      # Tune: no banner at verbose=0


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str,
                      lineno: int, line: str | None = None) -> str:
    """A warning as one console line (``warning: …``), not Python's two with the source."""
    return f"warning: {message}\n"


#: run directories named on the command line that existed before it ran (never removed)
_EXISTED: set[Path] = set()
#: what a failed invocation may have written into its run directory, besides the job's log
_OWN = {".hydra", "run.lock", "checkpoints"}


def _fail(action: str, message: str, run_dir: Path | None) -> NoReturn:
    print(f"cannot {action}: {message}", file=sys.stderr)
    if run_dir is not None:
        run_dir = Path(run_dir).resolve()
        _close_log_files(run_dir)                       # the job's log is closed first
        _remove_own_files(run_dir)
    sys.exit(EXIT_USAGE)


def _close_log_files(run_dir: Path) -> None:
    """Close and detach the logging handlers that write into ``run_dir`` (Hydra's job log),
    leaving every other handler alone."""
    loggers = [logging.getLogger()] + [logging.getLogger(name) for name in
                                       logging.root.manager.loggerDict]
    for logger in loggers:
        for handler in list(getattr(logger, "handlers", [])):
            path = getattr(handler, "baseFilename", None)
            if path is not None and Path(path).resolve().parent == run_dir:
                logger.removeHandler(handler)
                handler.close()


def _job_log() -> str | None:
    from hydra.core.hydra_config import HydraConfig

    return f"{HydraConfig.get().job.name}.log" if HydraConfig.initialized() else None


def _remove_own_files(run_dir: Path) -> None:
    """Remove what this invocation wrote into ``run_dir`` (a Hydra run directory: it has
    ``.hydra/``; never the working directory or above it), and ``run_dir`` itself unless it
    existed before; nothing when anything else is in it."""
    cwd = Path.cwd().resolve()
    if run_dir == cwd or run_dir in cwd.parents or not (run_dir / ".hydra").is_dir():
        return
    own = _OWN | {_job_log()}
    try:
        entries = list(run_dir.iterdir())
    except OSError:
        return
    if any(p.name not in own for p in entries) or \
            any(p.is_dir() and any(p.iterdir()) for p in entries if p.name == "checkpoints"):
        return
    for p in entries:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    if run_dir not in _EXISTED:
        with contextlib.suppress(OSError):
            run_dir.rmdir()


def check_command_line(config_name: str, action: str, argv: list[str] | None = None) -> None:
    """Compose ``config_name`` with the command line's overrides; a composition error exits
    2 with one line ``cannot <action>: …`` naming the override (and, for a missing option,
    the valid ones). Hydra's own flags (``--help``, ``--cfg``, ``-m`` …) are left to Hydra.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    args = list(sys.argv[1:] if argv is None else argv)
    if any(a.startswith("-") for a in args):
        return
    for a in args:
        if a.startswith("hydra.run.dir="):
            where = Path(a.split("=", 1)[1]).expanduser().resolve()
            if where.exists() and not where.is_dir():
                _usage(action, f"hydra.run.dir={str(where)!r} is a file; give a directory")
            if where.exists():
                _EXISTED.add(where)
    try:
        with initialize_config_dir(str(CONFIGS), version_base="1.3"):
            compose(config_name, overrides=args, return_hydra_config=True)
    except MissingConfigException as exc:
        valid = f"; valid: {', '.join(sorted(exc.options))}" if exc.options else ""
        _usage(action, _one_line(exc) + valid)
    except OverflowError:                  # OmegaConf's float() of an int beyond ~1.8e308
        huge = [f"{k}=<a {len(v)}-digit number>" for k, v in
                (a.split("=", 1) for a in args if "=" in a) if _beyond_float(v)]
        _usage(action, f"{', '.join(huge) or 'a number'} is too large for a float (largest "
                       "≈ 1.8e308)")
    except (HydraException, OmegaConfBaseException) as exc:
        cause = exc.__cause__
        detail = f": {_one_line(cause)}" if cause is not None else ""
        from experiments.schema import renamed_options

        renamed = renamed_options(config_name)
        hints = [f" ({k!r} was renamed {renamed[k]})" for k in
                 (a.split("=", 1)[0].lstrip("+~") for a in args) if k in renamed]
        _usage(action, _one_line(exc).rstrip(".") + detail + "".join(hints))


def _beyond_float(text: str) -> bool:
    """``text`` is an integer literal too large to convert to a float."""
    try:
        float(int(text))
    except OverflowError:
        return True
    except ValueError:
        return False
    return False


def _one_line(exc: BaseException) -> str:
    """The first line of an error's message (OmegaConf appends ``full_key: …`` lines)."""
    lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
    return lines[0] if lines else type(exc).__name__


def _usage(action: str, message: str) -> NoReturn:
    print(f"cannot {action}: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def check_fresh(run_dir: Path, names: Iterable[str]) -> None:
    """Refuse a run directory that already holds one of an app's outputs (another run's
    results would be overwritten or mixed with these)."""
    there = sorted(n for n in names if any(run_dir.glob(n)))
    if there:
        raise ConfigError(f"{run_dir} already holds {', '.join(there)} of another run; "
                          "choose another hydra.run.dir")
