"""The gateway: a FastAPI app that validates OpenAI requests and streams answers from the workers."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from ..config import Settings
from ..errors import APIError, error_body
from .routes import router, v1
from .workers import WorkerPool

log = logging.getLogger(__name__)


def create_app(settings: Settings, pool: WorkerPool | None = None) -> FastAPI:
    pool = pool or WorkerPool.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await pool.start()
        yield
        await pool.close()

    app = FastAPI(title="counterpoint", lifespan=lifespan)
    app.state.settings = settings
    app.state.pool = pool
    app.include_router(router)
    app.include_router(v1)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    _install_error_handlers(app)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        msg = err.get("msg", "invalid request")
        if err.get("type") == "extra_forbidden":
            msg = "unknown field (not supported by this server)"
        elif err.get("type") == "json_invalid":
            msg = "the body is not valid JSON"
        return JSONResponse(error_body(400, f"{'.'.join(loc) + ': ' if loc else ''}{msg}",
                                       ".".join(loc) or None), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(error_body(500, "internal server error"), status_code=500)


class BodyLimit:
    """413 for bodies over the limit, by Content-Length or by counting a chunked body."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await _too_large(send, self.max_bytes)
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise APIError(413, f"the request body is larger than {self.max_bytes} bytes")
            return message

        await self.app(scope, limited, send)


async def _too_large(send: Send, max_bytes: int) -> None:
    response = JSONResponse(error_body(413, f"the request body is larger than {max_bytes} bytes"),
                            status_code=413)
    await response({"type": "http"}, None, send)
