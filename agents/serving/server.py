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
``GET /readyz``         policies loaded and decision logs open and writing (503 with the
                        problem otherwise)
``GET /metrics``        Prometheus: requests and latency per endpoint, decisions per arm,
                        version and action, errors per endpoint and kind, event-loop lag
                        (sampled every 10 ms; its maximum overall and during log rolls),
                        log-roll durations
=====================  ==================================================================

Malformed bodies get a 4xx with a message (422 from the schema or from the observation
check, 404 for an unknown decision, 409 for a second, different feedback, 413 above
``max_body_bytes`` whether declared or chunked); with an API key set (``PERSONARL_API_KEY``,
printable ASCII), every ``/v1`` and ``/metrics`` request needs it in ``X-API-Key`` (401
otherwise, whatever bytes the header holds).

**What is written.** A decision is logged only once its answer is built, and answered only
once it is logged: a failed log write answers 503 (and shows in ``/readyz`` until a write
succeeds again) instead of serving an unlogged decision. ``user_id`` and ``episode_id`` are
stored as keyed hashes (HMAC-SHA256, ``personarl.identifiers``) or not at all
(``user_ids="drop"``); traffic assignment uses the keyed hash too.

**Feedback is idempotent.** One feedback per decision: the same feedback again (a client's
retry) is acknowledged with ``duplicate: true`` and not recorded twice; a different one is
refused with 409 and the first is kept. The decisions feedback may refer to (the last
``feedback_window``) and the feedback already recorded are read back from the logs at
start-up, so both rules hold across restarts.

One process, one event loop: the handlers are coroutines that run inline, one at a time (a
batch-1 decision takes tens of microseconds), so the decider's generator, the recent
decision ids and the logs are never used by two requests at once; Parquet rolls run in a
background thread.
"""


import asyncio
import hmac
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, AsyncIterator, Optional, Union

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge,
                               Histogram, generate_latest)
from pydantic import BaseModel, ConfigDict, Field

from agents.serving.asgi import BodyLimit, Measure
from agents.serving.decision_log import record_serving
from agents.serving.loader import ModelOutputError, ObservationError
from agents.serving.server_logs import ServerLogs, feedback_fingerprint
from agents.serving.traffic import Decider, Decisions
from personarl import jsonio
from personarl.errors import ConfigError, check_api_key
from personarl.identifiers import Pseudonymiser

__all__ = ["create_app", "ServerSettings", "USER_ID_MODES", "LAG_PERIOD"]

#: the event-loop lag monitor's sampling period (seconds)
LAG_PERIOD = 0.01

_ENDPOINTS = ("/v1/act", "/v1/act/batch", "/v1/feedback", "/v1/policy", "/healthz",
              "/readyz", "/metrics")
#: where ``/docs`` serves Swagger UI's own files from (``swagger-ui-bundle``)
_DOCS_ASSETS = "/docs/assets"


def _mount_docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI with its scripts and styles served by this server from the
    ``swagger-ui-bundle`` package, so the page works without internet (FastAPI's default
    page loads them from a CDN, and was blank offline). ReDoc, which has no packaged copy,
    is not served."""
    from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount(_DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url, title=f"{app.title} — API docs",
            swagger_js_url=f"{_DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{_DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{_DOCS_ASSETS}/favicon-32x32.png",
            oauth2_redirect_url="/docs/oauth2-redirect")

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()


@dataclass
class ServerSettings:
    """How the server runs (``configs/serve.yaml``).

    Attributes:
        log_dir: the decision logs' directory (one server per directory: it holds the
            logs' writer locks).
        max_body_bytes: larger request bodies get 413, declared or streamed.
        max_batch: observations per ``/v1/act/batch`` request.
        feedback_window: feedback is accepted for this many most recent decisions (read
            back from the logs at start-up, so a restart keeps them).
        segment_rows: decision-log rows per segment before it is rolled into Parquet.
        api_key: required in ``X-API-Key`` when set; printable ASCII without spaces.
        user_ids: ``hash`` — ``user_id`` and ``episode_id`` are written as keyed hashes
            (``pseudonymiser``, default: from ``$PERSONARL_PII_KEY``); ``drop`` — never
            written.
        pseudonymiser: the keyed hash of identifiers; with ``drop`` and none given, sticky
            traffic assignment uses a per-process key (sticky until a restart).
    """

    log_dir: Path
    max_body_bytes: int = 1 << 20
    max_batch: int = 1024
    feedback_window: int = 1_000_000
    segment_rows: int = 10_000
    api_key: Optional[str] = None
    user_ids: str = "hash"
    pseudonymiser: Optional[Pseudonymiser] = None


