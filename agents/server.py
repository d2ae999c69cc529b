"""The HTTP server over a ``Decider``: FastAPI, Prometheus metrics, decision logs.

    app = create_app(decider, ServerSettings(log_dir=Path("decision_logs")))
    uvicorn.run(app)                         # experiments.serve does this from a config

Endpoints (OpenAPI schema at ``/openapi.json``, docs at ``/docs``):

=====================  ==================================================================
``POST /v1/act``        one observation -> a decision (``decision_id``, action, propensity,
                        arm, version); logged
``POST /v1/act/batch``  up to ``max_batch`` observations -> decisions; logged
``POST /v1/feedback``   a reward (and optional signals, ``done``) for a ``decision_id``
                        served in the last ``feedback_window`` decisions; logged
``GET /v1/policy``      the served bundles' specs and the traffic split
``GET /healthz``        the process is up
``GET /readyz``         policies loaded and decision logs open (503 otherwise)
``GET /metrics``        Prometheus: requests and latency per endpoint, decisions per arm,
                        version and action, errors per endpoint and kind
=====================  ==================================================================

Malformed bodies get a 4xx with a message (422 from the schema or from the observation
check, 404 for an unknown decision, 413 above ``max_body_bytes``); with an API key set
(``PERSONARL_API_KEY``), every ``/v1`` and ``/metrics`` request needs it in ``X-API-Key``
(401 otherwise). One process, one event loop: the handlers are coroutines that run inline, one at a time (a
batch-1 decision takes tens of microseconds), so the decider's generator, the recent
decision ids and the logs are never used by two requests at once.
"""


import hmac
import time
import uuid
from collections import OrderedDict
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, AsyncIterator, Optional, Union

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram,
                               generate_latest)
from pydantic import BaseModel, ConfigDict, Field

from agents.decision_log import DecisionLog
from agents.serving import ObservationError
from agents.traffic import Decider, Decisions
from personarl import jsonio

__all__ = ["create_app", "ServerSettings"]

_ENDPOINTS = ("/v1/act", "/v1/act/batch", "/v1/feedback", "/v1/policy", "/healthz",
              "/readyz", "/metrics")
_OPEN = ("/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")


