"""The gateway: a FastAPI app that validates OpenAI requests and streams answers from the workers."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sse_starlette.sse import AppStatus
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import experiments
from ..config import Settings
from ..errors import INTERNAL_TOKEN_HEADER, error_body, install_error_handlers
from ..outcomes import OutcomeLog
from ..protocol.limits import Limits, LimitsContext
from . import feedback, playground
from .deps import load_api_keys
from .routes import router, v1
from .workers import WorkerPool

# On SIGTERM, let SSE streams finish (uvicorn's graceful shutdown, bounded by `shutdown_grace`) instead of
# sse-starlette's default of cutting them at once.
AppStatus.disable_automatic_graceful_drain()


def create_app(settings: Settings, pool: WorkerPool | None = None) -> FastAPI:
    pool = pool or WorkerPool.from_settings(settings)
    experiments.check(settings.experiments)
    if settings.internal_token:
        pool.client.headers[INTERNAL_TOKEN_HEADER] = settings.internal_token

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.outcomes = OutcomeLog(settings.outcome_log) if settings.outcome_log else None
        await pool.start()
        yield
        await pool.close()
        if app.state.outcomes is not None:
            app.state.outcomes.close()  # drains the queue: a clean shutdown loses no row

    app = FastAPI(title="counterpoint", lifespan=lifespan)
    app.state.settings = settings
    app.state.pool = pool
    app.state.outcomes = None
    app.state.api_keys = load_api_keys(settings)
    app.include_router(router)
    app.include_router(v1)
    app.include_router(feedback.router)
    app.include_router(playground.router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(LimitsContext, limits=Limits.from_settings(settings))
    install_error_handlers(app, retry_after=settings.retry_after)
    return app


class BodyLimit:
    """413 for bodies over the limit, by Content-Length or by counting a chunked body before the app reads it."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await _too_large(send, self.max_bytes)
        body, more = bytearray(), True
        while more:  # buffer the body (FastAPI would anyway), refusing it as soon as it passes the limit
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await _too_large(send, self.max_bytes)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


async def _too_large(send: Send, max_bytes: int) -> None:
    response = JSONResponse(error_body(413, f"the request body is larger than {max_bytes} bytes"),
                            status_code=413)
    await response({"type": "http"}, None, send)
