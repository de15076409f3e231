"""Batched token selection on fused scores: penalties, temperature, top-k, top-p, seeds, logprobs.

Per-request settings become `[G, 1]` tensors once per batch composition (`SamplingTensors`), so a step
does whole-batch tensor ops; only seeded rows draw their noise from their own generator, row by row, which
is what makes a seeded request reproducible whatever else shares its batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .sequence import SequenceGroup


@dataclass
class SamplingTensors:
    group_uids: tuple[int, ...]  # the batch these tensors were built for
    temperature: torch.Tensor  # [G, 1], 1 where greedy (to keep divisions finite)
    is_greedy: torch.Tensor  # [G] bool
    top_k: torch.Tensor | None  # [G] long, vocab size where off; None when no row uses it
    top_p: torch.Tensor | None  # [G, 1], 1 where off; None when no row uses it
    repetition_penalty: torch.Tensor | None  # [G, 1]; None when no row uses it
    max_logprobs: int  # most top logprobs any row asked for; -1 when none asked

    @classmethod
    def build(cls, groups: list[SequenceGroup], vocab_size: int, device: torch.device) -> SamplingTensors:
        sp = [g.sampling for g in groups]
        temps = torch.tensor([p.temperature if p.temperature > 0 else 1.0 for p in sp], device=device)
        top_k = [p.top_k if 0 < p.top_k < vocab_size else vocab_size for p in sp]
        top_p = [p.top_p for p in sp]
        penalty = [p.repetition_penalty for p in sp]
        logprobs = [p.logprobs for p in sp if p.logprobs is not None]
        return cls(
            group_uids=tuple(g.uid for g in groups),
            temperature=temps[:, None],
            is_greedy=torch.tensor([p.temperature == 0 for p in sp], device=device),
            top_k=torch.tensor(top_k, device=device) if min(top_k) < vocab_size else None,
            top_p=torch.tensor(top_p, device=device)[:, None] if min(top_p) < 1.0 else None,
            repetition_penalty=(torch.tensor(penalty, device=device)[:, None]
                                if any(p != 1.0 for p in penalty) else None),
            max_logprobs=max(logprobs, default=-1),
        )


@dataclass
class SamplerOutput:
    token_ids: list[int]  # chosen token per group
    logprobs: torch.Tensor | None  # [G] logprob of the chosen token
    top_ids: torch.Tensor | None  # [G, k]
    top_logprobs: torch.Tensor | None  # [G, k]


class Sampler:
    def __init__(self, vocab_size: int, device: torch.device):
        self.vocab_size = vocab_size
        self.device = device
        self._tensors: SamplingTensors | None = None

    def tensors_for(self, groups: list[SequenceGroup]) -> SamplingTensors:
        uids = tuple(g.uid for g in groups)
        if self._tensors is None or self._tensors.group_uids != uids:
            self._tensors = SamplingTensors.build(groups, self.vocab_size, self.device)
        return self._tensors

    def __call__(self, scores: torch.Tensor, groups: list[SequenceGroup]) -> SamplerOutput:
        """scores `[G, vocab]` float32 (already fused) -> one token per group."""
        t = self.tensors_for(groups)
        logprobs = top_ids = top_lps = None
        if t.max_logprobs >= 0:
            lp = torch.log_softmax(scores, dim=-1)  # [G, V]: the method's distribution, before sampling knobs
        scores = self.suppress_until_min_tokens(scores, groups)
        if t.repetition_penalty is not None:
            scores = apply_repetition_penalty(scores, groups, t.repetition_penalty)
        chosen = scores.argmax(dim=-1)  # [G]
        if not bool(t.is_greedy.all()):
            sampled = self._sample(scores, groups, t)  # [G]
            chosen = torch.where(t.is_greedy, chosen, sampled)  # [G]
        if t.max_logprobs >= 0:
            logprobs = lp.gather(1, chosen[:, None])[:, 0]  # [G]
            if t.max_logprobs > 0:
                top_lps, top_ids = lp.topk(t.max_logprobs, dim=-1)  # [G, k]
        return SamplerOutput(chosen.tolist(), logprobs, top_ids, top_lps)

    def suppress_until_min_tokens(self, scores: torch.Tensor, groups: list[SequenceGroup]) -> torch.Tensor:
        rows, cols = [], []
        for i, g in enumerate(groups):
            if g.num_generated < g.sampling.min_tokens:
                banned = set(g.sampling.stop_token_ids) | (set() if g.sampling.ignore_eos else g.eos_token_ids)
                rows += [i] * len(banned)
                cols += sorted(banned)
        if rows:
            scores = scores.clone()
            scores[rows, cols] = -float("inf")
        return scores

    def _sample(self, scores: torch.Tensor, groups: list[SequenceGroup], t: SamplingTensors) -> torch.Tensor:
        logits = scores / t.temperature  # [G, V]
        if t.top_k is not None or t.top_p is not None:
            logits = apply_top_k_top_p(logits, t.top_k, t.top_p)
        probs = torch.softmax(logits, dim=-1)  # [G, V]
        # Exponential race: argmax(p / E) with E ~ Exp(1) draws from p (the Gumbel-max trick in disguise).
        noise = torch.empty_like(probs).exponential_()  # [G, V]
        for i, g in enumerate(groups):
            if g.generator is not None:
                noise[i].exponential_(generator=g.generator)
        return (probs / noise).argmax(dim=-1)  # [G]


def apply_repetition_penalty(scores: torch.Tensor, groups: list[SequenceGroup],
                             penalty: torch.Tensor) -> torch.Tensor:
    """transformers' RepetitionPenaltyLogitsProcessor on every token seen in the prompt or output."""
    seen = torch.zeros_like(scores, dtype=torch.bool)  # [G, V]
    for i, g in enumerate(groups):
        seen[i, torch.tensor(g.seqs[0].token_ids, device=scores.device)] = True
    penalised = torch.where(scores > 0, scores / penalty, scores * penalty)  # [G, V]
    return torch.where(seen, penalised, scores)


def apply_top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor | None,
                      top_p: torch.Tensor | None) -> torch.Tensor:
    """Mask logits outside each row's top-k and top-p set (at least one token always stays)."""
    sorted_logits, order = logits.sort(dim=-1, descending=False)  # [G, V] ascending
    vocab = logits.shape[-1]
    if top_k is not None:
        kth = sorted_logits.gather(1, (vocab - top_k)[:, None])  # [G, 1] the k-th largest value
        sorted_logits = sorted_logits.masked_fill(sorted_logits < kth, -float("inf"))
    if top_p is not None:
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # [G, V]
        drop = cum <= 1 - top_p  # [G, V]
        drop[:, -1] = False
        sorted_logits = sorted_logits.masked_fill(drop, -float("inf"))
    return torch.empty_like(logits).scatter_(1, order, sorted_logits)