@dataclass
class ServerSettings:
    """How the server runs (``configs/serve.yaml``)."""

    log_dir: Path
    max_body_bytes: int = 1 << 20
    max_batch: int = 1024
    feedback_window: int = 1_000_000
    segment_rows: int = 10_000
    api_key: Optional[str] = None


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: 413 for a body above ``limit`` bytes, declared or streamed;
    ``on_reject(path)`` is called for each (the metrics count them)."""

    def __init__(self, app: Any, limit: int, on_reject: Any = None) -> None:
        self.app, self.limit, self.on_reject = app, limit, on_reject

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._reject(scope, send)
            return
        seen = 0
        started = False

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        async def watched_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except _TooLarge:
            if not started:
                await self._reject(scope, send)

    async def _reject(self, scope: dict, send: Any) -> None:
        if self.on_reject is not None:
            self.on_reject(scope["path"])
        body = (f'{{"detail":"request body larger than {self.limit} bytes '
                f'(server.max_body_bytes)"}}').encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def create_app(decider: Decider, settings: ServerSettings) -> FastAPI:
    """The app serving ``decider``; decision logs under ``settings.log_dir``."""
    primary = decider.primary.policy
    dim = primary.obs_dim
    low = float(np.min(primary.spec["observation"]["low"]))
    high = float(np.max(primary.spec["observation"]["high"]))
    Obs = Annotated[list[Annotated[float, Field(ge=low, le=high, allow_inf_nan=False)]],
                    Field(min_length=dim, max_length=dim,
                          description=f"the env's raw observation ({dim} numbers)")]
    Id = Annotated[str, Field(min_length=1, max_length=256)]
    Action = Union[int, list[float]]

    class ActRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        observation: Obs
        user_id: Optional[Id] = Field(None, description="sticky traffic assignment")
        episode_id: Optional[Id] = None
        step: Optional[Annotated[int, Field(ge=0, le=10**9)]] = None

    class ActBatchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        observations: Annotated[list[Obs], Field(min_length=1, max_length=settings.max_batch)]
        user_ids: Optional[list[Optional[Id]]] = None
        episode_ids: Optional[list[Optional[Id]]] = None
        steps: Optional[list[Optional[Annotated[int, Field(ge=0, le=10**9)]]]] = None

    class Decision(BaseModel):
        decision_id: str
        action: Action
        action_name: Optional[str] = None
        propensity: Optional[float] = None
        arm: str
        version: str

    class ActBatchResponse(BaseModel):
        decisions: list[Decision]

    class FeedbackRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        decision_id: Annotated[str, Field(min_length=1, max_length=64)]
        reward: Annotated[float, Field(allow_inf_nan=False)]
        done: bool = False
        signals: Annotated[dict[Annotated[str, Field(max_length=64)],
                                Annotated[float, Field(allow_inf_nan=False)]],
                           Field(max_length=64)] = {}

    class Accepted(BaseModel):
        accepted: bool
        decision_id: str

    metrics = CollectorRegistry()
    requests = Counter("personarl_requests", "HTTP requests", ["endpoint", "status"],
                       registry=metrics)
    latency = Histogram("personarl_request_seconds", "request latency", ["endpoint"],
                        registry=metrics, buckets=(.0005, .001, .0025, .005, .01, .025, .05,
                                                   .1, .25, .5, 1.0, 2.5))
    decisions_total = Counter("personarl_decisions", "served decisions",
                              ["arm", "version", "action"], registry=metrics)
    errors = Counter("personarl_errors", "requests answered with an error",
                     ["endpoint", "kind"], registry=metrics)
    logs: dict[str, DecisionLog] = {}
    recent: OrderedDict[str, None] = OrderedDict()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for kind in ("decisions", "feedback", "shadow"):
            logs[kind] = DecisionLog(settings.log_dir, kind, settings.segment_rows)
        try:
            yield
        finally:
            for log in logs.values():
                log.close()
            logs.clear()

    app = FastAPI(title="PersonaRL policy server", version="1", lifespan=lifespan,
                  description="Decisions from a PersonaRL policy bundle, logged for OPE.")
    header = APIKeyHeader(name="X-API-Key", auto_error=False)

    def require_key(key: Optional[str] = Depends(header)) -> None:
        if settings.api_key and not (key and hmac.compare_digest(key, settings.api_key)):
            raise HTTPException(401, "missing or wrong API key: send it in the X-API-Key "
                                     "header")

    @app.middleware("http")
    async def measure(request: Request, call_next: Any) -> Response:
        start = time.perf_counter()
        path = request.url.path if request.url.path in _ENDPOINTS else "other"
        try:
            response = await call_next(request)
        except Exception:
            errors.labels(path, "internal").inc()
            requests.labels(path, "500").inc()
            raise
        latency.labels(path).observe(time.perf_counter() - start)
        requests.labels(path, str(response.status_code)).inc()
        if response.status_code >= 400:
            errors.labels(path, _KINDS.get(response.status_code, str(response.status_code))
                          ).inc()
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # where and what, without echoing the input (it may hold NaN, which JSON cannot
        # carry, or a whole batch)
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
                  for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(ObservationError)
    async def bad_observation(request: Request, exc: ObservationError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    def serve(obs: list[list[float]], user_ids: list[Optional[str]],
              episode_ids: list[Optional[str]], steps: list[Optional[int]]) -> list[Decision]:
        if "decisions" not in logs:
            raise HTTPException(503, "the server is not ready (decision logs closed)")
        x, _ = primary.check_obs(obs)
        d = decider.decide(x, user_ids)
        now = time.time()
        ids = [uuid.uuid4().hex for _ in range(len(x))]
        logs["decisions"].append(_log_rows(
            decider, d, ids, now, user_id=user_ids, episode_id=episode_ids, step=steps,
            observation=x.tolist(), arm_propensity=d.arm_propensity,
            exploration=decider.exploration, epsilon=decider.epsilon,
            env_id=primary.env_id))
        if d.shadow is not None:
            logs["shadow"].append(_log_rows(decider, d.shadow, ids, now))
        out = []
        for i, did in enumerate(ids):
            recent[did] = None
            action, name = _action(decider, d.action[i])
            decisions_total.labels(d.arm[i], d.version[i], name or "continuous").inc()
            out.append(Decision(decision_id=did, action=action, action_name=name,
                                propensity=d.propensity[i], arm=d.arm[i],
                                version=d.version[i]))
        while len(recent) > settings.feedback_window:
            recent.popitem(last=False)
        return out

    @app.post("/v1/act", response_model=Decision, dependencies=[Depends(require_key)])
    async def act(body: ActRequest) -> Decision:
        """Decide for one observation."""
        return serve([body.observation], [body.user_id], [body.episode_id], [body.step])[0]

    @app.post("/v1/act/batch", response_model=ActBatchResponse,
              dependencies=[Depends(require_key)])
    async def act_batch(body: ActBatchRequest) -> ActBatchResponse:
        """Decide for a batch of observations (optional per-row ids, same length)."""
        n = len(body.observations)
        columns = {}
        for key in ("user_ids", "episode_ids", "steps"):
            given = getattr(body, key)
            if given is not None and len(given) != n:
                raise HTTPException(422, f"{key} has {len(given)} entries for {n} "
                                         "observations; give one per observation or none")
            columns[key] = given if given is not None else [None] * n
        return ActBatchResponse(decisions=serve(body.observations, columns["user_ids"],
                                                columns["episode_ids"], columns["steps"]))

    @app.post("/v1/feedback", response_model=Accepted, dependencies=[Depends(require_key)])
    async def feedback(body: FeedbackRequest) -> Accepted:
        """Attach a reward (and signals) to a served decision."""
        if body.decision_id not in recent:
            raise HTTPException(404, f"unknown decision_id {body.decision_id!r}: not served "
                                     f"by this server within its last "
                                     f"{settings.feedback_window} decisions")
        if "feedback" not in logs:
            raise HTTPException(503, "the server is not ready (decision logs closed)")
        logs["feedback"].append([dict(decision_id=body.decision_id, time=time.time(),
                                      reward=body.reward, done=body.done,
                                      signals=jsonio.dumps(body.signals))])
        return Accepted(accepted=True, decision_id=body.decision_id)

    @app.get("/v1/policy", dependencies=[Depends(require_key)])
    async def policy() -> dict[str, Any]:
        """The served bundles (their ``policy.json``) and the traffic split."""
        return dict(traffic=decider.describe(),
                    bundles={a.name: dict(version=a.version, **a.policy.describe())
                             for a in decider.arms})

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Readiness: policies loaded and the decision logs open."""
        ready = "decisions" in logs
        return JSONResponse({"status": "ready" if ready else "not ready",
                             "versions": [a.version for a in decider.arms]},
                            status_code=200 if ready else 503)

    @app.get("/metrics", dependencies=[Depends(require_key)])
    async def prometheus() -> Response:
        """Prometheus exposition."""
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    def too_large(path: str) -> None:
        path = path if path in _ENDPOINTS else "other"
        requests.labels(path, "413").inc()
        errors.labels(path, "too_large").inc()

    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, on_reject=too_large)
    return app


_KINDS = {401: "auth", 404: "not_found", 405: "method", 413: "too_large", 422: "validation",
          503: "not_ready"}


def _action(decider: Decider, a: np.ndarray) -> tuple[Any, Optional[str]]:
    if decider.discrete:
        return int(a), decider.primary.policy.action_names[int(a)]
    return [float(v) for v in a], None


def _log_rows(decider: Decider, d: Decisions, ids: list[str], now: float,
              **columns: Any) -> list[dict[str, Any]]:
    """Log rows for decisions ``d``: the common fields, the action in the schema's column
    for its kind, and ``columns`` (a value per row, or a constant)."""
    sha = {a.version: a.policy.spec["model_sha256"] for a in decider.arms}
    rows = []
    for i, did in enumerate(ids):
        row = dict(decision_id=did, time=now, arm=d.arm[i], version=d.version[i],
                   propensity=d.propensity[i], model_sha256=sha[d.version[i]],
                   **{k: (v[i] if isinstance(v, (list, np.ndarray)) else v)
                      for k, v in columns.items()})
        if decider.discrete:
            row.update(action=int(d.action[i]), action_probs=d.action_probs[i].tolist())
        else:
            row["action_vector"] = d.action[i].tolist()
        rows.append(row)
    return rows
