"""Plain ASGI middlewares of the HTTP server (``agents.serving.server``): a body-size limit that
holds for chunked bodies too, and per-request metrics.

Plain ASGI rather than Starlette's ``BaseHTTPMiddleware``, which costs a task and a stream
per request (measured in BENCHMARKS.md: the server's CPU per request halved without it).
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["BodyLimit", "Measure"]


class BodyLimit:
    """ASGI middleware: reads the whole request body first (at most ``limit`` bytes,
    whether declared by ``Content-Length`` or streamed in chunks) and answers 413 above it
    before the app sees a byte; ``on_reject(path)`` is called for each (the metrics count
    them)."""

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
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":       # the client went away
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                await self._reject(scope, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope: dict, send: Any) -> None:
        if self.on_reject is not None:
            self.on_reject(scope["path"])
        body = (f'{{"detail":"request body larger than {self.limit} bytes '
                f'(serve config max_body_bytes)"}}').encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class Measure:
    """ASGI middleware: ``observe(path, status, seconds)`` for every HTTP request (500 when
    the app raised before answering)."""

    def __init__(self, app: Any, observe: Any) -> None:
        self.app, self.observe = app, observe

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def watched_send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        finally:
            self.observe(scope["path"], status, time.perf_counter() - start)
