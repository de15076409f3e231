"""POST /v1/completions: request model, translation to the worker, and the legacy logprobs shape.

`echo` with `logprobs` and `max_tokens: 0` scores a prompt (every prompt token's logprob, the first null),
which is what evaluation harnesses ask of /v1/completions.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from ..worker_protocol import GenerateRequest, TokenLogprob
from .common import SamplingFields
from .limits import current as limits


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20)
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v):
        if isinstance(v, list):
            if not v:
                raise ValueError("prompt must not be empty")
            if len(v) > limits().max_prompts and not isinstance(v[0], int):
                raise ValueError(f"at most {limits().max_prompts} prompts per request")
            if isinstance(v[0], int) and any(t < 0 for t in v):
                raise ValueError("token ids must not be negative")
        return v

    @field_validator("suffix")
    @classmethod
    def _suffix(cls, v):
        if v:
            raise ValueError("suffix is not supported")
        return v

    def prompts(self) -> list[str | list[int]]:
        p = self.prompt
        if isinstance(p, str) or (p and isinstance(p[0], int)):
            return [p]
        return list(p)

    def to_worker(self, request_id: str) -> list[GenerateRequest]:
        max_tokens = 16 if self.max_tokens is None else self.max_tokens  # OpenAI's default
        prompt_logprobs = self.logprobs if self.echo and self.logprobs is not None else None
        sampling = self.sampling_params(max_tokens, self.logprobs, prompt_logprobs)
        decoding = self.decoding_spec()
        return [GenerateRequest(request_id=f"{request_id}-p{i}", model=self.model, prompt=p, echo=self.echo,
                                sampling=sampling, decoding=decoding) for i, p in enumerate(self.prompts())]


class LegacyLogprobs:
    """Builds `{"tokens", "token_logprobs", "top_logprobs", "text_offset"}` incrementally."""

    def __init__(self, start_offset: int = 0):
        self.offset = start_offset
        self.data: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}

    def add(self, items: list[TokenLogprob], base: int = 0) -> dict[str, Any]:
        """`base`: where the text the items' offsets count in starts (the echoed prompt's length, for completions)."""
        chunk: dict[str, list] = {k: [] for k in self.data}
        for t in items:
            text = t.token
            chunk["tokens"].append(text)
            chunk["token_logprobs"].append(t.logprob)
            chunk["top_logprobs"].append(None if t.logprob is None else {x.token: x.logprob for x in t.top})
            offset = self.offset if t.offset is None else base + t.offset  # the worker's, when it gives one
            chunk["text_offset"].append(offset)
            self.offset = offset + len(text)
        for k, v in chunk.items():
            self.data[k] += v
        return chunk
