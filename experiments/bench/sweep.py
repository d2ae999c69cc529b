"""The sweep benchmark: an 8-trial Optuna/ASHA sweep on AgentRouting with small budgets,
the top-2 re-runs and the report, timed end to end — twice with the same seed, to check
that it repeats itself (same trials, same winner).

Each sweep is ``python -m experiments.sweep sweep=<name> budget=<budget> ...`` in a fresh
process (wall clock from launch to ``sweep.json``), then ``python -m experiments.report``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run(sweep: str = "routing_small", budget: int = 200_000, trials: int = 8,
        repeats: int = 2) -> dict[str, Any]:
    """Time ``repeats`` identical sweeps; prints and returns the figures."""
    where = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    runs = []
    for i in range(repeats):
        out = where / f"sweep{i}"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "experiments.sweep", f"sweep={sweep}",
                        f"budget={budget}", f"sweep.num_samples={trials}", "sweep.top_k=2",
                        "eval.episodes=2048", "eval.baselines=[random]",
                        f"hydra.run.dir={out}", f"ray.temp_dir=/tmp/ray-bs{os.getpid()}"],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
        sweep_s = time.perf_counter() - start
        subprocess.run([sys.executable, "-m", "experiments.report", str(out)], cwd=ROOT,
                       check=True, stdout=subprocess.DEVNULL)
        total_s = time.perf_counter() - start
        result = json.loads((out / "sweep.json").read_text())
        runs.append(dict(dir=str(out), sweep_s=sweep_s, with_report_s=total_s,
                         trained=sum(t["finished"] for t in result["trials"]),
                         stopped=sum(not t["finished"] for t in result["trials"]),
                         reruns=len(result["reruns"]),
                         objectives=[t["objective"] for t in result["trials"]],
                         winner=result["winner"]))
        print(f"sweep {i + 1}: {total_s:.0f} s with the report ({sweep_s:.0f} s sweep); "
              f"{runs[-1]['trained']} trials trained, {runs[-1]['stopped']} stopped early, "
              f"{runs[-1]['reruns']} re-runs; winner {result['winner']['config']} -> "
              f"{result['winner']['mean_eval_return']:.4f}")
    same = all(r["winner"]["config"] == runs[0]["winner"]["config"]
               and r["objectives"] == runs[0]["objectives"] for r in runs)
    print(f"same trials and winner in all {repeats} sweeps: {same}")
    return dict(sweep=sweep, budget=budget, trials=trials, runs=runs, repeatable=same)
