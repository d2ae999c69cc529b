"""Fuzz: requests generated from the server's own OpenAPI schema (schemathesis) — valid ones
and deliberately invalid ones — never get a 5xx, and the server stays healthy."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402

from agents.serving.server import ServerSettings, create_app  # noqa: E402
from agents.serving.loader import load_policy  # noqa: E402
from agents.serving.exploration import Exploration  # noqa: E402
from agents.serving.traffic import Arm, Decider  # noqa: E402

EXAMPLES = 150          # per operation and mode (GET operations without inputs run once)


@pytest.mark.slow
def test_generated_requests_never_get_a_5xx(tiny_bundles, tmp_path):
    decider = Decider(Arm("primary", "v1", load_policy(tiny_bundles["discrete"], seed=0)),
                      exploration=Exploration("epsilon", epsilon=0.1), seed=0)
    app = create_app(decider, ServerSettings(log_dir=tmp_path / "logs", max_batch=64))
    statuses: list[int] = []
    # schemathesis calls the app in-process and runs its lifespan once (logs open)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    for result in schema.get_all_operations():
        operation = result.ok()
        modes = [GenerationMode.POSITIVE]
        if operation.method.upper() == "POST":      # a GET without inputs has no invalid form
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            def run(case):
                response = case.call()
                statuses.append(response.status_code)
                assert response.status_code < 500, (case.method, case.path, case.body,
                                                    response.text)

            run()
    client = TestClient(app, raise_server_exceptions=False)      # the same running app
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.post("/v1/act", json={"observation": [0.5] * 34}).status_code == 200
    assert len(statuses) >= 1000, len(statuses)
    assert statuses.count(200) >= 100 and sum(400 <= s < 500 for s in statuses) >= 100
