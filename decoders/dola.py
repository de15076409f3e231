"""dola: decoding by contrasting layers (Chuang et al. 2023), as transformers 4.x `_dola_decoding`.

Candidate premature layers come from `layers` ("low", "high" or a list); their logits are lm_head(hidden
state) with no final norm. With several candidates, each request picks, per token, the one with the largest
Jensen-Shannon divergence from the final layer. A relative-top filter (alpha) keeps the plausible tokens:
`fused = lp(final) - lp(premature)` there, -inf elsewhere (the premature side gets -1e-3 there).
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from .base import NEG_INF, Decoder, DecodingError, Fused, LayerLogits, MethodParams, params_column


class DoLaParams(MethodParams):
    layers: Literal["low", "high"] | list[int] = "high"
    alpha: float = Field(0.1, gt=0.0, le=1.0)  # relative_top


def candidate_layers(layers: str | list[int], num_layers: int, tied: bool) -> list[int]:
    """transformers 4.x's choice of premature layers (`dola_layers`)."""
    start = 0 if not tied else 2 if num_layers > 2 else 1 if num_layers == 2 else 0
    if layers == "low":
        if start == num_layers // 2:
            return [start]
        return list(range(start, num_layers // 2, 2)) if num_layers <= 40 else list(range(start, 20, 2))
    if layers == "high":
        return list(range(num_layers // 2, num_layers, 2)) if num_layers <= 40 else \
            list(range(num_layers - 20, num_layers, 2))
    return [i for i in layers if 0 <= i < num_layers]


def relative_top_filter(final: torch.Tensor, base: torch.Tensor, alpha: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers 4.x `_relative_top_filter` per row: `[G, V]` logits, alpha `[G, 1]` -> log-probs."""
    final_lp = torch.log_softmax(final, dim=-1)  # [G, V]
    base_lp = torch.log_softmax(base, dim=-1)  # [G, V]
    thresh = final_lp.max(dim=-1, keepdim=True).values + torch.log(alpha)  # [G, 1]
    drop = final_lp < thresh  # [G, V]
    return final_lp.masked_fill(drop, NEG_INF), base_lp.masked_fill(drop, -1e-3)


class DoLa(Decoder):
    name = "dola"
    needs = frozenset({"layer_logits"})
    Params = DoLaParams

    def setup(self) -> None:
        info = self.ctx.model_info
        self.candidates = candidate_layers(self.params.layers, info.num_layers, info.tie_word_embeddings)
        if not self.candidates:
            raise DecodingError(f"no premature layer in {self.params.layers!r} for a {info.num_layers}-layer model")
        self.chosen: Counter[int] = Counter()
        self.decided = {"candidate_layers": self.candidates, "chosen_layers": {}}

    def batch_key(self) -> tuple:
        return tuple(self.candidates)

    def layer_logits(self) -> list[LayerLogits]:
        return [LayerLogits("original", j, final_norm=False) for j in self.candidates]

    @classmethod
    def fuse(cls, decoders: list[Decoder], logits: dict[str, torch.Tensor]) -> Fused:
        final = logits["original"]  # [G, V]
        layers = decoders[0].candidates
        stacked = torch.stack([logits[f"original@{j}"] for j in layers])  # [C, G, V]
        if len(layers) == 1:
            pick = torch.zeros(final.shape[0], dtype=torch.long, device=final.device)
        else:
            avg = 0.5 * (F.softmax(final, -1)[None] + F.softmax(stacked, -1))  # [C, G, V]
            kl1 = F.kl_div(F.log_softmax(final, -1)[None].expand_as(avg), avg, reduction="none").mean(-1)  # [C, G]
            kl2 = F.kl_div(F.log_softmax(stacked, -1), avg, reduction="none").mean(-1)  # [C, G]
            pick = (0.5 * (kl1 + kl2)).argmax(dim=0)  # [G] per request
        base = stacked[pick, torch.arange(final.shape[0], device=final.device)]  # [G, V]
        final_lp, base_lp = relative_top_filter(final, base, params_column(decoders, "alpha", final))
        return Fused(final_lp - base_lp, base, [layers[j] for j in pick.tolist()])

    def record(self, layer: int) -> None:
        self.chosen[layer] += 1
        self.decided["chosen_layers"] = dict(self.chosen)


