"""The one interface every worker engine implements, and the records that cross from the worker's front to it.

A worker is two processes (core.py). The front (HTTP API, tokenization, decoders' views) builds one
`EngineRequest` per choice and sends it to the engine core, whose main thread owns a `Backend`: the PyTorch
engine (`torch/engine.py`) or vLLM (`vllm/backend.py`). The core calls `add` and `abort` between steps and
`step` in a loop while `has_work`; each step's `StepOutput`s (and `GroupFailure`s) go back to the front with
the backend's `stats()`. Nothing else ever touches a backend, so it needs no locks.

Capabilities, not method names: a backend declares the `features` it offers and a decoder the features it
needs (`Decoder.required_features`); `/v1/models`, the 400s and the CLI help follow from that comparison.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol

from counterpoint.decoders import Decoder, View

from ..worker_protocol import SamplingParams, TokenLogprob

# What a backend can offer; `counterpoint.decoders.base.FEATURES` documents each one.
ALL_FEATURES = frozenset({"views", "amateur", "layer_logits", "row_routing", "candidates", "images",
                          "view_scoring"})
TORCH_FEATURES = ALL_FEATURES  # torch/engine.py: the exact reference runs everything
VLLM_FEATURES = frozenset({"views"})  # vllm/backend.py: same-weights views fused by its logits processor
BACKEND_FEATURES = {"torch": TORCH_FEATURES, "vllm": VLLM_FEATURES}


def methods_for(features: frozenset[str]) -> list[str]:
    """The decoding methods a backend with these features runs for a model that has everything (an amateur,
    experts, a vision tower): what the CLI help says."""
    from types import SimpleNamespace

    from counterpoint.decoders import REGISTRY
    model = SimpleNamespace(features=features, amateur="amateur", is_moe=True, is_vision=True)
    return sorted(name for name, cls in REGISTRY.items() if cls.needs <= features and cls.supports(model))


@dataclass
class EngineRequest:
    """One choice of one request, ready to run: nothing in it needs the tokenizer or the image processor."""

    group_id: str  # "<request id>-<choice index>": unique while the request runs
    index: int  # the choice index in the response
    decoder: Decoder  # the method's state for this choice, detached from the front (`Decoder.detached`)
    views: list[View]  # the decoder's views, images and shared-prefix limits resolved by the front
    sampling: SamplingParams  # validated and defaulted by the gateway
    diagnostics: bool = False  # report per token how the contrast changed the choice

    @classmethod
    def of(cls, group_id: str, index: int, decoder: Decoder, sampling: SamplingParams,
           diagnostics: bool = False) -> EngineRequest:
        """The request for one choice of a decoder built in this process (its views resolved, then detached)."""
        return cls(group_id, index, decoder.detached(), resolve_views(decoder), sampling, diagnostics)


def resolve_views(decoder: Decoder) -> list[View]:
    """The decoder's views with images attached: a main-model view whose prompt holds image tokens gets the
    request's images unless it brings its own, and shares no cache blocks past its first image token."""
    media = decoder.ctx.media
    views = []
    for view in decoder.views():
        images, first = view.images, None
        if media is not None and view.model == "main":
            first = media.vision.first_image_token(view.prompt_ids)
            images = (media.pixels if images is None else images) if first is not None else None
        views.append(replace(view, images=images, max_shared=first))
    return views


@dataclass
class StepOutput:
    """What one step produced for one group (one choice of one request)."""

    group_id: str
    index: int  # choice index
    token_ids: list[int]  # the new token, or none (max_tokens 0, or a token that only ended the choice)
    text: str  # new text to send
    logprobs: list[TokenLogprob] | None  # one per new token, when asked for
    prompt_logprobs: list[TokenLogprob] | None  # sent once, with the first output
    finish_reason: str | None  # "stop" or "length" when the choice ends
    num_prompt_tokens: int  # of the original view
    num_generated: int  # tokens generated so far
    changed: list[bool] | None = None  # diagnostics: did the contrast change this token's choice
    divergence: list[float] | None = None  # diagnostics: JSD between original and contrast views
    own_token_ids: list[int] | None = None  # diagnostics: the token the original view alone would have chosen
    decided: dict | None = None  # what the method decided so far (first and last output of a choice)


@dataclass
class GroupFailure:
    """A step result that fails one group (the worker sends an error event); the others go on."""

    group_id: str
    message: str  # written by us (never an exception's text): safe to show the client


@dataclass
class EngineStats:
    """The backend's load, sent to the front with every step's outputs (the front's /health and /metrics)."""

    num_running: int = 0  # groups in the running batch
    num_waiting: int = 0  # groups queued for admission
    kv_cache_usage: float = 0.0  # fraction of KV cache blocks in use (0 where the backend does not say)
    num_preemptions: int = 0  # groups preempted (torch) or resubmitted (vllm) since start
    forward_rows: dict[str, int] = field(default_factory=dict)  # rows run so far, by view kind


class Backend(Protocol):
    features: frozenset[str]  # subset of ALL_FEATURES this backend can run

    @property
    def has_work(self) -> bool: ...

    def submit(self, request: EngineRequest) -> None:
        """Queue a choice. Raising fails only this choice (the core sends its error)."""

    def abort(self, group_id: str) -> None:
        """Forget a choice (finished elsewhere, client gone); unknown ids are ignored."""

    def step(self) -> list[StepOutput | GroupFailure]:
        """Run one step of the whole batch."""

    def recover(self) -> list[StepOutput | GroupFailure]:
        """After `step` raised: fail the groups that caused it, leave the others runnable."""

    def stats(self) -> EngineStats: ...
