"""The README's journeys, run as written: served decisions to an offline evaluation report."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.readme import command

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("fastapi")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, server: subprocess.Popen, seconds: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert server.poll() is None, server.communicate()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the server did not become ready within {seconds} s")


@pytest.mark.slow
def test_served_decisions_become_an_ope_report_as_the_readme_says(tmp_path):
    """Serve with ε = 0.2 on 127.0.0.1, send 300 simulated users through HTTP with their
    feedback, stop the server, evaluate the log directory: episodes are rebuilt whole, the
    report names the env config and the exploration, and the recommended estimator of the
    served policy's value lies within 3 bootstrap SEs of the truth (seed 0)."""
    from envs import ROUTING_ID
    from tests.conftest import onnx_bundle

    pytest.importorskip("onnxruntime")
    # a router whose sessions last at most 5 decisions: greedy's importance weights stay
    # usable at ε = 0.2 (at 20 decisions they reach 1.2^20 ≈ 38)
    bundle = onnx_bundle(tmp_path / "bundle", ROUTING_ID, {"horizon": 5})
    port = free_port()
    env = dict(os.environ, PERSONARL_PII_KEY=secrets.token_hex(32), OMP_NUM_THREADS="1")
    work = tmp_path / "work"
    work.mkdir()
    fill = {"outputs/<date>/<time>/policy": bundle, "8000": port}
    server = subprocess.Popen(command("exploration.mode=epsilon exploration.epsilon=0.2",
                                      fill), cwd=work, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_ready(port, server)
        users = subprocess.run(command("experiments.simulate_users", {"8000": port},
                                       ["progress=false"]),
                               cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert users.returncode == 0, users.stderr
        assert users.stdout.startswith("300 simulated users")
    finally:
        server.send_signal(signal.SIGTERM)              # `kill %1`
        out, err = server.communicate(timeout=60)
    # uvicorn shuts down gracefully, then re-raises the signal: -15 is a clean stop
    assert server.returncode in (0, -signal.SIGTERM) and "Traceback" not in err, err
    assert not list((work / "decision_logs").glob("*/segment-*.jsonl"))   # rolled at stop
    served = [json.loads(line) for line in (work / "decision_logs" / "servings.jsonl")
              .read_text().splitlines()]
    assert served[0]["arms"][0]["env"] == {"id": ROUTING_ID, "version": 0, "config": {"horizon": 5}}

    run = subprocess.run(command("evaluate data=decision_logs",
                                 {"outputs/<date>/<time>/policy": bundle}), cwd=work, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = Path(re.search(r"report: (\S+)", run.stdout).group(1))
    summary = json.loads((report.parent / "summary.json").read_text())
    meta = summary["data"]["meta"]
    assert meta["episodes"] == 300 and meta["not_reconstructed"] == {}
    assert meta["env_config"] == {"horizon": 5} and meta["epsilon"] == 0.2
    text = report.read_text()
    assert "epsilon exploration (ε = 0.2)" in text and "env config: horizon = 5" in text
    mine = summary["policies"][str(bundle)]
    chosen = mine["recommendation"]["estimator"]
    assert chosen is not None, mine["recommendation"]
    r, truth = mine["estimates"][chosen], mine["truth"]["value"]
    assert abs(r["estimate"] - truth) <= 3 * r["se"], (chosen, r, truth)
