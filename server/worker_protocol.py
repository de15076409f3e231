"""The records that cross the gateway/worker boundary: the only contract between the two processes.

The gateway POSTs a `GenerateRequest` to the worker's `/generate`; the worker answers with NDJSON lines,
each one `WorkerEvent`: first a `start`, then `delta`s (one or more per choice), then `done`. A request the
worker refuses before it reaches the engine gets an HTTP error status with an OpenAI-shaped error body; a
failure after streaming began arrives as an `error` event.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class SamplingParams(BaseModel):
    """Per-choice sampling settings, already validated and defaulted by the gateway."""

    max_tokens: int | None = None  # new tokens at most; None = up to the model's context length
    min_tokens: int = 0  # EOS and stop_token_ids are suppressed until this many tokens exist
    temperature: float = 1.0  # 0 means greedy (argmax)
    top_p: float = 1.0  # nucleus sampling mass, (0, 1]
    top_k: int = 0  # keep the k best tokens; 0 or -1 = all
    repetition_penalty: float = 1.0  # transformers semantics on prompt + output tokens; 1 = off
    seed: int | None = None  # makes sampling reproducible; choice i uses seed + i
    stop: list[str] = Field(default_factory=list)  # strings that end a choice (not included in its text)
    stop_token_ids: list[int] = Field(default_factory=list)  # token ids that end a choice
    ignore_eos: bool = False  # keep going past EOS
    n: int = 1  # choices per prompt
    logprobs: int | None = None  # None = none; k >= 0 = sampled token's logprob plus the k best
    prompt_logprobs: int | None = None  # same for every prompt token (completions echo/scoring)
    skip_special_tokens: bool = True  # leave special tokens out of the detokenized text


class DecodingSpec(BaseModel):
    """A resolved decoding method: name, its full parameter set, and how it was chosen."""

    method: str = "plain"  # registry name of the decoder
    params: dict[str, Any] = Field(default_factory=dict)  # the method's parameters, defaults filled in
    experiment: str | None = None  # A/B experiment that chose this method, if any
    arm: str | None = None  # the experiment's arm
    diagnostics: bool = False  # report how much the contrast changed the outcome
    decided: dict[str, Any] = Field(default_factory=dict)  # what the method decided (rewrite, layers, ...)


class ImageInput(BaseModel):
    """One image of a chat request, fetched or decoded and checked by the gateway: bytes, never a URL."""

    part: str  # where it came from, e.g. "messages[0].content[1]": named in errors about it
    data: str  # the image file (PNG, JPEG or WebP) base64-encoded


class GenerateRequest(BaseModel):
    """One OpenAI request as the worker sees it: text in, sampling settings, decoding method."""

    request_id: str  # unique id, also the OpenAI response id
    model: str  # served model name
    prompt: str | list[int] | None = None  # completions: text or token ids
    messages: list[dict[str, Any]] | None = None  # chat: OpenAI messages, content as text (or, with images, a
    #   list of {"type": "text", "text": ...} and {"type": "image"} placeholders, one per entry of `images`)
    images: list[ImageInput] = Field(default_factory=list)  # chat: the images, in placeholder order
    add_generation_prompt: bool = True  # chat: end the prompt with the assistant turn opener
    echo: bool = False  # completions: send the prompt back as text in the start event
    sampling: SamplingParams = Field(default_factory=SamplingParams)  # how to pick tokens
    decoding: DecodingSpec = Field(default_factory=DecodingSpec)  # which decoding method


class TopLogprob(BaseModel):
    token_id: int  # vocabulary id
    token: str  # its text
    logprob: float  # natural-log probability under the method's (fused) distribution


class TokenLogprob(BaseModel):
    token_id: int  # vocabulary id
    token: str  # its text
    logprob: float | None  # as in TopLogprob; None for the first prompt token, which has no context
    offset: int | None = None  # characters of the prompt (prompt tokens) or of the choice's text before it
    top: list[TopLogprob] = Field(default_factory=list)  # the k most likely tokens at this position


class WorkerEvent(BaseModel):
    """One NDJSON line of the worker's answer."""

    type: Literal["start", "delta", "done", "error"]  # what this line is
    index: int = 0  # delta: which choice
    text: str = ""  # delta: new text of that choice
    token_ids: list[int] = Field(default_factory=list)  # delta: new token ids; start: the prompt's ids
    logprobs: list[TokenLogprob] | None = None  # delta: one per new token, when asked for
    prompt_logprobs: list[TokenLogprob] | None = None  # start: per prompt token (the first has logprob None)
    finish_reason: str | None = None  # delta: "stop" or "length" when the choice ends
    changed: list[bool] | None = None  # delta, diagnostics: per new token, did the contrast change the choice
    divergence: list[float] | None = None  # delta, diagnostics: per new token, JSD(original || contrast)
    own_token_ids: list[int] | None = None  # delta, diagnostics: per new token, the original view's own choice
    own_tokens: list[str] | None = None  # delta, diagnostics: the text of each of those tokens
    prompt_text: str | None = None  # start: the prompt as text (for echo)
    prompt_tokens: int = 0  # start/done: prompt token count
    completion_tokens: int = 0  # done: generated tokens over all choices
    decoding: DecodingSpec | None = None  # start: the decoding actually used
    message: str | None = None  # error: what went wrong
    status: int = 500  # error: the HTTP status it maps to
