"""The files a training run keeps in its run directory, written so a crash loses little.

* ``MetricsLog`` — ``metrics.jsonl``: one JSON object per iteration, flushed and fsynced;
  on resume, rows after the restored checkpoint (and a half-written last line) are dropped
  by rewriting the file atomically.
* ``Checkpoints`` — ``checkpoints/iter_NNNNNN/``: each written into a temporary folder and
  renamed when complete (``meta.json`` last), the newest ``keep`` kept.
* ``Tracker`` — wandb (offline unless ``WANDB_MODE`` or ``logger.mode`` says otherwise),
  files under the run directory, the run id saved in ``wandb_id.txt`` so a resumed run
  continues the same wandb run, grouped by ``logger.group`` or the multirun's sweep; a
  no-op with ``logger=none``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping

from agents.bundle import write_atomic

__all__ = ["MetricsLog", "Checkpoints", "Tracker", "write_atomic"]

#: WANDB_MODE as the user set it before any run of this process (a run's own logger.mode
#: must not leak into the next run of a multirun)
_USER_WANDB_MODE = os.environ.get("WANDB_MODE")


class MetricsLog:
    """Append-only ``metrics.jsonl`` keyed by ``env_steps``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def rows(self) -> list[dict[str, Any]]:
        """Every complete row (a torn last line is skipped)."""
        return self._parse()[0]

    def _parse(self) -> tuple[list[dict[str, Any]], int]:
        """Complete rows and the number of lines in the file."""
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break                        # a half-written last line from a crash
        return out, len(lines)

    def truncate_after(self, iteration: int) -> int:
        """Keep rows up to ``iteration``; returns how many lines were dropped."""
        rows, lines = self._parse()
        kept = [r for r in rows if r["iteration"] <= iteration]
        write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        return lines - len(kept)

    def append(self, row: Mapping[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


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
        write_atomic(tmp / "meta.json", json.dumps(dict(meta), indent=2))
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
