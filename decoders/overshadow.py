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
    needs = frozenset({"views"})
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
        others = torch.stack([logits[n] for n in names])[best, torch.arange(len(decoders), device=best.device)]  # [G, V]
        alpha, beta = params_column(decoders, "alpha", original), params_column(decoders, "beta", original)
        d_c = kl.gather(0, best[None])[0]  # [G]
        thresholds = params_column(decoders, "threshold", original)[:, 0]  # [G]
        flagged = d_c < thresholds  # [G]
        scores = torch.where(flagged[:, None], contrast(original, others, alpha, beta), original)  # [G, V]
        used = torch.where(flagged[:, None], others, original)  # [G, V]
        decisions = []
        for g, d in enumerate(decoders):
            c, is_flagged = int(best[g]), bool(flagged[g])
            decisions.append({"divergences": [round(float(x), 6) for x in kl[:, g]], "condition": d.conditions[c],
                              "divergence": float(d_c[g]), "flagged": is_flagged,
                              "kept": names[c] if is_flagged else None})
        return Fused(scores, used, decisions)

    def record(self, decision: dict | None) -> None:
        """After the detection step: contrast against the kept view from now on (or decode plainly), and let
        the engine drop the other views."""
        if decision is None or self.stage != "detect":
            return
        kept = decision.pop("kept")
        self.decided.update(decision)
        self.stage, self.kept = ("contrast", kept) if kept is not None else ("plain", None)
        self._retire = [f"without:{i}" for i in range(len(self.conditions)) if f"without:{i}" != kept]
