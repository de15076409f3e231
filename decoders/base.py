"""The interface every decoding method implements.

A decoder never calls a model. It declares the views a request needs (each view is a prompt that the
engine runs as its own row, sharing the generated tokens), the intermediate-layer logits it wants, and
fuses the last-position logits into one row of scores. `fuse` is a classmethod over all requests of that
method in the step, so the work is whole-batch tensor ops on `[G, V]` tensors.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

NEG_INF = -float("inf")

# What a decoder may need from the engine that runs it (a backend offers a subset, server/worker/backend.py):
FEATURES = {
    "views": "several prompts of the same model as rows of one step (cfg, lqcd, overshadow, ...)",
    "amateur": "a second, smaller model run in the same step (cd, lol with --amateur)",
    "layer_logits": "lm_head applied to intermediate hidden states of a row (dola, cd layer:K)",
    "row_routing": "per-row Mixture-of-Experts routing (scmoe's weak view)",
    "candidates": "top-k candidate rows run one step ahead, with their hidden states (contrastive_search)",
    "images": "views with their own images (vcd, ritual)",
    "view_scoring": "prompt log-probs fused across several views (echo scoring under a paired method)",
}


class MethodParams(BaseModel):
    """Base of every method's parameter model: unknown keys are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class DecodingError(ValueError):
    """The method cannot run this request on this model; the message becomes a 400."""


@dataclass
class View:
    name: str  # "original" is the view whose text is generated; others are contrast views
    prompt_ids: list[int]  # this view's prompt tokens
    model: str = "main"  # "main" or "amateur"
    weak_rank: int | None = None  # scmoe: route to the expert of this rank only
    images: Any = None  # vision models: this view's image inputs (server.worker.vision.ImageInputs); None: the
    #   request's own images when the prompt holds image tokens, else none
    max_shared: int | None = None  # tokens at most this view may share with another view's cache (set by the
    #   worker: a view's first image token ends what it can share)


@dataclass(frozen=True)
class LayerLogits:
    """lm_head applied to a view's hidden state after `layer` (0 = embeddings), at the last position."""

    view: str
    layer: int
    final_norm: bool  # apply the model's final norm first (cd layer:K, lol) or not (dola, as transformers 4.x)

    @property
    def key(self) -> str:
        return f"{self.view}@{self.layer}{'n' if self.final_norm else ''}"


@dataclass
class RequestContext:
    """What a decoder may look at when it builds its views."""

    prompt_ids: list[int]  # the request's prompt, tokenized (chat template applied)
    model_info: Any  # the worker's ModelInfo (num_layers, is_moe, amateur, ...)
    messages: list[dict[str, Any]] | None = None  # chat requests: the messages, content as text
    prompt: str | list[int] | None = None  # completion requests: the prompt
    tokenize: Callable[[list[dict[str, Any]] | str], list[int]] | None = None  # same template as the prompt
    seed: int | None = None
    media: Any = None  # chat requests with images: server.worker.vision.Media (images, pixels, processor)


@dataclass
class Fused:
    scores: torch.Tensor  # [G, V] fused scores, -inf outside the plausibility set
    contrast: torch.Tensor | None = None  # [G, V] the contrast logits each row used (for diagnostics)
    decisions: list[Any] | None = None  # per row: what the method decided for this token, for `record`


@dataclass
class Decoder:
    name: ClassVar[str]
    Params: ClassVar[type[MethodParams]] = MethodParams
    needs: ClassVar[frozenset[str]] = frozenset()  # engine features every request of this method needs
    supports_prompt_scoring: ClassVar[bool] = True  # False: prompt scoring returns the original view's log-probs

    params: MethodParams
    ctx: RequestContext
    decided: dict[str, Any] = field(default_factory=dict)  # what the method decided, for the response

    def __post_init__(self) -> None:
        self.setup()

    @classmethod
    def supports(cls, model_info: Any) -> bool:
        """Whether the model can run this method at all (listed in /v1/models)."""
        return True

    def setup(self) -> None:
        """Check the request against the model (raise DecodingError) and prepare views."""

    def views(self) -> list[View]:
        return [View("original", self.ctx.prompt_ids)]

    def required_features(self) -> frozenset[str]:
        """Engine features this request needs (FEATURES): the class's, plus what its views ask for."""
        views = self.views()
        extra = {"views"} if len(views) > 1 else set()
        extra |= {"amateur"} if any(v.model != "main" for v in views) else set()
        extra |= {"layer_logits"} if self.layer_logits() else set()
        extra |= {"row_routing"} if any(v.weak_rank is not None for v in views) else set()
        extra |= {"images"} if any(v.images is not None for v in views) else set()
        return self.needs | extra

    def detached(self) -> Decoder:
        """A copy that the engine core can run: the context keeps only what fuse may read (prompt ids, model
        info, seed), not the tokenizer or image processor. Views must have been built (`setup` ran)."""
        ctx = RequestContext(prompt_ids=self.ctx.prompt_ids, model_info=self.ctx.model_info, seed=self.ctx.seed)
        clone = copy.copy(self)
        clone.ctx = ctx
        return clone

    def for_choice(self) -> Decoder:
        """An independent copy for one more choice of the same request (views shared, state fresh)."""
        return copy.deepcopy(self, memo={id(self.ctx): self.ctx})

    def batch_key(self) -> tuple:
        """Requests of one method fuse together when their keys match (same views and layer logits)."""
        return ()

    def layer_logits(self) -> list[LayerLogits]:
        return []

    def retired_views(self) -> list[str]:
        """Views no longer needed after the last fuse (their cache blocks are freed)."""
        return []

    @classmethod
    def fuse(cls, decoders: list[Decoder], logits: dict[str, torch.Tensor]) -> Fused:
        """logits: view or layer key -> `[G, V]` float32 for the G requests in `decoders`. Pure: it changes no
        decoder; what it decided per row comes back in `Fused.decisions` (prompt scoring fuses many positions
        and records nothing)."""
        raise NotImplementedError

    def record(self, decision: Any) -> None:
        """The engine generated a token with this row's decision (`Fused.decisions`): update state and report."""

    def report(self) -> dict[str, Any]:
        return self.decided


def params_column(decoders: list[Decoder], name: str, like: torch.Tensor) -> torch.Tensor:
    """One parameter of every request as a `[G, 1]` tensor."""
    return torch.tensor([getattr(d.params, name) for d in decoders], dtype=like.dtype, device=like.device)[:, None]


def plausible(logits: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """APC: True where lp(logits) >= log(alpha) + max lp(logits). logits `[G, V]`, alpha `[G, 1]` -> `[G, V]`."""
    lp = torch.log_softmax(logits, dim=-1)  # [G, V]
    return lp >= torch.log(alpha) + lp.max(dim=-1, keepdim=True).values


def contrast(original: torch.Tensor, contra: torch.Tensor, alpha: torch.Tensor, mask_alpha: torch.Tensor,
             log_probs: bool = False) -> torch.Tensor:
    """`(1+alpha)*a - alpha*b` masked outside APC(mask_alpha, original). a, b `[G, V]`; params `[G, 1]`.

    With `log_probs` the views are log-softmaxed first (cd); otherwise raw logits are combined (vcd, lqcd).
    """
    a = torch.log_softmax(original, -1) if log_probs else original  # [G, V]
    b = torch.log_softmax(contra, -1) if log_probs else contra  # [G, V]
    fused = (1 + alpha) * a - alpha * b  # [G, V]
    return fused.masked_fill(~plausible(original, mask_alpha), NEG_INF)
