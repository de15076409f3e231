"""POST /v1/chat/completions: request model, translation to the worker, response and chunk shapes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import APIError
from ..worker_protocol import GenerateRequest, TokenLogprob
from .common import SamplingFields
from .images import check_image_url
from .limits import current as limits


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _image(self) -> ContentPart:
        if self.type == "image_url":
            if self.image_url is None:
                raise ValueError("an image_url part needs `image_url`")
            check_image_url(self.image_url.get("url"))
        return self


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    @field_validator("content")
    @classmethod
    def _part_count(cls, v):
        if isinstance(v, list) and len(v) > limits().max_content_parts:
            raise ValueError(f"at most {limits().max_content_parts} content parts per message")
        return v

    def text(self, index: int) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        texts = []
        for j, part in enumerate(self.content):
            if part.type == "image_url":
                raise APIError(400, "this model does not accept images", f"messages[{index}].content[{j}]")
            if part.text is None:
                raise APIError(400, "a text part needs `text`", f"messages[{index}].content[{j}]")
            texts.append(part.text)
        return "".join(texts)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=0)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    add_generation_prompt: bool = True

    @field_validator("messages")
    @classmethod
    def _message_count(cls, v: list[ChatMessage]) -> list[ChatMessage]:
        if len(v) > limits().max_messages:
            raise ValueError(f"at most {limits().max_messages} messages")
        return v

    @field_validator("max_completion_tokens")
    @classmethod
    def _completion_cap(cls, v: int | None) -> int | None:
        if v is not None and v > limits().max_tokens_cap:
            raise ValueError(f"must be at most {limits().max_tokens_cap}")
        return v

    @model_validator(mode="after")
    def _top_logprobs_needs_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs to be true")
        return self

    def to_worker(self, request_id: str) -> GenerateRequest:
        max_tokens = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text(i)}
                    for i, m in enumerate(self.messages)]
        logprobs = (self.top_logprobs or 0) if self.logprobs else None
        return GenerateRequest(request_id=request_id, model=self.model, messages=messages,
                               add_generation_prompt=self.add_generation_prompt,
                               sampling=self.sampling_params(max_tokens, logprobs),
                               decoding=self.decoding_spec())


def chat_logprobs(items: list[TokenLogprob]) -> dict[str, Any]:
    def entry(t) -> dict[str, Any]:
        return {"token": t.token, "logprob": t.logprob, "bytes": list(t.token.encode())}
    return {"content": [{**entry(t), "top_logprobs": [entry(x) for x in t.top]} for t in items]}
