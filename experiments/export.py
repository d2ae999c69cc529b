"""Export a training checkpoint to a policy bundle (``model.onnx`` + ``policy.json``).

    python -m experiments.export checkpoint=outputs/<date>/<time>/checkpoints/iter_000214
    python -m experiments.export checkpoint=<...> out=bundles/routing-v1 overwrite=true

The checkpoint must come from ``experiments.train`` with ``agent=ppo`` (RLlib) or
``agent=sb3_ppo``: its run directory's ``run.json`` says which env and config it was trained
with, and the network is rebuilt from that config and loaded from the checkpoint's
``policy_weights.pt`` (``torch.load(weights_only=True)``, its SHA-256 checked against the
run's record) — the framework's pickled files are never opened. ``out`` defaults to the run
directory's ``policy/`` (where ``experiments.train`` puts the final policy's bundle).
Mistakes exit with status 2 and a message, writing nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from agents.serving.bundle import BundleError
from agents.learners.base import WEIGHTS_FILE
from experiments.cli import check_command_line, run_app
from experiments.schema import register_configs
from experiments.run_files import read_json_object, recorded_digests
from experiments.wiring import env_kwargs
from personarl.errors import ConfigError

__all__ = ["export_checkpoint", "main"]

log = logging.getLogger(__name__)


register_configs()


def export_checkpoint(checkpoint: Path, out: Path | None = None, overwrite: bool = False
                      ) -> Path:
    """Write the bundle of the policy in ``checkpoint``; returns the bundle directory.

    Raises:
        ConfigError: the path is not a complete checkpoint of an ``experiments.train`` run.
        BundleError: the agent has no bundle format, ``out`` exists, or the export failed
            its parity check.
    """
    from agents.learners.export import actor_from_checkpoint, write_bundle

    checkpoint = Path(checkpoint).resolve()
    if not (checkpoint / "meta.json").is_file():
        raise ConfigError(f"checkpoint={str(checkpoint)!r} is not a complete training "
                          "checkpoint (no meta.json); use one of <run dir>/checkpoints/iter_*")
    run_dir = checkpoint.parent.parent
    run_file = run_dir / "run.json"
    if not run_file.is_file():
        raise ConfigError(f"checkpoint={str(checkpoint)!r} is not inside a training run "
                          f"directory (no {run_file})")
    out = Path(out) if out else run_dir / "policy"
    if out.exists() and not overwrite:           # before the slow part
        raise BundleError(f"{out} already exists; choose another out= or pass overwrite=true")
    run = read_json_object(run_file)
    if not (isinstance(run.get("config"), dict) and isinstance(run.get("config_hash"), str)):
        raise ConfigError(f"{run_file} has no config and config_hash; it is not the run.json "
                          "experiments.train writes")
    cfg = OmegaConf.create(run["config"])
    env_id, kwargs = env_kwargs(cfg)
    # a weights file that differs from the one the run recorded is refused (corrupted or
    # swapped); without a record it is exported as it is — read without unpickling either way
    recorded = recorded_digests(run_file, checkpoint.name) or {}
    actor, source = actor_from_checkpoint(
        checkpoint, OmegaConf.to_container(cfg.agent, resolve=True), env_id, kwargs,
        expected_sha256=recorded.get(WEIGHTS_FILE))
    training = _training_record(run_dir, source["iteration"])
    return write_bundle(actor, out, env_id=env_id,
                        env_config=kwargs, source=source, training=training,
                        config_hash=run["config_hash"], overwrite=overwrite, seed=cfg.seed)


def _training_record(run_dir: Path, iteration: int | None) -> dict[str, Any]:
    """The last logged metrics up to the checkpoint's iteration and, when the run's final
    evaluation is of this checkpoint, the trained policy's evaluation per population."""
    from experiments.run_files import MetricsLog

    rows = [r for r in MetricsLog(run_dir / "metrics.jsonl").rows()
            if iteration is None or r["iteration"] <= iteration]
    record: dict[str, Any] = {}
    if rows:
        record["metrics"] = {k: v for k, v in rows[-1].items()
                             if k in ("iteration", "env_steps") or k.startswith(("charts/",
                                                                                  "losses/"))}
    summary_file = run_dir / "summary.json"
    if summary_file.is_file():
        summary = read_json_object(summary_file)
        if summary.get("meta", {}).get("iterations") == iteration:
            record["evaluation"] = {
                name: dict(pop["policies"][pop["trained"]], best_baseline=pop["best_baseline"])
                for name, pop in summary["populations"].items()}
    return record


@hydra.main(version_base="1.3", config_path="../configs", config_name="export")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    path = run_app("export", cfg, lambda: export_checkpoint(
        Path(cfg.checkpoint), cfg.out and Path(cfg.out), cfg.overwrite), run_dir)
    print(f"bundle: {path}")


if __name__ == "__main__":
    check_command_line("export", "export")
    main()
