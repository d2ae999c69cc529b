"""The files a training run keeps in its run directory, written so a crash loses little.

* ``MetricsLog`` — ``metrics.jsonl``: one strict JSON object per iteration (a non-finite
  metric is ``null``), flushed and fsynced; on resume, rows after the restored checkpoint
  are dropped by rewriting the file atomically. A line that is not a row (a half-written
  last line, a corrupt line in the middle) never hides the rows after it: it is skipped
  with a warning naming its number, and a rewrite keeps it in ``metrics.jsonl.rejected``.
* ``Checkpoints`` — ``checkpoints/iter_NNNNNN/``: each written into a temporary folder and
  renamed when complete (``meta.json`` last), the newest ``keep`` kept.
* ``clean_leftovers`` — what a killed attempt left in the run directory: its temporary
  files and folders, removed when the next attempt (holding the run's lock) starts.
* ``Tracker`` — wandb (offline unless ``WANDB_MODE`` or ``logger.mode`` says otherwise),
  files under the run directory, the run id saved in ``wandb_id.txt`` so a resumed run
  continues the same wandb run, grouped by ``logger.group`` or the multirun's sweep; a
  no-op with ``logger=none``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping

from agents.bundle import write_atomic
from personarl import jsonio

__all__ = ["MetricsLog", "Checkpoints", "Tracker", "write_atomic", "clean_leftovers"]

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
    ``checkpoints/.tmp_iter_*`` (a checkpoint being written), ``.<name>.tmp`` files
    (``write_atomic``), and an export's ``.<bundle>.tmp-<pid>`` / ``.<bundle>.old-<pid>``
    folders whose process is gone (an ``experiments.export`` still running is left alone).
    Returns what was removed."""
    removed = []
    candidates = [*run_dir.glob("checkpoints/.tmp_iter_*"), *run_dir.glob(".*.tmp")]
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
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:                   # alive, someone else's
        return True
    return True


class Checkpoints:
    """Atomic, rotated checkpoints in ``root`` (absolute paths throughout)."""

    def __init__(self, root: Path, keep: int) -> None:
        self.root, self.keep = root.resolve(), keep
        self.root.mkdir(parents=True, exist_ok=True)

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        return sorted(p for p in self.root.glob("iter_*") if (p / "meta.json").exists())

    def latest(self) -> Path | None:
        done = self.complete()
        return done[-1] if done else None

    def save(self, write: Callable[[Path], None], meta: Mapping[str, Any]) -> Path:
        """``write(tmp_dir)`` fills a fresh folder; then ``meta.json``, then the rename."""
        final = self.root / f"iter_{int(meta['iteration']):06d}"
        tmp = self.root / f".tmp_{final.name}"
        for stale in (tmp, final):
            if stale.exists():
                shutil.rmtree(stale)
        tmp.mkdir()
        write(tmp)
        write_atomic(tmp / "meta.json", jsonio.dumps(dict(meta), indent=2))
        os.replace(tmp, final)
        for old in self.complete()[:-self.keep]:
            shutil.rmtree(old)
        return final

    @staticmethod
    def meta(path: Path) -> dict[str, Any]:
        return json.loads((path / "meta.json").read_text())


class Tracker:
    """wandb behind three calls; ``enabled=False`` makes every call a no-op."""

    def __init__(self, run_dir: Path, logger_cfg: Mapping[str, Any], config: Mapping[str, Any],
                 name: str, resume: bool, group: str | None = None) -> None:
        self.run = None
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

    def log(self, row: Mapping[str, Any]) -> None:
        if self.run is not None:
            self.run.log(dict(row))

    def summary(self, values: Mapping[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(dict(values))

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
