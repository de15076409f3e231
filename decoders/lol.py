"""lol: multi-layer fusion contrastive decoding ("Lower Layer Matters", 2024). No public code: this is our
reconstruction of the paper's formula.

`F_final = lp(s_e^N) - lp(s_a^N)`, `F_lower = lp(s_e^j) - lp(s_a^j')` (lower layers through the final norm
and lm_head; j' is the amateur's layer at the same relative depth), `fused = F_final + weight*F_lower`,
masked outside APC(alpha, s_e^N). `refocus` adds a truthfulness instruction as a system message to the
expert's view only.
"""

from __future__ import annotations

import torch
from pydantic import Field

from .base import NEG_INF, Decoder, DecodingError, Fused, LayerLogits, MethodParams, View, params_column, plausible
from .cd import common_vocab, resolve_amateur, widen


class LoLParams(MethodParams):
    alpha: float = Field(0.1, gt=0.0, le=1.0)
    weight: float = Field(0.5, ge=0.0, le=10.0)
    lower_layer: int | None = Field(None, ge=1)  # default: half the expert's layers
    refocus: str | None = Field(None, max_length=10_000)
    amateur: str | None = Field(None, max_length=256)


class LoL(Decoder):
    name = "lol"
    needs = frozenset({"amateur", "layer_logits"})
    Params = LoLParams

    @classmethod
    def supports(cls, model_info) -> bool:
        return model_info.amateur is not None

    def setup(self) -> None:
        info, p = self.ctx.model_info, self.params
        resolve_amateur(p.amateur, info, allow_layer=False)
        self.lower = p.lower_layer if p.lower_layer is not None else info.num_layers // 2
        if self.lower >= info.num_layers:
            raise DecodingError(f"lower_layer must be below the expert's {info.num_layers} layers")
        self.amateur_lower = max(1, round(self.lower * info.amateur_num_layers / info.num_layers))
        self.expert_ids = self.ctx.prompt_ids
        if p.refocus:
            if self.ctx.messages is not None:
                self.expert_ids = self.ctx.tokenize([{"role": "system", "content": p.refocus}, *self.ctx.messages])
            elif isinstance(self.ctx.prompt, str):
                self.expert_ids = self.ctx.tokenize(f"{p.refocus}\n\n{self.ctx.prompt}")
            else:
                raise DecodingError("refocus needs a text prompt or chat messages")
        self.decided = {"amateur": info.amateur, "lower_layer": self.lower, "amateur_lower_layer": self.amateur_lower}

    def batch_key(self) -> tuple:
        return (self.lower, self.amateur_lower)

    def views(self) -> list[View]:
        return [View("original", self.expert_ids), View("amateur", self.ctx.prompt_ids, model="amateur")]

    def layer_logits(self) -> list[LayerLogits]:
        return [LayerLogits("original", self.lower, True), LayerLogits("amateur", self.amateur_lower, True)]

    @classmethod
    def fuse(cls, decoders: list[Decoder], logits: dict[str, torch.Tensor]) -> Fused:
        d = decoders[0]
        expert_full = logits["original"]  # [G, V]
        e, a = common_vocab(expert_full, logits["amateur"])  # [G, v]
        el, al = common_vocab(logits[f"original@{d.lower}n"], logits[f"amateur@{d.amateur_lower}n"])  # [G, v]
        lp = torch.log_softmax
        fused = (lp(e, -1) - lp(a, -1)) + params_column(decoders, "weight", e) * (lp(el, -1) - lp(al, -1))
        mask = plausible(expert_full, params_column(decoders, "alpha", e))[:, :e.shape[-1]]
        return Fused(widen(fused.masked_fill(~mask, NEG_INF), expert_full.shape[-1]), a)
