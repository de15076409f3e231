"""Candidate rows for contrastive search: k transient rows per request that share the context's blocks.

Each candidate row is the request's sequence plus one candidate token whose keys/values go to a scratch
slot of the group; after the decoder picks one, its keys/values are copied from scratch into the sequence's
own next slot (one `[layers, kv_heads, head_dim]` copy), so nothing is recomputed.
"""

from __future__ import annotations

import torch

from .paged_attention import KVCache
from ..sampler import Sampler, apply_repetition_penalty
from ..sequence import Sequence, SequenceGroup


def processed_pending(sampler: Sampler, g: SequenceGroup) -> torch.Tensor:
    """The pending logits `[V]` after the request's logits processors (min_tokens, repetition penalty)."""
    scores = sampler.suppress_until_min_tokens(g.decoder.pending[None], [g])  # [1, V]
    if g.sampling.repetition_penalty != 1.0:
        penalty = torch.tensor([[g.sampling.repetition_penalty]])
        scores = apply_repetition_penalty(scores, [g], penalty)
    return scores[0]


def candidate_rows(g: SequenceGroup, tokens: list[int], block_size: int) -> list[Sequence]:
    seq = g.seqs[0]
    assert seq.num_computed_tokens == len(seq.token_ids)
    scratch = [b * block_size + i for b in g.scratch_blocks for i in range(block_size)]
    return [Sequence(f"cand:{i}", seq.token_ids + [t], seq.num_prompt_tokens, num_computed_tokens=len(seq.token_ids),
                     block_table=seq.block_table, scratch_slot=scratch[i]) for i, t in enumerate(tokens)]


def commit(cache: KVCache, g: SequenceGroup, selected: int) -> None:
    """Copy the chosen candidate's keys/values into the sequence's next slot (before its token is appended)."""
    seq, bs = g.seqs[0], cache.block_size
    pos = len(seq.token_ids)
    real = seq.block_table[pos // bs] * bs + pos % bs
    scratch = [b * bs + i for b in g.scratch_blocks for i in range(bs)][selected]
    cache.keys[:, real] = cache.keys[:, scratch]  # [layers, kv_heads, head_dim]
    cache.values[:, real] = cache.values[:, scratch]
