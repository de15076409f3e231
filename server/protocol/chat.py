"""POST /v1/chat/completions: request model, translation to the worker, response and chunk shapes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import APIError
from ..worker_protocol import GenerateRequest, ImageInput, TokenLogprob
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
        return "".join(p["text"] for p in self.parts(index) if p["type"] == "text")

    def parts(self, index: int) -> list[dict[str, str]]:
        """Content parts for the worker: text parts, and one `{"type": "image"}` placeholder per image."""
        out = []
        for j, part in enumerate(self.content or []):
            if part.type == "image_url":
                if not isinstance((part.image_url or {}).get("url"), str):
                    raise APIError(400, "an image_url part needs `image_url.url`", f"messages[{index}].content[{j}]")
                out.append({"type": "image"})
            elif part.text is None:
                raise APIError(400, "a text part needs `text`", f"messages[{index}].content[{j}]")
            else:
                out.append({"type": "text", "text": part.text})
        return out

    def worker_content(self, index: int) -> str | list[dict[str, str]]:
        """Text, or (when the message holds images) the list of parts with image placeholders."""
        if isinstance(self.content, list) and any(p.type == "image_url" for p in self.content):
            return self.parts(index)
        return self.text(index)


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

    def image_parts(self) -> list[tuple[str, str]]:
        """(`messages[i].content[j]`, url) of every image part, in order."""
        for i, m in enumerate(self.messages):
            m.text(i)  # every part well-formed (an image_url part has a url) before anything is fetched
        return [(f"messages[{i}].content[{j}]", p.image_url["url"])
                for i, m in enumerate(self.messages) if isinstance(m.content, list)
                for j, p in enumerate(m.content) if p.type == "image_url"]

    def to_worker(self, request_id: str, images: list[ImageInput] = ()) -> GenerateRequest:
        max_tokens = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.worker_content(i)}
                    for i, m in enumerate(self.messages)]
        logprobs = (self.top_logprobs or 0) if self.logprobs else None
        return GenerateRequest(request_id=request_id, model=self.model, messages=messages, images=list(images),
                               add_generation_prompt=self.add_generation_prompt,
                               sampling=self.sampling_params(max_tokens, logprobs),
                               decoding=self.decoding_spec())


def chat_logprobs(items: list[TokenLogprob]) -> dict[str, Any]:
    def entry(t) -> dict[str, Any]:
        return {"token": t.token, "logprob": t.logprob, "bytes": list(t.token.encode())}
    return {"content": [{**entry(t), "top_logprobs": [entry(x) for x in t.top]} for t in items]}
