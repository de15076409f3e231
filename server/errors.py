"""OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}` with the matching status."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 413: "invalid_request_error", 422: "invalid_request_error",
          405: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable",
          504: "timeout_error"}

INTERNAL_TOKEN_HEADER = "x-counterpoint-internal-token"  # the gateway's proof to a worker that it may call it


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}  # e.g. Retry-After on a 429

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.param, self.code)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": _TYPES.get(status, "server_error"), "param": param,
                      "code": code}}


def install_error_handlers(app: FastAPI, retry_after: int = 1) -> None:
    """Every error leaves as `{"error": {...}}`: no stack trace, file path or echoed input in the body."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        headers = dict(exc.headers)
        if exc.status in (429, 503):
            headers.setdefault("Retry-After", str(retry_after))
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_body(exc), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code,
                            headers=exc.headers)

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(error_body(500, "internal server error"), status_code=500)


_UNION_TAG = re.compile(r"^(str|int|float|bool|none|[A-Z]\w*|.*[\[(].*)$")  # pydantic's names of union members


def validation_body(exc: RequestValidationError) -> dict:
    """The most telling pydantic error as a 400: a value error over a type mismatch of another union member."""
    errors = exc.errors() or [{}]
    err = next((e for e in errors if not str(e.get("type", "")).endswith("_type")), errors[0])
    param = ""
    for x in err.get("loc", ()):
        if isinstance(x, int):
            param += f"[{x}]"
        elif x != "body" and not _UNION_TAG.match(str(x)):
            param += f".{x}" if param else str(x)
    msg = err.get("msg", "invalid request")
    if err.get("type") == "extra_forbidden":
        msg = "unknown field (not supported by this server)"
    elif err.get("type") == "json_invalid":
        msg = "the body is not valid JSON"
    return error_body(400, f"{param + ': ' if param else ''}{msg}", param or None)
