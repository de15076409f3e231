"""Contrastive search's candidate rows: one stage object the engine calls at three named points.

- `expand` (before the forward): a group past its prefill gets k transient rows, its sequence plus one
  candidate token each; they share the context's blocks and write that token's keys/values to scratch slots.
- `fuse` (after the forward): prefilling groups remember their logits and hidden states and emit nothing;
  expanded groups pick one candidate (the decoder's `select`); every other group fuses as usual.
- `commit` (after sampling): the chosen candidate's keys/values are copied from scratch into the sequence's
  own next slot (one `[layers, kv_heads, head_dim]` copy), so nothing is recomputed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..fusion import FuseResult, by_method
from ..sampler import Sampler, apply_repetition_penalty
from ..sequence import Sequence, SequenceGroup
from .batch import StepBatch
from .paged_attention import KVCache


def wants_candidates(g: SequenceGroup) -> bool:
    return "candidates" in g.decoder.needs


class CandidateStage:
    def __init__(self, sampler: Sampler, cache: KVCache):
        self.sampler = sampler
        self.cache = cache

    def prepare(self, g: SequenceGroup) -> None:
        """At admission: one cache slot of lookahead for the sequence, scratch blocks for k candidates."""
        g.seqs[0].lookahead = 1
        g.num_scratch_blocks = -(-g.decoder.params.top_k // self.cache.block_size)

    # ---- expand ---------------------------------------------------------------------------------

    def expand(self, groups: list[SequenceGroup]) -> dict[int, list[Sequence]]:
        """group index -> the candidate rows that replace its views in this step's forward."""
        rows = {}
        for i, g in enumerate(groups):
            d = g.decoder
            if wants_candidates(g) and d.pending is not None and g.seqs[0].num_new_tokens == 0:
                rows[i] = self._rows(g, d.propose(self._processed_pending(g)))
        return rows

    def _processed_pending(self, g: SequenceGroup) -> torch.Tensor:
        """The pending logits `[V]` after the request's logits processors (min_tokens, repetition penalty)."""
        scores = self.sampler.suppress_until_min_tokens(g.decoder.pending[None], [g])  # [1, V]
        if g.sampling.repetition_penalty != 1.0:
            penalty = torch.full((1, 1), g.sampling.repetition_penalty, device=scores.device)  # [1, 1]
            scores = apply_repetition_penalty(scores, [g], penalty)
        return scores[0]

    def _rows(self, g: SequenceGroup, tokens: list[int]) -> list[Sequence]:
        seq = g.seqs[0]
        assert seq.num_computed_tokens == len(seq.token_ids)
        scratch = self._scratch_slots(g)
        return [Sequence(f"cand:{i}", seq.token_ids + [t], seq.num_prompt_tokens,
                         num_computed_tokens=len(seq.token_ids), block_table=seq.block_table,
                         scratch_slot=scratch[i]) for i, t in enumerate(tokens)]

    def _scratch_slots(self, g: SequenceGroup) -> list[int]:
        bs = self.cache.block_size
        return [b * bs + i for b in g.scratch_blocks for i in range(bs)]

    # ---- fuse -----------------------------------------------------------------------------------

    def fuse(self, batch: StepBatch, fuse_rest: Callable[[StepBatch], FuseResult]) -> FuseResult:
        """Candidate groups pick among their rows (or only observe their prefill); the rest fuse as usual."""
        groups = batch.groups
        search = [i for i, g in enumerate(groups) if wants_candidates(g)]
        others = [i for i in range(len(groups)) if i not in search]
        out = batch.outputs["main"]
        vocab, dev = out.logits.shape[-1], out.logits.device
        scores = torch.empty(len(groups), vocab, device=dev)  # [G, V]
        original = torch.empty(len(groups), vocab, device=dev)  # [G, V]
        contrast: list[torch.Tensor | None] = [None] * len(groups)
        decisions: list = [None] * len(groups)
        if others:
            part = fuse_rest(batch.subset(others))
            scores[others], original[others] = part.scores, part.original
            for k, i in enumerate(others):
                contrast[i], decisions[i] = part.contrast[k], part.decisions[k]
        expanding = [i for i in search if "cand:0" in batch.rows[i]]
        silent = {i for i in search if i not in expanding}
        for i in silent:  # prefill: remember the logits and hidden states, emit nothing yet
            _, row = batch.rows[i]["original"]
            groups[i].decoder.observe_prefill(out.logits[row], out.hidden[row])
            scores[i] = original[i] = out.logits[row]
        decoders = [groups[i].decoder for i in expanding]
        for (cls, _), members in by_method(decoders).items():
            chosen = [expanding[m] for m in members]
            k = groups[chosen[0]].decoder.params.top_k
            rows = torch.tensor([[batch.rows[i][f"cand:{j}"][1] for j in range(k)] for i in chosen],
                                device="cpu")  # [G_m, k]
            hidden = torch.stack([out.hidden[int(r)][0] for r in rows.flatten()]).view(*rows.shape, -1)  # [G_m, k, H]
            picked = cls.select([groups[i].decoder for i in chosen], out.logits[rows.to(dev)], hidden)
            idx = torch.tensor(chosen, device=dev)
            scores[idx] = picked.scores
            original[idx] = torch.stack([groups[i].decoder.proposed for i in chosen])
        return FuseResult(scores, original, contrast, silent, decisions)

    # ---- commit ---------------------------------------------------------------------------------

    def commit(self, g: SequenceGroup) -> None:
        """Copy the chosen candidate's keys/values into the sequence's next slot (before its token is
        appended); that position then counts as computed."""
        seq, bs = g.seqs[0], self.cache.block_size
        pos = len(seq.token_ids)
        real = seq.block_table[pos // bs] * bs + pos % bs
        scratch = self._scratch_slots(g)[g.decoder.selected]
        self.cache.keys[:, real] = self.cache.keys[:, scratch]  # [layers, kv_heads, head_dim]
        self.cache.values[:, real] = self.cache.values[:, scratch]
