"""lqcd: leading-query contrastive decoding against sycophancy (Zhao et al. 2024).

Views: the neutral query (`neutral_query`, or our automatic rewrite that drops stated opinions, pressure,
suggested answers and offered credentials) and the query as the user wrote it. The answer is generated for
the neutral view: `fused = (1+alpha)*s_neutral - alpha*s_leading`, masked outside APC(beta, s_neutral).
"""

from __future__ import annotations

import torch
from pydantic import Field

from .base import Decoder, DecodingError, Fused, MethodParams, View, contrast, params_column
from .rewrite import neutralize


class LQCDParams(MethodParams):
    alpha: float = Field(1.0, ge=0.0, le=10.0)
    beta: float = Field(0.1, gt=0.0, le=1.0)
    neutral_query: str | None = Field(None, max_length=100_000)


class LQCD(Decoder):
    name = "lqcd"
    Params = LQCDParams

    def setup(self) -> None:
        ctx, p = self.ctx, self.params
        if ctx.messages is not None:
            users = [i for i, m in enumerate(ctx.messages) if m["role"] == "user"]
            if not users:
                raise DecodingError("lqcd needs a user message to neutralize")
            content = ctx.messages[users[-1]]["content"]
            leading = _text(content)
            neutral = p.neutral_query if p.neutral_query is not None else neutralize(leading)
            messages = [dict(m) for m in ctx.messages]
            messages[users[-1]]["content"] = _with_text(content, neutral)
            self.neutral_ids = ctx.tokenize(messages)
        elif isinstance(ctx.prompt, str):
            leading = ctx.prompt
            neutral = p.neutral_query if p.neutral_query is not None else neutralize(leading)
            self.neutral_ids = ctx.tokenize(neutral)
        else:
            raise DecodingError("lqcd needs a text prompt or chat messages, not token ids")
        self.decided = {"neutral_query": neutral, "rewrite": "client" if p.neutral_query is not None else "automatic",
                        "changed": neutral != leading}

    def views(self) -> list[View]:  # with an image, both views carry it (the engine attaches the request's)
        return [View("original", self.neutral_ids), View("leading", self.ctx.prompt_ids)]

    @classmethod
    def fuse(cls, decoders: list[Decoder], logits: dict[str, torch.Tensor]) -> Fused:
        neutral, leading = logits["original"], logits["leading"]  # [G, V]
        alpha, beta = params_column(decoders, "alpha", neutral), params_column(decoders, "beta", neutral)
        return Fused(contrast(neutral, leading, alpha, beta), leading)


def _text(content: str | list[dict]) -> str:
    """A message's text; with images, the concatenation of its text parts."""
    return content if isinstance(content, str) else "".join(p["text"] for p in content if p["type"] == "text")


def _with_text(content: str | list[dict], text: str) -> str | list[dict]:
    """The message with its text replaced, image placeholders kept where they were."""
    if isinstance(content, str):
        return text
    parts = [p for p in content if p["type"] != "text"]
    first_text = next((i for i, p in enumerate(content) if p["type"] == "text"), len(content))
    images_before = sum(1 for p in content[:first_text] if p["type"] != "text")
    return parts[:images_before] + [{"type": "text", "text": text}] + parts[images_before:]
