"""plain: ordinary decoding with one view; greedy output equals transformers `generate(do_sample=False)`."""

from __future__ import annotations

import torch

from .base import Decoder, Fused


class Plain(Decoder):
    name = "plain"

    @classmethod
    def fuse(cls, decoders: list[Decoder], logits: dict[str, torch.Tensor]) -> Fused:
        return Fused(logits["original"])  # [G, V]
