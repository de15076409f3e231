"""scmoe: self-contrast Mixture-of-Experts (Shi et al. 2024).

Strong view: the model's own top-k routing. Weak view: the same tokens, every MoE layer routing each token to
exactly one expert, the one at 0-based rank `weak_rank` of the router's probabilities, with weight 1.
`fused = (1+beta)*s_strong - beta*s_weak`, masked outside APC(alpha, s_strong); EOS is never masked.
Routing is chosen per row, so the strong and weak rows of many requests share one forward.
"""

from __future__ import annotations

import torch
from pydantic import Field

from .base import Decoder, DecodingError, Fused, MethodParams, View, contrast, params_column


class SCMoEParams(MethodParams):
    alpha: float = Field(0.1, gt=0.0, le=1.0)
    beta: float = Field(0.5, ge=0.0, le=10.0)
    weak_rank: int = Field(1, ge=0)


class SCMoE(Decoder):
    name = "scmoe"
    needs = frozenset({"views", "row_routing"})
    Params = SCMoEParams

    @classmethod
    def supports(cls, model_info) -> bool:
        return model_info.is_moe

    def setup(self) -> None:
        info = self.ctx.model_info
        if not info.is_moe:
            raise DecodingError(f"scmoe needs a Mixture-of-Experts model; {info.name!r} is dense")
        if self.params.weak_rank >= info.num_experts:
            raise DecodingError(f"weak_rank must be below the model's {info.num_experts} experts")

    def views(self) -> list[View]:
        return [View("original", self.ctx.prompt_ids),
                View("weak", self.ctx.prompt_ids, weak_rank=self.params.weak_rank)]

    @classmethod
    def fuse(cls, decoders: list[Decoder], logits: dict[str, torch.Tensor]) -> Fused:
        strong, weak = logits["original"], logits["weak"]  # [G, V]
        alpha, beta = params_column(decoders, "alpha", strong), params_column(decoders, "beta", strong)
        fused = contrast(strong, weak, beta, alpha)  # (1+beta)*strong - beta*weak, APC(alpha, strong)
        eos = list(decoders[0].ctx.model_info.eos_token_ids)
        if eos:
            fused[:, eos] = ((1 + beta) * strong - beta * weak)[:, eos]  # EOS stays reachable
        return Fused(fused, weak)
