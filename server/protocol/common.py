"""Request fields shared by /v1/chat/completions and /v1/completions, and their translation to the worker.

Unknown fields are refused (400) rather than silently ignored; OpenAI fields that counterpoint does not
implement are accepted only at their neutral value.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from counterpoint.decoders import REGISTRY, supported_methods

from ..errors import APIError
from ..worker_protocol import DecodingSpec, SamplingParams
from .limits import current as limits


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False
    continuous_usage_stats: bool = False


class DecodingField(BaseModel):
    """The `decoding` object: a method with its parameters, or an A/B experiment to enrol in."""

    model_config = ConfigDict(extra="allow")  # the method's own parameters; validated by its Params model
    method: str | None = None
    experiment: str | None = None
    diagnostics: bool = False


class SamplingFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    max_tokens: int | None = Field(None, ge=0)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=-1, le=2**31 - 1)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stop: str | list[str] | None = Field(None, validate_default=True)  # normalised to a list
    stop_token_ids: list[int] | None = None
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)
    ignore_eos: bool = False
    min_tokens: int = Field(0, ge=0)
    repetition_penalty: float | None = Field(None, ge=0.01, le=10.0)
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    decoding: str | DecodingField | None = None

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        if _has_lone_surrogate(data):
            raise ValueError("the request contains invalid unicode (a lone surrogate escape such as \\ud800)")
        return data

    @field_validator("temperature", "top_p", "repetition_penalty")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > limits().max_stop:
            raise ValueError(f"at most {limits().max_stop} stop strings")
        if any(not s or len(s) > limits().max_stop_length for s in stops):
            raise ValueError(f"stop strings must be 1 to {limits().max_stop_length} characters")
        return stops

    @field_validator("max_tokens", "min_tokens")
    @classmethod
    def _token_cap(cls, v: int | None) -> int | None:
        if v is not None and v > limits().max_tokens_cap:
            raise ValueError(f"must be at most {limits().max_tokens_cap}")
        return v

    @field_validator("n")
    @classmethod
    def _n_cap(cls, v: int) -> int:
        if v > limits().max_n:
            raise ValueError(f"must be at most {limits().max_n}")
        return v

    @field_validator("stop_token_ids")
    @classmethod
    def _stop_token_ids(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and len(v) > limits().max_stop_token_ids:
            raise ValueError(f"at most {limits().max_stop_token_ids} stop_token_ids")
        if v is not None and any(t < 0 for t in v):
            raise ValueError("token ids must not be negative")
        return v

    @model_validator(mode="after")
    def _unsupported(self) -> SamplingFields:
        if self.frequency_penalty or self.presence_penalty:
            raise ValueError("frequency_penalty and presence_penalty are not supported; use repetition_penalty")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self

    def sampling_params(self, max_tokens: int | None, logprobs: int | None,
                        prompt_logprobs: int | None = None) -> SamplingParams:
        return SamplingParams(
            max_tokens=max_tokens, min_tokens=self.min_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p, top_k=self.top_k or 0,
            repetition_penalty=self.repetition_penalty or 1.0, seed=self.seed, stop=self.stop,
            stop_token_ids=self.stop_token_ids or [], ignore_eos=self.ignore_eos, n=self.n,
            logprobs=logprobs, prompt_logprobs=prompt_logprobs)

    def decoding_spec(self) -> DecodingSpec:
        """The `decoding` field -> a method with every parameter filled in (400 if unknown or invalid)."""
        field = self.decoding
        if field is None:
            return DecodingSpec()
        if isinstance(field, str):
            field = DecodingField(method=field)
        if field.experiment is not None:
            raise APIError(400, f"unknown experiment {field.experiment!r}", "decoding")
        method = field.method or "plain"
        cls = REGISTRY.get(method)
        if cls is None:
            raise APIError(400, f"unknown decoding method {method!r}; supported methods: "
                                f"{', '.join(supported_methods())}", "decoding.method")
        try:
            params = cls.Params(**(field.model_extra or {}))
        except ValueError as exc:
            raise APIError(400, f"invalid {method} parameters: {_first_error(exc)}", "decoding") from exc
        return DecodingSpec(method=method, params=params.model_dump(), diagnostics=field.diagnostics)


def _has_lone_surrogate(value: Any) -> bool:
    """True if any string in a parsed JSON value cannot be encoded as UTF-8 (JSON allows "\\ud800")."""
    if isinstance(value, str):
        if value.isascii():
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        e = errors()[0]
        loc = ".".join(str(x) for x in e.get("loc", ()))
        return f"{loc}: {e['msg']}" if loc else e["msg"]
    return str(exc)


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
