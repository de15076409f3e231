"""Request limits the protocol models check, configurable per gateway app.

The gateway sets the limits of its settings for the duration of each request (a context variable, set by
`LimitsContext` middleware), so the pydantic validators of the request models can read them and refuse an
oversized request with a 400 before anything else runs. Outside a request the defaults apply.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, fields

from starlette.types import ASGIApp, Receive, Scope, Send


@dataclass(frozen=True)
class Limits:
    max_messages: int = 512  # chat messages per request
    max_content_parts: int = 64  # content parts per chat message
    max_prompts: int = 64  # prompts per /v1/completions request
    max_tokens_cap: int = 32768  # max_tokens, max_completion_tokens and min_tokens at most
    max_n: int = 16  # choices per request
    max_stop: int = 16  # stop strings
    max_stop_length: int = 256  # characters per stop string
    max_stop_token_ids: int = 64  # stop_token_ids entries
    max_image_bytes: int = 10 << 20  # decoded bytes of one image
    max_image_pixels: int = 4096 * 4096  # width x height of one image

    @classmethod
    def from_settings(cls, settings: object) -> Limits:
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


_DEFAULT = Limits()
_CURRENT: ContextVar[Limits | None] = ContextVar("counterpoint_limits", default=None)


def current() -> Limits:
    return _CURRENT.get() or _DEFAULT


class LimitsContext:
    """ASGI middleware: makes `limits` the current limits while the app handles a request."""

    def __init__(self, app: ASGIApp, limits: Limits):
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = _CURRENT.set(self.limits)
        try:
            await self.app(scope, receive, send)
        finally:
            _CURRENT.reset(token)
