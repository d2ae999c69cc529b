"""The one exit path of the entry points (``experiments.cli``): a user's mistake — found
while Hydra composes the config or by the app — exits 2 with one line naming it and no
traceback, and leaves no run directory behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: apps that are commands, not runs: they write no run directory (``hydra.run.dir: .``)
COMMANDS = ("report", "registry")

CASES = [
    # app, arguments, what the one line names (the whole matrix of apps × kinds of bad
    # input runs in-process in tests/test_bad_input.py; these run as real processes)
    ("export", [], "cannot export: missing required argument(s): checkpoint=<value>"),
    ("train", ["agent.lr=-1", "logger=none"], "cannot train: agent.lr=-1"),
    # what Hydra finds while composing the config: a misspelt option lists the real ones
    ("train", ["env=routng"], "cannot train: In 'train': Could not find 'env/routng'; valid: "
                              "adaptation, intervention, routing"),
    ("registry", ["colour=red"], "cannot use the registry: Could not override 'colour'"),
]


@pytest.mark.parametrize("app,args,line", CASES, ids=[f"{a}-{'-'.join(x) or 'missing'}"[:40]
                                                      for a, x, _ in CASES])
def test_a_users_mistake_exits_2_with_one_line_and_leaves_no_run_directory(
        app, args, line, tmp_path):
    run_dir = tmp_path / "run"
    is_run = app not in COMMANDS                   # a run, with a run directory of its own
    out = subprocess.run([sys.executable, "-m", f"experiments.{app}", *args,
                          *[f"hydra.run.dir={run_dir}"] * is_run], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [x for x in (out.stdout + out.stderr).splitlines() if "cannot " in x]
    assert len(errors) == 1 and line in errors[0], out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert not run_dir.exists()                    # Hydra's directory went with the failure


def test_a_directory_holding_more_than_hydras_files_is_kept(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text("")     # a run's own file: not ours to remove
    out = subprocess.run([sys.executable, "-m", "experiments.export",
                          f"hydra.run.dir={run_dir}"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and (run_dir / "metrics.jsonl").exists()


def test_entry_points_import_library_code_only():
    """No ``python -m experiments.<app>`` module imports another one (their shared code lives
    in library modules: ``experiments.job``, ``experiments.wiring``, …)."""
    import ast

    modules = {p.stem: ast.parse(p.read_text()) for p in (ROOT / "experiments").glob("*.py")}
    entry = {name for name, tree in modules.items()
             if any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)
                    for n in tree.body)}
    assert {"train", "sweep", "collect", "evaluate", "report", "export", "serve",
            "registry"} <= entry
    found = []
    for name in entry:
        for node in ast.walk(modules[name]):
            targets = ([node.module] if isinstance(node, ast.ImportFrom) and node.module else
                       [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            found += [(name, t) for t in targets
                      if t.startswith("experiments.") and t.split(".")[1] in entry]
    assert found == []
