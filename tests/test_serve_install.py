"""The serving wing stands alone: ``pip install '.[serve,dev]'`` into an empty virtualenv —
no Ray, no torch — and the server's and the loader's tests pass there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: what a checkout holds beside the source (.gitignore's top-level entries and .git)
_ROOT_ONLY = {".git", ".venv", "build", "outputs", "multirun", "wandb", "bundles", "registry",
              "decision_logs", ".pytest_cache"}


def _not_source(folder: str, names: list[str]) -> list[str]:
    top = Path(folder) == ROOT
    return [n for n in names if (top and n in _ROOT_ONLY) or n == "__pycache__"
            or n.endswith(".egg-info")]


@pytest.mark.slow
def test_the_serve_extra_alone_runs_the_serving_tests(tmp_path):
    source = tmp_path / "source"         # a copy: building a wheel writes build/ beside it
    shutil.copytree(ROOT, source, ignore=_not_source)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         f"{source}[serve,dev]"], capture_output=True, text=True, timeout=900, env=env)
    assert install.returncode == 0, install.stderr[-3000:]

    # the installed package (not this checkout) is what a fresh interpreter finds, and the
    # heavy side of the project is absent
    probe = subprocess.run(
        [python, "-c", "import importlib.util as u, agents.serving.server, experiments.serve;"
         "print(agents.serving.server.__file__);"
         "print([m for m in ('torch', 'ray', 'sklearn') if u.find_spec(m)])"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert probe.returncode == 0, probe.stderr[-3000:]
    where, heavy = probe.stdout.splitlines()
    assert where.startswith(str(venv)) and heavy == "[]"

    tests = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/test_server.py", "tests/test_serving.py"],
        cwd=source, capture_output=True, text=True, timeout=900,
        env=dict(env, OMP_NUM_THREADS="1"))
    summary = tests.stdout.strip().splitlines()[-1] if tests.stdout.strip() else ""
    assert tests.returncode == 0, tests.stdout[-4000:] + tests.stderr[-2000:]
    assert " passed" in summary and "error" not in summary, summary
