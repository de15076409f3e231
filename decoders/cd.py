"""cd: contrastive decoding against an amateur (Li et al. 2022; O'Brien & Lewis 2023).

`fused = (1+beta)*lp(s_e) - beta*lp(s_a / amateur_temperature)`, masked outside APC(alpha, s_e). The amateur
is a second, smaller model served beside the expert (`--amateur`), whose rows run in its own batched forward,
or `layer:K`: the expert's own hidden state after layer K through the final norm and lm_head, read from the
same forward. Expert and amateur vocabularies are compared on their common prefix.
"""

from __future__ import annotations

import torch
from pydantic import Field

from .base import NEG_INF, Decoder, DecodingError, Fused, LayerLogits, MethodParams, View, params_column, plausible


class CDParams(MethodParams):
    alpha: float = Field(0.1, gt=0.0, le=1.0)
    beta: float = Field(0.5, ge=0.0, le=10.0)
    amateur_temperature: float = Field(1.0, gt=0.0, le=10.0)
    amateur: str | None = Field(None, max_length=256)  # served amateur id, or "layer:K"


def resolve_amateur(amateur: str | None, info, allow_layer: bool = True) -> int | None:
    """None for the served amateur model, K for `layer:K`; DecodingError when neither can work."""
    if amateur is not None and amateur.startswith("layer:"):
        if not allow_layer:
            raise DecodingError("this method needs a real amateur model, not layer:K")
        try:
            k = int(amateur[6:])
        except ValueError as exc:
            raise DecodingError(f"amateur {amateur!r}: K must be an integer") from exc
        if not 0 <= k < info.num_layers:
            raise DecodingError(f"amateur layer:{k} is out of range: the model has layers 0..{info.num_layers - 1}")
        return k
    if info.amateur is None:
        raise DecodingError("no amateur model is served: start the worker with --amateur SPEC, "
                            "or use amateur 'layer:K' (the model's own layer K)")
    if amateur is not None and amateur != info.amateur:
        raise DecodingError(f"unknown amateur {amateur!r}; this worker serves {info.amateur!r}")
    return None


def common_vocab(expert: torch.Tensor, amateur: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    v = min(expert.shape[-1], amateur.shape[-1])
    return expert[..., :v], amateur[..., :v]


def widen(scores: torch.Tensor, vocab: int) -> torch.Tensor:
    """Pad `[G, v]` scores to the expert's `[G, vocab]` with -inf for tokens the amateur lacks."""
    if scores.shape[-1] == vocab:
        return scores
    return torch.nn.functional.pad(scores, (0, vocab - scores.shape[-1]), value=NEG_INF)


class CD(Decoder):
    name = "cd"
    Params = CDParams

    @classmethod
    def supports(cls, model_info) -> bool:
        """Its own layer as the amateur, or a served amateur model, whichever the backend can run."""
        features = getattr(model_info, "features", frozenset())
        return "layer_logits" in features or (model_info.amateur is not None and "amateur" in features)

    def setup(self) -> None:
        self.layer = resolve_amateur(self.params.amateur, self.ctx.model_info)
        self.decided = {"amateur": f"layer:{self.layer}" if self.layer is not None else self.ctx.model_info.amateur}

    def batch_key(self) -> tuple:
        return ("amateur",) if self.layer is None else ("layer", self.layer)

    def views(self) -> list[View]:
        views = [View("original", self.ctx.prompt_ids)]
        if self.layer is None:
            views.append(View("amateur", self.ctx.prompt_ids, model="amateur"))
        return views

    def layer_logits(self) -> list[LayerLogits]:
        return [] if self.layer is None else [LayerLogits("original", self.layer, final_norm=True)]

    @classmethod
    def fuse(cls, decoders: list[Decoder], logits: dict[str, torch.Tensor]) -> Fused:
        d = decoders[0]
        expert_full = logits["original"]  # [G, V]
        amateur = logits["amateur"] if d.layer is None else logits[f"original@{d.layer}n"]  # [G, V_a]
        expert, amateur = common_vocab(expert_full, amateur)
        alpha, beta, temp = (params_column(decoders, n, expert) for n in ("alpha", "beta", "amateur_temperature"))
        fused = (1 + beta) * torch.log_softmax(expert, -1) - beta * torch.log_softmax(amateur / temp, -1)
        mask = plausible(expert_full, alpha)[:, :expert.shape[-1]]  # APC on the expert's full distribution
        return Fused(widen(fused.masked_fill(~mask, NEG_INF), expert_full.shape[-1]), amateur)
