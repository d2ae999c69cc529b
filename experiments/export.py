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

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from experiments.cli import check_command_line, run_app
from experiments.job import export_checkpoint
from experiments.schema import register_configs

__all__ = ["main"]

register_configs()


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
