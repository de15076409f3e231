"""overshadow: self-contrastive decoding against knowledge overshadowing (Zhang et al. 2024). No public
code: this is our reconstruction.

At prefill each condition c of the query (given, or found automatically) gets a view with c removed, all
rows of the same forward; `d_c = KL(p(next | x) || p(next | x without c))`. The condition with the smallest
d_c is the one the model ignores. If that d_c < threshold, decoding contrasts
`fused = (1+alpha)*s(x) - alpha*s(x without c*)`, masked outside APC(beta, s(x)); otherwise it decodes
plainly. The other views are dropped after prefill; the response reports the condition and d_c.
"""

from __future__ import annotations

import torch
from pydantic import Field

from .base import Decoder, DecodingError, Fused, MethodParams, View, contrast, params_column
from .rewrite import find_conditions, last_query, remove


class OvershadowParams(MethodParams):
    alpha: float = Field(1.0, ge=0.0, le=10.0)
    beta: float = Field(0.1, gt=0.0, le=1.0)
    threshold: float = Field(0.05, ge=0.0)
    conditions: list[str] | None = Field(None, max_length=16)


class Overshadow(Decoder):
    name = "overshadow"
    Params = OvershadowParams
    supports_prompt_scoring = False  # the contrast view is chosen at prefill from the last position

    def setup(self) -> None:
        p = self.params
        text, render = last_query(self.ctx, self.name)
        conditions = p.conditions if p.conditions is not None else find_conditions(text)
        missing = [c for c in conditions if c not in text]
        if missing:
            raise DecodingError(f"condition {missing[0]!r} is not in the last user message")
        self.conditions = conditions
        self.without = [render(remove(text, c)) for c in conditions]
        self.stage = "detect" if conditions else "plain"
        self.kept: str | None = None
        self._retire: list[str] = []
        self.decided = {"conditions": conditions, "flagged": False, "condition": None, "divergence": None}

    def batch_key(self) -> tuple:
        return (self.stage, self.kept, len(self.conditions) if self.stage == "detect" else 0)

    def views(self) -> list[View]:
        return [View("original", self.ctx.prompt_ids)] + \
            [View(f"without:{i}", ids) for i, ids in enumerate(self.without)]

    def retired_views(self) -> list[str]:
        names, self._retire = self._retire, []
        return names

    @classmethod
    def fuse(cls, decoders: list[Decoder], logits: dict[str, torch.Tensor]) -> Fused:
        d = decoders[0]
        original = logits["original"]  # [G, V]
        if d.stage == "plain":
            return Fused(original)
        if d.stage == "contrast":
            other = logits[d.kept]  # [G, V]
            alpha, beta = params_column(decoders, "alpha", original), params_column(decoders, "beta", original)
            return Fused(contrast(original, other, alpha, beta), other)
        return cls._detect(decoders, logits)

    @classmethod
    def _detect(cls, decoders: list[Decoder], logits: dict[str, torch.Tensor]) -> Fused:
        """Prefill: KL to every condition-removed view, pick the overshadowed condition, fuse this token."""
        original = logits["original"]  # [G, V]
        lp = torch.log_softmax(original, -1)  # [G, V]
        names = [f"without:{i}" for i in range(len(decoders[0].conditions))]
        without = torch.stack([torch.log_softmax(logits[n], -1) for n in names])  # [C, G, V]
        kl = (lp.exp()[None] * (lp[None] - without)).sum(-1)  # [C, G]
        best = kl.argmin(dim=0)  # [G]
        scores, contrasts = original.clone(), [None] * len(decoders)
        for g, d in enumerate(decoders):
            c = int(best[g])
            d_c = float(kl[c, g])
            d.decided.update(divergences=[round(float(x), 6) for x in kl[:, g]], condition=d.conditions[c],
                             divergence=d_c, flagged=d_c < d.params.threshold)
            if d_c < d.params.threshold:
                d.stage, d.kept = "contrast", names[c]
                other = logits[names[c]][g:g + 1]
                p = d.params
                scores[g] = contrast(original[g:g + 1], other, torch.tensor([[p.alpha]]), torch.tensor([[p.beta]]))[0]
                contrasts[g] = other[0]
            else:
                d.stage = "plain"
            d._retire = [n for n in names if n != d.kept]
        return Fused(scores, torch.stack([c if c is not None else original[g] for g, c in enumerate(contrasts)]))
