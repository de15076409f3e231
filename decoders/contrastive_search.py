"""contrastive_search (Su et al. 2022), as transformers 4.x `_contrastive_search` at batch 1.

Each step takes the top_k candidates of softmax(processed logits); the engine runs every candidate one step
as k rows of one forward (sharing the context's KV blocks, each writing its token to a scratch slot); each
candidate scores `(1-penalty_alpha)*p(v) - penalty_alpha*max_j cos(h_v, h_j)` against every previous
last-layer hidden state h_j (prompt included), and the best one is the next token. Its logits are the next
step's, and its keys/values are copied from scratch into the sequence. Deterministic.
"""

from __future__ import annotations

import torch
from pydantic import Field

from .base import NEG_INF, Decoder, Fused, MethodParams


class ContrastiveSearchParams(MethodParams):
    penalty_alpha: float = Field(0.6, ge=0.0, le=1.0)
    top_k: int = Field(4, ge=1, le=16)


class ContrastiveSearch(Decoder):
    name = "contrastive_search"
    Params = ContrastiveSearchParams
    needs = frozenset({"candidates"})  # the engine runs top_k candidate rows per step (torch/candidates.py)
    supports_prompt_scoring = False  # no candidates exist for prompt tokens: plain log-probs are returned

    def setup(self) -> None:
        self.pending: torch.Tensor | None = None  # [V] logits for the next token (None before prefill)
        self.context: torch.Tensor | None = None  # [L, H] last-layer hidden states so far
        self.candidate_ids: torch.Tensor | None = None  # [k]
        self.candidate_probs: torch.Tensor | None = None  # [k]
        self.selected: int | None = None
        self.proposed: torch.Tensor | None = None  # [V] the processed logits the candidates came from

    def batch_key(self) -> tuple:
        return (self.params.top_k,)

    def observe_prefill(self, logits: torch.Tensor, hidden: torch.Tensor) -> None:
        """logits `[V]` at the last prompt position, hidden `[P, H]` for every (re)computed position."""
        self.pending, self.context = logits, hidden

    def propose(self, processed: torch.Tensor) -> list[int]:
        """processed `[V]` (the pending logits after penalties) -> the top_k candidate tokens."""
        self.proposed = processed
        probs = torch.softmax(processed, dim=-1)  # [V]
        self.candidate_probs, self.candidate_ids = probs.topk(self.params.top_k)  # [k]
        return self.candidate_ids.tolist()

    @classmethod
    def select(cls, decoders: list[ContrastiveSearch], logits: torch.Tensor, hidden: torch.Tensor) -> Fused:
        """logits `[G, k, V]` and hidden `[G, k, H]` of the candidates -> one-hot scores of the chosen ones."""
        lengths = [d.context.shape[0] for d in decoders]
        context = torch.zeros(len(decoders), max(lengths), hidden.shape[-1])  # [G, L, H]
        for g, d in enumerate(decoders):
            context[g, :lengths[g]] = d.context
        ctx_norm = context / context.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # [G, L, H]
        cand_norm = hidden / hidden.norm(dim=-1, keepdim=True)  # [G, k, H]
        cosine = cand_norm @ ctx_norm.transpose(1, 2)  # [G, k, L]
        valid = torch.arange(max(lengths))[None, None] < torch.tensor(lengths)[:, None, None]  # [G, 1, L]
        penalty = cosine.masked_fill(~valid, NEG_INF).max(dim=-1).values  # [G, k]
        alpha = torch.tensor([d.params.penalty_alpha for d in decoders])[:, None]  # [G, 1]
        probs = torch.stack([d.candidate_probs for d in decoders])  # [G, k]
        best = ((1 - alpha) * probs - alpha * penalty).argmax(dim=-1)  # [G]
        scores = torch.full((len(decoders), logits.shape[-1]), NEG_INF)  # [G, V]
        for g, d in enumerate(decoders):
            d.selected = int(best[g])
            token = int(d.candidate_ids[d.selected])
            scores[g, token] = torch.log(probs[g, d.selected])
            d.pending = logits[g, d.selected]
            d.context = torch.cat([d.context, hidden[g, d.selected][None]])
        return Fused(scores, None)
