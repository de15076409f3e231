"""Response shapes of the counterpoint HTTP API, as pydantic models that keep unknown fields.

`extra="allow"` keeps the client thin: fields the server adds later are still reachable as attributes.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Usage(_Open):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class Decoding(_Open):
    """The decoding the server resolved: method, parameters, experiment and arm."""

    method: str = "plain"
    params: dict[str, Any] = {}
    experiment: str | None = None
    arm: str | None = None
    diagnostics: Any = None  # True when asked for; per-choice diagnostics may also appear on choices


class Message(_Open):
    role: str = "assistant"
    content: str | None = None


class ChatChoice(_Open):
    index: int = 0
    message: Message = Message()
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None


class ChatCompletion(_Open):
    id: str
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None
    decoding: Decoding | None = None

    @property
    def text(self) -> str:
        return self.choices[0].message.content or ""


class Delta(_Open):
    role: str | None = None
    content: str | None = None


class ChunkChoice(_Open):
    index: int = 0
    delta: Delta = Delta()
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None


class ChatCompletionChunk(_Open):
    id: str
    model: str
    choices: list[ChunkChoice] = []
    usage: Usage | None = None
    decoding: Decoding | None = None


class CompletionChoice(_Open):
    index: int = 0
    text: str = ""
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None


class Completion(_Open):
    """A /v1/completions response, or one chunk of its stream."""

    id: str
    model: str
    choices: list[CompletionChoice] = []
    usage: Usage | None = None
    decoding: Decoding | None = None

    @property
    def text(self) -> str:
        return self.choices[0].text if self.choices else ""