USER_ID_MODES = ("hash", "drop")


def create_app(decider: Decider, settings: ServerSettings) -> FastAPI:
    """The app serving ``decider``; decision logs under ``settings.log_dir``, opened (and
    their writer locks taken) here, closed when the app shuts down (``app.state.logs``, a
    ``ServerLogs``).

    Raises:
        ConfigError: an invalid API key or ``user_ids`` mode, or ``user_ids="hash"``
            without a pseudonymiser and without ``$PERSONARL_PII_KEY``.
        LogInUseError: another server writes to ``settings.log_dir``.
    """
    check_api_key(settings.api_key)
    if settings.user_ids not in USER_ID_MODES:
        raise ConfigError(f"log.user_id={settings.user_ids!r}; valid: {list(USER_ID_MODES)}")
    pseudonymise = settings.pseudonymiser
    if pseudonymise is None:
        pseudonymise = (Pseudonymiser.from_env() if settings.user_ids == "hash"
                        else Pseudonymiser.ephemeral())
    hashed = settings.user_ids == "hash"
    primary = decider.primary.policy
    dim = primary.obs_dim
    low = float(np.min(primary.spec["observation"]["low"]))
    high = float(np.max(primary.spec["observation"]["high"]))
    Obs = Annotated[list[Annotated[float, Field(ge=low, le=high, allow_inf_nan=False)]],
                    Field(min_length=dim, max_length=dim,
                          description=f"the env's raw observation ({dim} numbers)")]
    Id = Annotated[str, Field(min_length=1, max_length=256)]
    # a group's name: printable text with something in it (it reaches reports)
    Group = Annotated[str, Field(min_length=1, max_length=64,
                                 pattern=r"^[^\x00-\x1f]*\S[^\x00-\x1f]*$")]
    # a step is an index within an episode of the bundle's env: below its horizon
    Step = Annotated[int, Field(ge=0, lt=_horizon(primary) or 10**9 + 1)]
    Action = Union[int, list[float]]

    class ActRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        observation: Obs
        user_id: Optional[Id] = Field(None, description="sticky traffic assignment; stored "
                                                        "only as a keyed hash")
        episode_id: Optional[Id] = Field(
            None, description="names the episode (any string; stored only as a keyed "
                              "hash): with step, what lets an offline evaluation rebuild "
                              "episodes from the decision logs")
        step: Optional[Step] = Field(
            None, description="the decision's index within its episode: 0, 1, … (below the "
                              "env's horizon)")
        group: Optional[Group] = Field(
            None, description="the user's demographic group, logged as given (fairness "
                              "readouts per group: experiments.abtest mode=logs)")

    class ActBatchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        observations: Annotated[list[Obs], Field(min_length=1, max_length=settings.max_batch)]
        user_ids: Optional[list[Optional[Id]]] = Field(
            None, description="one per observation (or none), as user_id")
        episode_ids: Optional[list[Optional[Id]]] = Field(
            None, description="one per observation (or none), as episode_id")
        steps: Optional[list[Optional[Step]]] = Field(
            None, description="one per observation (or none), as step")
        groups: Optional[list[Optional[Group]]] = Field(
            None, description="one per observation (or none), as group")

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
        duplicate: bool = Field(False, description="the same feedback was already recorded "
                                                   "(a retry); it is not recorded twice")

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
    lag = Histogram("personarl_event_loop_lag_seconds", "event-loop lag, sampled every "
                    f"{LAG_PERIOD * 1000:.0f} ms", registry=metrics,
                    buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1.0))
    lag_max = Gauge("personarl_event_loop_lag_max_seconds", "largest event-loop lag since "
                    "start", registry=metrics)
    roll_lag_max = Gauge("personarl_event_loop_lag_during_roll_max_seconds", "largest "
                         "event-loop lag sampled while a decision-log roll ran",
                         registry=metrics)
    rolls = Histogram("personarl_log_roll_seconds", "decision-log segment -> Parquet rolls",
                      ["log"], registry=metrics, buckets=(.01, .05, .1, .25, .5, 1, 2.5, 5))
    store = ServerLogs(settings, on_roll=lambda kind, s: rolls.labels(kind).observe(s))
    try:                                      # what an offline evaluation of the logs needs
        record_serving(settings.log_dir, _serving(decider))
    except OSError as exc:
        store.close()
        raise ConfigError(f"log_dir={str(settings.log_dir)!r}: cannot record what is served "
                          f"({exc})") from None

    async def watch_event_loop() -> None:
        loop = asyncio.get_running_loop()
        peak = peak_in_roll = 0.0
        while True:
            start = loop.time()
            rolling = store.rolling()
            await asyncio.sleep(LAG_PERIOD)
            late = max(0.0, loop.time() - start - LAG_PERIOD)
            lag.observe(late)
            if late > peak:
                peak = late
                lag_max.set(late)
            if (rolling or store.rolling()) and late > peak_in_roll:
                peak_in_roll = late
                roll_lag_max.set(late)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        watcher = asyncio.create_task(watch_event_loop())
        try:
            yield
        finally:
            watcher.cancel()
            store.close()

    app = FastAPI(title="PersonaRL policy server", version="1", lifespan=lifespan,
                  description="Decisions from a PersonaRL policy bundle, logged for OPE.",
                  docs_url=None, redoc_url=None)
    _mount_docs(app)
    app.state.logs = store
    header = APIKeyHeader(name="X-API-Key", auto_error=False)
    api_key = settings.api_key.encode("ascii") if settings.api_key else None

    async def require_key(key: Optional[str] = Depends(header)) -> None:
        # header values arrive decoded as Latin-1: these are the bytes the client sent
        if api_key and not (key and hmac.compare_digest(key.encode("latin-1"), api_key)):
            raise HTTPException(401, "missing or wrong API key: send it in the X-API-Key "
                                     "header")

    def count(path: str, status: int) -> str:
        """Count one answer; returns the endpoint label ``path`` is counted under."""
        path = path if path in _ENDPOINTS else "other"
        requests.labels(path, str(status)).inc()
        if status >= 400:
            errors.labels(path, _KINDS.get(status, str(status))).inc()
        return path

    def observe(path: str, status: int, seconds: float) -> None:
        latency.labels(count(path, status)).observe(seconds)

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

    @app.exception_handler(ModelOutputError)
    async def bad_model_output(request: Request, exc: ModelOutputError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=500)   # nothing was logged

    def log(kind: str, rows: list[dict[str, Any]]) -> None:
        if not store.open:
            raise HTTPException(503, "the server is not ready (decision logs closed)")
        try:
            store.logs[kind].append(rows)
        except OSError as exc:
            raise HTTPException(503, f"not served: the {kind} log failed ({exc}); the next "
                                     "request starts a new segment") from None

    def serve(obs: list[list[float]], user_ids: list[Optional[str]],
              episode_ids: list[Optional[str]], steps: list[Optional[int]],
              groups: list[Optional[str]]) -> list[Decision]:
        x, _ = primary.check_obs(obs)
        pseudonyms = [pseudonymise(u) for u in user_ids]
        d = decider.decide(x, pseudonyms)
        now = time.time()
        ids = [uuid.uuid4().hex for _ in range(len(x))]
        out = []                                 # the answer first: log only what is answered
        for i, did in enumerate(ids):
            action, name = _action(decider, d.action[i])
            out.append(Decision(decision_id=did, action=action, action_name=name,
                                propensity=d.propensity[i], arm=d.arm[i],
                                version=d.version[i]))
        if d.shadow is not None:                 # an orphan shadow row is harmless
            log("shadow", _log_rows(decider, d.shadow, ids, now))
        log("decisions", _log_rows(
            decider, d, ids, now,
            user_id=pseudonyms if hashed else None,
            episode_id=[pseudonymise(e) for e in episode_ids] if hashed else None,
            step=steps, observation=x.tolist(), arm_propensity=d.arm_propensity,
            exploration=decider.exploration.mode, epsilon=decider.exploration.epsilon,
            temperature=decider.exploration.temperature,
            env_id=primary.env_id, group=groups))
        store.remember(ids)
        for decision in out:
            decisions_total.labels(decision.arm, decision.version,
                                   decision.action_name or "continuous").inc()
        return out

    @app.post("/v1/act", response_model=Decision, dependencies=[Depends(require_key)])
    async def act(body: ActRequest) -> Decision:
        """Decide for one observation."""
        return serve([body.observation], [body.user_id], [body.episode_id], [body.step],
                     [body.group])[0]

    @app.post("/v1/act/batch", response_model=ActBatchResponse,
              dependencies=[Depends(require_key)])
    async def act_batch(body: ActBatchRequest) -> ActBatchResponse:
        """Decide for a batch of observations (optional per-row ids, same length)."""
        n = len(body.observations)
        columns = {}
        for key in ("user_ids", "episode_ids", "steps", "groups"):
            given = getattr(body, key)
            if given is not None and len(given) != n:
                raise HTTPException(422, f"{key} has {len(given)} entries for {n} "
                                         "observations; give one per observation or none")
            columns[key] = given if given is not None else [None] * n
        return ActBatchResponse(decisions=serve(body.observations, columns["user_ids"],
                                                columns["episode_ids"], columns["steps"],
                                                columns["groups"]))

    @app.post("/v1/feedback", response_model=Accepted, dependencies=[Depends(require_key)],
              responses={409: {"description": "this decision already has different "
                                              "feedback (the first is kept)"}})
    async def feedback(body: FeedbackRequest) -> Accepted:
        """Attach a reward (and signals) to a served decision — once: the same feedback
        again is acknowledged and not recorded twice (a retry is safe); different feedback
        for a decision that has some is refused (409), the first is kept."""
        did = body.decision_id
        if did not in store.recent:
            raise HTTPException(404, f"unknown decision_id {did!r}: not served by this "
                                     f"server within its last {settings.feedback_window} "
                                     "decisions")
        signals = jsonio.dumps(body.signals, sort_keys=True)
        fingerprint = feedback_fingerprint(body.reward, body.done, signals)
        recorded = store.recent[did]
        if recorded is not None:
            if recorded == fingerprint:
                return Accepted(accepted=True, decision_id=did, duplicate=True)
            raise HTTPException(409, f"decision_id {did!r} already has feedback "
                                     f"{recorded} ([reward, done, signals]); feedback is "
                                     "recorded once per decision and the first is kept")
        log("feedback", [dict(decision_id=did, time=time.time(), reward=body.reward,
                              done=body.done, signals=signals)])
        store.recent[did] = fingerprint
        return Accepted(accepted=True, decision_id=did)

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
        """Readiness: policies loaded and the decision logs open and writing (503 with the
        problem otherwise)."""
        problem = store.error()
        body: dict[str, Any] = {"status": "ready" if problem is None else "not ready",
                                "versions": [a.version for a in decider.arms]}
        if problem is not None:
            body["problem"] = f"not serving: {problem}"
        return JSONResponse(body, status_code=200 if problem is None else 503)

    @app.get("/metrics", dependencies=[Depends(require_key)])
    async def prometheus() -> Response:
        """Prometheus exposition."""
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(Measure, observe=observe)                     # inner
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes,
                       on_reject=lambda path: count(path, 413))
    return app


_KINDS = {401: "auth", 404: "not_found", 405: "method", 409: "conflict", 413: "too_large",
          422: "validation", 500: "internal", 503: "not_ready"}


def _horizon(policy: Any) -> Optional[int]:
    """The decisions an episode of the policy's env lasts at most, or ``None`` if its env
    does not build here."""
    from envs.registration import describe

    try:
        return int(describe(policy.env_id, policy.spec["env"].get("config") or {}).horizon)
    except Exception:                               # noqa: BLE001 — then steps go unchecked
        return None


def _serving(decider: Decider) -> dict[str, Any]:
    """The ``servings.jsonl`` line for this start (``agents.serving.decision_log``)."""
    described = decider.describe()
    arms = {a.name: a for a in decider.arms}
    for arm in described["arms"]:
        spec = arms[arm["arm"]].policy.spec
        arm.update(model_sha256=spec["model_sha256"], env=spec["env"])
    return dict(time=time.time(), **described)


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
