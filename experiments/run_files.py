"""The files a training run keeps in its run directory, written so a crash loses little.

* ``MetricsLog`` — ``metrics.jsonl``: one strict JSON object per iteration (a non-finite
  metric is ``null``), flushed and fsynced; on resume, rows after the restored checkpoint
  are dropped by rewriting the file atomically. A line that is not a row (a half-written
  last line, a corrupt line in the middle) never hides the rows after it: it is skipped
  with a warning naming its number, and a rewrite keeps it in ``metrics.jsonl.rejected``.
* ``Checkpoints`` — ``checkpoints/iter_NNNNNN/``: each written into a temporary folder and
  renamed when complete (``meta.json`` last), the newest ``keep`` kept. Before the rename,
  the SHA-256 of every file is recorded in the run's ``run.json`` (``checkpoints``:
  name -> relative path -> digest); ``verify`` compares a checkpoint with that record.
  Restoring an RLlib or SB3 checkpoint unpickles its files, so ``experiments.train``
  resumes only from a checkpoint that matches the record the run wrote.
* ``clean_leftovers`` — what a killed attempt left in the run directory: its temporary
  files and folders, removed when the next attempt (holding the run's lock) starts.
* ``Tracker`` — wandb (offline unless ``WANDB_MODE`` or ``logger.mode`` says otherwise),
  files under the run directory, the run id saved in ``wandb_id.txt`` so a resumed run
  continues the same wandb run, grouped by ``logger.group`` or the multirun's sweep; a
  no-op with ``logger=none``. wandb writes its offline file from a helper process in
  32 KiB blocks, so a killed attempt's file holds a part of its history or nothing: an
  offline resumed run logs the kept history again from ``metrics.jsonl`` and, once it has
  finished, removes the earlier attempts' offline folders of the same run id, so its own
  folder holds the whole history once (``wandb sync`` it after the run ends).
* ``record_ray_session`` / ``stop_ray_leftovers`` — a run that starts Ray records Ray's
  session directory in ``ray_session.json``; the next attempt kills, by PID, the processes
  that still have files open in that directory (Ray's agents outlive a killed driver by
  minutes). Processes are never chosen by name: other Ray sessions may share the machine.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from agents.serving.bundle import sha256_file, write_atomic
from personarl import jsonio
from personarl.errors import ConfigError

__all__ = ["MetricsLog", "Checkpoints", "Tracker", "write_atomic", "clean_leftovers",
           "file_digests", "checkpoint_records", "recorded_digests", "read_json_object", "record_ray_session",
           "forget_ray_session", "stop_ray_leftovers", "ray_session_processes"]

log = logging.getLogger(__name__)

#: WANDB_MODE as the user set it before any run of this process (a run's own logger.mode
#: must not leak into the next run of a multirun)
_USER_WANDB_MODE = os.environ.get("WANDB_MODE")


class MetricsLog:
    """Append-only ``metrics.jsonl`` keyed by ``env_steps``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def rows(self) -> list[dict[str, Any]]:
        """Every row (lines that are not rows are skipped with a warning)."""
        return self._read().rows

    def _read(self) -> jsonio.JsonLines:
        """The file's rows: JSON objects with integer ``iteration`` and ``env_steps``; any
        other line is skipped (returned in ``skipped``) and named in a warning."""
        lines = jsonio.read_jsonl(self.path)
        bad = [n for n, r in zip(lines.numbers, lines.rows) if not _is_row(r)]
        if bad:
            raw = jsonio.raw_lines(self.path)
            lines.skipped = sorted(lines.skipped + [(n, raw[n - 1]) for n in bad])
            bad_set = set(bad)
            keep = [i for i, n in enumerate(lines.numbers) if n not in bad_set]
            lines.rows = [lines.rows[i] for i in keep]
            lines.numbers = [lines.numbers[i] for i in keep]
        if lines.skipped:
            log.warning(jsonio.skipped_message(self.path, lines.skipped, len(lines.rows)))
        return lines

    def truncate_after(self, iteration: int) -> int:
        """Keep rows up to ``iteration``; returns how many lines were dropped (lines that
        were not rows are appended, byte for byte, to ``metrics.jsonl.rejected``)."""
        lines = self._read()
        kept = [r for r in lines.rows if r["iteration"] <= iteration]
        if lines.skipped:
            with open(self.path.with_name(self.path.name + ".rejected"), "ab") as f:
                f.write(b"".join(line + b"\n" for _, line in lines.skipped))
                f.flush()
                os.fsync(f.fileno())
        write_atomic(self.path, "".join(jsonio.dumps(r) + "\n" for r in kept))
        return len(lines.rows) + len(lines.skipped) - len(kept)

    def append(self, row: Mapping[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(jsonio.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _is_row(row: Mapping[str, Any]) -> bool:
    return all(isinstance(row.get(k), int) and not isinstance(row.get(k), bool)
               for k in ("iteration", "env_steps"))


def clean_leftovers(run_dir: Path) -> list[Path]:
    """Remove what a killed attempt left in ``run_dir`` (call it holding the run's lock):
    ``checkpoints/.tmp_iter_*`` (a checkpoint being written) and ``.old_iter_*`` (one being
    replaced by a new save of the same iteration), ``.<name>.tmp`` files
    (``write_atomic``), and an export's ``.<bundle>.tmp-<pid>`` / ``.<bundle>.old-<pid>``
    folders whose process is gone (an ``experiments.export`` still running is left alone).
    Returns what was removed."""
    removed = []
    candidates = [*run_dir.glob("checkpoints/.tmp_iter_*"),
                  *run_dir.glob("checkpoints/.old_iter_*"), *run_dir.glob(".*.tmp")]
    for p in [*run_dir.glob(".*.tmp-*"), *run_dir.glob(".*.old-*")]:
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            candidates.append(p)
    for p in candidates:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    if removed:
        log.info("removed what an earlier attempt left: %s",
                 ", ".join(str(p.relative_to(run_dir)) for p in removed))
    return removed


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:                   # alive, someone else's
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:                           # no /proc: signal 0 is all we know
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def file_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder``, by POSIX path relative to it (sorted).

    Raises:
        ValueError: an entry that is neither a regular file nor a folder (a symlink, a
            device), which no checkpoint of ours holds.
    """
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink() or not (p.is_file() or p.is_dir()):
            raise ValueError(f"{p} is not a regular file or folder")
        if p.is_file():
            out[p.relative_to(folder).as_posix()] = sha256_file(p)
    return out


RAY_SESSION_FILE = "ray_session.json"


def record_ray_session(run_dir: Path, session_dir: str) -> None:
    """Note (in ``ray_session.json``) the Ray session this attempt started."""
    write_atomic(run_dir / RAY_SESSION_FILE, jsonio.dumps(dict(session_dir=session_dir)))


def forget_ray_session(run_dir: Path) -> None:
    """The attempt's Ray is shut down: nothing to clean up after it."""
    (run_dir / RAY_SESSION_FILE).unlink(missing_ok=True)


def stop_ray_leftovers(run_dir: Path, grace_s: float = 3.0) -> list[int]:
    """Kill the processes of the Ray session an earlier attempt of this run started and
    did not shut down (it was killed): those with a file open under the recorded session
    directory (``/proc/<pid>/fd``; Linux), SIGTERM first, SIGKILL after ``grace_s``.
    Returns their PIDs; removes the record."""
    record = run_dir / RAY_SESSION_FILE
    if not record.is_file():
        return []
    try:
        session = Path(jsonio.loads_strict(record.read_bytes())["session_dir"])
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("%s is unreadable (%s); not looking for its Ray processes", record, exc)
        record.unlink(missing_ok=True)
        return []
    # only what Ray names a session folder: an empty, relative or broad path would match
    # processes that are not ours
    if not (session.is_absolute() and session.name.startswith("session_")
            and len(session.parts) > 2 and session.is_dir() and not session.is_symlink()):
        log.warning("%s names %s, which is not a Ray session directory; not looking for "
                    "processes there", record, session)
        record.unlink(missing_ok=True)
        return []
    pids = ray_session_processes(session)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    for pid in ray_session_processes(session):       # still there, still that session's
        _signal(pid, signal.SIGKILL)
    if pids:
        log.info("stopped %d Ray processes an earlier attempt left (session %s): %s",
                 len(pids), session.name, pids)
    record.unlink(missing_ok=True)
    return pids


def ray_session_processes(session_dir: Path) -> list[int]:
    """PIDs of the processes (other than this one) with a file open under
    ``session_dir``; empty where ``/proc`` is not available."""
    session = str(Path(session_dir).resolve())
    found = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        pid = int(fd_dir.parent.name)
        if pid == os.getpid():
            continue
        try:
            targets = [os.readlink(fd) for fd in fd_dir.iterdir()]
        except OSError:                          # gone, or not ours to look at
            continue
        if any(t == session or t.startswith(session + "/") for t in targets):
            found.append(pid)
    return sorted(found)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, or a ``ConfigError`` naming the file."""
    try:
        value = jsonio.loads_strict(path.read_bytes())
    except ValueError as exc:
        raise ConfigError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path} holds {type(value).__name__}, not a JSON object")
    return value


def checkpoint_records(run: Any, run_file: Path) -> dict[str, dict[str, str]]:
    """``run.json``'s ``checkpoints``: name -> relative path -> SHA-256 (empty if absent).

    Raises:
        ConfigError: the records are not of that shape (naming the file).
    """
    records = run.get("checkpoints", {}) if isinstance(run, dict) else None
    if not (isinstance(records, dict) and all(
            isinstance(r, dict) and all(isinstance(f, str) and isinstance(d, str)
                                        for f, d in r.items()) for r in records.values())):
        raise ConfigError(f"{run_file}: 'checkpoints' must map each checkpoint's name to "
                          "{relative path: SHA-256}; the run's record is damaged")
    return records


def recorded_digests(run_file: Path, name: str) -> dict[str, str] | None:
    """The digests ``run_file`` recorded for checkpoint ``name``, or ``None``.

    Raises:
        ConfigError: ``run_file`` is not strict JSON or its records are malformed.
    """
    return checkpoint_records(read_json_object(run_file), run_file).get(name)


class Checkpoints:
    """Atomic, rotated checkpoints in ``root`` (absolute paths throughout), their files'
    digests recorded in ``run_file`` (the run's ``run.json``) when one is given."""

    def __init__(self, root: Path, keep: int, run_file: Path | None = None) -> None:
        self.root, self.keep = root.resolve(), keep
        self.run_file = run_file          # the folder is made by the first save

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        return sorted(p for p in self.root.glob("iter_*") if (p / "meta.json").exists())

    def latest(self) -> Path | None:
        done = self.complete()
        return done[-1] if done else None

    def save(self, write: Callable[[Path], None], meta: Mapping[str, Any]) -> Path:
        """``write(tmp_dir)`` fills a fresh folder; then ``meta.json``, then the rename."""
        final = self.root / f"iter_{int(meta['iteration']):06d}"
        tmp, old = self.root / f".tmp_{final.name}", self.root / f".old_{final.name}"
        for stale in (tmp, old):
            if stale.exists():
                shutil.rmtree(stale)
        tmp.mkdir(parents=True)
        write(tmp)
        write_atomic(tmp / "meta.json", jsonio.dumps(dict(meta), indent=2))
        if final.exists():                  # the same iteration saved again: set it aside
            os.replace(final, old)
        # recorded before the rename, forgotten after the removal: whenever it is killed,
        # every complete checkpoint on disk has its record
        self._record(add={final.name: file_digests(tmp)})
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        pruned = [p.name for p in self.complete()[:-self.keep]]    # the oldest beyond keep
        for name in pruned:
            shutil.rmtree(self.root / name, ignore_errors=True)
        self._record(drop=pruned)
        return final

    def _record(self, add: Mapping[str, Mapping[str, str]] | None = None,
                drop: list[str] | None = None) -> None:
        if self.run_file is None or not (add or drop):
            return
        run = jsonio.loads_strict(self.run_file.read_bytes())
        records = checkpoint_records(run, self.run_file)
        records = {k: v for k, v in records.items() if k not in (drop or [])}
        records.update(add or {})
        run["checkpoints"] = records
        write_atomic(self.run_file, jsonio.dumps(run, indent=2))

    def recorded(self, path: Path) -> dict[str, str] | None:
        """The digests ``run.json`` recorded for checkpoint ``path``, or ``None``.

        Raises:
            ConfigError: ``run.json`` is not strict JSON or its records are malformed.
        """
        if self.run_file is None or not self.run_file.is_file():
            return None
        return recorded_digests(self.run_file, Path(path).name)

    def verify(self, path: Path) -> list[str]:
        """What differs between checkpoint ``path`` and the digests recorded when it was
        saved (empty: it is, byte for byte, what this run wrote): files changed, missing or
        added, or no record at all."""
        want = self.recorded(path)
        if want is None:
            return [f"run.json holds no record of {Path(path).name} (a checkpoint this run "
                    "did not write, or one written before records were kept)"]
        try:
            have = file_digests(Path(path))
        except ValueError as exc:
            return [str(exc)]
        problems = [f"{f} was changed" for f in sorted(set(want) & set(have))
                    if want[f] != have[f]]
        problems += [f"{f} is missing" for f in sorted(set(want) - set(have))]
        problems += [f"{f} was added" for f in sorted(set(have) - set(want))]
        return problems

    @staticmethod
    def meta(path: Path) -> dict[str, Any]:
        """A checkpoint's ``meta.json`` (``ConfigError`` naming the file if it is damaged)."""
        return read_json_object(path / "meta.json")


class Tracker:
    """wandb behind three calls; ``logger.name`` other than ``wandb`` makes each a no-op.

    ``history``: on resume, the rows ``metrics.jsonl`` kept (up to the restored
    checkpoint); an offline run logs them first (``restored`` counts them) and, once it has
    finished, removes the earlier attempts' offline folders of this run id (``superseded``
    lists them).
    """

    def __init__(self, run_dir: Path, logger_cfg: Mapping[str, Any], config: Mapping[str, Any],
                 name: str, resume: bool, group: str | None = None,
                 history: list[Mapping[str, Any]] | None = None) -> None:
        self.run = None
        self.restored, self.superseded = 0, []
        if logger_cfg["name"] != "wandb":
            return
        import wandb

        os.environ["WANDB_MODE"] = _USER_WANDB_MODE or logger_cfg["mode"]  # the user's wins
        os.environ.setdefault("WANDB_SILENT", "true")
        id_file = run_dir / "wandb_id.txt"
        run_id = id_file.read_text().strip() if resume and id_file.exists() else None
        self.run = wandb.init(
            project=logger_cfg["project"], entity=logger_cfg.get("entity"),
            group=logger_cfg.get("group") or group, tags=list(logger_cfg.get("tags") or []),
            name=name, config=dict(config), dir=str(run_dir), id=run_id,
            resume="allow" if run_id else None, reinit="create_new")
        # env steps are the x-axis (wandb's own step must only grow, which a resumed run
        # that lost iterations after its checkpoint would violate)
        self.run.define_metric("env_steps")
        self.run.define_metric("*", step_metric="env_steps")
        write_atomic(id_file, self.run.id)
        if run_id and self.run.offline:
            for row in history or []:
                self.run.log(dict(row))
            self.restored = len(history or [])
            mine = Path(self.run.dir).resolve().parent
            self.superseded = [
                old for old in sorted((run_dir / "wandb").glob(
                    f"offline-run-*-{glob.escape(run_id)}"))
                if old.resolve() != mine and old.is_dir() and not old.is_symlink()]
            log.info("wandb: logged the %d kept rows of metrics.jsonl into the resumed "
                     "offline run", self.restored)

    def log(self, row: Mapping[str, Any]) -> None:
        if self.run is not None:
            self.run.log(dict(row))

    def summary(self, values: Mapping[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(dict(values))

    def finish(self) -> None:
        """End the wandb run; a resumed offline run then holds the whole history, and the
        earlier attempts' offline folders it supersedes are removed."""
        if self.run is not None:
            self.run.finish()
            self.run = None
            for old in self.superseded:
                shutil.rmtree(old, ignore_errors=True)
            if self.superseded:
                log.info("wandb: removed %d earlier attempts' offline folders (this run's "
                         "holds their history)", len(self.superseded))
