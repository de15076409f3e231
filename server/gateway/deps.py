"""FastAPI dependencies of the gateway, as `Annotated` aliases."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from ..config import Settings
from ..errors import APIError
from ..outcomes import OutcomeLog
from .workers import WorkerPool


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_pool(request: Request) -> WorkerPool:
    return request.app.state.pool


def check_api_key(request: Request) -> None:
    key = request.app.state.settings.api_key
    if not key:
        return
    header = request.headers.get("authorization", "")
    given = header[7:] if header.lower().startswith("bearer ") else ""
    if not hmac.compare_digest(given.encode(), key.encode()):
        raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")


SettingsDep = Annotated[Settings, Depends(get_settings)]
PoolDep = Annotated[WorkerPool, Depends(get_pool)]
Authorized = Depends(check_api_key)


def get_outcomes(request: Request) -> OutcomeLog | None:
    return request.app.state.outcomes


OutcomesDep = Annotated[OutcomeLog | None, Depends(get_outcomes)]
