"""Train an agent, checkpoint it, evaluate it against the baselines, write the report.

    python -m experiments.train                                  # AgentRouting + RLlib PPO
    python -m experiments.train experiment=intervention          # an overlay (configs/experiment)
    python -m experiments.train agent=sb3_ppo logger=none budget=300000
    python -m experiments.train hydra.run.dir=<old run dir> resume=true

What the run writes and how it resumes: ``experiments.job``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")      # before torch/Ray are imported

from pathlib import Path  # noqa: E402

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from experiments.cli import check_command_line, run_app  # noqa: E402
from experiments.job import train  # noqa: E402
from experiments.schema import register_configs  # noqa: E402

__all__ = ["main"]

register_configs()


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: run, then print where the report is."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    group = Path(hydra_cfg.sweep.dir).name if hydra_cfg.mode == RunMode.MULTIRUN else None
    result = run_app("train", cfg, lambda: train(cfg, run_dir, wandb_group=group), run_dir)
    pop = next(iter(result["populations"].values()))
    for name, p in pop["policies"].items():
        print(f"{name:>16}: {p['mean']:.4f} [{p['ci_low']:.4f}, {p['ci_high']:.4f}]")
    if result["bundle"]:
        print(f"policy bundle: {result['bundle']}")
    print(f"report: {result['report']}")


if __name__ == "__main__":
    check_command_line("train", "train")
    main()
