"""cfg: classifier-free guidance against a negative prompt (Sanchez et al. 2023, "Stay on topic with CFG").

`fused = lp(s_neg) + guidance_scale * (lp(s) - lp(s_neg))`, as transformers 4.x
`UnbatchedClassifierFreeGuidanceLogitsProcessor`. The negative view is `negative_prompt` (text),
`negative_messages` (chat, same template), or else the prompt's last token only; it is a second row of the
same forward, not a second sequential pass.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from .base import Decoder, DecodingError, Fused, MethodParams, View, params_column


class CFGParams(MethodParams):
    guidance_scale: float = Field(1.5, ge=0.0, le=100.0)
    negative_prompt: str | None = Field(None, max_length=100_000)
    negative_messages: list[dict[str, Any]] | None = Field(None, max_length=512)


class CFG(Decoder):
    name = "cfg"
    needs = frozenset({"views"})
    Params = CFGParams

    def setup(self) -> None:
        p, ctx = self.params, self.ctx
        if p.negative_messages is not None:
            if ctx.messages is None:
                raise DecodingError("negative_messages needs a chat request; use negative_prompt with completions")
            if not all(isinstance(m.get("content"), str) and m.get("role") for m in p.negative_messages):
                raise DecodingError("negative_messages must be messages with a role and text content")
            self.negative_ids = ctx.tokenize(p.negative_messages)
            self.decided = {"negative": "negative_messages"}
        elif p.negative_prompt is not None:
            self.negative_ids = ctx.tokenize(p.negative_prompt)
            self.decided = {"negative": "negative_prompt"}
        else:
            self.negative_ids = ctx.prompt_ids[-1:]
            self.decided = {"negative": "last prompt token"}
        if not self.negative_ids:
            raise DecodingError("the negative prompt is empty")

    def views(self) -> list[View]:
        return [View("original", self.ctx.prompt_ids), View("negative", self.negative_ids)]

    @classmethod
    def fuse(cls, decoders: list[Decoder], logits: dict[str, torch.Tensor]) -> Fused:
        scale = params_column(decoders, "guidance_scale", logits["original"])  # [G, 1]
        cond = torch.log_softmax(logits["original"], dim=-1)  # [G, V]
        uncond = torch.log_softmax(logits["negative"], dim=-1)  # [G, V]
        return Fused(uncond + scale * (cond - uncond), logits["negative"])
