"""lqcd: leading-query contrastive decoding against sycophancy (Zhao et al. 2024).

Views: the neutral query (`neutral_query`, or our automatic rewrite that drops stated opinions, pressure,
suggested answers and offered credentials) and the query as the user wrote it. The answer is generated for
the neutral view: `fused = (1+alpha)*s_neutral - alpha*s_leading`, masked outside APC(beta, s_neutral).
"""

from __future__ import annotations

import torch
from pydantic import Field

from .base import Decoder, Fused, MethodParams, View, contrast, params_column
from .rewrite import last_query, neutralize


class LQCDParams(MethodParams):
    alpha: float = Field(1.0, ge=0.0, le=10.0)
    beta: float = Field(0.1, gt=0.0, le=1.0)
    neutral_query: str | None = Field(None, max_length=100_000)


class LQCD(Decoder):
    name = "lqcd"
    needs = frozenset({"views"})
    Params = LQCDParams

    def setup(self) -> None:
        p = self.params
        leading, render = last_query(self.ctx, self.name)
        neutral = p.neutral_query if p.neutral_query is not None else neutralize(leading)
        self.neutral_ids = render(neutral)
        self.decided = {"neutral_query": neutral, "rewrite": "client" if p.neutral_query is not None else "automatic",
                        "changed": neutral != leading}

    def views(self) -> list[View]:  # with an image, both views carry it (the engine attaches the request's)
        return [View("original", self.neutral_ids), View("leading", self.ctx.prompt_ids)]

    @classmethod
    def fuse(cls, decoders: list[Decoder], logits: dict[str, torch.Tensor]) -> Fused:
        neutral, leading = logits["original"], logits["leading"]  # [G, V]
        alpha, beta = params_column(decoders, "alpha", neutral), params_column(decoders, "beta", neutral)
        return Fused(contrast(neutral, leading, alpha, beta), leading)

