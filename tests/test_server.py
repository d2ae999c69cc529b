"""The HTTP server, traffic splits and decision logs: endpoints, 4xx for every malformed
request, the API key, metrics, propensities under splits, crash-safe logs."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from agents.serving.decision_log import DataWarning, DecisionLog, read_log  # noqa: E402
from agents.serving.server import ServerSettings, create_app  # noqa: E402
from agents.serving.loader import load_policy  # noqa: E402
from agents.serving.exploration import Exploration  # noqa: E402
from agents.serving.traffic import Arm, Decider  # noqa: E402
from personarl.identifiers import Pseudonymiser  # noqa: E402

OBS = [0.5] * 34


def arms(bundles, seed=0):
    return (Arm("primary", "v1", load_policy(bundles["discrete"], seed=seed)),
            Arm("candidate", "v2", load_policy(bundles["discrete"], seed=seed + 1)))


def client(decider, tmp_path, **settings):
    app = create_app(decider, ServerSettings(log_dir=tmp_path / "logs", **settings))
    return TestClient(app, raise_server_exceptions=False)


def test_act_batch_feedback_and_joined_logs(tiny_bundles, tmp_path):
    primary, _ = arms(tiny_bundles)
    decider = Decider(primary, exploration="sample", seed=0)
    with client(decider, tmp_path, segment_rows=3) as c:
        one = c.post("/v1/act", json={"observation": OBS, "user_id": "u1", "episode_id": "e1",
                                      "step": 0})
        assert one.status_code == 200, one.text
        d = one.json()
        probs = primary.policy.action_probs(np.array(OBS))
        assert d["action_name"] == f"agent_{d['action']}" and d["version"] == "v1"
        assert d["propensity"] == pytest.approx(probs[d["action"]])
        batch = c.post("/v1/act/batch", json={"observations": [OBS] * 4,
                                               "user_ids": ["a", "b", None, "c"]})
        assert batch.status_code == 200 and len(batch.json()["decisions"]) == 4
        assert c.post("/v1/act", json={"observation": OBS}).status_code == 200   # 6th row
        fb = c.post("/v1/feedback", json={"decision_id": d["decision_id"], "reward": 0.7,
                                          "done": True, "signals": {"rating": 4.0}})
        assert fb.status_code == 200 and fb.json()["accepted"]
        assert c.get("/v1/policy").json()["bundles"]["primary"]["env"]["id"] == \
            "personarl/AgentRouting-v0"
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").status_code == 200
        metrics = c.get("/metrics").text
        assert 'personarl_requests_total{endpoint="/v1/act",status="200"} 2.0' in metrics
        assert 'personarl_decisions_total{action="agent_' in metrics
        assert "personarl_request_seconds_bucket" in metrics
    decisions = read_log(tmp_path / "logs", "decisions").to_pylist()     # rolled on close
    assert len(decisions) == 6 and len({r["decision_id"] for r in decisions}) == 6
    first = decisions[0]
    assert first["decision_id"] == d["decision_id"]
    assert first["episode_id"] == Pseudonymiser.from_env()("e1")          # never "e1"
    assert first["step"] == 0 and first["exploration"] == "sample"
    assert np.allclose(first["action_probs"], probs) and len(first["observation"]) == 34
    feedback = read_log(tmp_path / "logs", "feedback").to_pylist()
    assert feedback[0]["decision_id"] == d["decision_id"] and feedback[0]["reward"] == 0.7
    assert json.loads(feedback[0]["signals"]) == {"rating": 4.0}
    # 5 rows reached segment_rows=3 and were rolled; the 6th was rolled on shutdown
    assert sorted(p.name for p in (tmp_path / "logs" / "decisions").iterdir()) == [
        "part-000001.parquet", "part-000002.parquet", "writer.lock"]


@pytest.mark.parametrize("path, body, status, message", [
    ("/v1/act", {"observation": OBS[:3]}, 422, "at least 34"),
    ("/v1/act", {"observation": [2.0] * 34}, 422, "less than or equal to 1"),
    ("/v1/act", {"observation": ["x"] * 34}, 422, "valid number"),
    ("/v1/act", {"observation": OBS, "colour": "red"}, 422, "Extra inputs"),
    ("/v1/act", {}, 422, "Field required"),
    ("/v1/act/batch", {"observations": []}, 422, "at least 1"),
    ("/v1/act/batch", {"observations": [OBS] * 2, "user_ids": ["a"]}, 422,
     "user_ids has 1 entries for 2 observations"),
    ("/v1/feedback", {"decision_id": "nope", "reward": 1.0}, 404, "unknown decision_id"),
    ("/v1/feedback", {"decision_id": "x", "reward": "high"}, 422, "valid number"),
])
def test_malformed_requests_get_a_4xx_with_a_message(tiny_bundles, tmp_path, path, body,
                                                      status, message):
    with client(Decider(arms(tiny_bundles)[0]), tmp_path) as c:
        r = c.post(path, json=body)
        assert r.status_code == status
        assert message in r.text
        assert c.post(path, content=b"{not json", headers={"content-type":
                                                            "application/json"}).status_code == 422
        assert c.get("/healthz").status_code == 200


def test_nan_and_oversized_bodies(tiny_bundles, tmp_path):
    with client(Decider(arms(tiny_bundles)[0]), tmp_path, max_body_bytes=4096) as c:
        nan = '{"observation": [' + ", ".join(["NaN"] + ["0.5"] * 33) + "]}"
        r = c.post("/v1/act", content=nan, headers={"content-type": "application/json"})
        assert r.status_code == 422 and "finite" in r.text
        r = c.post("/v1/act", content=b"[" + b"0.5," * 5000 + b"0.5]",
                   headers={"content-type": "application/json"})
        assert r.status_code == 413 and "4096" in r.text
        assert 'kind="too_large"' in c.get("/metrics").text


def test_api_key(tiny_bundles, tmp_path):
    with client(Decider(arms(tiny_bundles)[0]), tmp_path, api_key="s3cret") as c:
        assert c.post("/v1/act", json={"observation": OBS}).status_code == 401
        assert c.post("/v1/act", json={"observation": OBS},
                      headers={"X-API-Key": "wrong"}).status_code == 401
        assert c.post("/v1/act", json={"observation": OBS},
                      headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/metrics").status_code == 401
        assert c.get("/healthz").status_code == 200          # probes need no key


def test_canary_propensities_are_the_mixture_and_assignment_is_sticky(tiny_bundles):
    primary, candidate = arms(tiny_bundles)
    eps = Exploration("epsilon", epsilon=0.2)
    decider = Decider(primary, candidate, mode="canary", share=0.25, exploration=eps, seed=0)
    x = np.random.default_rng(0).random((2000, 34), dtype=np.float32)
    users = [f"user{i}" for i in range(2000)]
    d = decider.decide(x, users)
    served = np.array(d.arm) == "candidate"
    assert 0.22 < served.mean() < 0.28
    assert np.array_equal(decider.assign(users), served)              # sticky per user
    p = primary.policy.action_probs(x)
    q = candidate.policy.action_probs(x)
    mix = 0.75 * eps.probs(p) + 0.25 * eps.probs(q)
    rows = np.arange(len(x))
    assert np.allclose(d.action_probs, mix)
    assert np.allclose(d.propensity, mix[rows, d.action])
    own = np.where(served[:, None], eps.probs(q), eps.probs(p))
    assert np.allclose(d.arm_propensity, own[rows, d.action])


def test_shadow_decides_but_never_serves(tiny_bundles, tmp_path):
    primary, candidate = arms(tiny_bundles)
    candidate.name = "shadow"
    with client(Decider(primary, candidate, mode="shadow"), tmp_path) as c:
        ids = [c.post("/v1/act", json={"observation": OBS}).json() for _ in range(3)]
    assert {d["arm"] for d in ids} == {"primary"}
    shadow = read_log(tmp_path / "logs", "shadow").to_pylist()
    assert [r["decision_id"] for r in shadow] == [d["decision_id"] for d in ids]
    assert {r["version"] for r in shadow} == {"v2"}


def test_decider_refuses_bad_settings(tiny_bundles):
    primary, candidate = arms(tiny_bundles)
    cont = Arm("candidate", "c", load_policy(tiny_bundles["continuous"]))
    with pytest.raises(ValueError, match="needs a candidate"):
        Decider(primary, mode="canary", share=0.1)
    with pytest.raises(ValueError, match="share=1.5"):
        Decider(primary, candidate, mode="ab", share=1.5)
    with pytest.raises(ValueError, match="AgentRouting-v0 and the candidate bundle for"):
        Decider(primary, cont, mode="ab", share=0.5)
    with pytest.raises(ValueError, match="epsilon' is for discrete"):
        Decider(cont, exploration=Exploration("epsilon", epsilon=0.1))


def test_continuous_sampling_logs_gaussian_densities(tiny_bundles):
    policy = load_policy(tiny_bundles["continuous"], seed=0)
    x = np.random.default_rng(0).random((5, 33), dtype=np.float32)
    greedy = Decider(Arm("primary", "c", policy)).decide(x, [None] * 5)
    assert greedy.propensity == [None] * 5
    assert np.allclose(greedy.action, np.clip(policy.gaussian(x)[0], 0, 1))
    sampled = Decider(Arm("primary", "c", policy), exploration="sample", seed=1).decide(
        x, [None] * 5)
    assert all(p > 0 for p in sampled.propensity)


def crash(log: DecisionLog) -> None:
    """What kill -9 does to a writer: its files are closed, nothing is rolled, and the OS
    frees its lock."""
    if log._file is not None:
        log._file.close()
    log._lock_file.close()


def test_decision_log_recovers_after_a_crash(tmp_path):
    log = DecisionLog(tmp_path, "feedback", segment_rows=100)
    log.append([dict(decision_id=f"d{i}", time=1.0, reward=float(i), done=False,
                     signals="{}") for i in range(3)])
    segment = next((tmp_path / "feedback").glob("segment-*.jsonl"))
    with open(segment, "a") as f:
        f.write('{"decision_id": "torn", "rew')                     # killed mid-line
    crash(log)
    with pytest.warns(DataWarning, match="skipped 1 line.*line 4"):
        assert [r["decision_id"] for r in read_log(tmp_path, "feedback").to_pylist()] == \
            ["d0", "d1", "d2"]
    with pytest.warns(DataWarning, match="line 4"):
        reopened = DecisionLog(tmp_path, "feedback")
    assert (tmp_path / "feedback" / "rejected-000001.jsonl").read_text() == \
        '{"decision_id": "torn", "rew\n'                              # kept, not deleted
    assert not list((tmp_path / "feedback").glob("segment-*"))
    # a crash between writing the part and deleting the segment: never rolled twice
    (tmp_path / "feedback" / "segment-000001.jsonl").write_text(segment.name)
    crash(reopened)
    reopened = DecisionLog(tmp_path, "feedback")
    rows = read_log(tmp_path, "feedback").to_pylist()
    assert [r["decision_id"] for r in rows] == ["d0", "d1", "d2"]
    reopened.append([dict(decision_id="d3", time=2.0, reward=3.0, done=True, signals="{}")])
    reopened.close()
    assert [r["decision_id"] for r in read_log(tmp_path, "feedback").to_pylist()] == \
        ["d0", "d1", "d2", "d3"]
    with pytest.raises(ValueError, match="valid: \\['decisions', 'feedback', 'shadow'\\]"):
        DecisionLog(tmp_path, "outcomes")


def test_serve_command_end_to_end_and_its_refusals(tiny_bundles, tmp_path):
    import os
    import shutil
    import signal
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    import httpx

    from tests.readme import command

    root = Path(__file__).resolve().parents[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bundle = {"outputs/<date>/<time>/policy": tiny_bundles["discrete"]}
    cmd = [sys.executable, "-m", "experiments.serve", f"bundle={tiny_bundles['discrete']}"]
    no_key = {k: v for k, v in os.environ.items() if k != "PERSONARL_PII_KEY"}
    # without PERSONARL_PII_KEY the server starts only if identifiers are never written (the
    # README's line)
    server = subprocess.Popen(command("log.user_id=drop", bundle, [
        f"port={port}", f"hydra.run.dir={tmp_path / 'run'}", "exploration.mode=sample"]),
        cwd=root, env=no_key, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.time() < deadline and server.poll() is None, server.stderr.read()
                time.sleep(0.1)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/act", json={
            "observation": OBS, "user_id": "alice@example.com", "episode_id": "e-alice"})
        assert r.status_code == 200 and 0 < r.json()["propensity"] <= 1
        # a second server on the same log directory is refused, naming the holder
        second = subprocess.run(command("log_dir=decision_logs$", {
            **bundle, "port=8000": "port=0", "decision_logs": tmp_path / "run" / "decision_logs"},
            [f"hydra.run.dir={tmp_path / 'second'}"]), cwd=root, capture_output=True, text=True,
            timeout=60)
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"is being written by pid {server.pid}" in second.stdout + second.stderr
    finally:
        server.send_signal(signal.SIGTERM)                 # graceful: logs rolled
        server.wait(timeout=30)
    rows = read_log(tmp_path / "run" / "decision_logs", "decisions").to_pylist()
    assert [row["decision_id"] for row in rows] == [r.json()["decision_id"]]
    assert rows[0]["user_id"] is None and rows[0]["episode_id"] is None
    assert list((tmp_path / "run" / "decision_logs" / "decisions").glob("part-*.parquet"))

    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_bundles["discrete"], tampered)
    data = (tampered / "model.onnx").read_bytes()
    (tampered / "model.onnx").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    for args, env, message in (
            (cmd[:3] + [f"bundle={tampered}"], None, "does not match the manifest"),
            (cmd[:4] + ["traffic.mode=canary"], None, "needs traffic.candidate"),
            (cmd[:4] + ["exploration.mode=boltzmann"], None, "valid: ['greedy'"),
            (cmd[:3], None, "exactly one of bundle"),
            (cmd[:4], no_key, "PERSONARL_PII_KEY is not set"),
            (cmd[:4] + ["log.user_id=plain"], None, "log.user_id='plain'; valid: ['hash', "),
            (cmd[:4], dict(os.environ, PERSONARL_API_KEY="clé"),
             "PERSONARL_API_KEY has a character at position 2 that is not printable ASCII")):
        out = subprocess.run(args + [f"hydra.run.dir={tmp_path / 'bad'}"], cwd=root, env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and message in out.stdout + out.stderr, (args, out.stdout)


# ---------------------------------------------------------------- issue 14: one test per kind
def test_one_writer_per_log_directory(tmp_path):
    from agents.serving.decision_log import LogInUseError

    first = DecisionLog(tmp_path, "feedback", segment_rows=5)
    first.append([dict(decision_id=f"d{i}", reward=1.0) for i in range(3)])
    with pytest.raises(LogInUseError, match=r"is being written by pid \d+ on .* one writer"):
        DecisionLog(tmp_path, "feedback", segment_rows=5)
    first.append([dict(decision_id=f"d{i}", reward=1.0) for i in range(3, 13)])
    first.close()                                             # the refused one took nothing
    assert [r["decision_id"] for r in read_log(tmp_path, "feedback").to_pylist()] == \
        [f"d{i}" for i in range(13)]
    DecisionLog(tmp_path, "feedback").close()                 # the lock is free again


def test_rolls_run_off_the_request_path_and_survive_a_removed_segment(tmp_path, monkeypatch):
    import threading

    log = DecisionLog(tmp_path, "feedback", segment_rows=2)
    release, roll = threading.Event(), DecisionLog._roll

    def slow_roll(self, segment, handle=None):
        release.wait(10)
        roll(self, segment, handle)

    monkeypatch.setattr(DecisionLog, "_roll", slow_roll)
    log.append([dict(decision_id="a", reward=1.0), dict(decision_id="b", reward=1.0)])
    # the segment is full and queued; the append returned while its roll waits
    segment = tmp_path / "feedback" / "segment-000001.jsonl"
    segment.unlink()                                 # removed from the directory meanwhile
    log.append([dict(decision_id="c", reward=1.0)])
    assert log.rolling and log.error is None
    release.set()
    log.close()
    assert [r["decision_id"] for r in read_log(tmp_path, "feedback").to_pylist()] == \
        ["a", "b", "c"]                              # read back from the open file


def test_a_failing_log_write_is_a_503_and_shows_in_readiness_until_it_recovers(
        tiny_bundles, tmp_path):
    class Full:                                      # a disk that is full once
        def __init__(self, file):
            self.file, self.name = file, file.name

        def write(self, data):                       # half of it lands, then the error
            self.file.write(bytes(data[:len(data) // 2]))
            raise OSError(28, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.file, name)

    with client(Decider(arms(tiny_bundles)[0]), tmp_path, segment_rows=100) as c:
        ok = c.post("/v1/act", json={"observation": OBS}).json()["decision_id"]
        decisions = c.app.state.logs.logs["decisions"]
        decisions._file = Full(decisions._file)
        failed = c.post("/v1/act", json={"observation": OBS})
        assert failed.status_code == 503 and "No space left" in failed.text
        ready = c.get("/readyz")
        assert ready.status_code == 503 and "No space left" in ready.json()["problem"]
        again = c.post("/v1/act", json={"observation": OBS})       # a new segment
        assert again.status_code == 200 and c.get("/readyz").status_code == 200
    served = [r["decision_id"] for r in read_log(tmp_path / "logs", "decisions").to_pylist()]
    assert served == [ok, again.json()["decision_id"]]   # what was answered, only that
    assert not list((tmp_path / "logs" / "decisions").glob("rejected-*"))   # cut back


def test_nothing_is_logged_for_a_request_that_fails(tiny_bundles, tmp_path, monkeypatch):
    import agents.serving.server as server

    with client(Decider(arms(tiny_bundles)[0]), tmp_path) as c:
        monkeypatch.setattr(server, "_action", lambda *a: 1 / 0)
        assert c.post("/v1/act", json={"observation": OBS}).status_code == 500
    assert read_log(tmp_path / "logs", "decisions").num_rows == 0


def test_feedback_is_once_per_decision_and_survives_a_restart(tiny_bundles, tmp_path):
    decider = Decider(arms(tiny_bundles)[0])
    with client(decider, tmp_path) as c:
        ids = [c.post("/v1/act", json={"observation": OBS}).json()["decision_id"]
               for _ in range(3)]
        first = {"decision_id": ids[0], "reward": 0.5, "signals": {"b": 1.0, "a": 2.0}}
        assert c.post("/v1/feedback", json=first).json()["duplicate"] is False
    with client(decider, tmp_path) as c:                   # a restart: state from the logs
        retry = dict(first, signals={"a": 2.0, "b": 1.0})  # the same feedback, keys reordered
        r = c.post("/v1/feedback", json=retry)
        assert r.status_code == 200 and r.json()["duplicate"] is True
        other = c.post("/v1/feedback", json={"decision_id": ids[0], "reward": 0.9})
        assert other.status_code == 409 and "0.5" in other.text
        assert c.post("/v1/feedback", json={"decision_id": ids[1], "reward": 1.0}
                      ).status_code == 200              # served before the restart
        assert c.post("/v1/feedback", json={"decision_id": "f" * 32, "reward": 1.0}
                      ).status_code == 404
    feedback = read_log(tmp_path / "logs", "feedback").to_pylist()
    assert [(f["decision_id"], f["reward"]) for f in feedback] == [(ids[0], 0.5), (ids[1], 1.0)]


def test_unexpected_input_gets_a_4xx(tiny_bundles, tmp_path):
    with client(Decider(arms(tiny_bundles)[0]), tmp_path, api_key="s3cret",
                max_body_bytes=4096) as c:
        key = {"X-API-Key": "s3cret"}
        r = c.post("/v1/act", json={"observation": OBS}, headers={"X-API-Key": "clé".encode()})
        assert r.status_code == 401                               # non-ASCII: not a 500

        def chunks():                                             # no Content-Length
            yield b'{"observation": ['
            for _ in range(2 * 1024):
                yield b"0.5," * 256
        r = c.post("/v1/act", content=chunks(), headers=key)
        assert r.status_code == 413 and "4096" in r.text
        body = json.dumps({"observation": OBS, "user_id": "\ud800"})    # escaped: ASCII
        r = c.post("/v1/act", content=body, headers=dict(key, **{
            "content-type": "application/json"}))
        assert r.status_code == 422                               # a lone surrogate: not text
    with pytest.raises(ValueError, match="position 2 that is not printable ASCII"):
        client(Decider(arms(tiny_bundles)[0]), tmp_path / "b", api_key="clé")


def test_identifiers_are_keyed_hashes_at_rest_and_assignment_stays_sticky(tiny_bundles,
                                                                          tmp_path):
    primary, candidate = arms(tiny_bundles)
    decider = Decider(primary, candidate, mode="ab", share=0.5, seed=0)
    users = [f"user{i}@example.com" for i in range(40)]
    arms_seen = []
    for restart in range(2):
        with client(decider, tmp_path) as c:
            arms_seen.append([c.post("/v1/act", json={
                "observation": OBS, "user_id": u, "episode_id": f"{u}/session"}).json()["arm"]
                for u in users])
    assert arms_seen[0] == arms_seen[1] and 5 < arms_seen[0].count("candidate") < 35
    pseudonymise = Pseudonymiser.from_env()
    rows = read_log(tmp_path / "logs", "decisions").to_pylist()
    assert [r["user_id"] for r in rows] == [pseudonymise(u) for u in users] * 2
    at_rest = b"".join(p.read_bytes() for p in (tmp_path / "logs").rglob("*") if p.is_file())
    assert b"example.com" not in at_rest and b"user1" not in at_rest
    with client(decider, tmp_path / "drop", user_ids="drop") as c:
        c.post("/v1/act", json={"observation": OBS, "user_id": users[0], "episode_id": "e"})
    row = read_log(tmp_path / "drop" / "logs", "decisions").to_pylist()[0]
    assert row["user_id"] is None and row["episode_id"] is None


def test_start_up_reads_back_a_damaged_feedback_log_and_refuses_a_bad_log_dir(tiny_bundles,
                                                                            tmp_path):
    from personarl.errors import ConfigError

    decider = Decider(arms(tiny_bundles)[0])
    with client(decider, tmp_path) as c:
        ids = [c.post("/v1/act", json={"observation": OBS}).json()["decision_id"]
               for _ in range(2)]
        assert c.post("/v1/feedback", json={"decision_id": ids[0], "reward": -0.0}
                      ).json()["duplicate"] is False
    segment = tmp_path / "logs" / "feedback" / "segment-000099.jsonl"
    segment.write_text(json.dumps(dict(decision_id=ids[1], reward=1.0, signals="{")) + "\n")
    with client(decider, tmp_path) as c:                  # starts; the row is read as logged
        assert c.post("/v1/feedback", json={"decision_id": ids[0], "reward": 0.0}
                      ).json()["duplicate"] is True      # -0.0 and 0.0 are one reward
        assert c.post("/v1/feedback", json={"decision_id": ids[1], "reward": 1.0}
                      ).status_code == 409               # its signals were "{", not {}
    (tmp_path / "afile").write_text("")
    with pytest.raises(ConfigError, match="log_dir=.*afile.* cannot hold the decision logs"):
        client(decider, tmp_path / "afile")


def test_serve_settings_out_of_range_are_named(tiny_bundles):
    from omegaconf import OmegaConf

    from experiments.schema import ServeSchema
    from experiments.serve import ServeConfigError, build_decider

    cfg = OmegaConf.structured(ServeSchema(bundle=str(tiny_bundles["discrete"])))
    assert build_decider(cfg).primary.policy.env_id == "personarl/AgentRouting-v0"
    for key, value in (("port", 70000), ("max_bundle_file_bytes", 0), ("segment_rows", 0)):
        bad = OmegaConf.merge(cfg, {key: value})
        with pytest.raises(ServeConfigError, match=f"{key}={value} is outside the valid range"):
            build_decider(bad)


def test_the_docs_page_works_offline(tiny_bundles, tmp_path):
    """``/docs`` loads Swagger UI's files from this server, not a CDN, and without the API
    key (it documents the API; the endpoints keep requiring the key)."""
    primary, _ = arms(tiny_bundles)
    with client(Decider(primary), tmp_path, api_key="s3cret") as c:
        page = c.get("/docs")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assets = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page.text)
        assert assets and not [a for a in assets if "://" in a or a.startswith("//")], assets
        for asset in assets:
            got = c.get(asset)
            assert got.status_code == 200 and len(got.content) > 100, asset
        assert "/openapi.json" in page.text and c.get("/openapi.json").status_code == 200
        assert c.get("/redoc").status_code == 404
        assert c.get("/docs/oauth2-redirect").status_code == 200
        assert c.post("/v1/act", json={"observation": OBS}).status_code == 401
