"""The interface every decoding method implements.

A decoder never calls a model. It declares the views a request needs (each view is a prompt that the
engine runs as its own row, sharing the generated tokens), and fuses the last-position logits of those views
into one row of scores. `fuse` is a classmethod over all requests of that method in the step, so the work
is whole-batch tensor ops on `[G, V]` tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict


class MethodParams(BaseModel):
    """Base of every method's parameter model: unknown keys are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class View:
    name: str  # "original" for the view whose text is generated; others are contrast views
    prompt_ids: list[int]  # this view's prompt tokens


@dataclass
class RequestContext:
    """What a decoder may look at when it builds its views: the request's prompt, already tokenized."""

    prompt_ids: list[int]
    model_info: Any  # the worker's ModelInfo (capabilities: is_moe, num_layers, ...)


class Decoder:
    name: ClassVar[str]
    Params: ClassVar[type[MethodParams]] = MethodParams

    def __init__(self, params: MethodParams, ctx: RequestContext):
        self.params = params
        self.ctx = ctx

    @classmethod
    def check_model(cls, model_info: Any) -> str | None:
        """Why this model cannot run the method (the 400 message), or None if it can."""
        return None

    def views(self) -> list[View]:
        return [View("original", self.ctx.prompt_ids)]

    @classmethod
    def fuse(cls, decoders: list[Decoder], logits: dict[str, torch.Tensor]) -> torch.Tensor:
        """logits: view name -> `[G, V]` float32 for the G requests in `decoders` -> fused `[G, V]`."""
        raise NotImplementedError

    def report(self) -> dict[str, Any]:
        """What the method decided for this request, added to the response's `decoding` object."""
        return {}


def adaptive_plausibility_mask(logits: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """APC: True where lp(logits) >= log(alpha) + max lp(logits). logits `[G, V]`, alpha `[G, 1]`."""
    lp = torch.log_softmax(logits, dim=-1)  # [G, V]
    return lp >= torch.log(alpha) + lp.max(dim=-1, keepdim=True).values  # [G, V]
