"""Sampling pieces against transformers' own logits processors."""

import torch
from transformers.generation.logits_process import (RepetitionPenaltyLogitsProcessor, TopKLogitsWarper,
                                                    TopPLogitsWarper)

from counterpoint.server.worker.sampler import apply_repetition_penalty, apply_top_k_top_p
from counterpoint.server.worker.sequence import Sequence, SequenceGroup
from counterpoint.server.worker_protocol import SamplingParams


def test_top_k_top_p_match_transformers():
    torch.manual_seed(0)
    logits = torch.randn(3, 50) * 3
    for k, p in ((5, 1.0), (50, 0.8), (10, 0.5)):
        ours = apply_top_k_top_p(logits, torch.tensor([k] * 3), torch.tensor([[p]] * 3))
        ref = TopPLogitsWarper(p)(None, TopKLogitsWarper(k)(None, logits.clone())) if p < 1 else \
            TopKLogitsWarper(k)(None, logits.clone())
        assert torch.equal(torch.isinf(ours), torch.isinf(ref))


def test_per_row_top_k():
    logits = torch.arange(10.0).repeat(2, 1)
    out = apply_top_k_top_p(logits, torch.tensor([2, 10]), None)
    assert torch.isfinite(out[0]).sum() == 2 and torch.isfinite(out[1]).sum() == 10


def test_repetition_penalty_matches_transformers():
    torch.manual_seed(0)
    logits = torch.randn(1, 30)
    ids = [3, 7, 7, 12]
    g = SequenceGroup("g", 0, [Sequence("original", ids, 4)], SamplingParams(), None, frozenset(), 10)
    ours = apply_repetition_penalty(logits, [g], torch.tensor([[1.3]]))
    ref = RepetitionPenaltyLogitsProcessor(1.3)(torch.tensor([ids]), logits.clone())
    assert torch.allclose(ours, ref)
