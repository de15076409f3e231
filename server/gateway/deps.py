"""FastAPI dependencies of the gateway, as `Annotated` aliases, and API key loading."""

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


def load_api_keys(settings: Settings) -> list[bytes]:
    """`api_key` plus every non-empty, non-comment line of `api_key_file`; empty means no key is needed."""
    keys = [settings.api_key] if settings.api_key else []
    if settings.api_key_file is not None:
        in_file = [line.strip() for line in settings.api_key_file.read_text(encoding="utf-8").splitlines()
                   if line.strip() and not line.lstrip().startswith("#")]
        if not in_file:  # an empty file must not silently open the server
            raise ValueError(f"the API key file {settings.api_key_file} holds no key")
        keys += in_file
    return [k.encode() for k in keys]


def check_api_key(request: Request) -> None:
    keys: list[bytes] = request.app.state.api_keys
    if not keys:
        return
    header = request.headers.get("authorization", "")
    given = (header[7:] if header.lower().startswith("bearer ") else "").encode()
    matched = False
    for key in keys:  # compare with every key, in constant time each, so timing says nothing about which
        matched |= hmac.compare_digest(given, key)
    if not matched:
        raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")


SettingsDep = Annotated[Settings, Depends(get_settings)]
PoolDep = Annotated[WorkerPool, Depends(get_pool)]
Authorized = Depends(check_api_key)


def get_outcomes(request: Request) -> OutcomeLog | None:
    return request.app.state.outcomes


OutcomesDep = Annotated[OutcomeLog | None, Depends(get_outcomes)]
